/**
 * bench/scheduler: placement time for 100, 1,000 and 10,000 pools with 10,000 existing volumes
 * (SQLite), and pool discovery at provider start, for one or more builds of the provider side by
 * side in one run (e.g. main's `provider/dist` and this tree's), interleaved call by call:
 * - `place`: the pure scheduler on a pool snapshot (filters + weighers + explanations);
 * - `plan`: what a preview does (provisioned capacity from the store, snapshot, place);
 * - `realCreate`: `Controller.createVolume`, the whole path a create takes in the controller
 *   (backend record, profile look-ups, the transaction: cut-short look-up, provisioned capacity,
 *   placement, insert; then the status update), one create after another, so each one finds the
 *   state the previous create changed, as in a real `up` (no cache hit a real create would not
 *   get). The driver's bytes are left out (its createVolume does nothing): they are the disk's
 *   time, not placement's, and the same for every build;
 * - `discovery`: `Controller.discover()` at provider start, pool folders existing (a deployment
 *   that made volumes before), with the build's own FileDriver (bounded statfs per pool).
 * CPU is counted beside wall time (this process's user+system, plus its reaped children's for
 * discovery, which measures with `stat -f` children). Prints a table and writes
 * bench/results/scheduler.json (rows: pools, placeP50Ms, realCreateP50Ms, realCreateP99Ms,
 * discoveryMs, … per build).
 *
 *   npm run build && npm run bench:scheduler -- [iterations=200] [--build name=dir]... [--pools 100,1000,10000]
 *
 * Without --build it measures this tree's provider/dist alone; e.g. before/after:
 *   npm run bench:scheduler -- 200 --build before=/work/main/provider/dist --build after=provider/dist
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { randomUUID } from "node:crypto";

const repoRoot = path.resolve(__dirname, "../..");
const existingVolumes = 10_000;

/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-require-imports -- each build is loaded from its own folder at run time */
interface Build {
  name: string;
  dir: string;
  backendsSchema: { parse(x: unknown): any };
  Controller: new (o: any) => any;
  parseExtraSpecs: (s: Record<string, string>) => { requirements: any };
  place: (pools: any[], request: any) => any;
  SqliteStore: new (file: string) => any;
  FileDriver: new () => any;
}

function loadBuild(name: string, dir: string): Build {
  const d = path.resolve(repoRoot, dir);
  const req = (m: string) => require(path.join(d, m));
  if (!fs.existsSync(path.join(d, "controller/controller.js"))) throw new Error(`${d}: no controller/controller.js (npm run build first?)`);
  return {
    name,
    dir: d,
    backendsSchema: req("domain/backend").backendsSchema,
    Controller: req("controller/controller").Controller,
    parseExtraSpecs: req("scheduler/extra-specs").parseExtraSpecs,
    place: req("scheduler/scheduler").place,
    SqliteStore: req("store/sqlite-store").SqliteStore,
    FileDriver: req("drivers/file-driver").FileDriver,
  };
}
/* eslint-enable @typescript-eslint/no-explicit-any, @typescript-eslint/no-require-imports */

function parseArgs(argv: string[]): { iterations: number; builds: Array<[string, string]>; sizes: number[] } {
  let iterations = 200;
  const builds: Array<[string, string]> = [];
  let sizes = [100, 1_000, 10_000];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--build") {
      const [n, ...rest] = argv[++i].split("=");
      builds.push([n, rest.join("=")]);
    } else if (a === "--pools") sizes = argv[++i].split(",").map(Number);
    else iterations = Number(a);
  }
  if (builds.length === 0) builds.push(["this", "provider/dist"]);
  return { iterations, builds, sizes };
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

/** CPU of this process and of its reaped children, in ms (/proc/self/stat utime+stime, cutime+cstime). */
function cpuMs(): { self: number; children: number } {
  const f = fs.readFileSync("/proc/self/stat", "utf8").slice(fs.readFileSync("/proc/self/stat", "utf8").lastIndexOf(")") + 2).split(" ");
  const tick = 1000 / 100; // USER_HZ is 100 on Linux
  const u = process.cpuUsage();
  return { self: (u.user + u.system) / 1000, children: (Number(f[13]) + Number(f[14])) * tick };
}

