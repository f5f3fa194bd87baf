/**
 * Every helper a connector starts is recorded before it starts, and at start the orphans are
 * reaped (issue 12: after a SIGKILLed provider, a qemu-nbd leaked for good). Real daemons: a
 * child process (node) plays a provider killed in the middle of attaching: it starts, through the
 * same code as the connectors (exec/daemons.ts), a qemu-nbd and an nbdfuse over it that no
 * connection record names (the crash came before the record), a qemu-nbd that a connection
 * record names (a live device), and one more qemu-nbd that then dies; and it is SIGKILLed. A
 * second child, alive, has a qemu-nbd of its own starting. Then `reapOrphans` (what
 * reconcileExports runs at start): the orphans are stopped (the FUSE mount with them), the dead
 * daemon's record goes, the helper a device uses and the one whose starter still runs stay. The
 * provider's reconciliation at start (reconcileExports) reaps and reports the same way, and an
 * sds-agent started on a folder a killed one left reaps before it listens.
 * Needs root (FUSE), qemu-nbd and nbdfuse.
 */
import { type ChildProcess, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runAgent } from "../../provider/src/agent/run-agent";
import { NbdConnector } from "../../provider/src/connectors/nbd-connector";
import type { AttachmentCore } from "../../provider/src/controller/attachment-core";
import { reconcileExports } from "../../provider/src/controller/reconcile-exports";
import { DaemonRecords } from "../../provider/src/exec/daemons";
import { procProcesses } from "../../provider/src/exec/processes";
import { skipReason } from "../helpers/daemons";
import { startScriptChild } from "../helpers/script-child";

const skip = skipReason(["qemu-nbd", "nbdfuse"]);
const suite = skip ? describe.skip : describe;
if (skip) test.skip(`daemon reaping skipped: ${skip}`, () => undefined);

/**
 * The child, as a provider would start helpers (records first): role `crashed` starts `orphan`
 * (qemu-nbd) + `fuse` (nbdfuse over it), `used` (qemu-nbd, named by a connection record) and
 * `dead` (qemu-nbd); role `live` starts `live` (qemu-nbd). Writes the pids to <dir>/<role>.json,
 * says "ready" and waits to be killed.
 */
const childScript = `
const fs = require("node:fs");
const path = require("node:path");
const { DaemonRecords, recordDaemon, startDaemon } = require("./provider/src/exec/daemons");
const { run } = require("./provider/src/exec/run");
const { spawnDetached, waitUntil } = require("./provider/src/exec/processes");
const { RecordStore } = require("./provider/src/connectors/records");
const dir = process.env.SDS_TEST_DIR;
const role = process.env.SDS_TEST_ROLE;
const daemons = new DaemonRecords(path.join(dir, "daemons"));
const runDir = path.join(dir, "run");
fs.mkdirSync(runDir, { recursive: true });
const pids = {};
async function qemu(name) {
  const image = path.join(dir, name + ".img");
  fs.writeFileSync(image, "");
  fs.truncateSync(image, 1 << 20);
  const pidFile = path.join(runDir, name + ".qemu-nbd.pid");
  const socket = path.join(runDir, name + ".sock");
  const record = await startDaemon(run, daemons, { kind: "qemu-nbd", name, file: "qemu-nbd", args: ["--fork", "--persistent", "--pid-file", pidFile, "-k", socket, "-f", "raw", image], pidFile, socket }, { timeoutMs: 30000 });
  pids[name] = Number(fs.readFileSync(pidFile, "utf8").trim());
  daemons.write({ ...record, pid: pids[name] });
  return socket;
}
(async () => {
  if (role === "crashed") {
    const socket = await qemu("orphan");
    const mountDir = path.join(dir, "mnt", "orphan");
    fs.mkdirSync(mountDir, { recursive: true });
    const pidFile = path.join(runDir, "fuse.nbdfuse.pid");
    const args = ["-P", pidFile, path.join(mountDir, "disk"), "--unix", socket];
    recordDaemon(daemons, { kind: "nbdfuse", name: "fuse", file: "nbdfuse", args, pidFile, mountDir });
    await spawnDetached("nbdfuse", args, { logFile: path.join(runDir, "fuse.log") });
    await waitUntil("nbdfuse to serve", async () => fs.existsSync(pidFile) && fs.existsSync(path.join(mountDir, "disk")), 20000);
    pids.fuse = Number(fs.readFileSync(pidFile, "utf8").trim());
    pids.mountDir = mountDir;
    const usedSocket = await qemu("used");
    new RecordStore(dir).write({ volumeId: "vol-used", protocol: "nbd", mode: "rw", via: "userspace", device: "/dev/loop-none", qemuNbdPid: pids.used, socket: usedSocket, createdAt: new Date().toISOString() });
    await qemu("dead");
  } else if (role === "agent") {
    await qemu("agent-orphan");
  } else if (role === "provider") {
    await qemu("provider-orphan");
  } else {
    await qemu("live");
  }
  fs.writeFileSync(path.join(dir, role + ".json"), JSON.stringify(pids));
  process.stdout.write("ready\\n");
  setInterval(() => undefined, 1 << 30);
})().catch((err) => { process.stderr.write(String((err && err.stack) || err) + "\\n"); process.exit(1); });
`;

const alive = async (pid: number) => (await procProcesses.argv(pid)) !== undefined;
const mounted = (dir: string) => fs.readFileSync("/proc/mounts", "utf8").split("\n").some((l) => l.split(" ")[1] === dir);

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
}

