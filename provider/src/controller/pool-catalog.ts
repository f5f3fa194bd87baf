/**
 * The pools the controller places volumes on: every configured backend and pool, its driver
 * (this machine's, or a storage node's through its agent), the capacity last discovered, the
 * stable backend ids, and the capacity previews in this process hold. What a pool's provisioned
 * capacity is comes from the store every time (through a transaction's handle when the caller
 * decides on it), so parallel creates never overbook.
 */
import { randomUUID } from "node:crypto";
import * as os from "node:os";
import * as path from "node:path";
import type { BackendConfig, PoolConfig } from "../domain/backend";
import { propertyPath } from "../domain/property-path";
import { FsTimeoutError } from "../drivers/confine";
import { FileDriver, forEachLimit } from "../drivers/file-driver";
import { copyAcrossBackends } from "../drivers/rbd-copy";
import { RbdDriver } from "../drivers/rbd-driver";
import type { ProgressListener } from "../domain/progress";
import { backendConfigJson, checkBackends } from "./backend-check";
import type { PoolStats, VolumeDriver } from "../drivers/volume-driver";
import { BackendError, CommandFailedError, UserError } from "../errors";
import type { PoolState } from "../scheduler/types";
import type { Store, StoreOps, VolumeRow } from "../store/store";

const GiB = 1024 ** 3;
/** Pools asked at once at discovery when their driver has no batch call (a storage node's agent: HTTP requests). */
const POOL_PROBES_AT_ONCE = 8;

/** A pool's capacity as discovery measured it; `unavailable` says why it could not be (the pool is then left out of placement). */
interface PoolFigures {
  totalGib: number;
  freeGib: number;
  unavailable?: string;
}

/** A driver made per backend (its own cluster, user, key: `rbd`), from its config and secrets. */
export type DriverFactory = (b: BackendConfig, secrets: BackendSecrets) => VolumeDriver;

export interface PoolCatalogOptions {
  store: Store;
  backends: BackendConfig[];
  /** Drivers by kind: one for every backend (`file`), or a factory called once per backend (`rbd`). Default: file and rbd. */
  drivers?: Record<string, VolumeDriver | DriverFactory>;
  /** Where the rbd driver writes its client confs and keyrings (default: a private folder under the system's temp folder). */
  rbdDir?: string;
  now?: () => Date;
  log?: (message: string) => void;
  /** The driver of a backend on a remote storage node (`node` ≠ local): its agent (agent/remote-node.ts). */
  nodeDriver?: (node: string, kind: string) => VolumeDriver;
  /** Where the backends came from (a file, `inline`, `built-in`): named when they differ from the state's. */
  backendsSource?: string;
  /** Warnings for the user (the engine's log); default: `log`. */
  warn?: (message: string) => void;
}

export class PoolCatalog {
  private readonly store: Store;
  private readonly backends: Map<string, BackendConfig>;
  /** Secrets of a backend's configuration, taken out of {@link backends}: for its driver only. */
  private readonly secrets: Map<string, BackendSecrets>;
  private readonly drivers: Record<string, VolumeDriver | DriverFactory>;
  /** Drivers made by a factory, one per backend name. */
  private readonly backendDrivers = new Map<string, VolumeDriver>();
  private readonly nodeDriver?: (node: string, kind: string) => VolumeDriver;
  private readonly now: () => Date;
  private readonly log: (message: string) => void;
  private readonly warn: (message: string) => void;
  private readonly backendsSource: string;
  /** Pool capacity as last discovered (free bytes); provisioned capacity always comes from the store. */
  private poolStats = new Map<string, PoolFigures>();
  private backendIds = new Map<string, string>();
  private poolStates?: PoolState[];
  /**
   * Capacity that volumes previewed in this process will take (by Pulumi URN), so a preview of
   * many volumes places them as the update will, without overbooking. Dropped when the volume is created.
   */
  readonly reservations = new Map<string, { poolId: string; sizeGib: number }>();

