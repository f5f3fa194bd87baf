/**
 * bench/attach: attach+detach throughput for N concurrent attachments (default 50) on a
 * shared-target backend (export work serialized per host and backend) and on a unique-target
 * backend (not serialized), real tgtd, in one run, rounds interleaved. Prints a table, writes JSON.
 * Root only (tgtd).
 *
 *   npm run bench:attach -- [attachments=50] [rounds=3]
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { cannotRun, makeEnv } from "../../test/datapath/harness";

const n = Number(process.argv[2] ?? 50);
const rounds = Number(process.argv[3] ?? 3);
const repoRoot = path.resolve(__dirname, "../..");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function once(sharedTargets: boolean): Promise<{ attachS: number; detachS: number }> {
  const env = await makeEnv({ protocol: "iscsi", sharedTargets, chap: true });
  try {
    const volumes = [];
    for (let i = 0; i < n; i++) volumes.push(await env.controller.createVolume(`urn:v${i}`, { name: `v${i}`, sizeGib: 1, multiAttach: false, description: "", metadata: {} }));
    let t = process.hrtime.bigint();
    const rows = await Promise.all(volumes.map((v, i) => env.attachments.attach(`urn:a${i}`, { volumeId: v.id, host: "hostX", mode: "rw", connector: { initiator: `iqn.2026-11.bench.host:${i % 4}` } })));
    const attachS = Number(process.hrtime.bigint() - t) / 1e9;
    t = process.hrtime.bigint();
    await Promise.all(rows.map((r) => env.attachments.detach(r.row.id)));
    const detachS = Number(process.hrtime.bigint() - t) / 1e9;
    if ((await env.store.listAttachments()).length > 0 || (await env.store.listTargets()).length > 0) throw new Error("detach left exports behind");
    return { attachS, detachS };
  } finally {
    await env.close();
  }
}

async function main(): Promise<void> {
  const why = cannotRun();
  if (why) throw new Error(`bench/attach cannot run: ${why}`);
  const runs: Record<"shared" | "unique", Array<{ attachS: number; detachS: number }>> = { shared: [], unique: [] };
  for (let r = 0; r < rounds; r++) {
    for (const kind of r % 2 === 0 ? (["shared", "unique"] as const) : (["unique", "shared"] as const)) {
      runs[kind].push(await once(kind === "shared"));
      const last = runs[kind].at(-1)!;
      process.stderr.write(`round ${r + 1}/${rounds} ${kind}: attach ${last.attachS.toFixed(2)} s, detach ${last.detachS.toFixed(2)} s\n`);
    }
  }
  const perSecond = (kind: "shared" | "unique") => n / median(runs[kind].map((x) => x.attachS + x.detachS));
  const shared = perSecond("shared");
  const unique = perSecond("unique");
  console.log(`${n} concurrent attachments (attach, then detach), real tgtd, median of ${rounds} interleaved rounds`);
  console.log("backend        | attach+detach per s | attach s | detach s");
  console.log("---------------|---------------------|----------|---------");
  for (const kind of ["shared", "unique"] as const) {
    const a = median(runs[kind].map((x) => x.attachS));
    const d = median(runs[kind].map((x) => x.detachS));
    console.log(`${(kind === "shared" ? "shared target" : "unique targets").padEnd(14)} | ${perSecond(kind).toFixed(1).padStart(19)} | ${a.toFixed(2).padStart(8)} | ${d.toFixed(2).padStart(7)}`);
  }
  console.log(`ratio shared / unique: ${(shared / unique).toFixed(2)} (goal ≥ 0.7)`);
  const out = path.join(repoRoot, "bench/results/attach.json");
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ bench: "attach", attachments: n, rounds, when: new Date().toISOString(), runs, perSecond: { shared, unique }, ratio: shared / unique }, null, 2));
  console.log(`written ${path.relative(repoRoot, out)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
