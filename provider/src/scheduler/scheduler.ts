/**
 * Placement: filter the pools, weigh the survivors, break ties by pool id so the same inputs
 * always give the same pool. Pure: no I/O, no clock; one pass over the pools.
 */
import { defaultFilters } from "./filters";
import type { Filter, PlacementRequest, PlacementResult, PoolState, Rejection, Weigher } from "./types";
import { defaultWeighers } from "./weighers";

export function place(
  pools: readonly PoolState[],
  request: PlacementRequest,
  filters: readonly Filter[] = defaultFilters,
  weighers: readonly Weigher[] = defaultWeighers,
): PlacementResult {
  const rejections: Rejection[] = [];
  const passed: Array<{ pool: PoolState; score: number }> = [];
  let best: PoolState | undefined;
  let bestScore = -Infinity;
  for (const pool of pools) {
    let rejected = false;
    for (const f of filters) {
      const reason = f.reject(pool, request);
      if (reason !== undefined) {
        rejections.push({ poolId: pool.id, filter: f.name, reason });
        rejected = true;
        break;
      }
    }
    if (rejected) continue;
    let score = 0;
    for (const w of weighers) score += w.weigh(pool, request);
    passed.push({ pool, score });
    if (best === undefined || score > bestScore || (score === bestScore && pool.id < best.id)) {
      best = pool;
      bestScore = score;
    }
  }
  if (!best) return { ok: false, rejections };
  // Pools that passed every filter but lost the weighing are explained too: every pool gets a reason.
  const winner = best;
  for (const { pool, score } of passed) {
    if (pool === winner) continue;
    const why = score === bestScore ? `scored the same as ${winner.id}, which comes first by id` : `passed every filter; scored ${round(score)} against ${round(bestScore)} for ${winner.id}`;
    rejections.push({ poolId: pool.id, filter: "weighers", reason: `${why} (${weighers.map((w) => w.name).join(", ")})` });
  }
  return { ok: true, pool: best, rejections };
}

const round = (x: number) => Math.round(x * 100) / 100;

/** The user-facing message when no pool passes: every pool, the filter that dropped it, and why. */
export function explainNoValidPool(request: PlacementRequest, rejections: readonly Rejection[], poolCount: number): string {
  if (poolCount === 0) return "no valid pool: no pools are configured";
  const lines = rejections.map((r) => `  ${r.poolId}: ${r.filter}: ${r.reason}`);
  return `no valid pool for a ${request.sizeGib} GiB volume; every pool was rejected:\n${lines.join("\n")}`;
}
