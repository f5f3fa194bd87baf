/**
 * The embedded controller: use cases on volumes and profiles. It composes the store, the
 * scheduler and the drivers; it knows nothing of Pulumi.
 *
 * Locking rule: every read-decide-write on the store (placement, name uniqueness, adopting a
 * retried create) happens inside one `store.transaction`, which is exclusive across processes,
 * and reads and writes there go through its `tx` handle (helpers take the handle as `ops`).
 * Driver I/O happens outside transactions; a row in status `creating` marks work in flight.
 */
import { randomUUID } from "node:crypto";
import { FileDriver } from "../drivers/file-driver";
import type { VolumeDriver } from "../drivers/volume-driver";
import { UserError } from "../errors";
import { type Requirement, evaluate, parseExtraSpecs, unknownKeyErrors } from "../scheduler/extra-specs";
import { explainNoValidPool, place } from "../scheduler/scheduler";
import type { PlacementRequest, PlacementResult, PoolState } from "../scheduler/types";
import type { ProfileRow, Store, StoreOps, VolumeRow } from "../store/store";
import type { BackendConfig, PoolConfig } from "../domain/backend";

const GiB = 1024 ** 3;

export interface ProfileSpec {
  name: string;
  description: string;
  storageType: string;
  extraSpecs: Record<string, string>;
}

export interface VolumeSpec {
  name: string;
  sizeGib: number;
  /** Profile id or name. */
  profile?: string;
  availabilityZone?: string;
  /** Undefined: what the profile asks (`capabilities:multiAttach`), else false. */
  multiAttach?: boolean;
  sourceVolumeId?: string;
  description: string;
  metadata: Record<string, string>;
  /** Only pools of this backend (and pool) are considered: the secondary of a replication pair. */
  placeOn?: { backend: string; pool?: string };
}

/** Where a volume will land (preview) or landed; the other pools' reasons are computed when read. */
export interface Placement {
  pool: PoolState;
  rejectedCount: number;
  readonly rejections: PlacementResult["rejections"];
}

export interface ControllerOptions {
  store: Store;
  backends: BackendConfig[];
  drivers?: Record<string, VolumeDriver>;
  now?: () => Date;
  log?: (message: string) => void;
  /** The driver of a backend on a remote storage node (`node` ≠ local): its agent (agent/remote-node.ts). */
  nodeDriver?: (node: string, kind: string) => VolumeDriver;
}

export class Controller {
  private readonly store: Store;
  private readonly backends: Map<string, BackendConfig>;
  private readonly drivers: Record<string, VolumeDriver>;
  private readonly nodeDriver?: (node: string, kind: string) => VolumeDriver;
  private readonly now: () => Date;
  private readonly log: (message: string) => void;
  /** Pool capacity as last discovered (free bytes); provisioned capacity always comes from the store. */
  private poolStats = new Map<string, { totalGib: number; freeGib: number }>();
  private backendIds = new Map<string, string>();
  private poolStates?: PoolState[];
  /** Profiles a preview in this process has planned (they will exist when the update runs). */
  private readonly plannedProfiles = new Map<string, ProfileSpec>();
  /**
   * Capacity that volumes previewed in this process will take (by Pulumi URN), so a preview of
   * many volumes places them as the update will, without overbooking. Dropped when the volume is created.
   */
  private readonly reservations = new Map<string, { poolId: string; sizeGib: number }>();

  constructor(options: ControllerOptions) {
    this.store = options.store;
    this.backends = new Map(options.backends.map((b) => [b.name, b]));
    this.drivers = options.drivers ?? { file: new FileDriver() };
    this.nodeDriver = options.nodeDriver;
    this.now = options.now ?? (() => new Date());
    this.log = options.log ?? (() => undefined);
  }

