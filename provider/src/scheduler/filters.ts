/** The filters, each a small predicate with its explanation (Cinder's filters, one concern each). */
import { evaluate, holds } from "./extra-specs";
import type { Filter, PoolState } from "./types";

/** Capacity the pool may still promise: thin pools are oversubscribed up to the ratio; thick ones only hold what is free. */
export function virtualFreeGib(pool: PoolState): number {
  if (pool.provisioning === "thick") return Math.min(pool.freeGib, pool.totalGib - pool.provisionedGib);
  return pool.totalGib * pool.maxOverSubscriptionRatio - pool.provisionedGib;
}

const fmt = (gib: number) => `${Math.floor(gib * 10) / 10} GiB`;

/** A pool that did not answer at discovery (PoolState.unavailable) takes no new volume. */
export const answeredFilter: Filter = {
  name: "answered",
  passes: (pool) => pool.unavailable === undefined,
  explain: (pool) => `did not answer at discovery: ${pool.unavailable}`,
};

export const availabilityZoneFilter: Filter = {
  name: "availabilityZone",
  passes: (pool, req) => req.availabilityZone === undefined || pool.availabilityZone === req.availabilityZone,
  explain: (pool, req) => `pool is in zone "${pool.availabilityZone}", volume asks "${req.availabilityZone}"`,
};

export const storageTypeFilter: Filter = {
  name: "storageType",
  passes: (pool, req) => req.storageType === undefined || pool.storageType === req.storageType,
  explain: (pool, req) => `pool storageType is "${pool.storageType}", profile asks "${req.storageType}"`,
};

/** The profile's extra specs: every requirement must hold; the first that does not is the reason. */
export const capabilitiesFilter: Filter = {
  name: "capabilities",
  passes: (pool, req) => {
    for (const r of req.requirements ?? []) if (!holds(pool, r)) return false;
    return true;
  },
  explain: (pool, req) => {
    for (const r of req.requirements ?? []) {
      const why = evaluate(pool, r);
      if (why !== undefined) return why;
    }
    return "passes";
  },
};

export const multiAttachFilter: Filter = {
  name: "multiAttach",
  passes: (pool, req) => !req.multiAttach || pool.multiAttach,
  explain: () => "multiAttach is false, volume asks multiAttach true",
};

export const capacityFilter: Filter = {
  name: "capacity",
  passes: (pool, req) => req.sizeGib <= virtualFreeGib(pool),
  explain: (pool, req) => {
    const how = pool.provisioning === "thin" ? ` (thin: ${fmt(pool.totalGib)} total × ${pool.maxOverSubscriptionRatio} - ${fmt(pool.provisionedGib)} provisioned)` : " (thick)";
    return `${fmt(Math.max(virtualFreeGib(pool), 0))} free${how}, ${req.sizeGib} GiB asked`;
  },
};

/** Every filter, in the order they run (cheap and decisive first); a pool's reason is its first rejection. */
export const defaultFilters: readonly Filter[] = [answeredFilter, availabilityZoneFilter, storageTypeFilter, capabilitiesFilter, multiAttachFilter, capacityFilter];

/** `reject` for tests and callers that want the reason at once: undefined when the pool passes. */
export function reject(filter: Filter, pool: PoolState, req: Parameters<Filter["passes"]>[1]): string | undefined {
  return filter.passes(pool, req) ? undefined : filter.explain(pool, req);
}