  constructor(options: PoolCatalogOptions) {
    this.store = options.store;
    // A cephx key given inline (rbd.key) goes to the backend's driver only: never into the state
    // (backendConfigJson), a log, a warning or a function's output.
    this.secrets = new Map(options.backends.filter((b) => b.rbd?.key !== undefined).map((b) => [b.name, { rbdKey: b.rbd!.key! }]));
    this.backends = new Map(options.backends.map((b) => [b.name, withoutSecrets(b)]));
    const rbdDir = options.rbdDir ?? path.join(os.tmpdir(), `sds-rbd-${process.getuid?.() ?? "user"}`);
    this.drivers = options.drivers ?? {
      file: new FileDriver(),
      rbd: (b, secrets) => new RbdDriver({ backend: b.name, rbd: b.rbd ?? { cluster: "ceph", user: "admin" }, key: secrets.rbdKey, dir: rbdDir }),
    };
    this.nodeDriver = options.nodeDriver;
    this.now = options.now ?? (() => new Date());
    this.log = options.log ?? (() => undefined);
    this.warn = options.warn ?? this.log;
    this.backendsSource = options.backendsSource ?? "inline";
  }

  /**
   * Discover pools (capacity) and learn every backend's stable id; compare the loaded backends
   * with those the state was written with (backend-check.ts: an error for a backend with volumes
   * that is not loaded, warnings for differences). Reads only: a preview writes nothing. A
   * backend the state does not know yet gets its id in memory; {@link prepareWrites} records it.
   */
  async discover(): Promise<void> {
    const stored = await this.store.listBackends();
    const volumesByBackend = await this.store.volumeCountByBackend();
    for (const w of checkBackends([...this.backends.values()], stored, volumesByBackend, this.backendsSource)) this.warn(w);
    for (const b of this.backends.values()) {
      const row = stored.find((r) => r.name === b.name);
      this.backendIds.set(b.name, b.backendId ?? row?.backendId ?? this.backendIds.get(b.name) ?? randomUUID());
    }
    this.poolStats = await this.measurePools();
    this.poolStates = undefined;
    this.prepared = undefined;
  }

  /**
   * Every pool's capacity, measured at once rather than pool after pool (issue 14: 10,000 pools
   * took seconds one by one): the pools of one driver on one node go to its batch call when it
   * has one (the file driver: a few `stat -f` children for all), the others are asked a few at
   * a time. Every call stays bounded as before (a hung mount fails its pool within the driver's
   * bound). A pool that failed while others answered is left out of placement, with a warning
   * (a failover away from a site that went down must not need that site's capacity); a
   * configuration fault, or every pool failing, is the error: the first in the configuration's
   * order, named.
   */
  private async measurePools(): Promise<Map<string, PoolFigures>> {
    const all = [...this.backends.values()].flatMap((b) => b.pools.map((p) => ({ b, p })));
    const answers = new Array<PoolStats | Error>(all.length);
    const groups = new Map<string, number[]>();
    all.forEach((x, i) => {
      // A driver made per backend (rbd: its own cluster) measures only that backend's pools.
      const key = typeof this.drivers[x.b.driver] === "function" ? `${x.b.node}\0${x.b.driver}\0${x.b.name}` : `${x.b.node}\0${x.b.driver}`;
      const members = groups.get(key);
      if (members) members.push(i);
      else groups.set(key, [i]);
    });
    for (const members of groups.values()) {
      const b = all[members[0]].b;
      const raw = this.rawDriver(b);
      if (raw.getPoolsStats) {
        const got = await raw.getPoolsStats(members.map((i) => all[i].p));
        members.forEach((i, k) => (answers[i] = got[k]));
      } else {
        await forEachLimit(members, POOL_PROBES_AT_ONCE, async (i) => {
          answers[i] = await raw.getPoolStats(all[i].p).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
        });
      }
    }
    const faults = all.map(({ b, p }, i) => {
      const s = answers[i];
      return s instanceof Error ? (poolFault(s, p, this.poolProperty(b, p)) ?? s) : undefined;
    });
    const config = faults.find((f) => f instanceof UserError);
    if (config) throw config;
    if (faults.every((f) => f !== undefined)) throw faults[0];
    const stats = new Map<string, PoolFigures>();
    all.forEach(({ b, p }, i) => {
      const s = answers[i];
      if (!(s instanceof Error)) {
        stats.set(poolId(b, p), { totalGib: s.totalBytes / GiB, freeGib: s.freeBytes / GiB });
        return;
      }
      const property = this.poolProperty(b, p);
      const message = faults[i]!.message;
      const why = message.startsWith(property) ? message : `${property}: pool ${p.name} (${p.path}): ${message}`;
      this.warn(`${why}; pool ${poolId(b, p)} is left out of placement until it answers`);
      stats.set(poolId(b, p), { totalGib: 0, freeGib: 0, unavailable: why });
    });
    return stats;
  }

