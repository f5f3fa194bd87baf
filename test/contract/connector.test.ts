/**
 * The connector contract (provider/src/connectors/connector.ts) against the real host, as root:
 * local (loop device), NBD userspace (nbdkit → nbdfuse → loop), iSCSI userspace
 * (tgtd → qemu-nbd/libiscsi → nbdfuse → loop). Every daemon, process, mount and loop device a
 * test makes is ended by pid / device name in afterEach, even when the test failed half-way.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { run } from "../../provider/src/exec/run";
import type { Connection, Connector } from "../../provider/src/connectors/connector";
import { connectorFor } from "../../provider/src/connectors/factory";
import { Host } from "../../provider/src/connectors/host";
import { RecordStore } from "../../provider/src/connectors/records";
import { procProcesses } from "../../provider/src/exec/processes";
import { TgtTarget } from "../../provider/src/targets/tgt-target";
import { Daemons, freeTcpPort, skipReason } from "../helpers/daemons";
import { alive, loops, mountsUnder, sweepConnections } from "../helpers/host";
import { bytesAt, sparseFile } from "../helpers/files";
import { readBlock, writeBlock } from "../helpers/block-io";

jest.setTimeout(120_000);

const MiB = 1024 * 1024;
const BLOCK = 4096;

function pattern(seed: string): Buffer {
  return Buffer.alloc(BLOCK, `${seed}:${Math.random()}|`);
}

/** What each protocol's suite hands the shared contract. */
interface Fixture {
  connector: Connector;
  stateDir: string;
  /** Where the written bytes land. */
  backingFile: string;
  connection(readOnly: boolean): Connection;
  /** Grow the volume to `sizeBytes` and make its target report it (what the controller does before extendVolume). */
  grow(sizeBytes: number): Promise<void>;
}