function backendsFor(build: Build, poolCount: number, dir: string) {
  const perBackend = 100;
  const backends = [];
  for (let b = 0; b * perBackend < poolCount; b++) {
    const pools = [];
    for (let i = 0; i < perBackend && b * perBackend + i < poolCount; i++) {
      const n = b * perBackend + i;
      pools.push({
        name: `p${i}`,
        path: path.join(dir, `b${b}`, `p${i}`),
        totalCapacityGib: 1000 + (n % 7) * 100,
        multiAttach: n % 2 === 0,
        availabilityZone: `zone-${n % 3}`,
        extras: { advanced: { diskType: ["SSD", "HDD", "NVMe"][n % 3], latency: `${1 + (n % 10)}ms` }, ioConnectivity: { maxIOPS: 1000 * (n % 50) } },
      });
    }
    backends.push({ name: `b${b}`, driver: "file", weigher: b % 2 === 0 ? "spread" : "stack", pools });
  }
  return build.backendsSchema.parse(backends);
}

const specs = { "capabilities:multiAttach": "<is> true", diskType: "<or> SSD <or> NVMe", maxIOPS: ">= 5000", latency: "<= 8ms" };

/** One build's state for one pool count: its own folder, SQLite file, controller. */
async function setUp(build: Build, poolCount: number) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `sds-bench-sched-${build.name}-`));
  const store = new build.SqliteStore(path.join(dir, "state.db"));
  const backends = backendsFor(build, poolCount, dir);
  // Pool folders exist (a deployment that made volumes before); a volume's bytes are not made (see the header).
  for (const b of backends) for (const p of b.pools) fs.mkdirSync(p.path, { recursive: true });
  const driver = new build.FileDriver();
  driver.createVolume = async () => undefined;
  driver.deleteVolume = async () => undefined;
  const controller = new build.Controller({ store, backends, drivers: { file: driver } });
  return { build, dir, store, backends, controller };
}

async function discover(s: Awaited<ReturnType<typeof setUp>>): Promise<{ ms: number; cpuMs: number; childCpuMs: number }> {
  const c0 = cpuMs();
  const t0 = process.hrtime.bigint();
  await s.controller.discover();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const c1 = cpuMs();
  return { ms, cpuMs: c1.self - c0.self, childCpuMs: c1.children - c0.children };
}

async function fill(s: Awaited<ReturnType<typeof setUp>>): Promise<void> {
  await s.controller.createProfile("bench", { name: "bench", description: "", storageType: "block", extraSpecs: specs });
  const pools = await s.controller.pools();
  await s.store.transaction(async (tx: { insertVolume(r: unknown): Promise<void> }) => {
    const at = new Date().toISOString();
    for (let i = 0; i < existingVolumes; i++) {
      const p = pools[i % pools.length];
      await tx.insertVolume({
        id: randomUUID(), name: `v${i}`, owner: "bench", sizeGib: 1 + (i % 20), profileId: null, availabilityZone: p.availabilityZone,
        multiAttach: false, sourceVolumeId: null, description: "", metadata: {}, poolId: p.id, backendName: p.backendName,
        backendId: p.backendId, sharedTargets: true, status: "available", replicationStatus: "disabled", createdAt: at, updatedAt: at,
      });
    }
  });
}

const ms = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e6;