suite("helpers recorded before they start; orphans reaped at start (real qemu-nbd, nbdfuse)", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-reap-"));
  const children: ChildProcess[] = [];
  const started: number[] = [];
  const pidsOf = (role: string) => JSON.parse(fs.readFileSync(path.join(dir, `${role}.json`), "utf8")) as Record<string, number> & { mountDir: string };

  afterAll(async () => {
    for (const c of children) await kill(c);
    // Only what this test started: the pids its children wrote down, if they still run our helpers.
    for (const pid of started) {
      const argv = await procProcesses.argv(pid);
      if (argv && ["qemu-nbd", "nbdfuse"].includes(path.basename(argv[0]))) process.kill(pid, "SIGKILL");
    }
    const mnt = path.join(dir, "mnt", "orphan");
    if (mounted(mnt)) execFileSync("umount", ["-l", mnt]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("a crashed starter's unused helpers are stopped, a dead one's record dropped; a device's helper and a live starter's are left", async () => {
    const crashed = await startScriptChild(childScript, { SDS_TEST_DIR: dir, SDS_TEST_ROLE: "crashed" }, "ready");
    children.push(crashed);
    const p = pidsOf("crashed");
    started.push(p.orphan, p.fuse, p.used, p.dead);
    await kill(crashed); // the provider, killed in the middle of its work
    process.kill(p.dead, "SIGKILL");
    for (let i = 0; i < 100 && (await alive(p.dead)); i++) await new Promise((r) => setTimeout(r, 20));
    const live = await startScriptChild(childScript, { SDS_TEST_DIR: dir, SDS_TEST_ROLE: "live" }, "ready");
    children.push(live);
    const l = pidsOf("live");
    started.push(l.live);
    expect(mounted(p.mountDir)).toBe(true);
    const records = new DaemonRecords(path.join(dir, "daemons"));
    expect(records.list().map((r) => r.name)).toEqual(["fuse", "dead", "live", "orphan", "used"]);

    const connector = new NbdConnector({ stateDir: dir });
    const r = await connector.reapOrphans();
    expect(r.stopped.sort()).toEqual([`nbdfuse fuse (pid ${p.fuse})`, `qemu-nbd orphan (pid ${p.orphan})`]);
    expect(r.removed).toEqual(["qemu-nbd dead"]);
    expect(await alive(p.orphan)).toBe(false);
    expect(await alive(p.fuse)).toBe(false);
    expect(mounted(p.mountDir)).toBe(false);
    expect(fs.existsSync(path.join(dir, "run", "orphan.sock"))).toBe(false);
    expect(fs.existsSync(path.join(dir, "run", "dead.qemu-nbd.pid"))).toBe(false);
    // Left: the helper a device uses, and the one whose starter still runs.
    expect(await alive(p.used)).toBe(true);
    expect(await alive(l.live)).toBe(true);
    expect(records.list().map((x) => x.name)).toEqual(["live", "used"]);

    // Its starter gone too, the live one's helper is an orphan as well; the device's stays.
    await kill(live);
    const again = await connector.reapOrphans();
    expect(again).toEqual({ stopped: [`qemu-nbd live (pid ${l.live})`], removed: [] });
    expect(await alive(l.live)).toBe(false);
    expect(await alive(p.used)).toBe(true);
    expect(records.list().map((x) => x.name)).toEqual(["used"]);
  }, 120_000);

  test("the provider's reconciliation at start reaps through the local connector, and reports what it stopped", async () => {
    const killed = await startScriptChild(childScript, { SDS_TEST_DIR: dir, SDS_TEST_ROLE: "provider" }, "ready");
    children.push(killed);
    const p = pidsOf("provider");
    started.push(p["provider-orphan"]);
    await kill(killed);
    const connector = new NbdConnector({ stateDir: dir });
    // A state with no exports and no backends: reconciliation has only the reaping to do.
    const core = {
      stateTag: async () => "t0",
      store: { listTargets: async () => [], listAttachments: async () => [] },
      controller: { backendConfigs: () => [] },
      hostConnector: (host: string) => (host === "localhost" ? connector : undefined),
    } as unknown as AttachmentCore;
    const r = await reconcileExports(core);
    expect(r.reaped).toEqual([`stopped qemu-nbd provider-orphan (pid ${p["provider-orphan"]}), which no device used`]);
    expect(await alive(p["provider-orphan"])).toBe(false);
    expect(await alive(pidsOf("crashed").used)).toBe(true);
  }, 120_000);

  test("an agent reaps at start what its killed predecessor left, and says so", async () => {
    const killed = await startScriptChild(childScript, { SDS_TEST_DIR: dir, SDS_TEST_ROLE: "agent" }, "ready");
    children.push(killed);
    const p = pidsOf("agent");
    started.push(p["agent-orphan"]);
    await kill(killed);
    const tokenFile = path.join(dir, "token");
    fs.writeFileSync(tokenFile, "t".repeat(32), { mode: 0o600 });
    const lines: string[] = [];
    const factory = () => {
      throw new Error("no connector is needed to reap");
    };
    const agent = await runAgent(["--listen", "127.0.0.1:0", "--token-file", tokenFile, "--state-dir", dir], { version: "test", log: (l) => lines.push(l), factory });
    try {
      expect(lines[0]).toBe(`sds-agent: stopped qemu-nbd agent-orphan (pid ${p["agent-orphan"]}), which no device used (left by a crash)`);
      expect(await alive(p["agent-orphan"])).toBe(false);
      expect(await alive(pidsOf("crashed").used)).toBe(true); // a device's helper: never
    } finally {
      await agent?.close();
    }
  }, 120_000);
});