/** The checks every connector passes. */
function contract(name: string, setup: () => Promise<Fixture>, teardown: () => Promise<void>, extra?: (f: () => Fixture & { dir: string }) => void) {
  describe(name, () => {
    let fx: Fixture & { dir: string };
    beforeEach(async () => {
      const f = await setup();
      fx = { ...f, dir: path.dirname(f.stateDir) };
    });
    afterEach(async () => {
      await sweepConnections(fx.dir, fx.stateDir);
      await teardown();
    });

    test("connect gives a block device whose writes land in the backing store; connect again returns the same path", async () => {
      const c = fx.connection(false);
      const { path: dev } = await fx.connector.connectVolume(c);
      expect(dev).toMatch(/^\/dev\/loop\d+$/);
      expect(fs.statSync(dev).isBlockDevice()).toBe(true);
      const data = pattern(name);
      await writeBlock(dev, 3, data, fx.dir);
      expect(bytesAt(fx.backingFile, 3 * BLOCK, BLOCK).equals(data)).toBe(true);
      expect((await readBlock(dev, 3, fx.dir)).equals(data)).toBe(true);
      expect((await fx.connector.connectVolume(c)).path).toBe(dev);
      expect((await loops()).filter((l) => l.name === dev)).toHaveLength(1);
      // a loop device over a FUSE file does direct I/O (no second page cache, no 128 KiB readahead
      // split); one over a plain volume file is buffered (its readahead wins there: host.ts)
      const dio = JSON.parse((await run("losetup", ["--list", "--json", "-O", "NAME,DIO", dev])).stdout) as { loopdevices: Array<{ dio: unknown }> };
      expect([true, 1, "1"].includes(dio.loopdevices[0]?.dio as boolean)).toBe(c.protocol !== "local");
    });

    test("a read-only connection refuses writes and leaves the backing store alone", async () => {
      const before = pattern("before");
      fs.writeFileSync(fx.backingFile, before, { flag: "r+" });
      const { path: dev } = await fx.connector.connectVolume(fx.connection(true));
      expect((await loops()).find((l) => l.name === dev)?.ro).toBe(true);
      await expect(writeBlock(dev, 0, pattern("after"), fx.dir)).rejects.toThrow(/dd/);
      expect(bytesAt(fx.backingFile, 0, BLOCK).equals(before)).toBe(true);
      expect((await readBlock(dev, 0, fx.dir)).equals(before)).toBe(true);
    });

    test("getVolumePaths/getAllVolumePaths list the connection; a new connector on the same state folder finds it", async () => {
      const c = fx.connection(false);
      const { path: dev } = await fx.connector.connectVolume(c);
      const expected = { volumeId: c.volumeId, path: dev, protocol: c.protocol };
      expect(await fx.connector.getVolumePaths(c)).toEqual([expect.objectContaining(expected)]);
      expect(await fx.connector.getAllVolumePaths()).toEqual([expect.objectContaining(expected)]);
      const again = connectorFor(c.protocol, { stateDir: fx.stateDir, mode: "userspace" });
      expect(await again.getVolumePaths(c)).toEqual([expect.objectContaining(expected)]);
      expect((await again.connectVolume(c)).path).toBe(dev);
      expect(fx.connector.getSearchPath()).toBe(c.protocol === "local" ? "/dev" : fx.stateDir);
    });

    test("disconnect twice succeeds and leaves no loop device, mount or helper process", async () => {
      const c = fx.connection(false);
      const { path: dev } = await fx.connector.connectVolume(c);
      const rec = new RecordStore(fx.stateDir).read(c.volumeId, "rw");
      expect(rec?.device).toBe(dev);
      await fx.connector.disconnectVolume(c);
      await fx.connector.disconnectVolume(c);
      expect((await loops()).filter((l) => l.backFile === rec?.backingFile || l.backFile.startsWith(`${fx.dir}/`))).toEqual([]);
      expect(mountsUnder(fx.dir)).toEqual([]);
      expect(await alive(rec?.nbdfusePid, "nbdfuse")).toBe(false);
      expect(await alive(rec?.qemuNbdPid, "qemu-nbd")).toBe(false);
      expect(await fx.connector.getVolumePaths(c)).toEqual([]);
      expect(new RecordStore(fx.stateDir).list()).toEqual([]);
    });

    test("disconnect without force refuses a mounted device; with force it tears it down", async () => {
      const c = fx.connection(false);
      const { path: dev } = await fx.connector.connectVolume(c);
      await run("mkfs.ext4", ["-q", "-F", dev], { timeoutMs: 60_000 });
      const mnt = fs.mkdtempSync(path.join(fx.dir, "m-"));
      await run("mount", [dev, mnt]);
      try {
        await expect(fx.connector.disconnectVolume(c)).rejects.toThrow(/mounted/);
        expect((await fx.connector.getVolumePaths(c)).map((p) => p.path)).toEqual([dev]);
      } finally {
        await run("umount", [mnt]);
      }
      await fx.connector.disconnectVolume(c, { force: true });
      expect(await fx.connector.getVolumePaths(c)).toEqual([]);
    });

    test("extendVolume: the same device shows the grown volume; data written before still reads; the new end is writable", async () => {
      const c = fx.connection(false);
      const { path: dev } = await fx.connector.connectVolume(c);
      const host = new Host({ stateDir: fx.stateDir });
      expect(await host.deviceSize(dev)).toBe(16 * MiB);
      const early = pattern("early");
      await writeBlock(dev, 5, early, fx.dir);
      await fx.grow(32 * MiB);
      expect(await fx.connector.extendVolume(c)).toBe(32 * MiB);
      expect(await host.deviceSize(dev)).toBe(32 * MiB);
      expect((await fx.connector.getVolumePaths(c)).map((p) => p.path)).toEqual([dev]);
      expect((await readBlock(dev, 5, fx.dir)).equals(early)).toBe(true);
      const late = pattern("late");
      const lastBlock = (32 * MiB) / BLOCK - 1;
      await writeBlock(dev, lastBlock, late, fx.dir);
      expect(bytesAt(fx.backingFile, lastBlock * BLOCK, BLOCK).equals(late)).toBe(true);
      // again is success: it shows what the target reports
      expect(await fx.connector.extendVolume(c)).toBe(32 * MiB);
      // and disconnect leaves nothing (the replaced helpers are gone already)
      const rec = new RecordStore(fx.stateDir).read(c.volumeId, "rw");
      expect(rec?.extraLayers).toBeUndefined();
      await fx.connector.disconnectVolume(c);
      // Ours only: another suite running beside this one may take the freed /dev/loopN at once.
      expect((await loops()).filter((l) => l.backFile.startsWith(`${fx.dir}/`))).toEqual([]);
      expect(mountsUnder(fx.dir)).toEqual([]);
    });

    test("getAllVolumePaths reports an orphan loop device over a file in the connector's state folder", async () => {
      const sub = c0(fx).protocol === "local" ? fx.stateDir : path.join(fx.stateDir, c0(fx).protocol);
      fs.mkdirSync(sub, { recursive: true });
      const orphanFile = sparseFile(path.join(sub, "orphan.img"), MiB);
      const dev = (await run("losetup", ["-f", "--show", orphanFile])).stdout.trim();
      try {
        const all = await fx.connector.getAllVolumePaths();
        expect(all).toEqual([expect.objectContaining({ path: dev, protocol: c0(fx).protocol })]);
        expect(all[0].volumeId).toBeUndefined();
      } finally {
        await run("losetup", ["-d", dev]);
      }
    });

    extra?.(() => fx);
  });
}

function c0(fx: Fixture): Connection {
  return fx.connection(false);
}