  /** The driver of backend `b` as it is (its pool faults not yet named: {@link driverFor} names them). */
  private rawDriver(b: BackendConfig): VolumeDriver {
    if (b.node !== "local") {
      if (!this.nodeDriver) throw new UserError("INVALID_INPUT", `backend ${b.name}: node "${b.node}" cannot be reached (no storage node agents configured)`);
      return this.nodeDriver(b.node, b.driver);
    }
    const kind = this.drivers[b.driver];
    if (!kind) throw new UserError("INVALID_INPUT", `backend ${b.name}: no driver "${b.driver}"`);
    if (typeof kind !== "function") return kind;
    const d = this.backendDrivers.get(b.name) ?? kind(b, this.secrets.get(b.name) ?? {});
    this.backendDrivers.set(b.name, d);
    return d;
  }

  /**
   * Before the first write of a run: record each backend's id and configuration (the state's
   * memory of what it was built with), and give volumes their backend's `sharedTargets` (a
   * backend that changed its mind, or volumes older than the setting, are corrected). Once per
   * discovery; later calls wait for the first.
   */
  prepareWrites(): Promise<void> {
    this.prepared ??= (async () => {
      for (const b of this.backends.values()) {
        const id = this.backendIds.get(b.name) ?? b.backendId ?? randomUUID();
        const config = backendConfigJson(b);
        const actual = await this.store.transaction(async (tx) => {
          const row = await tx.getBackend(b.name);
          // Another runner may have recorded this backend since discovery: its id wins (unless configured).
          const wanted = b.backendId ?? row?.backendId ?? id;
          if (!row || row.backendId !== wanted || row.config !== config) await tx.upsertBackend({ name: b.name, backendId: wanted, config, createdAt: row?.createdAt ?? this.now().toISOString() });
          return wanted;
        });
        if (actual !== this.backendIds.get(b.name)) {
          this.backendIds.set(b.name, actual);
          this.poolStates = undefined;
        }
        const corrected = await this.store.setSharedTargets(b.name, b.sharedTargets);
        if (corrected > 0) this.log(`backend ${b.name}: sharedTargets ${b.sharedTargets} set on ${corrected} volume(s)`);
      }
    })();
    this.prepared.catch(() => (this.prepared = undefined));
    return this.prepared;
  }
  private prepared?: Promise<void>;

  /**
   * The driver of backend `b`, its faults on a pool's folder (a hung mount, a folder it may not
   * write) reported in one line naming the pool's property (`backends[0].pools[1].path`).
   */
  driverFor(b: BackendConfig): VolumeDriver {
    return poolFaultsNamed(this.clonesAcross(b, this.rawDriver(b)), (pool) => this.poolProperty(b, pool));
  }

