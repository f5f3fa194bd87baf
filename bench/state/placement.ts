/**
 * bench:state placement: Controller.createVolume, the real create path (placement and the row
 * in one store transaction, the sparse file made by a FileDriver, the row marked available), on
 * a SqliteStore (a file in a temp folder) and on a PostgresStore (a database of a throwaway
 * cluster), side by side. Each trial: a fresh state and pool folder, 10 creates to warm up,
 * `--creates` sequential creates, then `--creates` more by `--concurrency` workers at once.
 * Trials alternate the store that goes first, `--repeat` times; the table shows medians over
 * trials of p50/p95 per-create latency, creates/s and CPU per create (this process; and the
 * PostgreSQL server's, which SQLite does not have: it works inside this process).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Controller } from "../../provider/src/controller/controller";
import { backendsSchema } from "../../provider/src/domain/backend";
import { FileDriver } from "../../provider/src/drivers/file-driver";
import { PostgresStore } from "../../provider/src/store/postgres-store";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import type { Store } from "../../provider/src/store/store";
import { type PostgresCluster, startPostgres } from "../../test/helpers/postgres";
import { elapsedMs, fixed, keepSecret, median, parseFlags, quantile, ratio, selfCpuMs, ServerCpu, table, writeResult } from "./common";

const kinds = ["sqlite", "postgres"] as const;
type Kind = (typeof kinds)[number];
const WARMUP = 10;

interface Phase {
  creates: number;
  wallMs: number;
  createsPerSecond: number;
  p50Ms: number;
  p95Ms: number;
  /** CPU of this process (user + system) per create. */
  selfCpuMsPerCreate: number;
  /** CPU of the PostgreSQL server per create (0 for SQLite). */
  serverCpuMsPerCreate: number;
}

interface Trial {
  kind: Kind;
  repeat: number;
  sequential: Phase;
  concurrent: Phase;
}

/** Run `count` creates through `workers` workers (1: one after another); each create timed on its own. */
async function phase(controller: Controller, names: string[], workers: number, server?: ServerCpu): Promise<Phase> {
  const latencies: number[] = [];
  let next = 0;
  const cpu0 = process.cpuUsage();
  const server0 = server?.ms() ?? 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (next < names.length) {
        const name = names[next++];
        const t = process.hrtime.bigint();
        await controller.createVolume(`urn:bench:${name}`, { name, sizeGib: 1, multiAttach: false, description: "", metadata: {} });
        latencies.push(elapsedMs(t));
      }
    }),
  );
  const wallMs = elapsedMs(t0);
  const selfMs = selfCpuMs(cpu0);
  const serverMs = server ? server.ms() - server0 : 0;
  return {
    creates: names.length,
    wallMs,
    createsPerSecond: names.length / (wallMs / 1000),
    p50Ms: quantile(latencies, 0.5),
    p95Ms: quantile(latencies, 0.95),
    selfCpuMsPerCreate: selfMs / names.length,
    serverCpuMsPerCreate: serverMs / names.length,
  };
}

