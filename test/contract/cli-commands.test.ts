/**
 * The `sds` operator CLI (provider/src/cli/) run as operators run it (provider/bin/sds on the
 * compiled dist: `npm run build` first), in the folder of a Pulumi project, on one state made
 * by the real controller (compose/, as `pulumi up` makes it): two volumes on a file backend
 * exporting over NBD (a real nbdkit), one replicated to a second backend, one on a local
 * backend connected on this machine (a real loop device), an attachment to a host that is gone,
 * and a real sds-agent as host `node1`. Every listing command is checked as a table and as
 * JSON; `targets stop` stops a stray NBD server of this state and leaves the one in use;
 * `doctor` finds the stray and a lost export; `force-detach` removes the gone host's
 * attachment; and the misconfigurations exit 2 with one line (no state in the folder, and no
 * state file made; no backends; nothing to sync; unknown host and attachment). `--help` exits 0
 * on every command.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Composition } from "../../provider/src/compose/composition";
import { resolveProviderConfig } from "../../provider/src/controller/config";
import { DaemonRecords } from "../../provider/src/exec/daemons";
import { procProcesses } from "../../provider/src/exec/processes";
import { NbdkitTarget } from "../../provider/src/targets/nbdkit-target";
import { TgtTarget } from "../../provider/src/targets/tgt-target";
import { freeTcpPort, skipReason } from "../helpers/daemons";
import { repoRoot } from "../helpers/provider-process";
import { sdsCli } from "../helpers/sds-cli";

jest.setTimeout(180_000);
const why = skipReason(["nbdkit", "tgtd", "losetup"]);
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const TOKEN = "cli-test-agent-token-0123456789";
let dir: string;
let agent: ChildProcess | undefined;
let nbdPort: number;
const ids: Record<string, string> = {};
const sds = (args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) => sdsCli(args, { built: true, cwd: o.cwd ?? dir, env: o.env });
const alive = async (pid: number) => (await procProcesses.argv(pid)) !== undefined;

function compose(): Composition {
  const raw = { backendsFile: "backends.yaml", hosts: { node1: { url: `http://127.0.0.1:${agentPort}` } }, agentToken: TOKEN };
  return new Composition(resolveProviderConfig(raw, dir, {}), () => undefined);
}
let agentPort: number;

suite("sds operator CLI on one state", () => {
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-cli-"));
    nbdPort = await freeTcpPort();
    agentPort = await freeTcpPort();
    fs.writeFileSync(path.join(dir, "Pulumi.yaml"), "name: cli\nruntime: nodejs\n");
    fs.writeFileSync(
      path.join(dir, "Pulumi.dev.yaml"),
      `config:\n  sds:backendsFile: backends.yaml\n  sds:agentToken: ${TOKEN}\n  sds:hosts:\n    node1:\n      url: http://127.0.0.1:${agentPort}\n`,
    );
    fs.writeFileSync(
      path.join(dir, "backends.yaml"),
      [
        "backends:",
        "  - name: main",
        "    driver: file",
        `    export: {protocol: nbd, portal: "127.0.0.1:${nbdPort}"}`,
        "    replicationTargets: [{backend: dr}]",
        "    pools: [{name: p0, path: pools/main, totalCapacityGib: 20, multiAttach: true, replication: async}]",
        "  - name: dr",
        "    driver: file",
        "    pools: [{name: p0, path: pools/dr, totalCapacityGib: 10}]",
        "  - name: loc",
        "    driver: file",
        "    pools: [{name: p0, path: pools/loc, totalCapacityGib: 5}]",
        "",
      ].join("\n"),
    );
    fs.writeFileSync(path.join(dir, "agent.token"), TOKEN, { mode: 0o600 });
    agent = spawn(path.join(repoRoot, "provider/bin/sds-agent"), ["--listen", `127.0.0.1:${agentPort}`, "--token-file", path.join(dir, "agent.token"), "--state-dir", path.join(dir, "agent-state")], { stdio: ["ignore", "ignore", "pipe"] });
    const listening = new Promise<void>((resolve, reject) => {
      agent!.stderr!.on("data", (d) => String(d).includes("listening") && resolve());
      agent!.on("exit", (c) => reject(new Error(`sds-agent exited ${c}`)));
    });

    const parts = compose();
    try {
      await parts.allowWrites();
      const c = await parts.controller();
      const urn = (type: string, name: string) => `urn:pulumi:dev::cli::sds:index:${type}::${name}`;
      const spec = { description: "", metadata: {} };
      const profile = await c.createProfile(urn("Profile", "gold"), { name: "gold", description: "", storageType: "block", extraSpecs: {} });
      ids.data = (await c.createVolume(urn("Volume", "data"), { name: "data", sizeGib: 2, profile: profile.id, ...spec })).id;
      ids.logs = (await c.createVolume(urn("Volume", "logs"), { name: "logs", sizeGib: 1, placeOn: { backend: "main" }, ...spec })).id;
      ids.scratch = (await c.createVolume(urn("Volume", "scratch"), { name: "scratch", sizeGib: 1, placeOn: { backend: "loc" }, ...spec })).id;
      const r = await parts.replication();
      ids.pair = (await r.create(urn("ReplicationPair", "data-dr"), { primaryVolumeId: ids.data, targetBackend: "dr", rpoSeconds: 3600, enabled: true, activeSide: "primary" })).id;
      const a = await parts.attachments();
      ids.attWeb = (await a.attach(urn("Attachment", "data-web"), { volumeId: ids.data, host: "localhost", mode: "rw" })).row.id;
      ids.attGone = (await a.attach(urn("Attachment", "logs-old"), { volumeId: ids.logs, host: "old-hypervisor", mode: "rw" })).row.id;
      ids.attLoop = (await a.attach(urn("Attachment", "scratch-here"), { volumeId: ids.scratch, host: "localhost", mode: "rw", connect: true })).row.id;
      ids.tag = await a.stateTag();
    } finally {
      await parts.close();
    }
    await listening;
  });

  afterAll(async () => {
    if (dir && fs.existsSync(path.join(dir, ".sds/state.db"))) {
      const parts = compose();
      try {
        await parts.allowWrites();
        const a = await parts.attachments();
        for (const id of [ids.attLoop, ids.attWeb, ids.attGone]) if (id) await a.detach(id, { force: true }).catch(() => undefined);
      } finally {
        await parts.close();
      }
      // Whatever a failed test left running: every daemon recorded in this state's run folder.
      const runDir = path.join(dir, ".sds/run");
      for (const rec of new DaemonRecords(path.join(runDir, "daemons")).list()) {
        if (rec.kind === "nbdkit") await new NbdkitTarget({ host: "127.0.0.1", runDir }).removeServer(rec.name).catch(() => undefined);
        const portal = rec.argv.find((a) => a.startsWith("portal="))?.slice("portal=".length);
        if (rec.kind === "tgtd" && portal) await new TgtTarget({ controlPort: Number(rec.name), portal, runDir }).stop().catch(() => undefined);
      }
    }
    agent?.kill("SIGTERM");
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test("pools: capabilities and capacity, as a table and as JSON", async () => {
    const t = await sds(["pools"]);
    expect(t.stderr).toBe("");
    expect(t.status).toBe(0);
    const lines = t.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^POOL\s+AZ\s+TYPE\s+MULTIATTACH\s+REPLICATION\s+PROVISIONING\s+TOTAL_GIB\s+FREE_GIB\s+PROVISIONED_GIB\s+VOLUMES$/);
    expect(lines.find((l) => l.startsWith("main/p0"))).toMatch(/^main\/p0\s+\S+\s+\S+\s+yes\s+async\s+thin\s+20\s+\S+\s+3\s+2$/);
    expect(lines.find((l) => l.startsWith("dr/p0"))).toMatch(/\s+10\s+\S+\s+2\s+1$/);
    const j = JSON.parse((await sds(["pools", "--json"])).stdout);
    expect(j).toHaveLength(3);
    expect(j.find((p: { id: string }) => p.id === "main/p0")).toMatchObject({ backend: "main", pool: "p0", multiAttach: true, replication: "async", totalGib: 20, provisionedGib: 3, volumes: 2 });
  });

  test("volumes and attachments: tables and JSON", async () => {
    const v = await sds(["volumes"]);
    expect(v.status).toBe(0);
    expect(v.stdout).toMatch(/^NAME\s+ID\s+SIZE_GIB\s+STATUS\s+POOL\s+PROFILE\s+MULTIATTACH\s+REPLICATION\s+ATTACHMENTS\n/);
    expect(v.stdout).toMatch(new RegExp(`\\ndata\\s+${ids.data}\\s+2\\s+in-use\\s+main/p0\\s+gold\\s+no\\s+enabled\\s+1\\n`));
    const vj = JSON.parse((await sds(["volumes", "--json"])).stdout);
    expect(vj.find((x: { id: string }) => x.id === ids.data)).toEqual(
      expect.objectContaining({ name: "data", sizeGib: 2, status: "in-use", pool: "main/p0", backend: "main", profile: "gold", replicationStatus: "enabled", attachments: 1 }),
    );
    // The fourth is the pair's secondary, on dr.
    expect(vj).toHaveLength(4);
    expect(vj.map((x: { name: string }) => x.name)).toEqual(expect.arrayContaining(["data", "logs", "scratch"]));

    const a = await sds(["attachments"]);
    expect(a.status).toBe(0);
    expect(a.stdout).toMatch(/^ID\s+VOLUME\s+HOST\s+MODE\s+PROTOCOL\s+STATUS\s+DEVICE\s+TARGET\n/);
    expect(a.stdout).toMatch(new RegExp(`${ids.attLoop}\\s+scratch\\s+localhost\\s+rw\\s+local\\s+attached\\s+/dev/loop\\d+\\s+-\\n`));
    expect(a.stdout).toMatch(new RegExp(`${ids.attGone}\\s+logs\\s+old-hypervisor\\s+rw\\s+nbd\\s+attached\\s+-\\s+${ids.tag}-main-rw\\n`));
    const aj = JSON.parse((await sds(["attachments", "--json"])).stdout);
    expect(aj.find((x: { id: string }) => x.id === ids.attWeb)).toMatchObject({ volumeId: ids.data, volume: "data", host: "localhost", mode: "rw", protocol: "nbd", status: "attached", target: `${ids.tag}-main-rw` });
  });

  test("paths: this machine's devices, and a host's through its agent; an unknown host exits 2", async () => {
    const here = await sds(["paths", "--host", "localhost", "scratch"]);
    expect(here.status).toBe(0);
    expect(here.stdout).toMatch(/^VOLUME\s+PATH\s+PROTOCOL\s+VIA\nscratch\s+\/dev\/loop\d+\s+local\s+loop\n$/);
    const hj = JSON.parse((await sds(["paths", "--host", "localhost", "--json", ids.scratch])).stdout);
    expect(hj).toEqual([{ host: "localhost", volumeId: ids.scratch, volume: "scratch", path: expect.stringMatching(/^\/dev\/loop\d+$/), protocol: "local", via: "loop" }]);
    const node = await sds(["paths", "--host", "node1"]);
    expect(node).toMatchObject({ status: 0, stdout: "no paths on node1\n" });
    expect(JSON.parse((await sds(["paths", "--host", "node1", "--json"])).stdout)).toEqual([]);
    const unknown = await sds(["paths", "--host", "nowhere"]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/^sds: host: no host named "nowhere" in the provider's hosts \(known: localhost, node1\)\n$/);
  });

  test("replication status, then sync: the pair syncs; JSON names its fields", async () => {
    const s = await sds(["replication", "status"]);
    expect(s.status).toBe(0);
    expect(s.stdout).toMatch(/^PAIR\s+PRIMARY\s+TARGET\s+ACTIVE\s+ENABLED\s+STATUS\s+RPO\s+LAST_SYNC\s+DUE\s+SENT\s+LAST_ERROR\n/);
    expect(s.stdout).toMatch(new RegExp(`${ids.pair}\\s+data\\s+dr\\s+primary\\s+yes\\s+enabled\\s+3600s\\s+\\d+s ago\\s+no\\s`));
    const sync = await sds(["replication", "sync", "--all"]);
    expect(sync.stderr).toBe("");
    expect(sync.status).toBe(0);
    expect(sync.stdout).toMatch(/sds replicate: state .*\.sds\/state\.db, backends from .*backends\.yaml \(stack dev\)\n/);
    expect(sync.stdout).toMatch(/1 pair\(s\) synced, 0 failed\n$/);
    const alias = await sds(["replicate", "--pair", ids.pair, "--json"]);
    expect(alias.status).toBe(0);
    expect(JSON.parse(alias.stdout)).toEqual({ synced: [{ id: ids.pair, ok: true, bytes: expect.any(Number) }], failed: [] });
    const sj = JSON.parse((await sds(["replication", "status", "--json"])).stdout);
    expect(sj).toEqual([
      expect.objectContaining({ id: ids.pair, primaryVolumeId: ids.data, primaryVolume: "data", targetBackend: "dr", activeSide: "primary", enabled: true, status: "enabled", rpoSeconds: 3600, due: false, lastError: null, lagSeconds: expect.any(Number) }),
    ]);
    // --progress: percent and rate on stderr (a line every 10% or 5 s where stderr is no terminal).
    const fd = fs.openSync(path.join(dir, "pools/main", `volume-${ids.data}.img`), "r+");
    fs.writeSync(fd, randomBytes(32 * 1024 * 1024), 0, 32 * 1024 * 1024, 0);
    fs.closeSync(fd);
    const shown = await sds(["replication", "sync", "--pair", ids.pair, "--progress"]);
    expect(shown.status).toBe(0);
    expect(shown.stderr).toMatch(new RegExp(`^manual sync of pair ${ids.pair}: \\d+% \\(\\d+ MiB of 2048 MiB(, [\\d.]+ (MiB|GiB)/s)?\\)\n`));
    expect(shown.stderr).toMatch(new RegExp(`manual sync of pair ${ids.pair}: 100% \\(2048 MiB of 2048 MiB, [\\d.]+ (MiB|GiB)/s\\)\n$`));
    const unknown = await sds(["replication", "sync", "--pair", "no-such-pair"]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toBe('sds: --pair: no replication pair "no-such-pair" in this state (sds replication status lists them)\n');
  });

  test("targets lists the exports and daemons; targets stop stops a stray server and leaves the one in use", async () => {
    // A server of this state that no export needs: what a crash between start and record leaves.
    const stray = new NbdkitTarget({ host: "127.0.0.1", runDir: path.join(dir, ".sds/run") });
    await stray.ensureServer(`${ids.tag}-stray-rw`, await freeTcpPort(), false);
    // Its starter died (as a crashed provider would): the record names a process that is gone.
    const record = path.join(dir, `.sds/run/daemons/nbdkit-${ids.tag}-stray-rw.json`);
    fs.writeFileSync(record, JSON.stringify({ ...JSON.parse(fs.readFileSync(record, "utf8")), startedBy: 2 ** 22 + 1, startedByStart: "1" }));
    const t = await sds(["targets"]);
    expect(t.status).toBe(0);
    expect(t.stdout).toMatch(/^TARGETS \(exports this state knows\)\nNAME\s+PROTOCOL\s+BACKEND\s+MODE\s+PORTAL\s+CHAP\s+LUNS\s+ATTACHMENTS\n/);
    expect(t.stdout).toMatch(new RegExp(`${ids.tag}-main-rw\\s+nbd\\s+main\\s+rw\\s+127\\.0\\.0\\.1:${nbdPort}\\s+no\\s+\\d+\\s+2\\n`));
    expect(t.stdout).toMatch(/\nDAEMONS \(started by sds on this machine, .*\.sds\/run\)\nKIND\s+NAME\s+PID\s+RUNNING\s+SERVES\s+STARTED\n/);
    expect(t.stdout).toMatch(new RegExp(`nbdkit\\s+${ids.tag}-stray-rw\\s+\\d+\\s+yes\\s+127\\.0\\.0\\.1:\\d+\\s`));
    const j = JSON.parse((await sds(["targets", "--json"])).stdout);
    expect(j.targets).toEqual([expect.objectContaining({ name: `${ids.tag}-main-rw`, protocol: "nbd", backend: "main", mode: "rw", portal: `127.0.0.1:${nbdPort}`, port: nbdPort, chap: false, attachments: expect.arrayContaining([ids.attWeb, ids.attGone]) })]);
    const inUse = j.daemons.find((d: { name: string }) => d.name === `${ids.tag}-main-rw`);
    const strayPid = j.daemons.find((d: { name: string }) => d.name === `${ids.tag}-stray-rw`).pid;
    expect(inUse).toMatchObject({ kind: "nbdkit", running: true, pid: expect.any(Number) });

    // doctor sees the stray (a warning, exit 0 when nothing fails).
    const d = await sds(["doctor"]);
    expect(d.stdout).toMatch(new RegExp(`WARN  daemons\\s+nbdkit ${ids.tag}-stray-rw \\(pid ${strayPid}\\) on 127\\.0\\.0\\.1:\\d+ runs, but this state knows no export on it \\(left by a crash\\)\\n\\s+fix: sds targets stop\\n`));

    const stop = await sds(["targets", "stop"]);
    expect(stop.status).toBe(0);
    expect(stop.stdout).toContain(`stopped nbdkit ${ids.tag}-stray-rw (pid ${strayPid})\n`);
    expect(stop.stdout).toContain(`kept nbdkit ${ids.tag}-main-rw (pid ${inUse.pid}): serves the export of main (mode rw) this state knows\n`);
    expect(await alive(strayPid)).toBe(false);
    expect(await alive(inUse.pid)).toBe(true);
    const again = JSON.parse((await sds(["targets", "stop", "--json"])).stdout);
    expect(again).toEqual({ stopped: [], removed: [], kept: [expect.stringContaining(`${ids.tag}-main-rw`)] });
  });

  test("targets stop stops a tgtd that serves no target; doctor warns of it first", async () => {
    const port = await freeTcpPort();
    const tgt = new TgtTarget({ controlPort: port % 32768, portal: `127.0.0.1:${port}`, runDir: path.join(dir, ".sds/run") });
    await tgt.start();
    try {
      const record = path.join(dir, `.sds/run/daemons/tgtd-${port % 32768}.json`);
      fs.writeFileSync(record, JSON.stringify({ ...JSON.parse(fs.readFileSync(record, "utf8")), startedBy: 2 ** 22 + 1, startedByStart: "1" }));
      const pid = JSON.parse((await sds(["targets", "--json"])).stdout).daemons.find((d: { kind: string }) => d.kind === "tgtd").pid;
      const d = await sds(["doctor"]);
      expect(d.stdout).toContain(`WARN  daemons      tgtd ${port % 32768} (pid ${pid}) on 127.0.0.1:${port} runs and serves no target\n                   fix: sds targets stop\n`);
      const stop = await sds(["targets", "stop"]);
      expect(stop.stdout).toContain(`stopped tgtd ${port % 32768} (pid ${pid})\n`);
      expect(await alive(pid)).toBe(false);
    } finally {
      await tgt.stop().catch(() => undefined);
    }
  });

  test("doctor warns of a lock whose holder died, and of a volume file no volume names", async () => {
    // A process takes the pair's sync lock and dies holding it (SQLite keeps the row).
    const script = `const { SqliteStore } = require(${JSON.stringify(path.join(repoRoot, "provider/dist/store/sqlite-store.js"))});
      const { holderText } = require(${JSON.stringify(path.join(repoRoot, "provider/dist/store/lock-holder.js"))});
      SqliteStore.open(process.argv[1]).then(async (s) => { if (!(await s.tryLock(process.argv[2], holderText("test"), 600000))) process.exit(3); process.exit(0); });`;
    const child = spawnSync(process.execPath, ["-e", script, path.join(dir, ".sds/state.db"), `replicate:${ids.pair}`], { encoding: "utf8" });
    expect(child.status).toBe(0);
    // A volume file no row names (a create whose row went, another state sharing the folder).
    const orphan = path.join(dir, "pools/main/volume-0123abcd.img");
    fs.writeFileSync(orphan, "");
    const d = await sds(["doctor", "--json"]);
    fs.rmSync(orphan);
    expect(JSON.parse(d.stdout)).toContainEqual({
      check: "volumes",
      severity: "warn",
      message: `${orphan} is in pool main/p0 but no volume of this state names it`,
      fix: `check nothing uses it (another state sharing the pool folder?), then rm ${orphan}`,
    });
    expect(JSON.parse(d.stdout)).toContainEqual({
      check: "locks",
      severity: "warn",
      message: expect.stringMatching(new RegExp(`^lock replicate:${ids.pair} is held by pid ${child.pid} .* which is no longer running$`)),
      fix: expect.stringMatching(/^none needed: the next operation that needs the lock takes it over/),
    });
  });

  test("doctor: sound state and exports exit 0; a lost export is a failure with its fix (exit 1), as table and JSON", async () => {
    const ok = await sds(["doctor"]);
    expect(ok.stdout).toMatch(/ok {4}state\s+.*state\.db: ok/);
    expect(ok.stdout).toMatch(/ok {4}exports\s+nbdkit on 127\.0\.0\.1 serves this state's 1 NBD export\(s\)/);
    expect(ok.stdout).toMatch(/ok {4}agents\s+the agent of node1 answers/);
    expect(ok.stdout).toMatch(/sds doctor: 0 problem\(s\), \d+ warning\(s\)\n$/);
    expect(ok.status).toBe(0);
    // The NBD server dies (killed by hand, a crash): the export this state knows is down.
    const server = JSON.parse((await sds(["targets", "--json"])).stdout).daemons.find((x: { name: string }) => x.name === `${ids.tag}-main-rw`);
    process.kill(server.pid, "SIGKILL");
    while (await alive(server.pid)) await new Promise((r) => setTimeout(r, 50));
    const bad = await sds(["doctor"]);
    expect(bad.status).toBe(1);
    expect(bad.stdout).toContain(`FAIL  exports      nbdkit on 127.0.0.1: 1 server(s) of this state not running: ${ids.tag}-main-rw\n                   fix: pulumi up (remakes the exports and reconnects their devices)\n`);
    const j = JSON.parse((await sds(["doctor", "--json"])).stdout);
    expect(j).toContainEqual({ check: "exports", severity: "fail", message: expect.stringContaining(`${ids.tag}-main-rw`), fix: expect.stringMatching(/^pulumi up/) });
    // Bring it back as a provider start does (the rest of the suite uses it).
    const parts = compose();
    try {
      await parts.allowWrites();
      await (await parts.attachments()).ensureExports();
    } finally {
      await parts.close();
    }
  });

  test("force-detach: an attachment whose host is gone goes; the export others use stays; an unknown one exits 2", async () => {
    const unknown = await sds(["force-detach", "no-such-attachment"]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/^sds: ATTACHMENT: no attachment "no-such-attachment" in the state .*state\.db \(sds attachments lists them\)\n$/);
    const r = await sds(["force-detach", ids.attGone]);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      [
        `sds force-detach: attachment ${ids.attGone} (volume logs, host old-hypervisor, nbd, rw)`,
        "  device: none connected",
        `  export: ${ids.tag}-main-rw kept (other attachments use it); old-hypervisor's access to it removed`,
        "  state: attachment removed; volume logs is available",
        "next: pulumi refresh (the stack still holds the Attachment: refresh forgets it), then drop it from the program, or the next pulumi up attaches again",
        "",
      ].join("\n"),
    );
    ids.attGone = "";
    expect(JSON.parse((await sds(["attachments", "--json"])).stdout).map((a: { id: string }) => a.id).sort()).toEqual([ids.attWeb, ids.attLoop].sort());
  });

  test("force-detach: a host in the provider's hosts whose agent does not answer: its device is reported, not disconnected", async () => {
    const stackFile = path.join(dir, "Pulumi.dev.yaml");
    const before = fs.readFileSync(stackFile, "utf8");
    fs.writeFileSync(stackFile, `${before}    node2:\n      url: http://127.0.0.1:${await freeTcpPort()}\n`);
    try {
      const parts = compose();
      let id: string;
      try {
        await parts.allowWrites();
        id = (await (await parts.attachments()).attach("urn:pulumi:dev::cli::sds:index:Attachment::logs-node2", { volumeId: ids.logs, host: "node2", mode: "ro" })).row.id;
        // node2 had connected it (through its agent, before it died).
        await parts.store.updateAttachment(id, { devicePath: "/dev/nbd7" });
      } finally {
        await parts.close();
      }
      const r = await sds(["force-detach", id]);
      expect(r.status).toBe(0);
      expect(r.stderr).toMatch(/^sds: the agent of node2 does not answer \(.*\): detaching without its device\n$/);
      expect(r.stdout).toMatch(new RegExp(`^sds force-detach: attachment ${id} \\(volume logs, host node2, nbd, ro\\)\n  device: /dev/nbd7 on node2 NOT disconnected: its agent does not answer \\(.*\\); if the host comes back, disconnect it there before using the volume elsewhere\n  export: ${ids.tag}-main-ro removed\n  state: attachment removed; volume logs is available\n`));
    } finally {
      fs.writeFileSync(stackFile, before);
    }
  });

  test("--help on every command and subcommand exits 0", async () => {
    const commands = [[], ["pools"], ["volumes"], ["attachments"], ["paths"], ["replication"], ["replication", "status"], ["replication", "sync"], ["replicate"], ["targets"], ["targets", "stop"], ["doctor"], ["force-detach"], ["state"], ["state", "migrate"], ["state", "check"], ["recover"]];
    const runs = await Promise.all(commands.map((c) => sds([...c, "--help"], { cwd: os.tmpdir() })));
    runs.forEach((r, i) => {
      expect([commands[i].join(" "), r.status, r.status === 0 ? "" : r.stderr]).toEqual([commands[i].join(" "), 0, ""]);
      expect(r.stdout).toMatch(/^Usage: sds/);
    });
    expect(runs[0].stdout).toMatch(/Exit codes:\n {2}0 {2}.*\n {2}1 {2}.*\n {2}2 {2}usage or configuration error/);
    expect(runs[1].stdout).toContain("--json fields (stable): id, backend, pool,");
    const viaHelp = await sds(["help", "pools"], { cwd: os.tmpdir() });
    expect(viaHelp).toMatchObject({ status: 0, stdout: expect.stringMatching(/^Usage: sds pools/) });
    // A group without its subcommand is a usage error, its help on stderr.
    expect(await sds(["state"], { cwd: os.tmpdir() })).toMatchObject({ status: 2, stderr: expect.stringMatching(/^Usage: sds state/) });
  });

  test("misconfiguration exits 2 with one line: no state (and none made), no backends, nothing to sync, a usage error", async () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), "sds-cli-empty-"));
    try {
      fs.writeFileSync(path.join(empty, "Pulumi.yaml"), "name: other\nruntime: nodejs\n");
      const commands = [["pools"], ["volumes"], ["attachments"], ["paths", "--host", "localhost"], ["replication", "status"], ["replication", "sync"], ["replicate"], ["targets"], ["targets", "stop"], ["doctor"], ["force-detach", "x"]];
      const runs = await Promise.all(commands.map((c) => sds(c, { cwd: empty })));
      runs.forEach((r, i) => {
        expect([commands[i].join(" "), r.status]).toEqual([commands[i].join(" "), 2]);
        expect(r.stderr).toMatch(/^sds: no sds state at .*\/\.sds\/state\.db \(from the default\); run sds in the folder of the Pulumi project that deployed it, or pass --project DIR, --stack NAME or --state URL\n$/);
      });
      expect(fs.existsSync(path.join(empty, ".sds"))).toBe(false);

      // A state with no pairs: nothing to sync is an error, not a silent success.
      fs.writeFileSync(path.join(empty, "backends.yaml"), "backends:\n  - {name: b, driver: file, pools: [{name: p, path: pool, totalCapacityGib: 1}]}\n");
      const parts = new Composition(resolveProviderConfig({ backendsFile: "backends.yaml" }, empty, {}), () => undefined);
      await parts.allowWrites();
      await parts.close();
      for (const c of [["replication", "sync"], ["replicate", "--all"]]) {
        const r = await sds([...c, "--backends", "backends.yaml"], { cwd: empty });
        expect(r.status).toBe(2);
        expect(r.stderr).toMatch(/^sds: nothing to sync: the state .*state\.db holds no replication pairs; run sds in the folder of the Pulumi project that deployed them/);
      }
      fs.writeFileSync(path.join(empty, "none.yaml"), "backends: []\n");
      const none = await sds(["pools", "--backends", "none.yaml"], { cwd: empty });
      expect(none.status).toBe(2);
      expect(none.stderr).toMatch(/^sds: backends: no backends configured \(.*none\.yaml lists none\); name the stack's backends file with sds:backendsFile, SDS_BACKENDS_FILE or --backends FILE\n$/);
      // The state has volumes on backends the runner does not load.
      const noFile = await sds(["volumes", "--project", dir, "--stack", "dev", "--backends", path.join(empty, "backends.yaml")], { cwd: empty });
      expect(noFile.status).toBe(2);
      expect(noFile.stderr).toMatch(/^sds: backends: this state has volumes on backend .*"main" \(2 volume\(s\)\).*, but .*backends\.yaml does not configure it\n$/);

      const usage = await sds(["pools", "--bogus"], { cwd: empty });
      expect(usage).toMatchObject({ status: 2, stderr: "sds: unknown option '--bogus'\n" });
      const bare = await sds([], { cwd: empty });
      expect(bare.status).toBe(2);
      expect(bare.stderr).toMatch(/^Usage: sds/);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});
