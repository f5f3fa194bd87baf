/**
 * {@link Store} on SQLite (better-sqlite3): WAL journal, a busy timeout so concurrent provider
 * processes wait instead of failing, foreign keys on, migrations applied at open.
 * Locking rule: all writes that depend on a read go through `transaction()` (BEGIN IMMEDIATE).
 */
import Database from "better-sqlite3";
import * as fs from "node:fs";
import * as path from "node:path";
import { UserError } from "../errors";
import { migrations } from "./migrations";
import type { AttachmentRow, BackendRow, LunRow, PairRow, ProfileRow, Store, TargetRow, VolumeRow } from "./store";

type Row = Record<string, unknown>;

const volumeColumns: Record<keyof VolumeRow, string> = {
  id: "id",
  name: "name",
  owner: "owner",
  sizeGib: "size_gib",
  profileId: "profile_id",
  availabilityZone: "availability_zone",
  multiAttach: "multi_attach",
  sourceVolumeId: "source_volume_id",
  description: "description",
  metadata: "metadata_json",
  poolId: "pool_id",
  backendName: "backend_name",
  backendId: "backend_id",
  sharedTargets: "shared_targets",
  status: "status",
  replicationStatus: "replication_status",
  createdAt: "created_at",
  updatedAt: "updated_at",
};

const profileColumns: Record<keyof ProfileRow, string> = {
  id: "id",
  name: "name",
  owner: "owner",
  description: "description",
  storageType: "storage_type",
  extraSpecs: "extra_specs_json",
  createdAt: "created_at",
  updatedAt: "updated_at",
};

const attachmentColumns: Record<keyof AttachmentRow, string> = {
  id: "id",
  owner: "owner",
  volumeId: "volume_id",
  host: "host",
  mode: "mode",
  connector: "connector_json",
  protocol: "protocol",
  targetName: "target_name",
  status: "status",
  devicePath: "device_path",
  createdAt: "created_at",
  updatedAt: "updated_at",
};

const targetColumns: Record<keyof TargetRow, string> = {
  name: "name",
  backendName: "backend_name",
  protocol: "protocol",
  mode: "mode",
  portal: "portal",
  tid: "tid",
  port: "port",
  chapUser: "chap_user",
  chapSecretEnc: "chap_secret_enc",
  createdAt: "created_at",
};

const pairColumns: Record<keyof PairRow, string> = {
  id: "id",
  owner: "owner",
  primaryVolumeId: "primary_volume_id",
  secondaryVolumeId: "secondary_volume_id",
  targetBackend: "target_backend",
  targetPool: "target_pool",
  rpoSeconds: "rpo_seconds",
  enabled: "enabled",
  activeSide: "active_side",
  status: "status",
  lastSyncAt: "last_sync_at",
  bytesTransferred: "bytes_transferred",
  lastError: "last_error",
  createdAt: "created_at",
  updatedAt: "updated_at",
};

function pairFromRow(r: Row): PairRow {
  const out = Object.fromEntries(Object.entries(pairColumns).map(([k, c]) => [k, r[c]])) as unknown as PairRow;
  out.enabled = r.enabled === 1;
  return out;
}

function attachmentFromRow(r: Row): AttachmentRow {
  return {
    id: r.id as string,
    owner: r.owner as string,
    volumeId: r.volume_id as string,
    host: r.host as string,
    mode: r.mode as AttachmentRow["mode"],
    connector: JSON.parse(r.connector_json as string),
    protocol: r.protocol as AttachmentRow["protocol"],
    targetName: (r.target_name as string | null) ?? null,
    status: r.status as string,
    devicePath: (r.device_path as string | null) ?? null,
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
  };
}

function targetFromRow(r: Row): TargetRow {
  return {
    name: r.name as string,
    backendName: r.backend_name as string,
    protocol: r.protocol as TargetRow["protocol"],
    mode: r.mode as TargetRow["mode"],
    portal: r.portal as string,
    tid: (r.tid as number | null) ?? null,
    port: (r.port as number | null) ?? null,
    chapUser: (r.chap_user as string | null) ?? null,
    chapSecretEnc: (r.chap_secret_enc as string | null) ?? null,
    createdAt: r.created_at as string,
  };
}

