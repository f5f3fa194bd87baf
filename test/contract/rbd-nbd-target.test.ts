/**
 * The NBD target contract on RBD volumes: QemuNbdTarget (one qemu-nbd per server, serving an
 * image through librbd) against a real single-node Ceph (test/helpers/ceph.ts), as root. Data
 * goes through a real NBD client (qemu-io / nbdinfo over nbd://) and is checked through librbd
 * (`qemu-io -f raw rbd:…`, the volume path itself: the conf names the monitors and the keyring).
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as net from "node:net";
import * as path from "node:path";
import { formatRbdPath } from "../../provider/src/domain/rbd-path";
import { procProcesses } from "../../provider/src/exec/processes";
import { run } from "../../provider/src/exec/run";
import { daemonCensus, stopUnusedDaemons } from "../../provider/src/controller/daemon-census";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import { localRbdTargets, localTargets } from "../../provider/src/targets/local-targets";
import { QemuNbdTarget } from "../../provider/src/targets/qemu-nbd-target";
import { type CephCluster, cephSkipReason, startCeph } from "../helpers/ceph";
import { freeTcpPort, skipReason } from "../helpers/daemons";

jest.setTimeout(120_000);

const MiB = 1024 * 1024;
const POOL = "sds";

const skip = cephSkipReason() ?? skipReason(["qemu-nbd", "qemu-io", "nbdinfo"]);

/** qemu-io on export `name` of the NBD server on `port`. */
function nbdIo(port: number, name: string, readOnly: boolean, ...commands: string[]) {
  return run("qemu-io", [...(readOnly ? ["-r"] : []), "-f", "raw", `nbd://127.0.0.1:${port}/${name}`, ...commands.flatMap((c) => ["-c", c])], { timeoutMs: 60_000 });
}

/** qemu-io on the RBD image through librbd, the volume path as qemu's filename. */
function rbdIo(rbdPath: string, ...commands: string[]) {
  return run("qemu-io", ["-f", "raw", rbdPath, ...commands.flatMap((c) => ["-c", c])], { timeoutMs: 60_000 });
}

async function nbdSize(port: number, name: string): Promise<number> {
  return Number((await run("nbdinfo", ["--size", `nbd://127.0.0.1:${port}/${name}`], { timeoutMs: 30_000 })).stdout.trim());
}

/** qemu-nbd processes started with a pidfile in `dir` (this test's). */
async function qemuNbdsOf(dir: string): Promise<Array<{ pid: number; argv: string[] }>> {
  return (await procProcesses.list()).filter((p) => path.basename(p.argv[0] ?? "") === "qemu-nbd" && p.argv.some((a) => a.startsWith(`--pid-file=${dir}/`)));
}

test("a server's qemu-nbd argv: its export by name, its port, --cache=none, read-only when asked, the RBD path last", () => {
  const t = new QemuNbdTarget({ host: "127.0.0.1", runDir: "/run/sds" });
  const vol = "rbd:p/i:id=sds:conf=/run/sds/rbd/c.conf";
  expect(t.argv("s1", { port: 10811, readOnly: true, export: { name: "vol-1", path: vol } })).toEqual([
    "--fork",
    "--pid-file=/run/sds/qemu-nbd/s1.pid",
    "--persistent",
    "--shared=16",
    "--export-name",
    "vol-1",
    "--bind",
    "127.0.0.1",
    "--port",
    "10811",
    "--format=raw",
    "--cache=none",
    "--read-only",
    vol,
  ]);
});