async function trial(kind: Kind, repeat: number, creates: number, concurrency: number, cluster: PostgresCluster, server: ServerCpu): Promise<Trial> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `sds-bench-state-${kind}-`));
  let store: Store | undefined;
  try {
    store = kind === "sqlite" ? new SqliteStore(path.join(dir, "state.db")) : await PostgresStore.open(await cluster.createDatabase());
    const backends = backendsSchema.parse([
      // Thin and vast: capacity never turns a create away, so every trial places all its volumes.
      { name: "b1", driver: "file", pools: [{ name: "p1", path: path.join(dir, "pool"), totalCapacityGib: 1_000_000, multiAttach: true }] },
    ]);
    const controller = new Controller({ store, backends, drivers: { file: new FileDriver() } });
    await controller.discover();
    const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
    await phase(controller, names("w", WARMUP), 1);
    const sequential = await phase(controller, names("s", creates), 1, kind === "postgres" ? server : undefined);
    const concurrent = await phase(controller, names("c", creates), concurrency, kind === "postgres" ? server : undefined);
    const rows = await controller.listVolumes();
    if (rows.length !== WARMUP + 2 * creates || rows.some((r) => r.status !== "available")) {
      throw new Error(`${kind}: expected ${WARMUP + 2 * creates} available volumes, found ${rows.length} (${rows.filter((r) => r.status !== "available").length} not available)`);
    }
    return { kind, repeat, sequential, concurrent };
  } finally {
    await store?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** `placement [--creates N] [--concurrency K] [--repeat R]`. */
export async function placementBench(argv: string[]): Promise<void> {
  const flags = parseFlags(argv, { creates: 200, concurrency: 4, repeat: 5 });
  const { creates, concurrency, repeat } = flags;
  const cluster = await startPostgres();
  keepSecret(cluster.password);
  const trials: Trial[] = [];
  try {
    const server = ServerCpu.byPort(Number(new URL(cluster.url("postgres")).port));
    for (let r = 0; r < repeat; r++) {
      const order = r % 2 === 0 ? kinds : [...kinds].reverse();
      for (const kind of order) {
        const t = await trial(kind, r, creates, concurrency, cluster, server);
        trials.push(t);
        process.stderr.write(`repeat ${r + 1}/${repeat} ${kind}: sequential p50 ${t.sequential.p50Ms.toFixed(2)} ms, ${t.sequential.createsPerSecond.toFixed(0)}/s; ${concurrency} at once p50 ${t.concurrent.p50Ms.toFixed(2)} ms, ${t.concurrent.createsPerSecond.toFixed(0)}/s\n`);
      }
    }
  } finally {
    await cluster.stop();
  }

  const med = (kind: Kind, p: "sequential" | "concurrent", k: keyof Phase) => median(trials.filter((t) => t.kind === kind).map((t) => t[p][k]));
  const summary = (["sequential", "concurrent"] as const).map((p) => {
    const m = (k: keyof Phase) => ({ sqlite: med("sqlite", p, k), postgres: med("postgres", p, k), ratio: med("postgres", p, k) / med("sqlite", p, k) });
    const totalCpu = (kind: Kind) => median(trials.filter((t) => t.kind === kind).map((t) => t[p].selfCpuMsPerCreate + t[p].serverCpuMsPerCreate));
    return {
      phase: p,
      workers: p === "sequential" ? 1 : concurrency,
      p50Ms: m("p50Ms"),
      p95Ms: m("p95Ms"),
      createsPerSecond: m("createsPerSecond"),
      selfCpuMsPerCreate: m("selfCpuMsPerCreate"),
      serverCpuMsPerCreate: m("serverCpuMsPerCreate"),
      totalCpuMsPerCreate: { sqlite: totalCpu("sqlite"), postgres: totalCpu("postgres"), ratio: totalCpu("postgres") / totalCpu("sqlite") },
    };
  });

  console.log(`\nplacement: Controller.createVolume (FileDriver pool), ${creates} sequential creates then ${creates} with ${concurrency} at once, after ${WARMUP} to warm up;`);
  console.log(`median over ${repeat} trials per store, the store going first alternating; CPU ms per create`);
  const rows: string[][] = [];
  for (const s of summary) {
    const label = s.phase === "sequential" ? "sequential" : `${s.workers} at once`;
    const row = (metric: string, v: { sqlite: number; postgres: number }, digits: number) =>
      rows.push([`${label}: ${metric}`, fixed(v.sqlite, digits), fixed(v.postgres, digits), ratio(v.postgres, v.sqlite)]);
    row("p50 ms", s.p50Ms, 2);
    row("p95 ms", s.p95Ms, 2);
    row("creates/s", s.createsPerSecond, 0);
    row("CPU this process", s.selfCpuMsPerCreate, 3);
    rows.push([`${label}: CPU PG server`, "-", fixed(s.serverCpuMsPerCreate.postgres, 3), "-"]);
    row("CPU total", s.totalCpuMsPerCreate, 3);
  }
  console.log(table(["metric", "sqlite", "postgres", "PG/SQLite"], rows));
  writeResult("state-placement", { bench: "state-placement", creates, concurrency, repeat, warmup: WARMUP, cpus: os.cpus().length, loadavg: os.loadavg(), when: new Date().toISOString(), trials, median: summary });
}
