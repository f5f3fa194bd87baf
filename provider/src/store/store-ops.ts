/**
 * What every Store implementation shares: the async StoreOps, each a call on the implementation's
 * tables (SQLite's answer at once, PostgreSQL's with a Promise), run where and when the subclass
 * says (`run`: queued behind an open transaction, on a transaction's own connection, …); and the
 * handle a transaction's `fn` works through, dead once the transaction ended.
 */
import type { AttachmentRow, BackendRow, LunRow, PairRow, ProfileRow, StoreOps, TargetRow, VolumeRow } from "./store";

/** The tables of an implementation: every StoreOps operation, synchronous or not. */
export type StoreTables = { [K in keyof StoreOps]: (...args: Parameters<StoreOps[K]>) => Awaited<ReturnType<StoreOps[K]>> | ReturnType<StoreOps[K]> };

/** The async StoreOps over tables `T`; subclasses say what an operation runs on and when. */
export abstract class TableOps<T extends StoreTables> implements StoreOps {
  protected abstract run<R>(op: (t: T) => R | Promise<R>): Promise<R>;

  getVolume(id: string) { return this.run((t) => t.getVolume(id)); }
  getVolumeByName(name: string) { return this.run((t) => t.getVolumeByName(name)); }
  listVolumes(filter?: Partial<Pick<VolumeRow, "poolId" | "owner" | "status">>) { return this.run((t) => t.listVolumes(filter)); }
  insertVolume(row: VolumeRow) { return this.run((t) => t.insertVolume(row)); }
  updateVolume(id: string, changes: Partial<Omit<VolumeRow, "id" | "createdAt">>) { return this.run((t) => t.updateVolume(id, changes)); }
  deleteVolume(id: string) { return this.run((t) => t.deleteVolume(id)); }
  provisionedGibByPool() { return this.run((t) => t.provisionedGibByPool()); }
  volumeCountByBackend() { return this.run((t) => t.volumeCountByBackend()); }
  setSharedTargets(backendName: string, sharedTargets: boolean) { return this.run((t) => t.setSharedTargets(backendName, sharedTargets)); }

  getProfile(id: string) { return this.run((t) => t.getProfile(id)); }
  getProfileByName(name: string) { return this.run((t) => t.getProfileByName(name)); }
  listProfiles() { return this.run((t) => t.listProfiles()); }
  insertProfile(row: ProfileRow) { return this.run((t) => t.insertProfile(row)); }
  updateProfile(id: string, changes: Partial<Omit<ProfileRow, "id" | "createdAt">>) { return this.run((t) => t.updateProfile(id, changes)); }
  deleteProfile(id: string) { return this.run((t) => t.deleteProfile(id)); }

  getAttachment(id: string) { return this.run((t) => t.getAttachment(id)); }
  listAttachments(filter?: { volumeId?: string; targetName?: string; owner?: string }) { return this.run((t) => t.listAttachments(filter)); }
  insertAttachment(row: AttachmentRow) { return this.run((t) => t.insertAttachment(row)); }
  updateAttachment(id: string, changes: Partial<Omit<AttachmentRow, "id" | "createdAt">>) { return this.run((t) => t.updateAttachment(id, changes)); }
  deleteAttachment(id: string) { return this.run((t) => t.deleteAttachment(id)); }

  getTarget(name: string) { return this.run((t) => t.getTarget(name)); }
  listTargets(filter?: { portal?: string; backendName?: string }) { return this.run((t) => t.listTargets(filter)); }
  insertTarget(row: TargetRow) { return this.run((t) => t.insertTarget(row)); }
  updateTarget(name: string, changes: Partial<Pick<TargetRow, "tid" | "port">>) { return this.run((t) => t.updateTarget(name, changes)); }
  deleteTarget(name: string) { return this.run((t) => t.deleteTarget(name)); }
  listLuns(targetName: string) { return this.run((t) => t.listLuns(targetName)); }
  insertLun(row: LunRow) { return this.run((t) => t.insertLun(row)); }
  deleteLun(targetName: string, volumeId: string) { return this.run((t) => t.deleteLun(targetName, volumeId)); }

  getPair(id: string) { return this.run((t) => t.getPair(id)); }
  listPairs(filter?: { primaryVolumeId?: string; secondaryVolumeId?: string }) { return this.run((t) => t.listPairs(filter)); }
  insertPair(row: PairRow) { return this.run((t) => t.insertPair(row)); }
  updatePair(id: string, changes: Partial<Omit<PairRow, "id" | "createdAt">>) { return this.run((t) => t.updatePair(id, changes)); }
  deletePair(id: string) { return this.run((t) => t.deletePair(id)); }

  getBackend(name: string) { return this.run((t) => t.getBackend(name)); }
  listBackends() { return this.run((t) => t.listBackends()); }
  upsertBackend(row: BackendRow) { return this.run((t) => t.upsertBackend(row)); }
  getInfo(key: string) { return this.run((t) => t.getInfo(key)); }
  setInfo(key: string, value: string) { return this.run((t) => t.setInfo(key, value)); }
  stateId() { return this.run((t) => t.stateId()); }
}

/** The handle a transaction's `fn` works through: straight to its tables, dead once the transaction ended. */
export class TransactionHandle<T extends StoreTables> extends TableOps<T> {
  private open = true;

  constructor(private readonly tables: T) {
    super();
  }

  end(): void {
    this.open = false;
  }

  protected async run<R>(op: (t: T) => R | Promise<R>): Promise<R> {
    if (!this.open) throw new Error("sds internal error: a store transaction's handle was used after the transaction ended");
    return op(this.tables);
  }
}