// Why: one place converts JS values to SQLite ones (booleans as 0/1, maps as JSON).
function toSql(value: unknown): unknown {
  if (typeof value === "boolean") return value ? 1 : 0;
  if (value !== null && typeof value === "object") return JSON.stringify(value);
  return value;
}

function volumeFromRow(r: Row): VolumeRow {
  return {
    id: r.id as string,
    name: r.name as string,
    owner: r.owner as string,
    sizeGib: r.size_gib as number,
    profileId: (r.profile_id as string | null) ?? null,
    availabilityZone: r.availability_zone as string,
    multiAttach: r.multi_attach === 1,
    sourceVolumeId: (r.source_volume_id as string | null) ?? null,
    description: r.description as string,
    metadata: JSON.parse(r.metadata_json as string),
    poolId: r.pool_id as string,
    backendName: r.backend_name as string,
    backendId: r.backend_id as string,
    sharedTargets: r.shared_targets === 1,
    status: r.status as string,
    replicationStatus: r.replication_status as string,
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
  };
}

function profileFromRow(r: Row): ProfileRow {
  return {
    id: r.id as string,
    name: r.name as string,
    owner: r.owner as string,
    description: r.description as string,
    storageType: r.storage_type as string,
    extraSpecs: JSON.parse(r.extra_specs_json as string),
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
  };
}