/** Userspace paths reconnect to grow: a mounted device is refused, and grows once unmounted. */
function extendWhileMounted(fx: () => Fixture & { dir: string }): void {
  test("extendVolume of a mounted device is refused naming it (the size shows after the next reconnect); unmounted, it grows", async () => {
    const c = fx().connection(false);
    const { path: dev } = await fx().connector.connectVolume(c);
    await run("mkfs.ext4", ["-q", "-F", dev], { timeoutMs: 60_000 });
    const mnt = fs.mkdtempSync(path.join(fx().dir, "m-"));
    await run("mount", [dev, mnt]);
    fs.writeFileSync(path.join(mnt, "kept.txt"), "still here\n");
    await fx().grow(32 * MiB);
    try {
      const err = (await fx().connector.extendVolume(c).catch((e: unknown) => e)) as Error & { code?: string };
      expect(err.code).toBe("INVALID_STATE");
      expect(err.message).toContain(`${dev} is mounted on ${mnt}`);
      expect(err.message).toMatch(/after the next reconnect/);
      expect(fs.readFileSync(path.join(mnt, "kept.txt"), "utf8")).toBe("still here\n");
    } finally {
      await run("umount", [mnt]);
    }
    expect(await fx().connector.extendVolume(c)).toBe(32 * MiB);
    await run("mount", [dev, mnt]);
    try {
      expect(fs.readFileSync(path.join(mnt, "kept.txt"), "utf8")).toBe("still here\n");
    } finally {
      await run("umount", [mnt]);
    }
  });
}

const rootSkip = process.getuid?.() !== 0 ? "needs root (loop devices, FUSE mounts, daemons)" : undefined;

// ---------------------------------------------------------------------------------------------
// local

const localSkip = rootSkip ?? skipReason(["losetup", "dd", "mkfs.ext4"]);
if (localSkip) {
  test.skip(`local connector contract skipped: ${localSkip}`, () => undefined);
} else {
  let dir: string;
  contract(
    "LocalConnector",
    async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-conn-local-"));
      const stateDir = path.join(dir, "state");
      const file = sparseFile(path.join(dir, "vol.img"));
      return {
        connector: connectorFor("local", { stateDir }),
        stateDir,
        backingFile: file,
        connection: (readOnly) => ({ volumeId: "vol-local", protocol: "local", portals: [], exportName: file, readOnly }),
        grow: async (sizeBytes) => fs.truncateSync(file, sizeBytes),
      };
    },
    async () => fs.rmSync(dir, { recursive: true, force: true }),
  );
}

// ---------------------------------------------------------------------------------------------
// NBD, userspace