async function main(): Promise<void> {
  const { iterations, builds: buildArgs, sizes } = parseArgs(process.argv.slice(2));
  const builds = buildArgs.map(([n, d]) => loadBuild(n, d));
  const rows: Array<Record<string, number | string>> = [];
  for (const poolCount of sizes) {
    const states: Array<Awaited<ReturnType<typeof setUp>>> = [];
    try {
      for (const b of builds) states.push(await setUp(b, poolCount));
      const disc: Array<Awaited<ReturnType<typeof discover>>> = [];
      for (const s of states) disc.push(await discover(s));
      for (const s of states) await fill(s);
      const requirements = states.map((s) => s.build.parseExtraSpecs(specs).requirements);
      const samples = states.map(() => ({ place: [] as number[], plan: [] as number[], create: [] as number[], createCpu: [] as number[] }));
      for (let i = 0; i < iterations + 10; i++) {
        const sizeGib = 1 + (i % 50);
        const chosen: string[] = [];
        // Interleaved: each build in turn, the order alternating, so a busy moment hits all alike.
        const order = i % 2 === 0 ? states.map((_, k) => k) : states.map((_, k) => states.length - 1 - k);
        for (const k of order) {
          const s = states[k];
          const snapshot = await s.controller.pools(); // untimed: the pools as the last create left them
          let t = process.hrtime.bigint();
          const r = s.build.place(snapshot, { sizeGib, multiAttach: true, requirements: requirements[k] });
          const a = ms(t);
          t = process.hrtime.bigint();
          const q = await s.controller.plan({ sizeGib, profile: "bench", multiAttach: true });
          const b = ms(t);
          if (!r.ok || q.pool.id !== r.pool.id) throw new Error(`${s.build.name}: pure and full placement disagree at ${poolCount} pools`);
          const c0 = process.cpuUsage();
          t = process.hrtime.bigint();
          const v = await s.controller.createVolume(`urn:bench:${i}`, { name: `new-${i}`, sizeGib, profile: "bench", multiAttach: true, description: "", metadata: {} });
          const c = ms(t);
          const cu = process.cpuUsage(c0);
          chosen.push(v.poolId);
          if (i >= 10) {
            samples[k].place.push(a);
            samples[k].plan.push(b);
            samples[k].create.push(c);
            samples[k].createCpu.push((cu.user + cu.system) / 1000);
          }
        }
        if (new Set(chosen).size > 1) throw new Error(`builds placed create ${i} on different pools: ${chosen.join(", ")}`);
      }
      states.forEach((s, k) => {
        rows.push({
          build: s.build.name,
          pools: poolCount,
          volumes: existingVolumes,
          placeP50Ms: quantile(samples[k].place, 0.5),
          placeP99Ms: quantile(samples[k].place, 0.99),
          planP50Ms: quantile(samples[k].plan, 0.5),
          planP99Ms: quantile(samples[k].plan, 0.99),
          realCreateP50Ms: quantile(samples[k].create, 0.5),
          realCreateP99Ms: quantile(samples[k].create, 0.99),
          realCreateCpuP50Ms: quantile(samples[k].createCpu, 0.5),
          discoveryMs: disc[k].ms,
          discoveryCpuMs: disc[k].cpuMs,
          discoveryChildCpuMs: disc[k].childCpuMs,
        });
      });
      process.stderr.write(`${poolCount} pools done\n`);
    } finally {
      for (const s of states) {
        await s.store.close();
        fs.rmSync(s.dir, { recursive: true, force: true });
      }
    }
  }
  const f = (x: number | string) => (typeof x === "number" ? x.toFixed(3) : x).padStart(9);
  console.log(`ms, ${iterations} creates per build and pool count, ${existingVolumes} existing volumes, profile with 4 extra specs; builds: ${builds.map((b) => `${b.name}=${path.relative(repoRoot, b.dir) || "."}`).join(", ")}`);
  const cols = ["placeP50Ms", "planP50Ms", "realCreateP50Ms", "realCreateP99Ms", "realCreateCpuP50Ms", "discoveryMs", "discoveryCpuMs", "discoveryChildCpuMs"];
  console.log(["build    ", "pools ", ...cols.map((c) => c.replace(/Ms$/, "").padStart(9))].join(" | "));
  for (const r of rows) console.log([String(r.build).padEnd(9), String(r.pools).padEnd(6), ...cols.map((c) => f(r[c]))].join(" | "));
  if (builds.length === 2) {
    const [x, y] = builds.map((b) => b.name);
    for (const p of sizes) {
      const rx = rows.find((r) => r.build === x && r.pools === p)!;
      const ry = rows.find((r) => r.build === y && r.pools === p)!;
      const ratio = (c: string) => ((rx[c] as number) / (ry[c] as number)).toFixed(1);
      console.log(`${p} pools, ${x}/${y}: realCreate p50 ×${ratio("realCreateP50Ms")} (CPU ×${ratio("realCreateCpuP50Ms")}), discovery ×${ratio("discoveryMs")}`);
    }
  }
  const out = path.join(repoRoot, "bench/results/scheduler.json");
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ bench: "scheduler", iterations, when: new Date().toISOString(), builds: builds.map((b) => ({ name: b.name, dir: b.dir })), rows }, null, 2));
  console.log(`written ${path.relative(repoRoot, out)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
