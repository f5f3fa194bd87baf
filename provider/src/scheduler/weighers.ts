/** The weighers, each a small scorer (Cinder's weighers). */
import { virtualFreeGib } from "./filters";
import type { Weigher } from "./types";

/** Free capacity: `spread` backends favour the emptiest pool, `stack` backends the fullest that fits. */
export const capacityWeigher: Weigher = {
  name: "capacity",
  weigh: (pool) => (pool.weigher === "stack" ? -virtualFreeGib(pool) : virtualFreeGib(pool)),
};

export const defaultWeighers: readonly Weigher[] = [capacityWeigher];