  /** Discover pools (capacity, folders) and give every backend its stable id. Called at provider start. */
  async discover(): Promise<void> {
    const stats = new Map<string, { totalGib: number; freeGib: number }>();
    for (const b of this.backends.values()) {
      this.backendIds.set(b.name, await this.ensureBackendId(b));
      // Seed 000: volumes take sharedTargets from their backend; a backend that changed its mind
      // (or volumes older than the setting) are corrected at start.
      const corrected = await this.store.setSharedTargets(b.name, b.sharedTargets);
      if (corrected > 0) this.log(`backend ${b.name}: sharedTargets ${b.sharedTargets} set on ${corrected} volume(s)`);
      for (const p of b.pools) {
        const s = await this.driverFor(b).getPoolStats(p);
        stats.set(poolId(b, p), { totalGib: s.totalBytes / GiB, freeGib: s.freeBytes / GiB });
      }
    }
    this.poolStats = stats;
    this.poolStates = undefined;
  }

  private ensureBackendId(b: BackendConfig): Promise<string> {
    return this.store.transaction(async (tx) => {
      const row = await tx.getBackend(b.name);
      const wanted = b.backendId ?? row?.backendId ?? randomUUID();
      if (!row || row.backendId !== wanted) await tx.upsertBackend({ name: b.name, backendId: wanted, createdAt: row?.createdAt ?? this.now().toISOString() });
      return wanted;
    });
  }

  private driverFor(b: BackendConfig): VolumeDriver {
    if (b.node !== "local") {
      if (!this.nodeDriver) throw new UserError("INVALID_INPUT", `backend ${b.name}: node "${b.node}" cannot be reached (no storage node agents configured)`);
      return this.nodeDriver(b.node, b.driver);
    }
    const d = this.drivers[b.driver];
    if (!d) throw new UserError("INVALID_INPUT", `backend ${b.name}: no driver "${b.driver}"`);
    return d;
  }

