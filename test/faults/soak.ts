/**
 * `npm run soak:faults [-- --kills N] [--seed S] [--stores sqlite,postgres] [--no-agent] [--keep]`:
 * N kills (default 200) split over the stores, run side by side; prints the summary and each
 * store's census, and writes the JSON to bench/results/faults-soak-<date>.json. SIGINT/SIGTERM
 * stop it at the next cycle boundary: it still destroys, takes the census and writes its result.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { censusTable } from "./census";
import type { StoreKind } from "./harness";
import { repoRoot } from "../helpers/provider-process";
import { runFaults, summarize, summaryTable } from "./run";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("soak:faults needs root (tgtd, loop devices, initiators)");
    process.exit(2);
  }
  const kills = Number(arg("kills") ?? 200);
  const seed = Number(arg("seed") ?? Date.now() % 100_000);
  const stores = (arg("stores") ?? "sqlite,postgres").split(",") as StoreKind[];
  const agent = !process.argv.includes("--no-agent");
  const per: Record<StoreKind, number> = { sqlite: 0, postgres: 0 };
  stores.forEach((s, i) => (per[s] = Math.floor(kills / stores.length) + (i < kills % stores.length ? 1 : 0)));
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`${sig}: stopping at the next cycle boundary, then destroy and census`);
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  const started = Date.now();
  console.error(`soak:faults: ${kills} kills (${stores.map((s) => `${s} ${per[s]}`).join(", ")}), seed ${seed}, agent ${agent}`);
  const runs = await runFaults({
    seed,
    kills: per,
    agent,
    log: (l) => console.error(`${new Date().toISOString().slice(11, 19)} ${l}`),
    keepGoing: () => !stopping,
    keep: process.argv.includes("--keep") || ((r) => !!r.error || !r.census || Object.values(r.census).some((v) => v.length > 0) || r.kills.some((k) => !k.converged)),
  });
  const summary = summarize(runs);
  const seconds = (Date.now() - started) / 1000;
  console.log(summaryTable(summary));
  for (const r of runs) if (r.census) console.log(`\ncensus ${r.store}:\n${censusTable(r.census)}`);
  console.log(`\n${seconds.toFixed(0)} s, seed ${seed}${stopping ? " (stopped early)" : ""}`);
  const dir = path.join(repoRoot, "bench/results");
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `faults-soak-${new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19)}.json`);
  fs.writeFileSync(file, JSON.stringify({ seed, kills, stores, agent, seconds, stoppedEarly: stopping, summary, runs }, null, 2));
  console.log(`written ${path.relative(repoRoot, file)}`);
  process.exit(summary.converged === summary.kills && Object.values(summary.leftovers).every((l) => l.length === 0) ? 0 : 1);
}

void main();
