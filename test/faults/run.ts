/**
 * A fault run: per state store one {@link FaultStack}, its share of the seed's kill points, then
 * destroy and census; the stores run side by side. Shared by the jest suite (20 kills) and the
 * soak (`npm run soak:faults`, 200).
 */
import { type Census, leftovers } from "./census";
import { FaultStack, type KillResult, planKills, type StoreKind } from "./harness";

export interface StoreRun {
  store: StoreKind;
  kills: KillResult[];
  destroyCode: number;
  census?: Census;
  /** Set when the run itself broke (setup failed, a cycle threw). */
  error?: string;
  workDir: string;
}

export interface RunOptions {
  seed: number;
  /** Kills per store. */
  kills: Record<StoreKind, number>;
  agent: boolean;
  log?: (line: string) => void;
  /** Asked before each cycle: false stops the run at that boundary (SIGINT in the soak). */
  keepGoing?: () => boolean;
  /** Keep the work folders (for a failure's post-mortem). */
  keep?: boolean | ((run: StoreRun) => boolean);
}

/** Every kill point for `store` (the seed mixed with the store, so the stores differ). */
export function planFor(store: StoreKind, o: Pick<RunOptions, "seed" | "kills" | "agent">) {
  return planKills(o.seed * 2 + (store === "postgres" ? 1 : 0), o.kills[store], { agent: o.agent });
}

async function runStore(store: StoreKind, o: RunOptions): Promise<StoreRun> {
  const run: StoreRun = { store, kills: [], destroyCode: -1, workDir: "" };
  let stack: FaultStack | undefined;
  try {
    stack = await FaultStack.create({ store, agent: o.agent, log: o.log });
    run.workDir = stack.p.dir;
    const plan = planFor(store, o);
    try {
      for (let i = 0; i < plan.length; i++) {
        if (o.keepGoing && !o.keepGoing()) break;
        run.kills.push(await stack.cycle(plan[i], i));
      }
    } catch (err) {
      // Still destroy and count what is left.
      run.error = (err as Error).stack ?? String(err);
      o.log?.(`[${store}] cycle broke: ${run.error}`);
    }
    const end = await stack.finish();
    run.destroyCode = end.destroyCode;
    run.census = end.census;
  } catch (err) {
    run.error = (err as Error).stack ?? String(err);
    o.log?.(`[${store}] run broke: ${run.error}`);
  } finally {
    const keep = typeof o.keep === "function" ? o.keep(run) : o.keep;
    await stack?.teardown(keep).catch((err) => o.log?.(`[${store}] teardown: ${(err as Error).message}`));
  }
  return run;
}

export async function runFaults(o: RunOptions): Promise<StoreRun[]> {
  const stores = (Object.keys(o.kills) as StoreKind[]).filter((s) => o.kills[s] > 0);
  return Promise.all(stores.map((s) => runStore(s, o)));
}

const pct = (xs: number[], q: number) => {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

/** The figures of a run: kills by target/phase, convergence, follow-up times, lock waits, census. */
export function summarize(runs: StoreRun[]) {
  const kills = runs.flatMap((r) => r.kills);
  const byTargetPhase: Record<string, { kills: number; fired: number; converged: number }> = {};
  for (const k of kills) {
    const key = `${k.store}/${k.target}/${k.phase}`;
    const row = (byTargetPhase[key] ??= { kills: 0, fired: 0, converged: 0 });
    row.kills++;
    if (k.fired) row.fired++;
    if (k.converged) row.converged++;
  }
  const followTimes = (cmd: string) => kills.flatMap((k) => k.followUps.filter((f) => f.command.startsWith(`pulumi ${cmd}`)).map((f) => f.seconds));
  const times = Object.fromEntries(["refresh", "up", "preview"].map((c) => [c, { p50: pct(followTimes(c), 0.5), max: Math.max(0, ...followTimes(c)), n: followTimes(c).length }]));
  const lockWaits = kills.flatMap((k) =>
    k.followUps.filter((f) => f.command.startsWith("pulumi up") && f.lockLines.length && (f.lockWaitSeconds ?? f.seconds) > 5).map((f) => ({ store: k.store, cycle: k.cycle, seconds: f.lockWaitSeconds ?? f.seconds, line: f.lockLines[0] })),
  );
  return {
    kills: kills.length,
    fired: kills.filter((k) => k.fired).length,
    converged: kills.filter((k) => k.converged).length,
    notConverged: kills.filter((k) => !k.converged).map((k) => `${k.store} cycle ${k.cycle} ${k.target}@${k.phase} k=${k.k} ${k.when}: ${k.notes.join("; ")}`),
    cliKillOrphans: kills.filter((k) => k.orphans.length).map((k) => `${k.store} cycle ${k.cycle}: ${k.orphans.join(", ")}`),
    pluginExitAfterCliKill: { p50: pct(kills.filter((k) => k.target === "cli" && k.pluginExitSeconds !== undefined).map((k) => k.pluginExitSeconds!), 0.5), stayed: kills.filter((k) => k.target === "cli" && k.fired && k.pluginExitSeconds === undefined).length },
    byTargetPhase,
    followUpSeconds: times,
    lockWaitsOver5s: lockWaits,
    leftovers: Object.fromEntries(runs.map((r) => [r.store, r.census ? leftovers(r.census) : [`no census: ${r.error?.split("\n")[0] ?? "?"}`]])),
    destroyCodes: Object.fromEntries(runs.map((r) => [r.store, r.destroyCode])),
    errors: runs.filter((r) => r.error).map((r) => `${r.store}: ${r.error!.split("\n").slice(0, 3).join(" ")}`),
  };
}

/** The summary as text tables for a terminal or a test log. */
export function summaryTable(s: ReturnType<typeof summarize>): string {
  const lines = [`kills ${s.kills}, fired ${s.fired}, converged ${s.converged}`, "", "store/target/phase          kills fired converged"];
  for (const [k, v] of Object.entries(s.byTargetPhase).sort()) lines.push(`${k.padEnd(28)}${String(v.kills).padStart(5)}${String(v.fired).padStart(6)}${String(v.converged).padStart(10)}`);
  lines.push("", "follow-up   n     p50 s   max s");
  for (const [k, v] of Object.entries(s.followUpSeconds)) lines.push(`${k.padEnd(10)}${String(v.n).padStart(3)}${v.p50.toFixed(1).padStart(10)}${v.max.toFixed(1).padStart(8)}`);
  lines.push("", `plugin exit after a CLI kill: p50 ${s.pluginExitAfterCliKill.p50.toFixed(1)} s, stayed ${s.pluginExitAfterCliKill.stayed}`);
  lines.push(`lock waits > 5 s in follow-up ups: ${s.lockWaitsOver5s.length}`, ...s.lockWaitsOver5s.map((l) => `  ${l.store} cycle ${l.cycle}: ${l.seconds} s: ${l.line}`));
  lines.push(`not converged: ${s.notConverged.length}`, ...s.notConverged.map((x) => `  ${x}`));
  lines.push(`orphans after CLI kills: ${s.cliKillOrphans.length}`, ...s.cliKillOrphans.map((x) => `  ${x}`));
  lines.push("", "census (leftovers after the final destroy):");
  for (const [store, l] of Object.entries(s.leftovers)) lines.push(`  ${store}: ${l.length}${l.length ? `\n    ${l.join("\n    ")}` : ""}`);
  if (s.errors.length) lines.push("", "errors:", ...s.errors.map((e) => `  ${e}`));
  return lines.join("\n");
}
