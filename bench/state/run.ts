/**
 * bench/state: the controller's state in PostgreSQL next to SQLite, in one run, both stores
 * alternated so a noisy machine weighs on both alike. Medians, PG/SQLite ratios, CPU time; no
 * timed assertion anywhere. Prints tables and writes bench/results/state-<bench>.json.
 *
 *   npm run bench:state                                   both, defaults
 *   npm run bench:state -- placement [--creates 200] [--concurrency 4] [--repeat 5]
 *   npm run bench:state -- up100 [--volumes 100] [--repeat 1]     (npm run build first)
 *
 * Needs PostgreSQL's server binaries (test/helpers/postgres.ts) and, for up100, the Pulumi CLI
 * (scripts/ensure-pulumi.sh).
 */
import { inspect } from "node:util";
import { scrub } from "./common";
import { placementBench } from "./placement";
import { up100Bench } from "./up100";

async function main(): Promise<void> {
  const [which, ...rest] = process.argv.slice(2);
  if (which === "placement") return placementBench(rest);
  if (which === "up100") return up100Bench(rest);
  if (which === undefined) {
    await placementBench([]);
    await up100Bench([]);
    return;
  }
  throw new Error(`unknown bench ${JSON.stringify(which)}: placement or up100 (or nothing for both)`);
}

main().catch((err) => {
  // inspect: the stack and every cause, with the run's secrets hidden.
  console.error(scrub(inspect(err, { depth: 6 })));
  process.exit(1);
});