test("a file path is refused (nbdkit serves files), before anything runs", async () => {
  const dir = fs.mkdtempSync("/tmp/sds-qemu-nbd-unit-");
  try {
    const t = new QemuNbdTarget({ host: "127.0.0.1", runDir: dir, run: () => Promise.reject(new Error("nothing may run")) });
    await t.ensureServer("s1", 10811, false);
    await expect(t.ensureExport("s1", "vol-1", "/srv/pool/vol-1")).rejects.toThrow(/qemu-nbd exports serve RBD volume paths/);
    await expect(t.ensureExport("nope", "vol-1", "rbd:p/i:id=a:conf=/c")).rejects.toThrow(/does not exist/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("ensureServer: a wished port another program holds is skipped for the next free one, remembered until qemu-nbd runs", async () => {
  const dir = fs.mkdtempSync("/tmp/sds-qemu-nbd-unit-");
  const held = net.createServer();
  try {
    const port = await freeTcpPort();
    await new Promise<void>((resolve) => held.listen(port, "127.0.0.1", resolve));
    const t = new QemuNbdTarget({ host: "127.0.0.1", runDir: dir, run: () => Promise.reject(new Error("nothing may run")) });
    const got = await t.ensureServer("s1", port, true);
    expect(got).toBeGreaterThan(port);
    expect(await t.ensureServer("s1", port, true)).toBe(got);
    expect(JSON.parse(fs.readFileSync(path.join(dir, "qemu-nbd", "s1.json"), "utf8"))).toEqual({ port: got, readOnly: true });
    expect(await t.list()).toEqual([]); // a wish serves nothing yet
  } finally {
    held.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

if (skip) {
  test.skip(`NbdTarget on RBD skipped: ${skip}`, () => undefined);
} else {
  describe("NbdTarget: QemuNbdTarget on RBD images", () => {
    let ceph: CephCluster;
    let target: QemuNbdTarget;
    let dir: string;
    let n = 0;
    let image: string;
    let vol: string;

    let work: string;

    beforeAll(async () => {
      work = fs.mkdtempSync(path.join(os.tmpdir(), "sds-rbd-nbd-"));
      ceph = await startCeph({ dir: work });
      await ceph.pool(POOL);
    }, 180_000);
    afterAll(async () => {
      await ceph?.stop();
      fs.rmSync(work, { recursive: true, force: true });
    }, 120_000);

    beforeEach(async () => {
      dir = fs.mkdtempSync(path.join(work, "run-"));
      target = new QemuNbdTarget({ host: "127.0.0.1", runDir: dir });
      image = `vol-${++n}`;
      await ceph.rbd(["create", `${POOL}/${image}`, "--size", "16M"]);
      vol = formatRbdPath({ cephPool: POOL, image, user: ceph.user, conf: ceph.conf });
    });
    afterEach(async () => {
      for (const p of await qemuNbdsOf(dir)) procProcesses.kill(p.pid, "SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    });

    test("ensure twice is idempotent; list asks the live process; a second export on a server is a conflict", async () => {
      const port = await target.ensureServer("s-rw", await freeTcpPort(), false);
      await target.ensureExport("s-rw", "vol", vol);
      expect(await target.ensureServer("s-rw", port + 7, false)).toBe(port);
      await target.ensureExport("s-rw", "vol", vol);
      const procs = await qemuNbdsOf(dir);
      expect(procs).toHaveLength(1);
      const want = [{ server: "s-rw", port, readOnly: false, pid: procs[0]!.pid, exports: [{ name: "vol", path: vol }] }];
      expect(await target.list()).toEqual(want);
      expect(await new QemuNbdTarget({ host: "127.0.0.1", runDir: dir }).list()).toEqual(want);
      expect(await nbdSize(port, "vol")).toBe(16 * MiB);
      await expect(target.ensureExport("s-rw", "other", vol)).rejects.toThrow(/serves one export/);
      await expect(target.ensureServer("s-rw", port, true)).rejects.toThrow(/already runs/);
      // Its qemu-nbd dies: list no longer reports it, and ensure starts it again on its port.
      procProcesses.kill(procs[0]!.pid, "SIGKILL");
      await new Promise((r) => setTimeout(r, 300));
      expect(await target.list()).toEqual([]);
      expect(await target.ensureServer("s-rw", port, false)).toBe(port);
      await target.ensureExport("s-rw", "vol", vol);
      expect((await target.list()).map((s) => s.port)).toEqual([port]);
    });

    test("data written over NBD reads back through librbd, and back again", async () => {
      const port = await target.ensureServer("s-rw", await freeTcpPort(), false);
      await target.ensureExport("s-rw", "vol", vol);
      await nbdIo(port, "vol", false, "write -P 0xab 0 1M", "flush");
      expect((await rbdIo(vol, "read -P 0xab 0 1M")).stdout).toMatch(/read 1048576\/1048576 bytes/);
      expect((await rbdIo(vol, `read -P 0x00 ${MiB} 1M`)).stdout).toMatch(/read 1048576\/1048576 bytes/);
      await rbdIo(vol, `write -P 0xcd ${2 * MiB} 64k`);
      expect((await nbdIo(port, "vol", false, `read -P 0xcd ${2 * MiB} 64k`)).stdout).toMatch(/read 65536\/65536 bytes/);
    });

    test("a read-only server of the same image serves what the rw server wrote and refuses writes", async () => {
      const rw = await target.ensureServer("s-rw", await freeTcpPort(), false);
      await target.ensureExport("s-rw", "vol", vol);
      const ro = await target.ensureServer("s-ro", await freeTcpPort(), true);
      await target.ensureExport("s-ro", "vol", vol);
      expect(ro).not.toBe(rw);
      await nbdIo(rw, "vol", false, "write -P 0x5a 0 256k", "flush");
      expect((await nbdIo(ro, "vol", true, "read -P 0x5a 0 256k")).stdout).toMatch(/read 262144\/262144 bytes/);
      // Opened read-write by the client: the server refuses (qemu-io fails to open, or the write fails).
      const write = await nbdIo(ro, "vol", false, "write -P 0x11 0 4k").then(
        (r) => `${r.stdout}${r.stderr}`,
        (err: Error) => err.message,
      );
      expect(write).toMatch(/read-only|Operation not permitted|Permission denied/i);
      expect((await rbdIo(vol, "read -P 0x5a 0 4k")).stdout).toMatch(/read 4096\/4096 bytes/);
      expect((await target.list()).map((s) => [s.server, s.readOnly])).toEqual([
        ["s-ro", true],
        ["s-rw", false],
      ]);
    });

    test("refresh after rbd resize: a new connection sees the new size, on the same port, data kept", async () => {
      const port = await target.ensureServer("s-rw", await freeTcpPort(), false);
      await target.ensureExport("s-rw", "vol", vol);
      await nbdIo(port, "vol", false, "write -P 0x77 0 64k", "flush");
      await ceph.rbd(["resize", `${POOL}/${image}`, "--size", "32M"]);
      expect(await nbdSize(port, "vol")).toBe(16 * MiB); // qemu-nbd read the size at start
      await target.refreshExport("s-rw", "vol", vol);
      expect(await nbdSize(port, "vol")).toBe(32 * MiB);
      expect((await nbdIo(port, "vol", false, "read -P 0x77 0 64k")).stdout).toMatch(/read 65536\/65536 bytes/);
      await expect(target.refreshExport("s-rw", "nope", vol)).rejects.toThrow(/has no export/);
      expect(await qemuNbdsOf(dir)).toHaveLength(1);
    });

    test("remove stops qemu-nbd and releases the image: rbd rm works after; removing again is success", async () => {
      const port = await target.ensureServer("s-rw", await freeTcpPort(), false);
      await target.ensureExport("s-rw", "vol", vol);
      await target.removeExport("s-rw", "vol");
      expect(await qemuNbdsOf(dir)).toEqual([]);
      expect(await target.list()).toEqual([]);
      // The server is still remembered: the export can come back on its port.
      expect(await target.ensureServer("s-rw", port, false)).toBe(port);
      await target.ensureExport("s-rw", "vol", vol);
      await target.removeServer("s-rw");
      await target.removeServer("s-rw");
      await target.removeExport("s-rw", "vol");
      expect(await qemuNbdsOf(dir)).toEqual([]);
      expect(fs.readdirSync(path.join(dir, "qemu-nbd"))).toEqual([]);
      await ceph.rbd(["rm", `${POOL}/${image}`]);
    });

    test("qemu-nbd outlives the process that started it (its process group killed, as the engine stops its plugin); sds targets stop ends it once this state does not know it", async () => {
      const port = await freeTcpPort();
      const dist = path.resolve(__dirname, "../../provider/dist/targets/qemu-nbd-target.js");
      const code = `const { QemuNbdTarget } = require(${JSON.stringify(dist)});
        (async () => {
          const t = new QemuNbdTarget({ host: "127.0.0.1", runDir: ${JSON.stringify(dir)} });
          await t.ensureServer("s-rw", ${port}, false);
          await t.ensureExport("s-rw", "vol", ${JSON.stringify(vol)});
          process.stdout.write("ready\\n");
          setInterval(() => undefined, 1000);
        })().catch((e) => { console.error(e); process.exit(1); });`;
      const child = spawn(process.execPath, ["-e", code], { detached: true, stdio: ["ignore", "pipe", "inherit"] });
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
        child.once("exit", (c) => reject(new Error(`child exited ${c} before ready (is provider/dist built? npx tsc -p tsconfig.json)`)));
      });
      const exited = new Promise((r) => child.once("exit", r));
      process.kill(-child.pid!, "SIGTERM");
      await exited;
      expect(await qemuNbdsOf(dir)).toHaveLength(1);
      expect(await nbdSize(port, "vol")).toBe(16 * MiB);
      expect((await target.list()).map((s) => s.server)).toEqual(["s-rw"]);
      // `sds targets stop`: a server of this state (tag "s") that the state does not know, whose
      // starter is gone, is stopped through the rbd targets; the same call leaves it while known.
      const store = new SqliteStore(path.join(dir, "state.db"));
      try {
        const stop = () => stopUnusedDaemons({ store, runDir: dir, targets: localTargets(dir), rbdTargets: localRbdTargets(dir, localTargets(dir)), stateTag: "s" });
        expect((await daemonCensus({ runDir: dir })).map((d) => [d.kind, d.name, d.running, d.detail])).toEqual([["qemu-nbd-export", "s-rw", true, `127.0.0.1:${port}`]]);
        expect(await stop()).toEqual({ stopped: [expect.stringMatching(/^qemu-nbd-export s-rw \(pid \d+\)$/)], removed: [], kept: [] });
      } finally {
        await store.close();
      }
      expect(await qemuNbdsOf(dir)).toEqual([]);
      expect(await target.list()).toEqual([]);
    });
  });
}
