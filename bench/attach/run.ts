/**
 * bench/attach: attach+detach throughput for N concurrent attachments (default 50) on a
 * shared-target backend (one target, export work serialized by its lock) and on a unique-target
 * backend (one target per volume), real tgtd, CHAP on, in one run, rounds interleaved. Prints a
 * table, writes bench/results/attach.json. Root only (tgtd).
 *
 *   npm run bench:attach -- [attachments=50] [rounds=3] [--baseline <provider/dist of another build>]
 *
 * It drives the compiled provider (`provider/dist`: `npm run build` first), so a baseline build
 * (e.g. main's code compiled elsewhere) runs side by side in the same run, rounds interleaved:
 * on a shared, loaded machine only such ratios and CPU times mean something, not wall times.
 * Per attachment it counts process starts (every child this process spawns: tgtd launches,
 * helpers), tgtd launches, and tgtd management requests (by op and mode); CPU is this process's
 * (`process.cpuUsage`) plus tgtd's (from /proc), over the attach and detach phases.
 */
import * as childProcess from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cannotRun } from "../../test/datapath/harness";
import { freeTcpPort } from "../../test/helpers/daemons";

const repoRoot = path.resolve(__dirname, "../..");
const positional = process.argv.slice(2).filter((a, i, all) => !a.startsWith("--") && all[i - 1] !== "--baseline");
const n = Number(positional[0] ?? 50);
const rounds = Number(positional[1] ?? 3);
const baselineAt = process.argv.indexOf("--baseline");
const builds: Array<{ label: string; dist: string }> = [{ label: "this", dist: path.join(repoRoot, "provider/dist") }];
if (baselineAt >= 0) builds.unshift({ label: "baseline", dist: path.resolve(process.argv[baselineAt + 1] ?? "") });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

type Kind = "shared" | "unique";
interface Round {
  attachS: number;
  detachS: number;
  /** Process starts (children of this process) per attachment, attach + detach. */
  spawnsPerAttach: number;
  tgtdLaunches: number;
  /** tgtd management requests per attachment, attach + detach, and `show target` alone. */
  requestsPerAttach: number;
  showTargetPerAttach: number;
  /** CPU seconds, this process and tgtd, attach + detach. */
  cpuS: number;
  tgtdCpuS: number;
}

// Every child process goes through ChildProcess.prototype.spawn (spawn, execFile, exec, execa).
// (An internal method: Node's typings do not list it.)
let spawns: string[] = [];
type Spawn = (this: childProcess.ChildProcess, options: { file?: string }) => unknown;
const proto = childProcess.ChildProcess.prototype as unknown as { spawn: Spawn };
const protoSpawn = proto.spawn;
proto.spawn = function (options) {
  spawns.push(path.basename(options.file ?? "?"));
  return protoSpawn.call(this, options);
};

/* eslint-disable @typescript-eslint/no-require-imports -- a build is chosen at run time */
function load(dist: string) {
  const req = (m: string) => require(path.join(dist, m)) as Record<string, unknown>;
  const mods = {
    Attachments: req("controller/attachments.js").Attachments as new (o: object) => { attach(owner: string, spec: object): Promise<{ row: { id: string } }>; detach(id: string): Promise<void> },
    Controller: req("controller/controller.js").Controller as new (o: object) => { discover(): Promise<void>; createVolume(urn: string, spec: object): Promise<{ id: string }> },
    SecretBox: req("controller/secret-box.js").SecretBox as { forState(o: object): unknown },
    SqliteStore: req("store/sqlite-store.js").SqliteStore as new (file: string) => { listAttachments(): Promise<unknown[]>; listTargets(): Promise<unknown[]>; close(): Promise<void> },
    backendsSchema: req("domain/backend.js").backendsSchema as { parse(x: unknown): unknown[] },
    localTargets: req("targets/local-targets.js").localTargets as (runDir: string) => { iscsi(portal: string): { stop(): Promise<void> } },
    TgtadmClient: req("targets/tgtadm-client.js").TgtadmClient as { prototype: { request(r: { op: string; mode: string }): Promise<string> } },
  };
  return mods;
}
/* eslint-enable @typescript-eslint/no-require-imports */

const requests: string[] = [];
const hooked = new Set<unknown>();
function countRequests(m: ReturnType<typeof load>): void {
  if (hooked.has(m.TgtadmClient)) return;
  hooked.add(m.TgtadmClient);
  const original = m.TgtadmClient.prototype.request;
  m.TgtadmClient.prototype.request = function (this: unknown, r: { op: string; mode: string }) {
    requests.push(`${r.op} ${r.mode}`);
    return original.call(this, r);
  };
}

const CLK_TCK = Number(childProcess.execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());

