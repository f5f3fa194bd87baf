/**
 * The SQL of the SQLite store, synchronous (better-sqlite3 is): one method per store operation on
 * one connection. It knows nothing of transactions or of the async interface; SqliteStore
 * (sqlite-store.ts) decides when a method may run.
 */
import type Database from "better-sqlite3";
import { UserError } from "../errors";
import { holderIsDead } from "./lock-holder";
import {
  type Row,
  attachmentColumns,
  attachmentFromRow,
  backendFromRow,
  lunFromRow,
  pairColumns,
  pairFromRow,
  profileColumns,
  profileFromRow,
  targetColumns,
  targetFromRow,
  toSql,
  volumeColumns,
  volumeFromRow,
} from "./sqlite-rows";
import type { AttachmentRow, BackendRow, LunRow, PairRow, ProfileRow, StoreOps, TargetRow, VolumeRow } from "./store";

/** StoreOps with every result unwrapped from its Promise: what one synchronous SQL call returns. */
export type SyncOps = { [K in keyof StoreOps]: (...args: Parameters<StoreOps[K]>) => Awaited<ReturnType<StoreOps[K]>> };

export class SqliteTables implements SyncOps {
  /**
   * Provisioned GiB by pool, from `pool_usage` (one row per pool with volumes, kept by triggers:
   * migration 8). Placement reads it on every create, so it is read whole only when another
   * process changed the database (`PRAGMA data_version` moves) or a transaction rolled back
   * (`dirty`); a write of this connection reads again just the pools it touched.
   */
  private provisioned?: { version: number; byPool: Map<string, number> };
  private dirty = true;
  /** Why: preparing is a third of a small statement's cost; the hot ones are prepared once per connection. */
  private readonly statements = new Map<string, Database.Statement>();

  constructor(private readonly db: Database.Database) {}

  /** A rolled-back transaction may have changed (then undone) what the cache counted. */
  forgetCache(): void {
    this.dirty = true;
  }

  private sql(text: string): Database.Statement {
    let st = this.statements.get(text);
    if (!st) {
      st = this.db.prepare(text);
      this.statements.set(text, st);
    }
    return st;
  }

  /** Why: after a write of this connection, the cached totals of the pools it touched, read again from pool_usage (the triggers' figures). */
  private recount(...poolIds: Array<string | undefined>): void {
    const byPool = this.provisioned?.byPool;
    if (!byPool || this.dirty) return;
    for (const id of new Set(poolIds)) {
      if (id === undefined) continue;
      const gib = this.sql("SELECT SUM(provisioned_gib) FROM pool_usage WHERE pool_id = ?").pluck().get(id) as number | null;
      if (gib === null) byPool.delete(id);
      else byPool.set(id, gib);
    }
  }

  private poolOf(id: string): string | undefined {
    return this.sql("SELECT pool_id FROM volumes WHERE id = ?").pluck().get(id) as string | undefined;
  }

  getVolume(id: string): VolumeRow | undefined {
    const r = this.sql("SELECT * FROM volumes WHERE id = ?").get(id) as Row | undefined;
    return r && volumeFromRow(r);
  }

  getVolumeByName(name: string): VolumeRow | undefined {
    const r = this.sql("SELECT * FROM volumes WHERE name = ?").get(name) as Row | undefined;
    return r && volumeFromRow(r);
  }

  listVolumes(filter: Partial<Pick<VolumeRow, "poolId" | "owner" | "status">> = {}): VolumeRow[] {
    return this.selectWhere("volumes", volumeColumns, filter, "created_at, id").map(volumeFromRow);
  }

  insertVolume(row: VolumeRow): void {
    this.insert("volumes", volumeColumns, row);
    this.recount(row.poolId);
  }

  updateVolume(id: string, changes: Partial<Omit<VolumeRow, "id" | "createdAt">>): VolumeRow {
    const counted = changes.sizeGib !== undefined || changes.poolId !== undefined || changes.backendName !== undefined;
    const before = counted ? this.poolOf(id) : undefined;
    this.update("volumes", volumeColumns, id, changes);
    const row = this.getVolume(id);
    if (!row) throw new UserError("NOT_FOUND", `volume ${id} not found`);
    if (counted) this.recount(before, row.poolId);
    return row;
  }

  deleteVolume(id: string): void {
    const before = this.poolOf(id);
    this.sql("DELETE FROM volumes WHERE id = ?").run(id);
    this.recount(before);
  }