  /**
   * The scheduler's view of every pool, provisioned capacity read from the store now (plus what
   * previews in this process reserved), through `ops` (a transaction's handle when the caller
   * decides on it). Fresh objects each call: another async flow's call must not change the
   * numbers a placement is deciding on.
   */
  async pools(ops: StoreOps = this.store): Promise<PoolState[]> {
    this.poolStates ??= this.buildPoolStates();
    const provisioned = await ops.provisionedGibByPool();
    let reserved: Map<string, number> | undefined;
    if (this.reservations.size > 0) {
      reserved = new Map();
      for (const r of this.reservations.values()) reserved.set(r.poolId, (reserved.get(r.poolId) ?? 0) + r.sizeGib);
    }
    return this.poolStates.map((p) => ({ ...p, provisionedGib: (provisioned.get(p.id) ?? 0) + (reserved?.get(p.id) ?? 0) }));
  }

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
        });
      }
    }
    return out;
  }

  // ---------------------------------------------------------------- profiles

  /** Find a profile by id or name; a profile planned by a preview in this process counts. */
  async resolveProfile(idOrName: string): Promise<(ProfileSpec & { id?: string }) | undefined> {
    const row = (await this.store.getProfile(idOrName)) ?? (await this.store.getProfileByName(idOrName));
    if (row) return row;
    return this.plannedProfiles.get(idOrName);
  }

  /** Remember a profile a preview will create, so volumes referring to it can be checked and placed. */
  planProfile(spec: ProfileSpec): void {
    this.plannedProfiles.set(spec.name, spec);
  }

  /** Create a profile; a retried create by the same owner returns the existing row. */
  createProfile(owner: string, spec: ProfileSpec): Promise<ProfileRow> {
    return this.store.transaction(async (tx) => {
      const existing = await tx.getProfileByName(spec.name);
      if (existing) {
        if (existing.owner === owner) return tx.updateProfile(existing.id, { ...spec, updatedAt: this.now().toISOString() });
        throw new UserError("CONFLICT", `name: a profile named "${spec.name}" already exists (id ${existing.id}, created by ${existing.owner})`, "name");
      }
      const at = this.now().toISOString();
      const row: ProfileRow = { id: randomUUID(), owner, ...spec, createdAt: at, updatedAt: at };
      await tx.insertProfile(row);
      return row;
    });
  }

  getProfile(id: string): Promise<ProfileRow | undefined> {
    return this.store.getProfile(id);
  }

  updateProfile(id: string, spec: ProfileSpec): Promise<ProfileRow> {
    return this.store.transaction(async (tx) => {
      if (!(await tx.getProfile(id))) throw new UserError("NOT_FOUND", `profile ${id} no longer exists; run pulumi refresh`);
      const clash = await tx.getProfileByName(spec.name);
      if (clash && clash.id !== id) throw new UserError("CONFLICT", `name: a profile named "${spec.name}" already exists (id ${clash.id})`, "name");
      return tx.updateProfile(id, { ...spec, updatedAt: this.now().toISOString() });
    });
  }

  /**
   * Delete a profile; gone is success; a profile still used by volumes is refused, naming them.
   * A volume being deleted at the same moment (a destroy whose dependencies were not recorded,
   * e.g. right after an import) is waited for, up to `waitMs`.
   */
  async deleteProfile(id: string, waitMs = 15_000): Promise<void> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const users = await this.store.transaction(async (tx) => {
        const users = (await tx.listVolumes()).filter((v) => v.profileId === id);
        if (users.length === 0) await tx.deleteProfile(id);
        return users;
      });
      if (users.length === 0) return;
      if (Date.now() >= deadline) {
        throw new UserError("CONFLICT", `profile ${id} is used by ${users.length} volume(s): ${users.slice(0, 5).map((v) => `${v.name} (${v.id})`).join(", ")}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  // ---------------------------------------------------------------- volumes

  /**
   * Check a profile's extra specs: malformed values and keys no pool could ever have are errors
   * (by key), so a typo fails at check instead of silently matching nothing.
   */
  async checkExtraSpecs(extraSpecs: Record<string, string>): Promise<Array<{ key: string; reason: string }>> {
    const { requirements, errors } = parseExtraSpecs(extraSpecs);
    return [...errors, ...unknownKeyErrors(requirements, await this.pools())];
  }

  /** The profile's parsed requirements and what it says of multiAttach (true, false, or nothing). */
  private async profileRequirements(ref: string | undefined): Promise<{ requirements: Requirement[]; storageType?: string; multiAttach?: boolean }> {
    if (ref === undefined) return { requirements: [] };
    const profile = await this.resolveProfile(ref);
    if (!profile) throw unknownProfile(ref);
    const { requirements, errors } = parseExtraSpecs(profile.extraSpecs);
    if (errors.length > 0) throw new UserError("INVALID_INPUT", `profile: profile "${profile.name}" has invalid extra specs: ${errors.map((e) => `${e.key}: ${e.reason}`).join("; ")}`, "profile");
    return { requirements, storageType: profile.storageType, multiAttach: multiAttachDemand(requirements) };
  }

  /** The multiAttach a volume gets: its own, else its profile's demand, else false. A contradiction is an error. */
  async effectiveMultiAttach(spec: Pick<VolumeSpec, "profile" | "multiAttach">): Promise<boolean> {
    const demand = (await this.profileRequirements(spec.profile)).multiAttach;
    if (spec.multiAttach !== undefined && demand !== undefined && spec.multiAttach !== demand) {
      throw new UserError(
        "INVALID_INPUT",
        `multiAttach is ${spec.multiAttach} but profile "${spec.profile}" asks capabilities:multiAttach ${demand}; drop one of them`,
        "multiAttach",
      );
    }
    return spec.multiAttach ?? demand ?? false;
  }

  private async placementRequest(spec: Pick<VolumeSpec, "sizeGib" | "availabilityZone" | "multiAttach" | "profile">): Promise<PlacementRequest> {
    const p = await this.profileRequirements(spec.profile);
    return { sizeGib: spec.sizeGib, availabilityZone: spec.availabilityZone, multiAttach: await this.effectiveMultiAttach(spec), storageType: p.storageType, requirements: p.requirements };
  }

  /**
   * Where a volume would land now, allocating nothing (preview, getPlacement). With `reserveFor`
   * (a preview's URN) the capacity is held in this process so later previewed volumes see it taken.
   */
  async plan(spec: Pick<VolumeSpec, "sizeGib" | "availabilityZone" | "multiAttach" | "profile">, reserveFor?: string): Promise<Placement> {
    if (reserveFor !== undefined) this.reservations.delete(reserveFor);
    const request = await this.placementRequest(spec);
    const pools = await this.pools();
    const r = place(pools, request);
    if (!r.ok) throw new UserError("NO_VALID_POOL", explainNoValidPool(request, r.rejections, pools.length));
    if (reserveFor !== undefined) this.reservations.set(reserveFor, { poolId: r.pool.id, sizeGib: spec.sizeGib });
    return r;
  }

  /** Like {@link plan}, but a request no pool takes answers the rejections instead of failing (getPlacement). */
  async explain(spec: Pick<VolumeSpec, "sizeGib" | "availabilityZone" | "multiAttach" | "profile">): Promise<PlacementResult> {
    const request = await this.placementRequest(spec);
    return place(await this.pools(), request);
  }

  /**
   * Create a volume: place it, record it (status `creating`), make its bytes, mark it `available`.
   * Safe to retry: the same owner asking for the same name gets the volume it made before.
   * A failure leaves neither a row nor a file behind.
   */
  async createVolume(owner: string, spec: VolumeSpec): Promise<VolumeRow> {
    this.reservations.delete(owner);
    const request = await this.placementRequest(spec);
    const profileId = spec.profile !== undefined ? ((await this.store.getProfile(spec.profile)) ?? (await this.store.getProfileByName(spec.profile)))?.id : undefined;
    if (spec.profile !== undefined && !profileId) throw unknownProfile(spec.profile);
    let source: VolumeRow | undefined;
    if (spec.sourceVolumeId !== undefined) {
      source = await this.store.getVolume(spec.sourceVolumeId);
      if (!source) throw new UserError("NOT_FOUND", `sourceVolumeId: no volume with id "${spec.sourceVolumeId}"`, "sourceVolumeId");
      if (spec.sizeGib < source.sizeGib) throw new UserError("INVALID_INPUT", `sizeGib: ${spec.sizeGib} is smaller than the source volume (${source.sizeGib} GiB)`, "sizeGib");
    }

    const { row, adopted } = await this.store.transaction(async (tx) => {
      const existing = await tx.getVolumeByName(spec.name);
      if (existing) {
        if (existing.owner !== owner) throw new UserError("CONFLICT", `name: a volume named "${spec.name}" already exists (id ${existing.id}, created by ${existing.owner})`, "name");
        return { row: existing, adopted: true };
      }
      const on = spec.placeOn;
      const all = await this.pools(tx);
      const pools = on ? all.filter((p) => p.backendName === on.backend && (on.pool === undefined || p.poolName === on.pool)) : all;
      if (on && pools.length === 0) throw new UserError("NO_VALID_POOL", `backend ${on.backend} has no pool${on.pool ? ` named ${on.pool}` : ""}`);
      const r = place(pools, request);
      if (!r.ok) throw new UserError("NO_VALID_POOL", explainNoValidPool(request, r.rejections, pools.length));
      const at = this.now().toISOString();
      const row: VolumeRow = {
        id: randomUUID(),
        name: spec.name,
        owner,
        sizeGib: spec.sizeGib,
        profileId: profileId ?? null,
        availabilityZone: r.pool.availabilityZone,
        multiAttach: request.multiAttach ?? false,
        sourceVolumeId: spec.sourceVolumeId ?? null,
        description: spec.description,
        metadata: spec.metadata,
        poolId: r.pool.id,
        backendName: r.pool.backendName,
        backendId: r.pool.backendId,
        sharedTargets: r.pool.sharedTargets,
        status: "creating",
        replicationStatus: "disabled",
        createdAt: at,
        updatedAt: at,
      };
      await tx.insertVolume(row);
      return { row, adopted: false };
    });
    if (adopted && row.status !== "creating") return row;

    const { backend, pool } = this.locate(row);
    const driver = this.driverFor(backend);
    try {
      if (source) {
        const src = this.locate(source);
        await driver.cloneVolume({ pool: src.pool, volumeId: source.id }, pool, row.id, spec.sizeGib * GiB);
      } else {
        await driver.createVolume(pool, row.id, spec.sizeGib * GiB);
      }
    } catch (err) {
      await driver.deleteVolume(pool, row.id).catch(() => undefined);
      await this.store.deleteVolume(row.id);
      throw err;
    }
    return this.store.updateVolume(row.id, { status: "available", updatedAt: this.now().toISOString() });
  }

  /** The backend and pool config of a volume row. */
  locate(row: Pick<VolumeRow, "backendName" | "poolId" | "id">): { backend: BackendConfig; pool: PoolConfig } {
    const backend = this.backends.get(row.backendName);
    const poolName = row.poolId.slice(row.backendName.length + 1);
    const pool = backend?.pools.find((p) => p.name === poolName);
    if (!backend || !pool) throw new UserError("INVALID_STATE", `volume ${row.id} is on pool ${row.poolId}, which is no longer configured`);
    return { backend, pool };
  }

  getVolume(id: string): Promise<VolumeRow | undefined> {
    return this.store.getVolume(id);
  }

  /** Where the volume's bytes are on its storage node. */
  volumePath(row: Pick<VolumeRow, "backendName" | "poolId" | "id">): string {
    const { backend, pool } = this.locate(row);
    return this.driverFor(backend).volumePath(pool, row.id);
  }

  listVolumes(): Promise<VolumeRow[]> {
    return this.store.listVolumes();
  }

  /**
   * Read a volume as it really is: a volume whose bytes are gone (deleted out of band) is
   * forgotten and reported as gone; a size changed out of band is recorded.
   */
  async readVolume(id: string): Promise<VolumeRow | undefined> {
    const row = await this.store.getVolume(id);
    if (!row) return undefined;
    const { backend, pool } = this.locate(row);
    const bytes = await this.driverFor(backend).getVolumeSizeBytes(pool, row.id);
    if (bytes === undefined) {
      if (row.status === "creating") return row;
      await this.store.deleteVolume(row.id);
      return undefined;
    }
    const sizeGib = Math.ceil(bytes / GiB);
    if (sizeGib !== row.sizeGib) return this.store.updateVolume(row.id, { sizeGib, updatedAt: this.now().toISOString() });
    return row;
  }

  /** Grow a volume. Shrinking is refused. */
  async extendVolume(id: string, sizeGib: number): Promise<VolumeRow> {
    const row = await this.requireVolume(id);
    if (sizeGib < row.sizeGib) throw new UserError("INVALID_INPUT", `sizeGib: cannot shrink volume ${row.name} from ${row.sizeGib} to ${sizeGib} GiB`, "sizeGib");
    if (sizeGib === row.sizeGib) return row;
    const { backend, pool } = this.locate(row);
    // Capacity check under the lock, then mark the volume extending so the growth is counted.
    const before = await this.store.transaction(async (tx) => {
      const current = await this.requireVolume(id, tx);
      if (current.status !== "available" && current.status !== "in-use") throw new UserError("INVALID_STATE", `volume ${row.name} is ${current.status}; it can grow only when available or in-use`);
      const state = (await this.pools(tx)).find((p) => p.id === row.poolId);
      if (state) {
        const r = place([state], { sizeGib: sizeGib - current.sizeGib });
        if (!r.ok) throw new UserError("NO_VALID_POOL", `sizeGib: pool ${row.poolId} cannot grow volume ${row.name} by ${sizeGib - current.sizeGib} GiB: ${r.rejections.map((x) => x.reason).join("; ")}`, "sizeGib");
      }
      await tx.updateVolume(id, { status: "extending", sizeGib, updatedAt: this.now().toISOString() });
      return current.status;
    });
    try {
      await this.driverFor(backend).extendVolume(pool, id, sizeGib * GiB);
    } catch (err) {
      await this.store.updateVolume(id, { status: "error_extending", updatedAt: this.now().toISOString() });
      throw err;
    }
    // An in-use volume stays in use: growing does not touch its attachments.
    return this.store.updateVolume(id, { status: before, updatedAt: this.now().toISOString() });
  }

  /** Change what can change in place: name, description, metadata, multiAttach. */
  updateVolume(id: string, changes: Partial<Pick<VolumeSpec, "name" | "description" | "metadata" | "multiAttach">>): Promise<VolumeRow> {
    return this.store.transaction(async (tx) => {
      const row = await this.requireVolume(id, tx);
      if (changes.name !== undefined && changes.name !== row.name) {
        const clash = await tx.getVolumeByName(changes.name);
        if (clash) throw new UserError("CONFLICT", `name: a volume named "${changes.name}" already exists (id ${clash.id})`, "name");
      }
      if (changes.multiAttach === true && !row.multiAttach) {
        const pool = (await this.pools(tx)).find((p) => p.id === row.poolId);
        if (pool && !pool.multiAttach) throw new UserError("INVALID_INPUT", `multiAttach: pool ${row.poolId} does not support multiAttach`, "multiAttach");
      }
      return tx.updateVolume(id, { ...changes, updatedAt: this.now().toISOString() });
    });
  }

  /** Delete a volume and its bytes. Deleting what is gone succeeds. */
  async deleteVolume(id: string): Promise<void> {
    const row = await this.store.getVolume(id);
    if (!row) return;
    const attachments = await this.store.listAttachments({ volumeId: id });
    if (attachments.length > 0) {
      throw new UserError("CONFLICT", `volume ${row.name} is attached (${attachments.map((a) => `attachment ${a.id} on ${a.host}`).join(", ")}); delete its attachments first`);
    }
    const clones = (await this.store.listVolumes()).filter((v) => v.sourceVolumeId === id && v.status === "creating");
    if (clones.length > 0) throw new UserError("INVALID_STATE", `volume ${row.name} is being cloned into ${clones[0].name}; try again when that finishes`);
    await this.store.updateVolume(id, { status: "deleting", updatedAt: this.now().toISOString() });
    const { backend, pool } = this.locate(row);
    await this.driverFor(backend).deleteVolume(pool, id);
    await this.store.deleteVolume(id);
  }

  private async requireVolume(id: string, ops: StoreOps = this.store): Promise<VolumeRow> {
    const row = await ops.getVolume(id);
    if (!row) throw new UserError("NOT_FOUND", `volume ${id} no longer exists; run pulumi refresh`);
    return row;
  }

  /** The ids of the backends, keyed by name. */
  backendId(name: string): string | undefined {
    return this.backendIds.get(name);
  }

  backendConfigs(): BackendConfig[] {
    return [...this.backends.values()];
  }
}

export function poolId(b: { name: string }, p: { name: string }): string {
  return `${b.name}/${p.name}`;
}

/** What requirements say of multiAttach: true or false when they demand it, undefined when they do not care. */
export function multiAttachDemand(requirements: readonly Requirement[]): boolean | undefined {
  const rs = requirements.filter((r) => r.lookup.kind !== "extra" && r.lookup.name === "multiAttach");
  if (rs.length === 0) return undefined;
  const probe = (v: boolean) => rs.every((r) => evaluate({ multiAttach: v } as PoolState, r) === undefined);
  const t = probe(true);
  const f = probe(false);
  return t && !f ? true : f && !t ? false : undefined;
}

function unknownProfile(ref: string): UserError {
  return new UserError(
    "NOT_FOUND",
    `profile: no profile with id or name "${ref}" (if the profile is declared in this program, pass profile.id or profile.name so Pulumi creates it first)`,
    "profile",
  );
}
