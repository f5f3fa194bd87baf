/**
 * Scheduler types. The scheduler is pure: it sees a snapshot of pools and a request, and answers
 * with a pool or with the reason each pool was rejected. No I/O, no clock.
 */
import type { Requirement } from "./extra-specs";

/** A pool as the scheduler sees it: capabilities, extras and capacity (GiB). */
export interface PoolState {
  /** `backend/pool`. */
  id: string;
  backendName: string;
  backendId: string;
  poolName: string;
  sharedTargets: boolean;
  availabilityZone: string;
  storageType: string;
  multiAttach: boolean;
  replication?: string;
  extras: Record<string, Record<string, string | number | boolean>>;
  totalGib: number;
  freeGib: number;
  provisionedGib: number;
  maxOverSubscriptionRatio: number;
  /** `thin` unless extras.dataStorage.provisioningPolicy says Thick. */
  provisioning: "thin" | "thick";
  /** Backend's weigher: spread (most free first) or stack (least free first). */
  weigher: "spread" | "stack";
}

export interface PlacementRequest {
  sizeGib: number;
  availabilityZone?: string;
  multiAttach?: boolean;
  storageType?: string;
  /** The profile's extra specs, parsed (see extra-specs.ts). */
  requirements?: readonly Requirement[];
}

/** One pool rejected by one filter. */
export interface Rejection {
  poolId: string;
  filter: string;
  reason: string;
}

/**
 * A filter: a tiny predicate. `passes` is the fast path run for every pool; `explain` says why a
 * pool does not pass and runs only when someone reads the rejections.
 */
export interface Filter {
  readonly name: string;
  passes(pool: PoolState, request: PlacementRequest): boolean;
  explain(pool: PoolState, request: PlacementRequest): string;
}

/** A weigher: a small scorer; higher wins. Scores of all weighers are summed. */
export interface Weigher {
  readonly name: string;
  weigh(pool: PoolState, request: PlacementRequest): number;
}

/** `rejections` is computed when first read: every pool but the chosen one, with its reason. */
export type PlacementResult = { ok: true; pool: PoolState; rejectedCount: number; readonly rejections: Rejection[] } | { ok: false; rejectedCount: number; readonly rejections: Rejection[] };