  /**
   * `d`, whose clones from a volume of another backend go through a copy when either side is RBD
   * (file → rbd, rbd → file, one Ceph cluster to another: drivers/rbd-copy.ts). Why here: only
   * the catalog knows which backend a source pool belongs to, and the scheduler may place a
   * clone on any pool that fits.
   */
  private clonesAcross(b: BackendConfig, d: VolumeDriver): VolumeDriver {
    const clone = async (source: { pool: PoolConfig; volumeId: string }, pool: PoolConfig, volumeId: string, sizeBytes: number, onProgress?: ProgressListener) => {
      const from = [...this.backends.values()].find((x) => x.pools.includes(source.pool));
      if (!from || from.name === b.name || (from.driver !== "rbd" && b.driver !== "rbd")) return d.cloneVolume(source, pool, volumeId, sizeBytes, onProgress);
      if (from.node !== "local" || b.node !== "local") {
        throw new UserError("INVALID_INPUT", `sourceVolumeId: volume ${source.volumeId} is on backend ${from.name} and the clone was placed on backend ${b.name}: a clone between an rbd backend and a storage node's backend is not supported; place the clone on ${from.name} (a profile with backendName)`, "sourceVolumeId");
      }
      return copyAcrossBackends({ driver: this.rawDriver(from), pool: source.pool, volumeId: source.volumeId }, { driver: d, pool, volumeId }, sizeBytes, onProgress);
    };
    // A view of d with its own clone: every other call goes to d itself (bound: d's methods use its fields).
    return new Proxy(d, {
      get(target, key) {
        if (key === "cloneVolume") return clone;
        const v: unknown = Reflect.get(target, key, target);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }

  /** The property path of a pool's folder in the configuration (`backends[0].pools[1].path`). */
  poolProperty(b: Pick<BackendConfig, "name">, pool: Pick<PoolConfig, "name">): string {
    const i = [...this.backends.keys()].indexOf(b.name);
    const j = this.backends.get(b.name)?.pools.findIndex((p) => p.name === pool.name) ?? -1;
    return i < 0 || j < 0 ? `pool ${b.name}/${pool.name}` : propertyPath([i, "pools", j, "path"], "backends");
  }

  /** The volumes placed on a pool (capacity reports). */
  volumesInPool(id: string): Promise<VolumeRow[]> {
    return this.store.listVolumes({ poolId: id });
  }

  /**
   * The scheduler's view of every pool, provisioned capacity read from the store now (plus what
   * previews in this process reserved), through `ops` (a transaction's handle when the caller
   * decides on it). A fresh array each call, and a pool's object is never changed once handed
   * out (no caller writes to one): another async flow's call must not change the numbers a
   * placement is deciding on. A pool whose figure did not change since the last call is the same
   * object: a create changes one pool, and copying all 10,000 pools on every placement cost more
   * than the placement itself (issue 14). (Not Object.freeze: V8's frozen objects made the
   * scheduler's reads 3× slower.)
   */
  async pools(ops: StoreOps = this.store): Promise<PoolState[]> {
    this.poolStates ??= this.buildPoolStates();
    const base = this.poolStates;
    const provisioned = await ops.provisionedGibByPool();
    let reserved: Map<string, number> | undefined;
    if (this.reservations.size > 0) {
      reserved = new Map();
      for (const r of this.reservations.values()) reserved.set(r.poolId, (reserved.get(r.poolId) ?? 0) + r.sizeGib);
    }
    const last = this.lastPools?.base === base ? this.lastPools.pools : undefined;
    const out = new Array<PoolState>(base.length);
    for (let i = 0; i < base.length; i++) {
      const p = base[i];
      const gib = (provisioned.get(p.id) ?? 0) + (reserved?.get(p.id) ?? 0);
      const before = last?.[i];
      out[i] = before !== undefined && before.provisionedGib === gib ? before : { ...p, provisionedGib: gib };
    }
    this.lastPools = { base, pools: out };
    return out;
  }
  /** What {@link pools} answered last, over which pool states (rebuilt at discovery). */
  private lastPools?: { base: PoolState[]; pools: PoolState[] };

  private buildPoolStates(): PoolState[] {
    const out: PoolState[] = [];
    for (const b of this.backends.values()) {
      for (const p of b.pools) {
        const id = poolId(b, p);
        const s = this.poolStats.get(id) ?? { totalGib: p.totalCapacityGib ?? 0, freeGib: 0 };
        const policy = String(p.extras.dataStorage?.provisioningPolicy ?? "Thin").toLowerCase();
        out.push({
          id,
          backendName: b.name,
          backendId: this.backendIds.get(b.name) ?? b.backendId ?? "",
          poolName: p.name,
          sharedTargets: b.sharedTargets,
          availabilityZone: p.availabilityZone,
          storageType: p.storageType,
          multiAttach: p.multiAttach,
          replication: p.replication,
          extras: p.extras as PoolState["extras"],
          totalGib: s.totalGib,
          freeGib: s.freeGib,
          provisionedGib: 0,
          maxOverSubscriptionRatio: policy === "thick" ? 1 : p.maxOverSubscriptionRatio,
          provisioning: policy === "thick" ? "thick" : "thin",
          weigher: b.weigher,
          ...(s.unavailable !== undefined ? { unavailable: s.unavailable } : {}),
        });
      }
    }
    return out;
  }

  /** The backend and pool config of a volume row. */
  locate(row: Pick<VolumeRow, "backendName" | "poolId" | "id">): { backend: BackendConfig; pool: PoolConfig } {
    const backend = this.backends.get(row.backendName);
    const poolName = row.poolId.slice(row.backendName.length + 1);
    const pool = backend?.pools.find((p) => p.name === poolName);
    if (!backend || !pool) throw new UserError("INVALID_STATE", `volume ${row.id} is on pool ${row.poolId}, which is no longer configured`);
    return { backend, pool };
  }

  /** Where the volume's bytes are on its storage node. */
  volumePath(row: Pick<VolumeRow, "backendName" | "poolId" | "id">): string {
    const { backend, pool } = this.locate(row);
    return this.driverFor(backend).volumePath(pool, row.id);
  }

  /** The ids of the backends, keyed by name. */
  backendId(name: string): string | undefined {
    return this.backendIds.get(name);
  }

  backendConfigs(): BackendConfig[] {
    return [...this.backends.values()];
  }
}

/** Errors of a pool's file system that the configuration must mend (the folder is not writable as given). */
const CONFIG_ERRNOS = new Set(["EACCES", "EPERM", "EROFS", "ENOTDIR", "ELOOP", "ENAMETOOLONG"]);
/** Errors of a mount that went bad under the pool (a dead FUSE daemon, a stale NFS handle). */
const MOUNT_ERRNOS = new Set(["ENOTCONN", "ESTALE", "EIO", "EHOSTDOWN", "ETIMEDOUT"]);

/**
 * One line naming `property` for a fault of a pool's folder, or undefined for any other error
 * (left as it is). Why: Node's errors say `EACCES: permission denied, mkdir '/x'`, and a
 * timeout says which path, but neither says which line of the configuration to fix.
 */
export function poolFault(err: unknown, pool: Pick<PoolConfig, "name" | "path">, property: string): Error | undefined {
  const where = `${property}: pool ${pool.name} (${pool.path})`;
  // A bounded call that timed out (drivers/confine.ts FsTimeoutError; from a storage node it comes back as a TIMEOUT with the same words).
  if (err instanceof FsTimeoutError || (err instanceof BackendError && err.code === "TIMEOUT" && err.message.includes("(a hung mount?)"))) {
    return new BackendError("TIMEOUT", `${where}: ${err.message}; check the mount, then retry`, true, { cause: err });
  }
  if (err instanceof CommandFailedError && err.argv.slice(0, 3).includes("stat")) {
    return new BackendError("COMMAND_FAILED", `${where}: cannot measure its file system: ${err.stderr.split("\n")[0] || err.message}`, true, { cause: err });
  }
  const e = err as NodeJS.ErrnoException | undefined;
  if (!e || typeof e.code !== "string" || typeof e.syscall !== "string" || e instanceof UserError) return undefined;
  const first = e.message.split("\n")[0];
  if (CONFIG_ERRNOS.has(e.code)) return new UserError("INVALID_INPUT", `${where}: ${first}`, property, { cause: err });
  if (MOUNT_ERRNOS.has(e.code)) return new BackendError("COMMAND_FAILED", `${where}: ${first} (is its mount alive?)`, true, { cause: err });
  return undefined;
}

/** Why: every driver call names the pool's property on a folder fault, whichever use case made it. */
function poolFaultsNamed(d: VolumeDriver, property: (pool: PoolConfig) => string): VolumeDriver {
  const named = async <R>(pool: PoolConfig, work: () => Promise<R>): Promise<R> => {
    try {
      return await work();
    } catch (err) {
      throw poolFault(err, pool, property(pool)) ?? err;
    }
  };
  const out: VolumeDriver = {
    kind: d.kind,
    volumePath: (pool, id) => d.volumePath(pool, id),
    getPoolStats: (pool) => named(pool, () => d.getPoolStats(pool)),
    createVolume: (pool, id, size) => named(pool, () => d.createVolume(pool, id, size)),
    cloneVolume: (source, pool, id, size, onProgress) => named(pool, () => d.cloneVolume(source, pool, id, size, onProgress)),
    extendVolume: (pool, id, size) => named(pool, () => d.extendVolume(pool, id, size)),
    deleteVolume: (pool, id) => named(pool, () => d.deleteVolume(pool, id)),
    getVolumeSizeBytes: (pool, id) => named(pool, () => d.getVolumeSizeBytes(pool, id)),
  };
  const alloc = d.getVolumeAllocation?.bind(d);
  if (alloc) out.getVolumeAllocation = (pool, id) => named(pool, () => alloc(pool, id));
  return out;
}

/** Secrets a backend's configuration carried (an inline cephx key), for its driver only. */
export interface BackendSecrets {
  rbdKey?: string;
}

/** `b` without its secrets (rbd.key): what the state, logs and outputs may see. */
export function withoutSecrets(b: BackendConfig): BackendConfig {
  if (b.rbd?.key === undefined) return b;
  const { key: _key, ...rbd } = b.rbd;
  return { ...b, rbd };
}

export function poolId(b: { name: string }, p: { name: string }): string {
  return `${b.name}/${p.name}`;
}
