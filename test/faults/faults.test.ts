/**
 * The fault harness in `npm test` (issue 12): 20 SIGKILLs in the middle of real `pulumi up`,
 * `destroy` and failover updates (10 on a SQLite state, 10 on PostgreSQL, side by side), of the
 * provider plugin, the CLI and the sds-agent, each at a step the engine's event log names; after
 * each, refresh and up as an operator would, and `preview --expect-no-changes` must pass. Then
 * destroy, and the census must be empty: no pool file, state row, tgtd target or CHAP account,
 * loop device, mount, daemon, daemon record or pending operation left.
 *
 * SDS_FAULTS_SEED replays a run (the seed is printed with the table); SDS_FAULTS_KILLS sets the
 * kills per store (default 10). `npm run soak:faults` is the 200-kill version.
 */
import { execFileSync } from "node:child_process";
import { cannotRun } from "../datapath/harness";
import { postgresSkipReason } from "../helpers/postgres";
import { censusTable } from "./census";
import { runFaults, summarize, summaryTable } from "./run";

jest.setTimeout(1_800_000);

function missing(): string | undefined {
  const datapath = cannotRun();
  if (datapath) return datapath;
  for (const c of ["nbdfuse", "qemu-nbd", "losetup"]) {
    try {
      execFileSync("which", [c], { stdio: "ignore" });
    } catch {
      return `the fault harness needs ${c} (Debian packages nbdfuse, qemu-utils, util-linux)`;
    }
  }
  return postgresSkipReason();
}
const why = missing();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const seed = Number(process.env.SDS_FAULTS_SEED ?? 12);
const perStore = Number(process.env.SDS_FAULTS_KILLS ?? 10);

suite("fault injection: SIGKILL of the provider, the CLI and the agent mid-run", () => {
  test(`${2 * perStore} kills (seed ${seed}): every stack converges, nothing is left`, async () => {
    const lines: string[] = [];
    const runs = await runFaults({ seed, kills: { sqlite: perStore, postgres: perStore }, agent: true, log: (l) => lines.push(l), keep: (r) => !!r.error || !r.census || Object.values(r.census).some((v) => v.length > 0) });
    const s = summarize(runs);
    console.log(`seed ${seed}\n${summaryTable(s)}\n${runs.map((r) => (r.census ? `\ncensus ${r.store}:\n${censusTable(r.census)}` : "")).join("")}\n\n${lines.join("\n")}`);
    expect(s.errors).toEqual([]);
    expect(s.kills).toBe(2 * perStore);
    expect(s.fired).toBe(s.kills);
    expect(s.notConverged).toEqual([]);
    expect(s.pluginExitAfterCliKill.stayed).toBe(0); // the plugin watches its parent
    expect(s.destroyCodes).toEqual({ sqlite: 0, postgres: 0 });
    expect(s.leftovers).toEqual({ sqlite: [], postgres: [] });
  });
});
