/**
 * Placement: filter the pools, weigh the survivors, break ties by pool id so the same inputs
 * always give the same pool.
 */
import { defaultFilters, virtualFreeGib } from "./filters";
import type { Filter, PlacementRequest, PlacementResult, PoolState, Rejection } from "./types";

/** Score for the weighers: higher wins. spread favours free capacity, stack favours full pools. */
export function weigh(pool: PoolState): number {
  const free = virtualFreeGib(pool);
  return pool.weigher === "stack" ? -free : free;
}

export function place(pools: readonly PoolState[], request: PlacementRequest, filters: readonly Filter[] = defaultFilters): PlacementResult {
  const rejections: Rejection[] = [];
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
    const score = weigh(pool);
    if (score > bestScore || (score === bestScore && best !== undefined && pool.id < best.id)) {
      best = pool;
      bestScore = score;
    }
  }
  return best ? { ok: true, pool: best, rejections } : { ok: false, rejections };
}

/** The user-facing message when no pool passes: every pool, the filter that dropped it, and why. */
export function explainNoValidPool(request: PlacementRequest, rejections: readonly Rejection[], poolCount: number): string {
  if (poolCount === 0) return "no valid pool: no pools are configured";
  const lines = rejections.map((r) => `  ${r.poolId}: ${r.filter}: ${r.reason}`);
  return `no valid pool for a ${request.sizeGib} GiB volume; every pool was rejected:\n${lines.join("\n")}`;
}