  /**
   * The map is this connection's cache, changed in place by its later writes: read it before
   * writing (as placement does), copy it to keep it.
   */
  provisionedGibByPool(): ReadonlyMap<string, number> {
    const version = this.db.pragma("data_version", { simple: true }) as number;
    if (this.provisioned && !this.dirty && this.provisioned.version === version) return this.provisioned.byPool;
    const byPool = new Map<string, number>();
    for (const r of this.sql("SELECT pool_id, provisioned_gib FROM pool_usage").raw().iterate() as IterableIterator<[string, number]>) byPool.set(r[0], (byPool.get(r[0]) ?? 0) + r[1]);
    this.provisioned = { version, byPool };
    this.dirty = false;
    return this.provisioned.byPool;
  }

  volumeCountByBackend(): ReadonlyMap<string, number> {
    const out = new Map<string, number>();
    for (const r of this.sql("SELECT backend_name, volumes FROM pool_usage").raw().iterate() as IterableIterator<[string, number]>) out.set(r[0], (out.get(r[0]) ?? 0) + r[1]);
    return out;
  }

  setSharedTargets(backendName: string, sharedTargets: boolean): number {
    const v = sharedTargets ? 1 : 0;
    return this.sql("UPDATE volumes SET shared_targets = ? WHERE backend_name = ? AND shared_targets != ?").run(v, backendName, v).changes;
  }

  getProfile(id: string): ProfileRow | undefined {
    const r = this.sql("SELECT * FROM profiles WHERE id = ?").get(id) as Row | undefined;
    return r && profileFromRow(r);
  }

  getProfileByName(name: string): ProfileRow | undefined {
    const r = this.sql("SELECT * FROM profiles WHERE name = ?").get(name) as Row | undefined;
    return r && profileFromRow(r);
  }

  listProfiles(): ProfileRow[] {
    return (this.sql("SELECT * FROM profiles ORDER BY name").all() as Row[]).map(profileFromRow);
  }

  insertProfile(row: ProfileRow): void {
    this.insert("profiles", profileColumns, row);
  }

  updateProfile(id: string, changes: Partial<Omit<ProfileRow, "id" | "createdAt">>): ProfileRow {
    this.update("profiles", profileColumns, id, changes);
    const row = this.getProfile(id);
    if (!row) throw new UserError("NOT_FOUND", `profile ${id} not found`);
    return row;
  }

  deleteProfile(id: string): void {
    this.sql("DELETE FROM profiles WHERE id = ?").run(id);
  }

  getAttachment(id: string): AttachmentRow | undefined {
    const r = this.sql("SELECT * FROM attachments WHERE id = ?").get(id) as Row | undefined;
    return r && attachmentFromRow(r);
  }

  listAttachments(filter: { volumeId?: string; targetName?: string; owner?: string } = {}): AttachmentRow[] {
    return this.selectWhere("attachments", attachmentColumns, filter, "created_at, id").map(attachmentFromRow);
  }

  insertAttachment(row: AttachmentRow): void {
    this.insert("attachments", attachmentColumns, row);
  }

  updateAttachment(id: string, changes: Partial<Omit<AttachmentRow, "id" | "createdAt">>): AttachmentRow {
    this.update("attachments", attachmentColumns, id, changes);
    const row = this.getAttachment(id);
    if (!row) throw new UserError("NOT_FOUND", `attachment ${id} not found`);
    return row;
  }

  deleteAttachment(id: string): void {
    this.sql("DELETE FROM attachments WHERE id = ?").run(id);
  }

  getTarget(name: string): TargetRow | undefined {
    const r = this.sql("SELECT * FROM targets WHERE name = ?").get(name) as Row | undefined;
    return r && targetFromRow(r);
  }

  listTargets(filter: { portal?: string; backendName?: string } = {}): TargetRow[] {
    return this.selectWhere("targets", targetColumns, filter, "name").map(targetFromRow);
  }

  insertTarget(row: TargetRow): void {
    this.insert("targets", targetColumns, row);
  }

  updateTarget(name: string, changes: Partial<Pick<TargetRow, "tid" | "port">>): void {
    if (changes.tid !== undefined) this.sql("UPDATE targets SET tid = ? WHERE name = ?").run(changes.tid, name);
    if (changes.port !== undefined) this.sql("UPDATE targets SET port = ? WHERE name = ?").run(changes.port, name);
  }

  deleteTarget(name: string): void {
    this.sql("DELETE FROM targets WHERE name = ?").run(name);
  }

  listLuns(targetName: string): LunRow[] {
    return (this.sql("SELECT * FROM luns WHERE target_name = ? ORDER BY lun").all(targetName) as Row[]).map(lunFromRow);
  }

  insertLun(row: LunRow): void {
    this.sql("INSERT INTO luns (target_name, volume_id, lun) VALUES (?, ?, ?)").run(row.targetName, row.volumeId, row.lun);
  }

  deleteLun(targetName: string, volumeId: string): void {
    this.sql("DELETE FROM luns WHERE target_name = ? AND volume_id = ?").run(targetName, volumeId);
  }