/** utime+stime of `pid` in seconds (0 when gone). */
function cpuOf(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** Promise.all that lets every operation end before it fails (the env is torn down right after). */
async function all<T>(ps: Array<Promise<T>>): Promise<T[]> {
  const settled = await Promise.allSettled(ps);
  const failed = settled.filter((x) => x.status === "rejected");
  if (failed.length) throw new Error(`${failed.length} of ${ps.length} failed, first: ${(failed[0] as PromiseRejectedResult).reason?.message}`);
  return settled.map((x) => (x as PromiseFulfilledResult<T>).value);
}

async function once(m: ReturnType<typeof load>, kind: Kind): Promise<Round> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-bench-attach-"));
  const store = new m.SqliteStore(path.join(dir, "state.db"));
  const port = await freeTcpPort();
  const portal = `127.0.0.1:${port}`;
  const backends = m.backendsSchema.parse([
    { name: "b1", driver: "file", sharedTargets: kind === "shared", export: { protocol: "iscsi", portal, chap: true }, pools: [{ name: "p1", path: path.join(dir, "pool"), totalCapacityGib: 100, multiAttach: true }] },
  ]);
  const controller = new m.Controller({ store, backends });
  await controller.discover();
  const runDir = path.join(dir, "run");
  const targets = m.localTargets(runDir);
  const attachments = new m.Attachments({ store, controller, targets, box: m.SecretBox.forState({ sqliteFile: path.join(dir, "state.db") }) });
  const tgtdPid = () => {
    try {
      return Number(fs.readFileSync(path.join(runDir, `tgtd-${port % 32768}.pid`), "utf8").trim());
    } catch {
      return undefined;
    }
  };
  try {
    const volumes = [];
    for (let i = 0; i < n; i++) volumes.push(await controller.createVolume(`urn:v${i}`, { name: `v${i}`, sizeGib: 1, multiAttach: false, description: "", metadata: {} }));
    spawns = [];
    requests.length = 0;
    const cpu0 = process.cpuUsage();
    let t = process.hrtime.bigint();
    const failing = (err: unknown) => Object.assign(err as Error, { spawned: spawns.length, tgtdLaunches: spawns.filter((x) => x === "tgtd").length });
    const rows = await all(volumes.map((v, i) => attachments.attach(`urn:a${i}`, { volumeId: v.id, host: "hostX", mode: "rw", connector: { initiator: `iqn.2026-11.bench.host:${i % 4}` } }))).catch((err: unknown) => Promise.reject(failing(err)));
    const attachS = Number(process.hrtime.bigint() - t) / 1e9;
    const pid = tgtdPid();
    t = process.hrtime.bigint();
    await all(rows.map((r) => attachments.detach(r.row.id)));
    const detachS = Number(process.hrtime.bigint() - t) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    const tgtdCpuS = cpuOf(pid);
    if ((await store.listAttachments()).length > 0 || (await store.listTargets()).length > 0) throw new Error("detach left exports behind");
    return {
      attachS,
      detachS,
      spawnsPerAttach: spawns.length / n,
      tgtdLaunches: spawns.filter((s) => s === "tgtd").length,
      requestsPerAttach: requests.length / n,
      showTargetPerAttach: requests.filter((r) => r === "show target").length / n,
      cpuS: (cpu.user + cpu.system) / 1e6,
      tgtdCpuS,
    };
  } finally {
    await targets.iscsi(portal).stop().catch(() => undefined);
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const why = cannotRun();
  if (why) throw new Error(`bench/attach cannot run: ${why}`);
  const loaded = builds.map((b) => ({ ...b, m: load(b.dist) }));
  for (const b of loaded) countRequests(b.m);
  const failures: Array<{ build: string; kind: Kind; round: number; error: string; spawned?: number; tgtdLaunches?: number }> = [];
  const runs: Record<string, Record<Kind, Round[]>> = Object.fromEntries(builds.map((b) => [b.label, { shared: [], unique: [] }]));
  for (let r = 0; r < rounds; r++) {
    const kinds: Kind[] = r % 2 === 0 ? ["shared", "unique"] : ["unique", "shared"];
    const order = r % 2 === 0 ? loaded : [...loaded].reverse();
    for (const kind of kinds) {
      for (const b of order) {
        let x: Round;
        try {
          x = await once(b.m, kind);
        } catch (err) {
          // A build that cannot do it (round 1's code at 50 unique targets: tgtd's socket backlog) is reported, not fatal.
          const e = err as Error & { spawned?: number; tgtdLaunches?: number };
          failures.push({ build: b.label, kind, round: r + 1, error: e.message.slice(0, 300), spawned: e.spawned, tgtdLaunches: e.tgtdLaunches });
          process.stderr.write(`round ${r + 1}/${rounds} ${b.label} ${kind}: FAILED (${e.spawned ?? "?"} processes started, ${e.tgtdLaunches ?? "?"} of them tgtd): ${e.message.slice(0, 300)}\n`);
          continue;
        }
        runs[b.label]![kind].push(x);
        process.stderr.write(`round ${r + 1}/${rounds} ${b.label} ${kind}: attach ${x.attachS.toFixed(2)} s, detach ${x.detachS.toFixed(2)} s, ${x.spawnsPerAttach.toFixed(2)} starts/attach, ${x.requestsPerAttach.toFixed(1)} tgtd requests/attach, cpu ${x.cpuS.toFixed(2)} s + tgtd ${x.tgtdCpuS.toFixed(2)} s\n`);
      }
    }
  }
  const summary = (label: string, kind: Kind) => {
    const xs = runs[label]![kind];
    const med = (f: (x: Round) => number) => (xs.length ? median(xs.map(f)) : NaN);
    return {
      perSecond: n / med((x) => x.attachS + x.detachS),
      attachS: med((x) => x.attachS),
      detachS: med((x) => x.detachS),
      spawnsPerAttach: med((x) => x.spawnsPerAttach),
      tgtdLaunches: med((x) => x.tgtdLaunches),
      requestsPerAttach: med((x) => x.requestsPerAttach),
      showTargetPerAttach: med((x) => x.showTargetPerAttach),
      cpuMsPerAttach: (med((x) => x.cpuS) / n) * 1000,
      tgtdCpuMsPerAttach: (med((x) => x.tgtdCpuS) / n) * 1000,
    };
  };
  console.log(`${n} concurrent attachments (attach, then detach), real tgtd, CHAP on, median of ${rounds} interleaved rounds`);
  console.log("build    | backend        | attach+detach /s | attach s | detach s | starts/attach | tgtd launches | tgtd req/attach | show target/attach | CPU ms/attach (node + tgtd)");
  console.log("---------|----------------|------------------|----------|----------|---------------|---------------|-----------------|--------------------|---------------------------");
  const out: Record<string, Record<Kind, ReturnType<typeof summary>>> = {};
  for (const b of builds) {
    out[b.label] = { shared: summary(b.label, "shared"), unique: summary(b.label, "unique") };
    for (const kind of ["shared", "unique"] as const) {
      const s = out[b.label]![kind];
      console.log(
        `${b.label.padEnd(8)} | ${(kind === "shared" ? "shared target" : "unique targets").padEnd(14)} | ${s.perSecond.toFixed(1).padStart(16)} | ${s.attachS.toFixed(2).padStart(8)} | ${s.detachS.toFixed(2).padStart(8)} | ${s.spawnsPerAttach.toFixed(2).padStart(13)} | ${String(s.tgtdLaunches).padStart(13)} | ${s.requestsPerAttach.toFixed(1).padStart(15)} | ${s.showTargetPerAttach.toFixed(1).padStart(18)} | ${s.cpuMsPerAttach.toFixed(1)} + ${s.tgtdCpuMsPerAttach.toFixed(1)}`,
      );
    }
  }
  const mine = out.this!;
  const ratios = out.baseline
    ? {
        perSecond: { shared: mine.shared.perSecond / out.baseline.shared.perSecond, unique: mine.unique.perSecond / out.baseline.unique.perSecond },
        cpuPerAttach: { shared: mine.shared.cpuMsPerAttach / out.baseline.shared.cpuMsPerAttach, unique: mine.unique.cpuMsPerAttach / out.baseline.unique.cpuMsPerAttach },
      }
    : undefined;
  if (ratios) console.log(`this / baseline: attach+detach per s shared ×${ratios.perSecond.shared.toFixed(2)}, unique ×${ratios.perSecond.unique.toFixed(2)}; node CPU per attach shared ×${ratios.cpuPerAttach.shared.toFixed(2)}, unique ×${ratios.cpuPerAttach.unique.toFixed(2)}`);
  for (const f of failures) console.log(`FAILED: ${f.build} ${f.kind} round ${f.round} (${f.spawned ?? "?"} processes started, ${f.tgtdLaunches ?? "?"} tgtd): ${f.error}`);
  console.log(`goals: ≥ 10 /s both; ≤ 3 starts per attach shared, ≤ 5 unique, one tgtd launch`);
  const file = path.join(repoRoot, "bench/results/attach.json");
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(
    file,
    JSON.stringify(
      {
        bench: "attach",
        attachments: n,
        rounds,
        when: new Date().toISOString(),
        perSecond: { shared: mine.shared.perSecond, unique: mine.unique.perSecond },
        spawnsPerAttach: { shared: mine.shared.spawnsPerAttach, unique: mine.unique.spawnsPerAttach },
        tgtdLaunches: { shared: mine.shared.tgtdLaunches, unique: mine.unique.tgtdLaunches },
        builds: Object.fromEntries(builds.map((b) => [b.label, { dist: b.dist, ...out[b.label] }])),
        ratios,
        failures,
        runs,
      },
      null,
      2,
    ),
  );
  console.log(`written ${path.relative(repoRoot, file)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
