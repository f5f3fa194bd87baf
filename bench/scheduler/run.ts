/**
 * bench/scheduler: placement time (p50/p99) for 100, 1,000 and 10,000 pools with 10,000
 * existing volumes, two ways in one run:
 * - `place()`: the pure scheduler on a pool snapshot (filters + weighers + explanations);
 * - `plan()`: what a Volume create/preview does: read provisioned capacity from SQLite
 *   (10,000 rows), build the pool snapshot, place.
 * Prints a table and writes bench/results/scheduler.json.
 *
 *   npm run bench:scheduler -- [iterations=200]
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { randomUUID } from "node:crypto";
import { backendsSchema } from "../../provider/src/domain/backend";
import { Controller } from "../../provider/src/controller/controller";
import { parseExtraSpecs } from "../../provider/src/scheduler/extra-specs";
import { place } from "../../provider/src/scheduler/scheduler";
import { SqliteStore } from "../../provider/src/store/sqlite-store";

const iterations = Number(process.argv[2] ?? 200);
const sizes = [100, 1_000, 10_000];
const existingVolumes = 10_000;
const repoRoot = path.resolve(__dirname, "../..");

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

function backendsFor(poolCount: number, dir: string) {
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
  return backendsSchema.parse(backends);
}

async function main(): Promise<void> {
  const specs = { "capabilities:multiAttach": "<is> true", diskType: "<or> SSD <or> NVMe", maxIOPS: ">= 5000", latency: "<= 8ms" };
  const rows: Array<Record<string, number>> = [];
  for (const poolCount of sizes) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-bench-sched-"));
    const store = new SqliteStore(path.join(dir, "state.db"));
    try {
      const backends = backendsFor(poolCount, dir);
      const controller = new Controller({ store, backends });
      const t0 = process.hrtime.bigint();
      await controller.discover();
      const discoverMs = Number(process.hrtime.bigint() - t0) / 1e6;
      await controller.createProfile("bench", { name: "bench", description: "", storageType: "block", extraSpecs: specs });
      // 10,000 existing volumes spread over the pools.
      const pools = await controller.pools();
      await store.transaction(async (tx) => {
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
      const snapshot = await controller.pools();
      const requirements = parseExtraSpecs(specs).requirements;
      const pure: number[] = [];
      const plan: number[] = [];
      for (let i = 0; i < iterations + 10; i++) {
        const sizeGib = 1 + (i % 50);
        let t = process.hrtime.bigint();
        const r = place(snapshot, { sizeGib, multiAttach: true, requirements });
        const a = Number(process.hrtime.bigint() - t) / 1e6;
        t = process.hrtime.bigint();
        const q = await controller.plan({ sizeGib, profile: "bench", multiAttach: true });
        const b = Number(process.hrtime.bigint() - t) / 1e6;
        if (!r.ok || q.pool.id !== r.pool.id) throw new Error(`pure and full placement disagree at ${poolCount} pools`);
        if (i >= 10) {
          pure.push(a);
          plan.push(b);
        }
      }
      rows.push({ pools: poolCount, volumes: existingVolumes, discoverMs, placeP50: quantile(pure, 0.5), placeP99: quantile(pure, 0.99), planP50: quantile(plan, 0.5), planP99: quantile(plan, 0.99) });
      process.stderr.write(`${poolCount} pools done\n`);
    } finally {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const f = (x: number) => x.toFixed(3).padStart(8);
  console.log(`placement time in ms, ${iterations} placements each, ${existingVolumes} existing volumes, profile with 4 extra specs`);
  console.log("pools  | place p50 | place p99 | plan p50 | plan p99 | discovery ms");
  console.log("-------|-----------|-----------|----------|----------|-------------");
  for (const r of rows) console.log(`${String(r.pools).padEnd(6)} |  ${f(r.placeP50)} |  ${f(r.placeP99)} | ${f(r.planP50)} | ${f(r.planP99)} | ${r.discoverMs.toFixed(0).padStart(12)}`);
  const growth = (k: "placeP50" | "planP50") => rows[2][k] / rows[1][k];
  console.log(`growth 1,000 → 10,000 pools (×10 pools): place p50 ×${growth("placeP50").toFixed(2)}, plan p50 ×${growth("planP50").toFixed(2)}`);
  const out = path.join(repoRoot, "bench/results/scheduler.json");
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ bench: "scheduler", iterations, when: new Date().toISOString(), rows }, null, 2));
  console.log(`written ${path.relative(repoRoot, out)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
