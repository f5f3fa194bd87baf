/**
 * Placement: filter the pools, weigh the survivors, break ties by pool id so the same inputs
 * always give the same pool. Pure: no I/O, no clock; one pass over the pools, and no string is
 * built until someone reads the rejections.
 */
import { defaultFilters } from "./filters";
import type { Filter, PlacementRequest, PlacementResult, PoolState, Rejection, Weigher } from "./types";
import { defaultWeighers } from "./weighers";

const round = (x: number) => Math.round(x * 100) / 100;

export function place(
  pools: readonly PoolState[],
  request: PlacementRequest,
  filters: readonly Filter[] = defaultFilters,
  weighers: readonly Weigher[] = defaultWeighers,
): PlacementResult {
  // Per pool: the index of the filter that dropped it, or -1 when it passed (then its score).
  // Typed arrays, not objects: placement over 10,000 pools allocates two buffers and no garbage.
  const n = pools.length;
  const droppedBy = new Int16Array(n);
  const scores = new Float64Array(n);
  let best = -1;
  let bestScore = -Infinity;
  for (let i = 0; i < n; i++) {
    const pool = pools[i];
    let failed = -1;
    for (let f = 0; f < filters.length; f++) {
      if (!filters[f].passes(pool, request)) {
        failed = f;
        break;
      }
    }
    droppedBy[i] = failed;
    if (failed >= 0) continue;
    let score = 0;
    for (const w of weighers) score += w.weigh(pool, request);
    scores[i] = score;
    if (best < 0 || score > bestScore || (score === bestScore && pool.id < pools[best].id)) {
      best = i;
      bestScore = score;
    }
  }
  const winner = best >= 0 ? pools[best] : undefined;
  let explained: Rejection[] | undefined;
  // Every other pool gets a reason: the filter that dropped it, or the weighing it lost.
  const rejections = () => {
    if (explained) return explained;
    const dropped: Rejection[] = [];
    const lost: Rejection[] = [];
    for (let i = 0; i < n; i++) {
      const pool = pools[i];
      if (droppedBy[i] >= 0) {
        const f = filters[droppedBy[i]];
        dropped.push({ poolId: pool.id, filter: f.name, reason: f.explain(pool, request) });
      } else if (i !== best) {
        const why = scores[i] === bestScore ? `scored the same as ${winner!.id}, which comes first by id` : `passed every filter; scored ${round(scores[i])} against ${round(bestScore)} for ${winner!.id}`;
        lost.push({ poolId: pool.id, filter: "weighers", reason: `${why} (${weighers.map((w) => w.name).join(", ")})` });
      }
    }
    return (explained = [...dropped, ...lost]);
  };
  return winner
    ? { ok: true, pool: winner, rejectedCount: n - 1, get rejections() { return rejections(); } }
    : { ok: false, rejectedCount: n, get rejections() { return rejections(); } };
}

/** The user-facing message when no pool passes: every pool, the filter that dropped it, and why. */
export function explainNoValidPool(request: PlacementRequest, rejections: readonly Rejection[], poolCount: number): string {
  if (poolCount === 0) return "no valid pool: no pools are configured";
  const lines = rejections.map((r) => `  ${r.poolId}: ${r.filter}: ${r.reason}`);
  return `no valid pool for a ${request.sizeGib} GiB volume; every pool was rejected:\n${lines.join("\n")}`;
}
