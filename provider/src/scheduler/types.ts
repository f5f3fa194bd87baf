/**
 * Scheduler types. The scheduler is pure: it sees a snapshot of pools and a request, and answers
 * with a pool or with the reason each pool was rejected. No I/O, no clock.
 */
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
  /** Why the pool could not be measured at discovery (its cluster or mount does not answer): no volume is placed on it. */
  unavailable?: string;
}

/** An extra-spec operator (see extra-specs.ts for what each means). */
export type Operator = "<is>" | "<in>" | "<or>" | "<all-in>" | "==" | "!=" | ">=" | "<=" | ">" | "<" | "s==" | "s!=" | "s<" | "s<=" | "s>" | "s>=" | "literal";

/** One parsed extra spec: what to look up on a pool and how to compare it (extra-specs.ts parses). */
export interface Requirement {
  /** The key as written. */
  key: string;
  /** Where to look: a capability name, an extra name anywhere, or `group.name`. */
  lookup: { kind: "capability" | "extra" | "any"; group?: string; name: string };
  op: Operator;
  /** The operand(s): one for most operators, several for `<or>` and `<all-in>`. */
  values: string[];
  /** The spec value as written, for messages. */
  text: string;
  /** Parsed once: the boolean of `<is>` and boolean literals. */
  bool?: boolean;
  /** Parsed once: the number (and unit) of numeric operators. */
  quantity?: { value: number; unit: string };
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