/** Parse `sqlite:<path>` (relative paths against `baseDir`). Other schemes are not built yet. */
export function sqlitePathFromUrl(url: string, baseDir: string): string {
  if (url.startsWith("sqlite:")) {
    const p = url.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
    if (!p) throw new UserError("INVALID_INPUT", `stateUrl: "${url}" names no file`, "stateUrl");
    return p === ":memory:" ? p : path.resolve(baseDir, p);
  }
  if (/^postgres(ql)?:\/\//.test(url)) {
    throw new UserError("NOT_AVAILABLE_YET", `stateUrl: postgres state is not available yet; use sqlite:<path>`, "stateUrl");
  }
  throw new UserError("INVALID_INPUT", `stateUrl: "${url}" is not sqlite:<path>`, "stateUrl");
}

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  /**
   * Provisioned GiB by pool, recomputed only when the database changed: by this connection
   * (`dirty`) or by another process (`PRAGMA data_version` moves). Placement reads it every time.
   */
  private provisioned?: { version: number; byPool: Map<string, number> };
  private dirty = true;

  constructor(file: string, options: { busyTimeoutMs?: number } = {}) {
    if (file !== ":memory:") fs.mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file, { timeout: options.busyTimeoutMs ?? 15_000 });
    if (file !== ":memory:") this.db.pragma("journal_mode = WAL");
    this.db.pragma("foreign_keys = ON");
    this.db.pragma("synchronous = NORMAL");
    this.migrate();
  }

  /** Apply the migrations not applied yet, each in its own immediate transaction. */
  private migrate(): void {
    this.db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
    for (const m of migrations) {
      this.db
        .transaction(() => {
          const done = this.db.prepare("SELECT 1 FROM schema_migrations WHERE version = ?").get(m.version);
          if (done) return;
          this.db.exec(m.sql);
          this.db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)").run(m.version, m.name, new Date().toISOString());
        })
        .immediate();
    }
  }

  /** The migration versions applied, for tests and `sds status`. */
  appliedMigrations(): number[] {
    return (this.db.prepare("SELECT version FROM schema_migrations ORDER BY version").all() as Row[]).map((r) => r.version as number);
  }

  transaction<T>(fn: () => T): T {
    if (this.db.inTransaction) return fn();
    return this.db.transaction(fn).immediate();
  }

  getVolume(id: string): VolumeRow | undefined {
    const r = this.db.prepare("SELECT * FROM volumes WHERE id = ?").get(id) as Row | undefined;
    return r && volumeFromRow(r);
  }

  getVolumeByName(name: string): VolumeRow | undefined {
    const r = this.db.prepare("SELECT * FROM volumes WHERE name = ?").get(name) as Row | undefined;
    return r && volumeFromRow(r);
  }

  listVolumes(filter: { poolId?: string } = {}): VolumeRow[] {
    const rows = filter.poolId
      ? this.db.prepare("SELECT * FROM volumes WHERE pool_id = ? ORDER BY created_at, id").all(filter.poolId)
      : this.db.prepare("SELECT * FROM volumes ORDER BY created_at, id").all();
    return (rows as Row[]).map(volumeFromRow);
  }

  insertVolume(row: VolumeRow): void {
    this.dirty = true;
    this.insert("volumes", volumeColumns, row);
  }

  updateVolume(id: string, changes: Partial<Omit<VolumeRow, "id" | "createdAt">>): VolumeRow {
    if (changes.sizeGib !== undefined || changes.poolId !== undefined) this.dirty = true;
    this.update("volumes", volumeColumns, id, changes);
    const row = this.getVolume(id);
    if (!row) throw new UserError("NOT_FOUND", `volume ${id} not found`);
    return row;
  }

  deleteVolume(id: string): void {
    this.dirty = true;
    this.db.prepare("DELETE FROM volumes WHERE id = ?").run(id);
  }

  provisionedGibByPool(): ReadonlyMap<string, number> {
    const version = this.db.pragma("data_version", { simple: true }) as number;
    if (this.provisioned && !this.dirty && this.provisioned.version === version) return this.provisioned.byPool;
    const rows = this.db.prepare("SELECT pool_id, SUM(size_gib) AS gib FROM volumes GROUP BY pool_id").all() as Row[];
    this.provisioned = { version, byPool: new Map(rows.map((r) => [r.pool_id as string, Number(r.gib)])) };
    this.dirty = false;
    return this.provisioned.byPool;
  }

  getProfile(id: string): ProfileRow | undefined {
    const r = this.db.prepare("SELECT * FROM profiles WHERE id = ?").get(id) as Row | undefined;
    return r && profileFromRow(r);
  }

  getProfileByName(name: string): ProfileRow | undefined {
    const r = this.db.prepare("SELECT * FROM profiles WHERE name = ?").get(name) as Row | undefined;
    return r && profileFromRow(r);
  }

  listProfiles(): ProfileRow[] {
    return (this.db.prepare("SELECT * FROM profiles ORDER BY name").all() as Row[]).map(profileFromRow);
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
    this.db.prepare("DELETE FROM profiles WHERE id = ?").run(id);
  }

  getAttachment(id: string): AttachmentRow | undefined {
    const r = this.db.prepare("SELECT * FROM attachments WHERE id = ?").get(id) as Row | undefined;
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
    this.db.prepare("DELETE FROM attachments WHERE id = ?").run(id);
  }

  getTarget(name: string): TargetRow | undefined {
    const r = this.db.prepare("SELECT * FROM targets WHERE name = ?").get(name) as Row | undefined;
    return r && targetFromRow(r);
  }

  listTargets(filter: { portal?: string; backendName?: string } = {}): TargetRow[] {
    return this.selectWhere("targets", targetColumns, filter, "name").map(targetFromRow);
  }

  insertTarget(row: TargetRow): void {
    this.insert("targets", targetColumns, row);
  }

  updateTarget(name: string, changes: Partial<Pick<TargetRow, "tid" | "port">>): void {
    if (changes.tid !== undefined) this.db.prepare("UPDATE targets SET tid = ? WHERE name = ?").run(changes.tid, name);
    if (changes.port !== undefined) this.db.prepare("UPDATE targets SET port = ? WHERE name = ?").run(changes.port, name);
  }

  deleteTarget(name: string): void {
    this.db.prepare("DELETE FROM targets WHERE name = ?").run(name);
  }

  listLuns(targetName: string): LunRow[] {
    return (this.db.prepare("SELECT * FROM luns WHERE target_name = ? ORDER BY lun").all(targetName) as Row[]).map((r) => ({
      targetName: r.target_name as string,
      volumeId: r.volume_id as string,
      lun: r.lun as number,
    }));
  }

  insertLun(row: LunRow): void {
    this.db.prepare("INSERT INTO luns (target_name, volume_id, lun) VALUES (?, ?, ?)").run(row.targetName, row.volumeId, row.lun);
  }

  deleteLun(targetName: string, volumeId: string): void {
    this.db.prepare("DELETE FROM luns WHERE target_name = ? AND volume_id = ?").run(targetName, volumeId);
  }

  getPair(id: string): PairRow | undefined {
    const r = this.db.prepare("SELECT * FROM replication_pairs WHERE id = ?").get(id) as Row | undefined;
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
    this.db.prepare("DELETE FROM replication_pairs WHERE id = ?").run(id);
  }

  tryLock(name: string, holder: string, ttlMs: number): boolean {
    return this.transaction(() => {
      const now = Date.now();
      const r = this.db.prepare("SELECT holder, expires_at FROM locks WHERE name = ?").get(name) as Row | undefined;
      if (r && r.holder !== holder && (r.expires_at as number) > now) return false;
      this.db.prepare("INSERT INTO locks (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at").run(name, holder, now + ttlMs);
      return true;
    });
  }

  unlock(name: string, holder: string): void {
    this.db.prepare("DELETE FROM locks WHERE name = ? AND holder = ?").run(name, holder);
  }

  setSharedTargets(backendName: string, sharedTargets: boolean): number {
    return this.db.prepare("UPDATE volumes SET shared_targets = ? WHERE backend_name = ? AND shared_targets != ?").run(sharedTargets ? 1 : 0, backendName, sharedTargets ? 1 : 0).changes;
  }

  stateId(): string {
    const r = this.db.prepare("SELECT value FROM state_info WHERE key = 'state_id'").get() as Row | undefined;
    return String(r?.value);
  }

  getBackend(name: string): BackendRow | undefined {
    const r = this.db.prepare("SELECT * FROM backends WHERE name = ?").get(name) as Row | undefined;
    return r && { name: r.name as string, backendId: r.backend_id as string, createdAt: r.created_at as string };
  }

  upsertBackend(row: BackendRow): void {
    this.db
      .prepare("INSERT INTO backends (name, backend_id, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET backend_id = excluded.backend_id")
      .run(row.name, row.backendId, row.createdAt);
  }

  close(): void {
    this.db.close();
  }

  /** `SELECT *` with one equality per defined filter key (keys named as the row's fields). */
  private selectWhere<R extends object>(table: string, columns: Record<keyof R, string>, filter: Partial<R>, orderBy: string): Row[] {
    const keys = (Object.keys(filter) as (keyof R)[]).filter((k) => filter[k] !== undefined);
    const where = keys.length ? ` WHERE ${keys.map((k) => `${columns[k]} = ?`).join(" AND ")}` : "";
    return this.db.prepare(`SELECT * FROM ${table}${where} ORDER BY ${orderBy}`).all(...keys.map((k) => toSql(filter[k]))) as Row[];
  }

  private insert<R extends object>(table: string, columns: Record<keyof R, string>, row: R): void {
    const keys = Object.keys(columns) as (keyof R)[];
    const sql = `INSERT INTO ${table} (${keys.map((k) => columns[k]).join(", ")}) VALUES (${keys.map(() => "?").join(", ")})`;
    this.db.prepare(sql).run(...keys.map((k) => toSql(row[k])));
  }

  private update<R extends object>(table: string, columns: Record<keyof R, string>, id: string, changes: Partial<R>): void {
    const keys = (Object.keys(changes) as (keyof R)[]).filter((k) => changes[k] !== undefined);
    if (keys.length === 0) return;
    const sql = `UPDATE ${table} SET ${keys.map((k) => `${columns[k]} = ?`).join(", ")} WHERE id = ?`;
    this.db.prepare(sql).run(...keys.map((k) => toSql(changes[k])), id);
  }
}
