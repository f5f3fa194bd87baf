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
import type { BackendConfig, PoolConfig } from "../domain/backend";
import type { ProgressListener } from "../domain/progress";
import { UserError } from "../errors";
import { explainNoValidPool, place } from "../scheduler/scheduler";
import type { PlacementRequest, PlacementResult, PoolState } from "../scheduler/types";
import type { AttachmentRow, ProfileRow, Store, StoreOps, VolumeRow } from "../store/store";
import { PoolCatalog, type PoolCatalogOptions } from "./pool-catalog";
import { Profiles, type ProfileSpec, unknownProfile } from "./profiles";

export type { ProfileSpec } from "./profiles";
export { poolId } from "./pool-catalog";
export { multiAttachDemand } from "./profiles";

const GiB = 1024 ** 3;

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

export type ControllerOptions = PoolCatalogOptions;

export class Controller {
  private readonly store: Store;
  private readonly now: () => Date;
  private readonly log: (message: string) => void;
  /** The pools, their drivers and capacity (pool-catalog.ts). */
  readonly catalog: PoolCatalog;
  /** Profiles (profiles.ts). */
  readonly profiles: Profiles;

  constructor(options: ControllerOptions) {
    this.store = options.store;
    this.now = options.now ?? (() => new Date());
    this.log = options.log ?? (() => undefined);
    this.catalog = new PoolCatalog(options);
    this.profiles = new Profiles(options.store, this.catalog, this.now);
  }

  // The pools and profiles, as callers have always asked the controller for them.
  discover(): Promise<void> {
    return this.catalog.discover();
  }
  prepareWrites(): Promise<void> {
    return this.catalog.prepareWrites();
  }
  pools(ops?: StoreOps): Promise<PoolState[]> {
    return this.catalog.pools(ops);
  }
  locate(row: Pick<VolumeRow, "backendName" | "poolId" | "id">): { backend: BackendConfig; pool: PoolConfig } {
    return this.catalog.locate(row);
  }
  volumePath(row: Pick<VolumeRow, "backendName" | "poolId" | "id">): string {
    return this.catalog.volumePath(row);
  }
  backendId(name: string): string | undefined {
    return this.catalog.backendId(name);
  }
  backendConfigs(): BackendConfig[] {
    return this.catalog.backendConfigs();
  }
  resolveProfile(idOrName: string): Promise<(ProfileSpec & { id?: string }) | undefined> {
    return this.profiles.resolveProfile(idOrName);
  }
  planProfile(spec: ProfileSpec): void {
    this.profiles.planProfile(spec);
  }
  createProfile(owner: string, spec: ProfileSpec): Promise<ProfileRow> {
    return this.profiles.createProfile(owner, spec);
  }
  getProfile(id: string): Promise<ProfileRow | undefined> {
    return this.profiles.getProfile(id);
  }
  updateProfile(id: string, spec: ProfileSpec): Promise<ProfileRow> {
    return this.profiles.updateProfile(id, spec);
  }
  deleteProfile(id: string, waitMs?: number): Promise<void> {
    return this.profiles.deleteProfile(id, waitMs);
  }
  checkExtraSpecs(extraSpecs: Record<string, string>): Promise<Array<{ key: string; reason: string }>> {
    return this.profiles.checkExtraSpecs(extraSpecs);
  }
  effectiveMultiAttach(spec: Pick<VolumeSpec, "profile" | "multiAttach">): Promise<boolean> {
    return this.profiles.effectiveMultiAttach(spec);
  }

  // ---------------------------------------------------------------- volumes

  private async placementRequest(spec: Pick<VolumeSpec, "sizeGib" | "availabilityZone" | "multiAttach" | "profile">): Promise<PlacementRequest> {
    const p = await this.profiles.requirements(spec.profile);
    return { sizeGib: spec.sizeGib, availabilityZone: spec.availabilityZone, multiAttach: await this.effectiveMultiAttach(spec), storageType: p.storageType, requirements: p.requirements };
  }