  getPair(id: string): PairRow | undefined {
    const r = this.sql("SELECT * FROM replication_pairs WHERE id = ?").get(id) as Row | undefined;
    return r && pairFromRow(r);
  }

  listPairs(filter: { primaryVolumeId?: string; secondaryVolumeId?: string } = {}): PairRow[] {
    return this.selectWhere("replication_pairs", pairColumns, filter, "created_at, id").map(pairFromRow);
  }

  insertPair(row: PairRow): void {
    this.insert("replication_pairs", pairColumns, row);
  }

  updatePair(id: string, changes: Partial<Omit<PairRow, "id" | "createdAt">>): PairRow {
    this.update("replication_pairs", pairColumns, id, changes);
    const row = this.getPair(id);
    if (!row) throw new UserError("NOT_FOUND", `replication pair ${id} not found`);
    return row;
  }

  deletePair(id: string): void {
    this.sql("DELETE FROM replication_pairs WHERE id = ?").run(id);
  }

  getBackend(name: string): BackendRow | undefined {
    const r = this.sql("SELECT * FROM backends WHERE name = ?").get(name) as Row | undefined;
    return r && backendFromRow(r);
  }

  listBackends(): BackendRow[] {
    return (this.sql("SELECT * FROM backends ORDER BY name").all() as Row[]).map(backendFromRow);
  }

  upsertBackend(row: BackendRow): void {
    this
      .sql(
        "INSERT INTO backends (name, backend_id, config_json, created_at) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET backend_id = excluded.backend_id, config_json = excluded.config_json",
      )
      .run(row.name, row.backendId, row.config, row.createdAt);
  }

  getInfo(key: string): string | undefined {
    const r = this.sql("SELECT value FROM state_info WHERE key = ?").get(key) as Row | undefined;
    return r === undefined ? undefined : String(r.value);
  }

  setInfo(key: string, value: string): void {
    this.sql("INSERT INTO state_info (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(key, value);
  }

  stateId(): string {
    const r = this.sql("SELECT value FROM state_info WHERE key = 'state_id'").get() as Row | undefined;
    return String(r?.value);
  }

  /**
   * Take or extend a lock; the caller runs it inside a write transaction (read, then write).
   * Another holder's lock is free once expired, or at once when its holder is dead (see
   * store/lock-holder.ts).
   */
  tryLock(name: string, holder: string, ttlMs: number): boolean {
    const now = Date.now();
    const r = this.sql("SELECT holder, expires_at FROM locks WHERE name = ?").get(name) as Row | undefined;
    if (r && r.holder !== holder && (r.expires_at as number) > now && !holderIsDead(String(r.holder))) return false;
    this.sql("INSERT INTO locks (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at").run(name, holder, now + ttlMs);
    return true;
  }

  /** The holder text of lock `name` while it is held (not expired), else undefined. */
  lockHolder(name: string): string | undefined {
    const r = this.sql("SELECT holder FROM locks WHERE name = ? AND expires_at > ?").get(name, Date.now()) as Row | undefined;
    return r === undefined ? undefined : String(r.holder);
  }

  unlock(name: string, holder: string): void {
    this.sql("DELETE FROM locks WHERE name = ? AND holder = ?").run(name, holder);
  }

  /** `SELECT *` with one equality per defined filter key (keys named as the row's fields). */
  private selectWhere<R extends object>(table: string, columns: Record<keyof R, string>, filter: Partial<R>, orderBy: string): Row[] {
    const keys = (Object.keys(filter) as (keyof R)[]).filter((k) => filter[k] !== undefined);
    const where = keys.length ? ` WHERE ${keys.map((k) => `${columns[k]} = ?`).join(" AND ")}` : "";
    return this.sql(`SELECT * FROM ${table}${where} ORDER BY ${orderBy}`).all(...keys.map((k) => toSql(filter[k]))) as Row[];
  }

  private insert<R extends object>(table: string, columns: Record<keyof R, string>, row: R): void {
    const keys = Object.keys(columns) as (keyof R)[];
    const sql = `INSERT INTO ${table} (${keys.map((k) => columns[k]).join(", ")}) VALUES (${keys.map(() => "?").join(", ")})`;
    this.sql(sql).run(...keys.map((k) => toSql(row[k])));
  }

  private update<R extends object>(table: string, columns: Record<keyof R, string>, id: string, changes: Partial<R>): void {
    const keys = (Object.keys(changes) as (keyof R)[]).filter((k) => changes[k] !== undefined);
    if (keys.length === 0) return;
    const sql = `UPDATE ${table} SET ${keys.map((k) => `${columns[k]} = ?`).join(", ")} WHERE id = ?`;
    this.sql(sql).run(...keys.map((k) => toSql(changes[k])), id);
  }
}
