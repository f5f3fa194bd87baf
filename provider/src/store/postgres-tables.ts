/**
 * The SQL of the PostgreSQL store: one async method per store operation, on whatever it is given
 * to query (the pool, for work outside a transaction; a transaction's own client inside one). It
 * knows nothing of transactions; PostgresStore (postgres-store.ts) decides what it runs on.
 *
 * Columns are named as in SQLite (the field → column maps of sqlite-rows.ts serve both), and the
 * column types (postgres-migrations.ts) come back as the row types want them, so a row is its
 * columns renamed, nothing converted.
 */
import { UserError } from "../errors";
import { attachmentColumns, pairColumns, profileColumns, targetColumns, volumeColumns } from "./sqlite-rows";
import type { AttachmentRow, BackendRow, LunRow, PairRow, ProfileRow, StoreOps, TargetRow, VolumeRow } from "./store";

/** A row as node-postgres returns it: column name → value. */
type Row = Record<string, unknown>;

/** What the tables run SQL on: a pg Pool or a PoolClient. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: Row[]; rowCount: number | null }>;
}

const backendColumns: Record<keyof BackendRow, string> = { name: "name", backendId: "backend_id", config: "config_json", createdAt: "created_at" };
const lunColumns: Record<keyof LunRow, string> = { targetName: "target_name", volumeId: "volume_id", lun: "lun" };

// Why: text sorts by the database's collation (en_US puts "b-2" and "b10" differently from
// SQLite's byte order); "C" is byte order, so both stores list rows in the same order.
const byCreation = `created_at COLLATE "C", id COLLATE "C"`;

/** Why: the one place a row becomes its fields (the column types already match the fields'). */
function fromRow<R extends object>(columns: Record<keyof R, string>, r: Row): R {
  return Object.fromEntries(Object.entries(columns).map(([field, column]) => [field, r[column as string] ?? null])) as R;
}

/** Why: maps go to JSONB as JSON text; node-postgres would otherwise guess (arrays as PG arrays). */
function toPg(value: unknown): unknown {
  return value !== null && typeof value === "object" ? JSON.stringify(value) : value;
}

/** Why: usage rows are per (pool, backend); a pool or a backend with several adds up (never seen, but exact). */
function sumBy(rows: Row[], key: string, value = "gib"): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of rows) out.set(r[key] as string, (out.get(r[key] as string) ?? 0) + Number(r[value]));
  return out;
}

/** Every store operation as SQL on one {@link Queryable}; no transaction logic of its own. */
export class PostgresTables implements StoreOps {
  constructor(private readonly db: Queryable) {}

  async getVolume(id: string): Promise<VolumeRow | undefined> {
    return this.getOne("volumes", volumeColumns, "id", id);
  }

  async getVolumeByName(name: string): Promise<VolumeRow | undefined> {
    return this.getOne("volumes", volumeColumns, "name", name);
  }

  async listVolumes(filter: Partial<Pick<VolumeRow, "poolId" | "owner" | "status">> = {}): Promise<VolumeRow[]> {
    return this.selectWhere("volumes", volumeColumns, filter, byCreation);
  }

  async insertVolume(row: VolumeRow): Promise<void> {
    await this.insert("volumes", volumeColumns, row);
  }

  async updateVolume(id: string, changes: Partial<Omit<VolumeRow, "id" | "createdAt">>): Promise<VolumeRow> {
    return this.update("volumes", volumeColumns, id, changes, "volume");
  }

  async deleteVolume(id: string): Promise<void> {
    await this.db.query("DELETE FROM volumes WHERE id = $1", [id]);
  }

  async provisionedGibByPool(): Promise<ReadonlyMap<string, number>> {
    const { rows } = await this.db.query("SELECT pool_id, provisioned_gib AS gib FROM pool_usage");
    return sumBy(rows, "pool_id");
  }

  async volumeCountByBackend(): Promise<ReadonlyMap<string, number>> {
    const { rows } = await this.db.query("SELECT backend_name, volumes AS n FROM pool_usage");
    return sumBy(rows, "backend_name", "n");
  }

  async setSharedTargets(backendName: string, sharedTargets: boolean): Promise<number> {
    const r = await this.db.query("UPDATE volumes SET shared_targets = $1 WHERE backend_name = $2 AND shared_targets != $1", [sharedTargets, backendName]);
    return r.rowCount ?? 0;
  }