const nbdSkip = rootSkip ?? skipReason(["nbdkit", "nbdfuse", "losetup", "umount", "mkfs.ext4"]);
if (nbdSkip) {
  test.skip(`NBD connector contract skipped: ${nbdSkip}`, () => undefined);
} else {
  let dir: string;
  let nbdkitPid: number | undefined;
  contract(
    "NbdConnector (userspace: nbdfuse + loop)",
    async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-conn-nbd-"));
      const stateDir = path.join(dir, "state");
      const file = sparseFile(path.join(dir, "vol.img"));
      const port = await freeTcpPort();
      const pidFile = path.join(dir, "nbdkit.pid");
      await run("nbdkit", ["-p", String(port), "-i", "127.0.0.1", "-P", pidFile, "file", file], { timeoutMs: 30_000 });
      // nbdkit's parent can exit before the daemon writes its pidfile (and a reader can see it
      // empty, half written): wait for a pid in it.
      const pidIn = () => Number((fs.existsSync(pidFile) ? fs.readFileSync(pidFile, "utf8") : "").trim());
      for (let i = 0; i < 100 && !(pidIn() > 0); i++) await new Promise((r) => setTimeout(r, 50));
      nbdkitPid = pidIn();
      return {
        connector: connectorFor("nbd", { stateDir, mode: "userspace" }),
        stateDir,
        backingFile: file,
        // nbdkit's file plugin serves its one file under any export name
        connection: (readOnly) => ({ volumeId: "vol-nbd", protocol: "nbd", portals: [`127.0.0.1:${port}`], exportName: "vol", readOnly }),
        // nbdkit's file plugin opens the file per connection: new connections see the new size
        grow: async (sizeBytes) => fs.truncateSync(file, sizeBytes),
      };
    },
    async () => {
      if (nbdkitPid && (await alive(nbdkitPid, "nbdkit"))) procProcesses.kill(nbdkitPid, "SIGKILL");
      // and any nbdkit serving this test's file whose pid the pidfile did not give us
      for (const p of await procProcesses.list()) {
        if (path.basename(p.argv[0] ?? "") === "nbdkit" && p.argv.includes(path.join(dir, "vol.img"))) procProcesses.kill(p.pid, "SIGKILL");
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
    (fx) => extendWhileMounted(fx),
  );
}

// ---------------------------------------------------------------------------------------------
// iSCSI, userspace

const IQN = "iqn.2024-01.io.sds:conn-vol1";
const INITIATOR = "iqn.2024-01.io.sds:conn-host";
const CHAP = { username: "sdsconn", password: "Conn-Secret-77" };
const iscsiSkip = rootSkip ?? skipReason(["tgtd", "tgtadm", "qemu-nbd", "nbdfuse", "losetup", "umount", "mkfs.ext4"]);
if (iscsiSkip) {
  test.skip(`iSCSI connector contract skipped: ${iscsiSkip}`, () => undefined);
} else {
  let dir: string;
  let daemons: Daemons;
  let control: number;
  const tgtadm = (...args: string[]) => run("tgtadm", ["-C", String(control), "--lld", "iscsi", ...args], { timeoutMs: 30_000, secrets: [CHAP.password] });
  contract(
    "IscsiConnector (userspace: qemu-nbd/libiscsi + nbdfuse + loop)",
    async () => {
      daemons = new Daemons();
      dir = daemons.runDir("sds-conn-iscsi-");
      const stateDir = path.join(dir, "state");
      const file = sparseFile(path.join(dir, "vol.img"));
      const portal = `127.0.0.1:${await freeTcpPort()}`;
      control = await daemons.tgtControlPort();
      const tgt = new TgtTarget({ controlPort: control, portal, runDir: dir });
      await run("tgtd", ["-C", String(control), "--iscsi", `portal=${portal}`], { timeoutMs: 30_000 });
      const h = new Host({ stateDir });
      await h.waitUntil("tgtd", async () => (await tgtadm("--op", "show", "--mode", "portal").then(() => true, () => false)), 15_000);
      await tgtadm("--op", "new", "--mode", "target", "--tid", "1", "--targetname", IQN);
      await tgtadm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "--backing-store", file);
      await tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "--initiator-name", INITIATOR);
      await tgtadm("--op", "new", "--mode", "account", "--user", CHAP.username, "--password", CHAP.password);
      await tgtadm("--op", "bind", "--mode", "account", "--tid", "1", "--user", CHAP.username);
      return {
        connector: connectorFor("iscsi", { stateDir, mode: "userspace", initiator: INITIATOR }),
        stateDir,
        backingFile: file,
        connection: (readOnly) => ({
          volumeId: "vol-iscsi",
          protocol: "iscsi",
          portals: [portal],
          targetIqn: IQN,
          targetLun: 1,
          authMethod: "CHAP",
          authUsername: CHAP.username,
          authPassword: CHAP.password,
          readOnly,
        }),
        // tgtd read the size when the LUN was added: the controller refreshes the LUN
        grow: async (sizeBytes) => {
          fs.truncateSync(file, sizeBytes);
          await tgt.refreshLun(1, 1, file, false);
        },
      };
    },
    async () => {
      await tgtadm("--op", "delete", "--mode", "target", "--tid", "1", "--force").catch(() => undefined);
      await tgtadm("--op", "delete", "--mode", "system").catch(() => undefined);
      await daemons.cleanup(); // SIGKILLs a tgtd that did not exit, removes the run folder
    },
    (fx) => {
      extendWhileMounted(fx);

      test("a wrong CHAP password fails to connect, names no password, and leaves nothing behind", async () => {
        const c = { ...fx().connection(false), authPassword: "Wrong-Secret-1" } as Connection;
        const err = (await fx().connector.connectVolume(c).catch((e: Error) => e)) as Error;
        expect(err.message).toMatch(/qemu-nbd/);
        expect(err.message).not.toContain("Wrong-Secret-1");
        expect(new RecordStore(fx().stateDir).list()).toEqual([]);
        expect(await fx().connector.getAllVolumePaths()).toEqual([]);
        const leftovers = (await procProcesses.list()).filter((p) => ["qemu-nbd", "nbdfuse"].includes(path.basename(p.argv[0] ?? "")) && p.argv.some((a) => a.includes(fx().stateDir)));
        expect(leftovers).toEqual([]);
      });

      test("no CHAP password on disk or in any helper's argv while connected", async () => {
        const c = fx().connection(false);
        await fx().connector.connectVolume(c);
        const rec = new RecordStore(fx().stateDir).read(c.volumeId, "rw");
        const argv = (await procProcesses.argv(rec?.qemuNbdPid as number)) ?? [];
        expect(argv[0]).toMatch(/qemu-nbd$/);
        expect(argv.join(" ")).not.toContain(CHAP.password);
        const files = fs.readdirSync(fx().stateDir, { recursive: true }) as string[];
        for (const f of files.filter((n) => !n.startsWith("iscsi/mnt"))) {
          const p = path.join(fx().stateDir, f);
          if (fs.statSync(p).isFile()) expect(fs.readFileSync(p, "utf8")).not.toContain(CHAP.password);
        }
      });
    },
  );
}
