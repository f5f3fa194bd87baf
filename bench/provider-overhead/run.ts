/**
 * bench/provider-overhead: wall time of `pulumi up` (and destroy) for N sds volumes next to N
 * resources of a do-nothing provider built on the same server code, in one run, rounds
 * interleaved so machine noise hits both alike. Prints a table and writes JSON.
 *
 *   npm run bench:provider-overhead -- [count=100] [rounds=3]
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { PulumiProject } from "../../test/helpers/pulumi";
import { repoRoot } from "../../test/helpers/provider-process";

const count = Number(process.argv[2] ?? 100);
const rounds = Number(process.argv[3] ?? 3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timed(p: PulumiProject, args: string[]): Promise<number> {
  const t = process.hrtime.bigint();
  await p.ok(args, 1_800_000);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

async function main(): Promise<void> {
  const programs = path.join(repoRoot, "bench/provider-overhead/programs");
  const kinds = ["sds", "null"] as const;
  const projects = Object.fromEntries(await Promise.all(kinds.map(async (k) => [k, await PulumiProject.create(path.join(programs, k), { name: `bench-${k}` })]))) as Record<(typeof kinds)[number], PulumiProject>;
  const times: Record<string, { up: number[]; destroy: number[] }> = { sds: { up: [], destroy: [] }, null: { up: [], destroy: [] } };
  try {
    for (const k of kinds) await projects[k].config({ count });
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? kinds : [...kinds].reverse();
      for (const k of order) {
        times[k].up.push(await timed(projects[k], ["up", "--yes", "--skip-preview"]));
        times[k].destroy.push(await timed(projects[k], ["destroy", "--yes", "--skip-preview"]));
        process.stderr.write(`round ${r + 1}/${rounds} ${k}: up ${times[k].up.at(-1)!.toFixed(2)} s, destroy ${times[k].destroy.at(-1)!.toFixed(2)} s\n`);
      }
    }
  } finally {
    for (const p of Object.values(projects)) p.remove();
  }
  const row = (op: "up" | "destroy") => {
    const s = median(times.sds[op]);
    const n = median(times.null[op]);
    return { op, sdsSeconds: s, nullSeconds: n, ratio: s / n };
  };
  const result = { bench: "provider-overhead", count, rounds, when: new Date().toISOString(), raw: times, median: [row("up"), row("destroy")] };
  console.log(`pulumi ${count} resources, median of ${rounds} interleaved rounds`);
  console.log("op       | sds (s) | do-nothing (s) | ratio");
  console.log("---------|---------|----------------|------");
  for (const m of result.median) console.log(`${m.op.padEnd(8)} | ${m.sdsSeconds.toFixed(2).padStart(7)} | ${m.nullSeconds.toFixed(2).padStart(14)} | ${m.ratio.toFixed(2)}`);
  const out = path.join(repoRoot, "bench/results/provider-overhead.json");
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(result, null, 2));
  console.log(`written ${path.relative(repoRoot, out)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