  async getProfile(id: string): Promise<ProfileRow | undefined> {
    return this.getOne("profiles", profileColumns, "id", id);
  }

  async getProfileByName(name: string): Promise<ProfileRow | undefined> {
    return this.getOne("profiles", profileColumns, "name", name);
  }

  async listProfiles(): Promise<ProfileRow[]> {
    return this.selectWhere("profiles", profileColumns, {}, `name COLLATE "C"`);
  }

  async insertProfile(row: ProfileRow): Promise<void> {
    await this.insert("profiles", profileColumns, row);
  }

  async updateProfile(id: string, changes: Partial<Omit<ProfileRow, "id" | "createdAt">>): Promise<ProfileRow> {
    return this.update("profiles", profileColumns, id, changes, "profile");
  }

  async deleteProfile(id: string): Promise<void> {
    await this.db.query("DELETE FROM profiles WHERE id = $1", [id]);
  }

  async getAttachment(id: string): Promise<AttachmentRow | undefined> {
    return this.getOne("attachments", attachmentColumns, "id", id);
  }

  async listAttachments(filter: { volumeId?: string; targetName?: string; owner?: string } = {}): Promise<AttachmentRow[]> {
    return this.selectWhere("attachments", attachmentColumns, filter, byCreation);
  }

  async insertAttachment(row: AttachmentRow): Promise<void> {
    await this.insert("attachments", attachmentColumns, row);
  }

  async updateAttachment(id: string, changes: Partial<Omit<AttachmentRow, "id" | "createdAt">>): Promise<AttachmentRow> {
    return this.update("attachments", attachmentColumns, id, changes, "attachment");
  }

  async deleteAttachment(id: string): Promise<void> {
    await this.db.query("DELETE FROM attachments WHERE id = $1", [id]);
  }

  async getTarget(name: string): Promise<TargetRow | undefined> {
    return this.getOne("targets", targetColumns, "name", name);
  }

  async listTargets(filter: { portal?: string; backendName?: string } = {}): Promise<TargetRow[]> {
    return this.selectWhere("targets", targetColumns, filter, `name COLLATE "C"`);
  }

  async insertTarget(row: TargetRow): Promise<void> {
    await this.insert("targets", targetColumns, row);
  }

  async updateTarget(name: string, changes: Partial<Pick<TargetRow, "tid" | "port">>): Promise<void> {
    if (changes.tid !== undefined) await this.db.query("UPDATE targets SET tid = $1 WHERE name = $2", [changes.tid, name]);
    if (changes.port !== undefined) await this.db.query("UPDATE targets SET port = $1 WHERE name = $2", [changes.port, name]);
  }

  async deleteTarget(name: string): Promise<void> {
    await this.db.query("DELETE FROM targets WHERE name = $1", [name]);
  }

  async listLuns(targetName: string): Promise<LunRow[]> {
    return this.selectWhere("luns", lunColumns, { targetName }, "lun");
  }

  async insertLun(row: LunRow): Promise<void> {
    await this.insert("luns", lunColumns, row);
  }

  async deleteLun(targetName: string, volumeId: string): Promise<void> {
    await this.db.query("DELETE FROM luns WHERE target_name = $1 AND volume_id = $2", [targetName, volumeId]);
  }

  async getPair(id: string): Promise<PairRow | undefined> {
    return this.getOne("replication_pairs", pairColumns, "id", id);
  }

  async listPairs(filter: { primaryVolumeId?: string; secondaryVolumeId?: string } = {}): Promise<PairRow[]> {
    return this.selectWhere("replication_pairs", pairColumns, filter, byCreation);
  }

  async insertPair(row: PairRow): Promise<void> {
    await this.insert("replication_pairs", pairColumns, row);
  }

  async updatePair(id: string, changes: Partial<Omit<PairRow, "id" | "createdAt">>): Promise<PairRow> {
    return this.update("replication_pairs", pairColumns, id, changes, "replication pair");
  }

  async deletePair(id: string): Promise<void> {
    await this.db.query("DELETE FROM replication_pairs WHERE id = $1", [id]);
  }

  async getBackend(name: string): Promise<BackendRow | undefined> {
    return this.getOne("backends", backendColumns, "name", name);
  }

