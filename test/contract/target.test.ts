/**
 * The target contract (provider/src/targets/target.ts) against the real daemons, as root:
 * IscsiTarget on every implementation (today TgtTarget), NbdTarget on every implementation
 * (today NbdkitTarget). Data goes through real initiators: qemu-io over libiscsi and libnbd.
 */
import { spawn } from "node:child_process";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { run } from "../../provider/src/exec/run";
import { NbdkitTarget } from "../../provider/src/targets/nbdkit-target";
import type { IscsiTarget, NbdTarget } from "../../provider/src/targets/target";
import { TgtTarget } from "../../provider/src/targets/tgt-target";
import { Daemons, freeTcpPort, skipReason } from "../helpers/daemons";
import { bytesAt, sparseFile } from "../helpers/files";

jest.setTimeout(60_000);

const MiB = 1024 * 1024;
const IQN = "iqn.2024-01.io.sds:contract-vol1";
const HOST = "iqn.2024-01.io.sds:host-allowed";
const OTHER_HOST = "iqn.2024-01.io.sds:host-other";
const CHAP = { username: "sdsuser", password: "Contract-Secret-42" };



// ---------------------------------------------------------------------------------------------
// iSCSI

interface IscsiLogin {
  portal: string;
  iqn: string;
  lun: number;
  initiator: string;
  chap?: { username: string; password: string };
  readOnly?: boolean;
}

/** qemu's block options for a LUN through libiscsi, and the CHAP secret object when there is one. */
function libiscsiImage(login: IscsiLogin): { secret: string[]; imageOpts: string } {
  const opts = [
    "driver=raw",
    "file.driver=iscsi",
    "file.transport=tcp",
    `file.portal=${login.portal}`,
    `file.target=${login.iqn}`,
    `file.lun=${login.lun}`,
    `file.initiator-name=${login.initiator}`,
  ];
  const secret: string[] = [];
  if (login.chap) {
    opts.push(`file.user=${login.chap.username}`, "file.password-secret=s0");
    secret.push("--object", `secret,id=s0,data=${login.chap.password}`);
  }
  return { secret, imageOpts: opts.join(",") };
}

/** qemu-io through libiscsi; rejects with qemu-io's stderr (the login or SCSI error). */
function iscsiIo(login: IscsiLogin, ...commands: string[]) {
  const { secret, imageOpts } = libiscsiImage(login);
  const args = [...secret, ...(login.readOnly ? ["-r"] : []), "--image-opts", imageOpts, ...commands.flatMap((c) => ["-c", c])];
  return run("qemu-io", args, { timeoutMs: 30_000 });
}

/** The LUN's size in bytes as an initiator sees it at login (READ CAPACITY through libiscsi). */
async function iscsiSize(login: IscsiLogin): Promise<number> {
  const { secret, imageOpts } = libiscsiImage(login);
  const r = await run("qemu-img", ["info", "--output=json", ...secret, "--image-opts", imageOpts], { timeoutMs: 30_000 });
  return (JSON.parse(r.stdout) as { "virtual-size": number })["virtual-size"];
}

const iscsiImplementations: Array<[string, (o: { controlPort: number; portal: string; runDir: string }) => IscsiTarget & { controlPort: number; accounts(): Promise<string[]> }]> = [
  ["TgtTarget", (o) => new TgtTarget(o)],
];
const iscsiSkip = skipReason(["tgtd", "tgtadm", "qemu-io", "qemu-img", "iscsi-ls"]);

