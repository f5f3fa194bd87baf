/** The filters, each a small predicate answering why a pool cannot take a request (Cinder's filters, one concern each). */
import { evaluate } from "./extra-specs";
import type { Filter, PoolState } from "./types";

/** Capacity the pool may still promise: thin pools are oversubscribed up to the ratio; thick ones only hold what is free. */
export function virtualFreeGib(pool: PoolState): number {
  if (pool.provisioning === "thick") return Math.min(pool.freeGib, pool.totalGib - pool.provisionedGib);
  return pool.totalGib * pool.maxOverSubscriptionRatio - pool.provisionedGib;
}

const fmt = (gib: number) => `${Math.floor(gib * 10) / 10} GiB`;

export const availabilityZoneFilter: Filter = {
  name: "availabilityZone",
  reject: (pool, req) =>
    req.availabilityZone !== undefined && pool.availabilityZone !== req.availabilityZone ? `pool is in zone "${pool.availabilityZone}", volume asks "${req.availabilityZone}"` : undefined,
};

export const storageTypeFilter: Filter = {
  name: "storageType",
  reject: (pool, req) => (req.storageType !== undefined && pool.storageType !== req.storageType ? `pool storageType is "${pool.storageType}", profile asks "${req.storageType}"` : undefined),
};

/** The profile's extra specs: every requirement must hold; the first that does not is the reason. */
export const capabilitiesFilter: Filter = {
  name: "capabilities",
  reject: (pool, req) => {
    for (const r of req.requirements ?? []) {
      const why = evaluate(pool, r);
      if (why !== undefined) return why;
    }
    return undefined;
  },
};

export const multiAttachFilter: Filter = {
  name: "multiAttach",
  reject: (pool, req) => (req.multiAttach && !pool.multiAttach ? "multiAttach is false, volume asks multiAttach true" : undefined),
};

export const capacityFilter: Filter = {
  name: "capacity",
  reject: (pool, req) => {
    const free = virtualFreeGib(pool);
    if (req.sizeGib <= free) return undefined;
    const how = pool.provisioning === "thin" ? ` (thin: ${fmt(pool.totalGib)} total × ${pool.maxOverSubscriptionRatio} - ${fmt(pool.provisionedGib)} provisioned)` : " (thick)";
    return `${fmt(Math.max(free, 0))} free${how}, ${req.sizeGib} GiB asked`;
  },
};

/** Every filter, in the order they run (cheap and decisive first); a pool's reason is its first rejection. */
export const defaultFilters: readonly Filter[] = [availabilityZoneFilter, storageTypeFilter, capabilitiesFilter, multiAttachFilter, capacityFilter];
