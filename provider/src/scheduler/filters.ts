/** The filters, each a small predicate (Cinder's scheduler filters, one concern each). */
import type { Filter, PoolState } from "./types";

/** Capacity the pool may still promise: thin pools are oversubscribed up to the ratio. */
export function virtualFreeGib(pool: PoolState): number {
  if (pool.provisioning === "thick") return Math.min(pool.freeGib, pool.totalGib - pool.provisionedGib);
  return pool.totalGib * pool.maxOverSubscriptionRatio - pool.provisionedGib;
}

const fmt = (gib: number) => `${Math.floor(gib * 10) / 10} GiB`;

export const availabilityZoneFilter: Filter = {
  name: "availabilityZone",
  reject: (pool, req) =>
    req.availabilityZone !== undefined && pool.availabilityZone !== req.availabilityZone
      ? `pool is in zone "${pool.availabilityZone}", volume asks "${req.availabilityZone}"`
      : undefined,
};

export const storageTypeFilter: Filter = {
  name: "storageType",
  reject: (pool, req) =>
    req.storageType !== undefined && pool.storageType !== req.storageType ? `pool storageType is "${pool.storageType}", profile asks "${req.storageType}"` : undefined,
};

export const capacityFilter: Filter = {
  name: "capacity",
  reject: (pool, req) => {
    const free = virtualFreeGib(pool);
    if (req.sizeGib <= free) return undefined;
    const how = pool.provisioning === "thin" ? ` (thin: ${fmt(pool.totalGib)} total × ${pool.maxOverSubscriptionRatio} - ${fmt(pool.provisionedGib)} provisioned)` : "";
    return `${fmt(Math.max(free, 0))} free${how}, ${req.sizeGib} GiB asked`;
  },
};

export const multiAttachFilter: Filter = {
  name: "multiAttach",
  reject: (pool, req) => (req.multiAttach && !pool.multiAttach ? "multiAttach is false, volume asks multiAttach true" : undefined),
};

/** Every filter, in the order their reasons are reported. */
export const defaultFilters: readonly Filter[] = [availabilityZoneFilter, storageTypeFilter, multiAttachFilter, capacityFilter];