if (iscsiSkip) {
  test.skip(`IscsiTarget contract skipped: ${iscsiSkip}`, () => undefined);
} else {
  describe.each(iscsiImplementations)("IscsiTarget: %s", (_name, make) => {
    let daemons: Daemons;
    let target: ReturnType<typeof make>;
    let dir: string;
    let portal: string;

    beforeEach(async () => {
      daemons = new Daemons();
      dir = daemons.runDir();
      portal = `127.0.0.1:${await freeTcpPort()}`;
      target = make({ controlPort: await daemons.tgtControlPort(), portal, runDir: dir });
      await target.start();
    });
    afterEach(async () => {
      await target.stop().catch(() => undefined);
      await daemons.cleanup();
    });

    /** A target with LUN 1 (rw) on `vol1.img`, HOST in the ACL and CHAP. */
    async function exported(): Promise<{ tid: number; file: string }> {
      const file = sparseFile(path.join(dir, "vol1.img"));
      const tid = await target.ensureTarget(IQN);
      await target.ensureLun(tid, 1, file, false);
      await target.ensureInitiator(tid, HOST);
      await target.ensureChap(tid, CHAP);
      return { tid, file };
    }

    test("start twice runs one daemon; stop leaves no tgtd with that control port", async () => {
      const before = await daemons.processes();
      expect(before.length).toBeGreaterThan(0);
      const pid = Number(fs.readFileSync(path.join(dir, `tgtd-${target.controlPort}.pid`), "utf8"));
      await target.start();
      expect((await daemons.processes()).map((p) => p.pid).sort()).toEqual(before.map((p) => p.pid).sort());
      expect(before.map((p) => p.pid)).toContain(pid);
      const record = path.join(dir, "daemons", `tgtd-${target.controlPort}.json`);
      expect(JSON.parse(fs.readFileSync(record, "utf8"))).toMatchObject({ kind: "tgtd", argv: expect.arrayContaining(["tgtd", String(target.controlPort)]) });
      await exported(); // stop must also end a daemon that has targets (tgtd then refuses to exit)
      await target.stop();
      expect(await daemons.processes()).toEqual([]);
      expect(fs.existsSync(record)).toBe(false);
      await target.stop(); // stopping what is stopped is success
    });

    test("start refuses a portal another daemon listens on", async () => {
      const second = make({ controlPort: await daemons.tgtControlPort(), portal, runDir: dir });
      await expect(second.start()).rejects.toThrow(/could not listen on/);
      const left = (await daemons.processes()).filter((p) => p.argv.includes(String(second.controlPort)));
      expect(left).toEqual([]);
    });

    test("every ensure twice is idempotent: one target, one LUN, one initiator, one CHAP user", async () => {
      const first = await exported();
      const again = await exported();
      expect(again.tid).toBe(first.tid);
      expect(await target.ensureTarget(IQN, first.tid)).toBe(first.tid);
      expect(await target.list()).toEqual([
        { name: IQN, tid: first.tid, luns: [{ lun: 1, path: first.file, readOnly: false }], initiators: [HOST], chapUsers: [CHAP.username], sessions: 0 },
      ]);
      expect(await target.accounts()).toEqual([CHAP.username]);
    });

    test("data written through the allowed initiator with the right CHAP reads back", async () => {
      const { file } = await exported();
      const login = { portal, iqn: IQN, lun: 1, initiator: HOST, chap: CHAP };
      await iscsiIo(login, `write -P 0xab 0 1M`);
      const read = await iscsiIo(login, `read -P 0xab 0 1M`);
      expect(read.stdout).toMatch(/read 1048576\/1048576 bytes/);
      expect(bytesAt(file, 0, 4)).toEqual(Buffer.from([0xab, 0xab, 0xab, 0xab]));
      expect(bytesAt(file, MiB, 4)).toEqual(Buffer.alloc(4));
      // Discovery (SendTargets, no CHAP) shows the target to the allowed initiator only.
      const ls = (initiator: string) => run("iscsi-ls", ["-i", initiator, `iscsi://${portal}`], { timeoutMs: 30_000 }).then((r) => r.stdout);
      expect(await ls(HOST)).toContain(IQN);
      expect(await ls(OTHER_HOST)).not.toContain(IQN);
    });

    test("an initiator not in the ACL is refused", async () => {
      await exported();
      await expect(iscsiIo({ portal, iqn: IQN, lun: 1, initiator: OTHER_HOST, chap: CHAP }, "read 0 4k")).rejects.toThrow(/Target not found|515/);
      // And removing the allowed one refuses it too.
      const [t] = await target.list();
      await target.removeInitiator(t!.tid!, HOST);
      await expect(iscsiIo({ portal, iqn: IQN, lun: 1, initiator: HOST, chap: CHAP }, "read 0 4k")).rejects.toThrow(/Target not found|515/);
    });

    test("wrong or missing CHAP is refused; a changed password replaces the old one", async () => {
      const { tid } = await exported();
      const login = { portal, iqn: IQN, lun: 1, initiator: HOST };
      await expect(iscsiIo({ ...login, chap: { ...CHAP, password: "Wrong-Secret-42" } }, "read 0 4k")).rejects.toThrow(/Authentication failure|513/);
      await expect(iscsiIo(login, "read 0 4k")).rejects.toThrow(/Authentication failure|513/);
      const rotated = { ...CHAP, password: "Rotated-Secret-7" };
      await target.ensureChap(tid, rotated);
      await expect(iscsiIo({ ...login, chap: CHAP }, "read 0 4k")).rejects.toThrow(/Authentication failure|513/);
      await iscsiIo({ ...login, chap: rotated }, "read 0 4k");
      expect((await target.list())[0]!.chapUsers).toEqual([CHAP.username]);
    });

    test("a read-only LUN refuses writes and serves reads", async () => {
      const { tid, file } = await exported();
      fs.writeFileSync(file, Buffer.alloc(MiB, 0x5a), { flag: "r+" });
      const ro = sparseFile(path.join(dir, "ro.img"));
      fs.writeFileSync(ro, Buffer.alloc(MiB, 0x5a), { flag: "r+" });
      await target.ensureLun(tid, 2, ro, true);
      await target.ensureLun(tid, 2, ro, true);
      expect((await target.list())[0]!.luns).toEqual([
        { lun: 1, path: file, readOnly: false },
        { lun: 2, path: ro, readOnly: true },
      ]);
      const login = { portal, iqn: IQN, lun: 2, initiator: HOST, chap: CHAP };
      await expect(iscsiIo(login, "write -P 0x11 0 4k")).rejects.toThrow(/write protected/i);
      await iscsiIo({ ...login, readOnly: true }, "read -P 0x5a 0 1M");
      expect(bytesAt(ro, 0, 4)).toEqual(Buffer.alloc(4, 0x5a));
    });

    test("refreshLun: a grown backing file shows its new size to the next login; data, LUN and mode stay", async () => {
      const { tid, file } = await exported();
      const ro = sparseFile(path.join(dir, "ro.img"));
      await target.ensureLun(tid, 2, ro, true);
      const login = { portal, iqn: IQN, lun: 1, initiator: HOST, chap: CHAP };
      await iscsiIo(login, "write -P 0xcd 0 64k");
      const listed = await target.list();
      expect(await iscsiSize(login)).toBe(16 * MiB);
      fs.truncateSync(file, 32 * MiB);
      fs.truncateSync(ro, 24 * MiB);
      // why refreshLun exists: the daemon still reports the size it read when the LUN was added
      expect(await iscsiSize(login)).toBe(16 * MiB);
      await target.refreshLun(tid, 1, file, false);
      await target.refreshLun(tid, 2, ro, true);
      expect(await iscsiSize(login)).toBe(32 * MiB);
      expect(await iscsiSize({ ...login, lun: 2 })).toBe(24 * MiB);
      expect(await target.list()).toEqual(listed);
      expect((await iscsiIo(login, "read -P 0xcd 0 64k")).stdout).toMatch(/read 65536\/65536 bytes/);
      await iscsiIo(login, `write -P 0xef ${31 * MiB} 64k`); // the new end is writable
      expect(bytesAt(file, 31 * MiB, 4)).toEqual(Buffer.alloc(4, 0xef));
      await expect(iscsiIo({ ...login, lun: 2 }, `write -P 0x11 ${20 * MiB} 4k`)).rejects.toThrow(/write protected/i);
      // again is success; a LUN missing (a refresh cut short) is added back
      await target.refreshLun(tid, 1, file, false);
      await target.removeLun(tid, 2);
      await target.refreshLun(tid, 2, ro, true);
      expect(await target.list()).toEqual(listed);
    });

    test("every remove twice is success and leaves list() and the accounts empty", async () => {
      const { tid } = await exported();
      for (let i = 0; i < 2; i++) {
        await target.removeInitiator(tid, HOST);
        await target.removeLun(tid, 1);
      }
      expect(await target.list()).toEqual([{ name: IQN, tid, luns: [], initiators: [], chapUsers: [CHAP.username], sessions: 0 }]);
      for (let i = 0; i < 2; i++) {
        await target.removeTarget(tid);
        await target.removeChapAccount(CHAP.username);
      }
      expect(await target.list()).toEqual([]);
      expect(await target.accounts()).toEqual([]);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// NBD

const nbdImplementations: Array<[string, (o: { host: string; runDir: string }) => NbdTarget]> = [["NbdkitTarget", (o) => new NbdkitTarget(o)]];
const nbdSkip = skipReason(["nbdkit", "nbdinfo", "qemu-io", "nbdfuse", "umount"]);

/** Export names `nbdinfo --list` reports for the server on `port`. */
async function nbdExports(port: number): Promise<string[]> {
  const r = await run("nbdinfo", ["--list", "--json", `nbd://127.0.0.1:${port}`], { timeoutMs: 30_000 });
  return (JSON.parse(r.stdout) as { exports: Array<{ "export-name": string }> }).exports.map((e) => e["export-name"]).sort();
}

function nbdIo(port: number, exportName: string, readOnly: boolean, ...commands: string[]) {
  return run("qemu-io", [...(readOnly ? ["-r"] : []), "-f", "raw", `nbd://127.0.0.1:${port}/${exportName}`, ...commands.flatMap((c) => ["-c", c])], { timeoutMs: 30_000 });
}

/**
 * A client that stays connected: nbdfuse serving the export as a file (its size is what the
 * handshake said). `stop` unmounts it; nbdfuse then exits.
 */
async function nbdfuseOf(port: number, exportName: string, dir: string): Promise<{ file: string; stop(): Promise<void> }> {
  const mnt = fs.mkdtempSync(path.join(dir, "fuse-"));
  const file = path.join(mnt, "disk");
  const pidFile = path.join(dir, `${path.basename(mnt)}.pid`);
  const child = spawn("nbdfuse", ["-r", "-P", pidFile, file, `nbd://127.0.0.1:${port}/${exportName}`], { detached: true, stdio: "ignore" });
  child.unref();
  const stop = async () => {
    await run("umount", ["-l", mnt]).catch(() => undefined);
    if (child.exitCode === null) child.kill("SIGKILL");
    fs.rmSync(mnt, { recursive: true, force: true });
  };
  for (let i = 0; i < 200 && !(fs.existsSync(pidFile) && fs.existsSync(file)); i++) await new Promise((r) => setTimeout(r, 50));
  if (!fs.existsSync(file)) {
    await stop();
    throw new Error(`nbdfuse did not serve ${file}`);
  }
  return { file, stop };
}

if (nbdSkip) {
  test.skip(`NbdTarget contract skipped: ${nbdSkip}`, () => undefined);
} else {
  describe.each(nbdImplementations)("NbdTarget: %s", (_name, make) => {
    let daemons: Daemons;
    let target: NbdTarget;
    let dir: string;

    beforeEach(() => {
      daemons = new Daemons();
      dir = daemons.runDir();
      target = make({ host: "127.0.0.1", runDir: dir });
    });
    afterEach(async () => {
      for (const s of await target.list().catch(() => [])) await target.removeServer(s.server).catch(() => undefined);
      await daemons.cleanup();
    });

    test("ensureServer twice runs one process and keeps its port (the port is a wish); another mode for the same server is a conflict", async () => {
      const port = await freeTcpPort();
      await expect(target.ensureServer("rw", port, false)).resolves.toBe(port);
      const [first] = await target.list();
      await expect(target.ensureServer("rw", port, false)).resolves.toBe(port);
      expect((await daemons.processes()).map((p) => p.pid)).toEqual([first!.pid]);
      expect(await target.list()).toEqual([{ server: "rw", port, readOnly: false, pid: first!.pid, exports: [] }]);
      await expect(target.ensureServer("rw", port + 1, false)).resolves.toBe(port);
      await expect(target.ensureServer("rw", port, true)).rejects.toThrow(/already runs/);
    });

    test("a wished port another program listens on (another state's server) is skipped for a free one", async () => {
      const busy = net.createServer();
      await new Promise<void>((r) => busy.listen({ host: "127.0.0.1", port: 0 }, () => r()));
      const taken = (busy.address() as net.AddressInfo).port;
      try {
        const got = await target.ensureServer("rw", taken, false);
        expect(got).not.toBe(taken);
        expect((await target.list())[0]).toMatchObject({ server: "rw", port: got });
        execFileSync("nbdinfo", ["--list", `nbd://127.0.0.1:${got}`], { timeout: 20_000, stdio: "pipe" });
      } finally {
        busy.close();
      }
    });

    test("data written to the rw server reads back through a read-only server, which refuses writes", async () => {
      const file = sparseFile(path.join(dir, "vol1.img"));
      const [rwPort, roPort] = [await freeTcpPort(), await freeTcpPort()];
      await target.ensureServer("rw", rwPort, false);
      await target.ensureServer("ro", roPort, true);
      for (let i = 0; i < 2; i++) {
        await target.ensureExport("rw", "vol1", file);
        await target.ensureExport("ro", "vol1", file);
      }
      expect(await nbdExports(rwPort)).toEqual(["vol1"]);
      await nbdIo(rwPort, "vol1", false, "write -P 0xab 0 1M");
      expect((await nbdIo(roPort, "vol1", true, "read -P 0xab 0 1M")).stdout).toMatch(/read 1048576\/1048576 bytes/);
      expect(bytesAt(file, 0, 4)).toEqual(Buffer.alloc(4, 0xab));
      // The read-only server advertises read-only: a read-write open is refused.
      await expect(nbdIo(roPort, "vol1", false, "write -P 0x11 0 4k")).rejects.toThrow(/Permission denied|read-only/i);
      expect(bytesAt(file, 0, 4)).toEqual(Buffer.alloc(4, 0xab));
      const servers = await target.list();
      expect(servers.map((s) => [s.server, s.readOnly, s.exports])).toEqual([
        ["ro", true, [{ name: "vol1", path: file }]],
        ["rw", false, [{ name: "vol1", path: file }]],
      ]);
      // Another volume under the same export name is a conflict, not a silent switch.
      await expect(target.ensureExport("rw", "vol1", sparseFile(path.join(dir, "vol2.img")))).rejects.toThrow(/already serves/);
    });

    test("refreshExport: a new connection sees the grown volume file, with no restart; connected clients keep theirs", async () => {
      const file = sparseFile(path.join(dir, "vol1.img"));
      const port = await freeTcpPort();
      await target.ensureServer("rw", port, false);
      await target.ensureExport("rw", "vol1", file);
      const size = async () => Number((await run("nbdinfo", ["--size", `nbd://127.0.0.1:${port}/vol1`], { timeoutMs: 30_000 })).stdout.trim());
      expect(await size()).toBe(16 * MiB);
      const [before] = await target.list();
      // A client connected before the grow: its handshake told it 16 MiB, for as long as it stays.
      const early = await nbdfuseOf(port, "vol1", dir);
      try {
        fs.truncateSync(file, 32 * MiB);
        await target.refreshExport("rw", "vol1", file);
        expect(await size()).toBe(32 * MiB);
        expect(fs.statSync(early.file).size).toBe(16 * MiB);
      } finally {
        await early.stop();
      }
      const [after] = await target.list();
      expect(after).toEqual(before);
      await nbdIo(port, "vol1", false, `write -P 0xef ${31 * MiB} 64k`);
      expect(bytesAt(file, 31 * MiB, 4)).toEqual(Buffer.alloc(4, 0xef));
      await expect(target.refreshExport("rw", "vol2", file)).rejects.toThrow(/no export vol2/);
    });

    test("removeExport takes the export away without restarting the server", async () => {
      const port = await freeTcpPort();
      await target.ensureServer("rw", port, false);
      await target.ensureExport("rw", "vol1", sparseFile(path.join(dir, "vol1.img")));
      await target.ensureExport("rw", "vol2", sparseFile(path.join(dir, "vol2.img")));
      const [before] = await target.list();
      expect(await nbdExports(port)).toEqual(["vol1", "vol2"]);
      await target.removeExport("rw", "vol1");
      await target.removeExport("rw", "vol1");
      expect(await nbdExports(port)).toEqual(["vol2"]);
      const [after] = await target.list();
      expect(after!.pid).toBe(before!.pid);
      expect(after!.exports.map((e) => e.name)).toEqual(["vol2"]);
      await expect(nbdIo(port, "vol1", true, "read 0 4k")).rejects.toThrow();
    });

    test("state survives a new instance; removeServer twice leaves no process and an empty list", async () => {
      const file = sparseFile(path.join(dir, "vol1.img"));
      const port = await freeTcpPort();
      await target.ensureServer("rw", port, false);
      await target.ensureExport("rw", "vol1", file);
      const listed = await target.list();
      const restarted = make({ host: "127.0.0.1", runDir: dir });
      expect(await restarted.list()).toEqual(listed);
      await restarted.ensureServer("rw", port, false); // knows it runs: no second process
      expect((await daemons.processes()).length).toBe(1);
      await restarted.removeServer("rw");
      await restarted.removeServer("rw");
      expect(await daemons.processes()).toEqual([]);
      expect(await make({ host: "127.0.0.1", runDir: dir }).list()).toEqual([]);
      expect(fs.existsSync(file)).toBe(true); // the volume is not the server's to delete
    });
  });
}