  async listBackends(): Promise<BackendRow[]> {
    return this.selectWhere("backends", backendColumns, {}, "name");
  }

  async upsertBackend(row: BackendRow): Promise<void> {
    await this.db.query(
      "INSERT INTO backends (name, backend_id, config_json, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET backend_id = excluded.backend_id, config_json = excluded.config_json",
      [row.name, row.backendId, row.config, row.createdAt],
    );
  }

  async getInfo(key: string): Promise<string | undefined> {
    const { rows } = await this.db.query("SELECT value FROM state_info WHERE key = $1", [key]);
    return rows[0] === undefined ? undefined : String(rows[0].value);
  }

  async setInfo(key: string, value: string): Promise<void> {
    await this.db.query("INSERT INTO state_info (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value]);
  }

  async stateId(): Promise<string> {
    const { rows } = await this.db.query("SELECT value FROM state_info WHERE key = 'state_id'");
    return String(rows[0]?.value);
  }

  /**
   * Take the session advisory lock (`lockClass`, hashtext(`name`)) if no other session holds it,
   * without waiting. The server hashes the name, so every runner on the database maps a name to
   * the same key; two names that hash alike only wait for each other, never share a lock. The
   * lock lasts until {@link releaseSessionLock} or the end of the session: run it on a connection
   * kept for it (PostgresStore's lock session), never on a pooled one.
   */
  async trySessionLock(lockClass: number, name: string): Promise<boolean> {
    const { rows } = await this.db.query("SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok", [lockClass, name]);
    return rows[0]?.ok === true;
  }

  /** Release one level of that lock; false (and a server WARNING) when this session did not hold it. */
  async releaseSessionLock(lockClass: number, name: string): Promise<boolean> {
    const { rows } = await this.db.query("SELECT pg_advisory_unlock($1, hashtext($2)) AS ok", [lockClass, name]);
    return rows[0]?.ok === true;
  }

  private async getOne<R extends object>(table: string, columns: Record<keyof R, string>, key: string, value: string): Promise<R | undefined> {
    const { rows } = await this.db.query(`SELECT * FROM ${table} WHERE ${key} = $1`, [value]);
    return rows[0] && fromRow(columns, rows[0]);
  }

  /** `SELECT *` with one equality per defined filter key (keys named as the row's fields). */
  private async selectWhere<R extends object>(table: string, columns: Record<keyof R, string>, filter: NoInfer<Partial<R>>, orderBy: string): Promise<R[]> {
    const keys = (Object.keys(filter) as (keyof R)[]).filter((k) => filter[k] !== undefined);
    const where = keys.length ? ` WHERE ${keys.map((k, i) => `${columns[k]} = $${i + 1}`).join(" AND ")}` : "";
    const { rows } = await this.db.query(`SELECT * FROM ${table}${where} ORDER BY ${orderBy}`, keys.map((k) => toPg(filter[k])));
    return rows.map((r) => fromRow(columns, r));
  }

  private async insert<R extends object>(table: string, columns: Record<keyof R, string>, row: R): Promise<void> {
    const keys = Object.keys(columns) as (keyof R)[];
    const sql = `INSERT INTO ${table} (${keys.map((k) => columns[k]).join(", ")}) VALUES (${keys.map((_, i) => `$${i + 1}`).join(", ")})`;
    await this.db.query(sql, keys.map((k) => toPg(row[k])));
  }

  /** Change the row and return it as it is now; NOT_FOUND (`what` names it) when there is none. */
  private async update<R extends object>(table: string, columns: Record<keyof R, string>, id: string, changes: NoInfer<Partial<R>>, what: string): Promise<R> {
    const keys = (Object.keys(changes) as (keyof R)[]).filter((k) => changes[k] !== undefined);
    const { rows } = keys.length
      ? await this.db.query(
          `UPDATE ${table} SET ${keys.map((k, i) => `${columns[k]} = $${i + 1}`).join(", ")} WHERE id = $${keys.length + 1} RETURNING *`,
          [...keys.map((k) => toPg(changes[k])), id],
        )
      : await this.db.query(`SELECT * FROM ${table} WHERE id = $1`, [id]);
    if (!rows[0]) throw new UserError("NOT_FOUND", `${what} ${id} not found`);
    return fromRow(columns, rows[0]);
  }
}