  /**
   * Where a volume would land now, allocating nothing (preview, getPlacement). With `reserveFor`
   * (a preview's URN) the capacity is held in this process so later previewed volumes see it taken.
   */
  async plan(spec: Pick<VolumeSpec, "sizeGib" | "availabilityZone" | "multiAttach" | "profile">, reserveFor?: string): Promise<Placement> {
    if (reserveFor !== undefined) this.catalog.reservations.delete(reserveFor);
    const request = await this.placementRequest(spec);
    const pools = await this.pools();
    const r = place(pools, request);
    if (!r.ok) throw new UserError("NO_VALID_POOL", explainNoValidPool(request, r.rejections, pools.length));
    if (reserveFor !== undefined) this.catalog.reservations.set(reserveFor, { poolId: r.pool.id, sizeGib: spec.sizeGib });
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
  async createVolume(owner: string, spec: VolumeSpec, onProgress?: ProgressListener): Promise<VolumeRow> {
    await this.catalog.prepareWrites();
    this.catalog.reservations.delete(owner);
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
      // A create of this resource cut short (the provider or the state died before the row
      // became available) left a `creating` row; the engine's retry may carry a new auto-name.
      // The URN is the resource: the row is adopted under the new name, never left to hold
      // capacity and bytes that no program owns.
      const cut = (await tx.listVolumes({ owner, status: "creating" })).find(
        (v) => v.sizeGib === spec.sizeGib && v.profileId === (profileId ?? null) && v.sourceVolumeId === (spec.sourceVolumeId ?? null) && (!spec.placeOn || v.backendName === spec.placeOn.backend),
      );
      if (cut) {
        const renamed = await tx.updateVolume(cut.id, { name: spec.name, description: spec.description, metadata: spec.metadata, updatedAt: this.now().toISOString() });
        this.log(`volume ${cut.id}: an interrupted create of ${owner} (as "${cut.name}") is taken up as "${spec.name}"`);
        return { row: renamed, adopted: true };
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
    const driver = this.catalog.driverFor(backend);
    try {
      // A cut-short create may have left its bytes half made (a file not yet sized: the driver
      // refuses it as a conflict). Nothing ever used them (the row never became available): start over.
      if (adopted) await driver.deleteVolume(pool, row.id);
      if (source) {
        const src = this.locate(source);
        await driver.cloneVolume({ pool: src.pool, volumeId: source.id }, pool, row.id, spec.sizeGib * GiB, onProgress);
      } else {
        await driver.createVolume(pool, row.id, spec.sizeGib * GiB);
      }
    } catch (err) {
      // Leave neither bytes nor a row; a clean-up that fails too is reported with the failure.
      const cleanup: unknown[] = [];
      await driver.deleteVolume(pool, row.id).catch((e: unknown) => cleanup.push(e));
      await this.store.deleteVolume(row.id).catch((e: unknown) => cleanup.push(e));
      if (cleanup.length > 0) throw new AggregateError([err, ...cleanup], `${(err as Error).message} (and cleaning up volume ${row.id} failed: ${cleanup.map((e) => (e as Error).message).join("; ")})`, { cause: err });
      throw err;
    }
    return this.store.updateVolume(row.id, { status: "available", updatedAt: this.now().toISOString() });
  }

  getVolume(id: string): Promise<VolumeRow | undefined> {
    return this.store.getVolume(id);
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
    const bytes = await this.catalog.driverFor(backend).getVolumeSizeBytes(pool, row.id);
    if (bytes === undefined) {
      if (row.status === "creating") return row;
      await this.store.deleteVolume(row.id);
      return undefined;
    }
    const sizeGib = Math.ceil(bytes / GiB);
    if (row.status === "deleting") {
      // A delete cut short before its bytes went (the provider died between marking the row and
      // removing the file; the engine still holds the volume): it is whole, so usable again, and
      // a destroy deletes it again. Left `deleting`, no attach would ever take it.
      const attached = (await this.store.listAttachments({ volumeId: row.id })).length > 0;
      this.log(`volume ${row.id}: an interrupted delete left it whole; it is ${attached ? "in-use" : "available"} again`);
      return this.store.updateVolume(row.id, { sizeGib, status: attached ? "in-use" : "available", updatedAt: this.now().toISOString() });
    }
    if (sizeGib !== row.sizeGib) return this.store.updateVolume(row.id, { sizeGib, updatedAt: this.now().toISOString() });
    return row;
  }

  /**
   * A volume as refresh and import describe it: the row as it really is (see readVolume), its
   * profile's name, and the multiAttach its profile derives (not an input the user wrote).
   */
  async describeVolume(id: string): Promise<{ row: VolumeRow; profileName?: string; derivedMultiAttach: boolean } | undefined> {
    const row = await this.readVolume(id);
    if (!row) return undefined;
    const profileName = row.profileId ? (await this.getProfile(row.profileId))?.name : undefined;
    let derivedMultiAttach = false;
    try {
      derivedMultiAttach = row.profileId ? await this.effectiveMultiAttach({ profile: row.profileId, multiAttach: undefined }) : false;
    } catch {
      // the profile is gone or broken: nothing is derived from it
    }
    return { row, profileName, derivedMultiAttach };
  }

  /**
   * Refuse a growth its pool cannot hold now (what {@link extendVolume} checks under its lock);
   * a preview asks it too, writing nothing, so the refusal shows before `up`.
   */
  async assertGrowthFits(row: VolumeRow, sizeGib: number, ops?: StoreOps): Promise<void> {
    if (sizeGib <= row.sizeGib) return;
    const state = (await this.pools(ops)).find((p) => p.id === row.poolId);
    if (!state) return;
    const r = place([state], { sizeGib: sizeGib - row.sizeGib });
    if (!r.ok) throw new UserError("NO_VALID_POOL", `sizeGib: pool ${row.poolId} cannot grow volume ${row.name} by ${sizeGib - row.sizeGib} GiB: ${r.rejections.map((x) => x.reason).join("; ")}`, "sizeGib");
  }

  /** The attachments of a volume as the state holds them. */
  attachmentsOf(volumeId: string): Promise<AttachmentRow[]> {
    return this.store.listAttachments({ volumeId });
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
      await this.assertGrowthFits(current, sizeGib, tx);
      await tx.updateVolume(id, { status: "extending", sizeGib, updatedAt: this.now().toISOString() });
      return current.status;
    });
    try {
      await this.catalog.driverFor(backend).extendVolume(pool, id, sizeGib * GiB);
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
    // Only the volumes being made are read: listing every volume on every delete made a destroy quadratic.
    const clones = (await this.store.listVolumes({ status: "creating" })).filter((v) => v.sourceVolumeId === id);
    if (clones.length > 0) throw new UserError("INVALID_STATE", `volume ${row.name} is being cloned into ${clones[0].name}; try again when that finishes`);
    await this.store.updateVolume(id, { status: "deleting", updatedAt: this.now().toISOString() });
    const { backend, pool } = this.locate(row);
    await this.catalog.driverFor(backend).deleteVolume(pool, id);
    await this.store.deleteVolume(id);
  }

  private async requireVolume(id: string, ops: StoreOps = this.store): Promise<VolumeRow> {
    const row = await ops.getVolume(id);
    if (!row) throw new UserError("NOT_FOUND", `volume ${id} no longer exists; run pulumi refresh`);
    return row;
  }

}
