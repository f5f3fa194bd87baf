/**
 * What only the SQLite store has to say beyond the Store contract (test/contract/store.test.ts):
 * migration 5 rebuilds tables keeping every row, index and foreign key; migration 8 counts existing
 * volumes into the pool totals placement reads; the store used inside its own transaction fails at
 * once instead of waiting for itself.
 */
import Database from "better-sqlite3";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { migrations } from "../../provider/src/store/migrations";
import { SqliteStore } from "../../provider/src/store/sqlite-store";

let dir: string;
let file: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-sqlite-"));
  file = path.join(dir, "state.db");
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A state as the provider left it before migration 5, with a row in every table. */
function stateAtVersion4(volumeStatus = "in-use"): void {
  const db = new Database(file);
  db.pragma("foreign_keys = ON");
  db.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
  for (const m of migrations.filter((x) => x.version <= 4)) {
    db.exec(m.sql);
    db.prepare("INSERT INTO schema_migrations VALUES (?, ?, ?)").run(m.version, m.name, "2026-01-01");
  }
  const at = "2026-01-01T00:00:00.000Z";
  db.prepare("INSERT INTO profiles (id, name, owner, extra_specs_json, created_at, updated_at) VALUES ('p1', 'gold', 'o', '{\"a\":\"b\"}', ?, ?)").run(at, at);
  const insertVolume = db.prepare(
    "INSERT INTO volumes (id, name, owner, size_gib, profile_id, availability_zone, multi_attach, metadata_json, pool_id, backend_name, backend_id, status, replication_status, created_at, updated_at) VALUES (?, ?, 'o', ?, ?, 'nova', 1, '{\"k\":\"v\"}', 'b1/p1', 'b1', 'bid', ?, ?, ?, ?)",
  );
  insertVolume.run("v1", "one", 2, "p1", volumeStatus, "enabled", at, at);
  insertVolume.run("v2", "two", 3, null, "available", "disabled", at, at);
  db.prepare("INSERT INTO targets (name, backend_name, protocol, mode, portal, tid, created_at) VALUES ('iqn.t', 'b1', 'iscsi', 'rw', '127.0.0.1:3260', 1, ?)").run(at);
  db.prepare("INSERT INTO luns VALUES ('iqn.t', 'v1', 1)").run();
  db.prepare(
    "INSERT INTO attachments (id, owner, volume_id, host, mode, connector_json, protocol, target_name, status, device_path, created_at, updated_at) VALUES ('a1', 'o', 'v1', 'localhost', 'rw', '{}', 'iscsi', 'iqn.t', 'attached', '/dev/loop3', ?, ?)",
  ).run(at, at);
  db.prepare(
    "INSERT INTO replication_pairs (id, owner, primary_volume_id, secondary_volume_id, target_backend, rpo_seconds, enabled, active_side, status, bytes_transferred, created_at, updated_at) VALUES ('r1', 'o', 'v1', 'v2', 'dr', 60, 1, 'primary', 'enabled', 42, ?, ?)",
  ).run(at, at);
  db.close();
}

const schemaOf = (db: Database.Database) =>
  (db.prepare("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name").all() as Array<{ type: string; name: string }>).map((r) => `${r.type} ${r.name}`);

test("migration 5 keeps every row, index and foreign key, and refuses unknown statuses from then on", async () => {
  stateAtVersion4();
  const before = new Database(file);
  const rowsBefore = ["volumes", "attachments", "replication_pairs", "profiles", "targets", "luns"].map((t) => before.prepare(`SELECT * FROM ${t} ORDER BY 1`).all());
  const schemaBefore = schemaOf(before);
  before.close();

  const store = new SqliteStore(file, { migrateTo: 5 });
  expect(store.appliedMigrations()).toEqual([1, 2, 3, 4, 5]);
  expect((await store.getVolume("v1"))?.metadata).toEqual({ k: "v" });
  expect((await store.listPairs({ primaryVolumeId: "v1" }))[0]).toMatchObject({ secondaryVolumeId: "v2", bytesTransferred: 42, enabled: true });
  // By message, not toThrow: SqliteError may come from another test file's realm (see the contract suite).
  await expect(store.updateVolume("v1", { status: "bogus" as never })).rejects.toMatchObject({ message: expect.stringMatching(/CHECK constraint/) });
  await expect(store.deleteVolume("v1")).rejects.toMatchObject({ message: expect.stringMatching(/FOREIGN KEY/) }); // attachments and the pair still point at it
  await store.close();

  const after = new Database(file, { readonly: true });
  const rowsAfter = ["volumes", "attachments", "replication_pairs", "profiles", "targets", "luns"].map((t) => after.prepare(`SELECT * FROM ${t} ORDER BY 1`).all());
  expect(rowsAfter).toEqual(rowsBefore);
  expect(schemaOf(after)).toEqual(schemaBefore);
  const references = (table: string) => (after.pragma(`foreign_key_list(${table})`) as Array<{ table: string; from: string }>).map((f) => `${f.from} → ${f.table}`);
  expect(references("attachments")).toEqual(["volume_id → volumes"]);
  expect(references("replication_pairs")).toEqual(["primary_volume_id → volumes"]);
  expect(references("volumes")).toEqual(["profile_id → profiles"]);
  expect(after.pragma("foreign_key_check")).toEqual([]);
  expect(String(after.prepare("SELECT sql FROM sqlite_master WHERE name = 'volumes'").pluck().get())).toMatch(/CHECK \(status IN/);
  after.close();
});

test("a state holding a status outside the unions fails migration 5 as a whole and is left at version 4, data intact", () => {
  stateAtVersion4("bogus");
  let failure: unknown;
  try {
    new SqliteStore(file);
  } catch (err) {
    failure = err;
  }
  expect(failure).toMatchObject({ message: expect.stringMatching(/CHECK constraint/) });
  const db = new Database(file, { readonly: true });
  expect(db.prepare("SELECT max(version) FROM schema_migrations").pluck().get()).toBe(4);
  expect(db.prepare("SELECT count(*) FROM volumes").pluck().get()).toBe(2);
  expect(db.prepare("SELECT count(*) FROM sqlite_master WHERE name LIKE '%_new'").pluck().get()).toBe(0);
  db.close();
});

test("migration 8 counts the volumes a state already holds into pool_usage, and placement reads the totals from there (no re-sum)", async () => {
  stateAtVersion4();
  const store = new SqliteStore(file);
  expect(store.appliedMigrations()).toContain(8);
  expect(new Map(await store.provisionedGibByPool())).toEqual(new Map([["b1/p1", 5]]));
  expect(new Map(await store.volumeCountByBackend())).toEqual(new Map([["b1", 2]]));
  await store.close();
  // Another process changes the totals alone: what the store answers is the table, not a SUM over volumes.
  const db = new Database(file);
  db.prepare("UPDATE pool_usage SET provisioned_gib = 99 WHERE pool_id = 'b1/p1'").run();
  db.close();
  const again = new SqliteStore(file);
  expect((await again.provisionedGibByPool()).get("b1/p1")).toBe(99);
  await again.close();
});

test("the store used inside its own transaction fails at once (it would wait for itself), and the transaction rolls back", async () => {
  const store = new SqliteStore(file);
  await expect(
    store.transaction(async (tx) => {
      await tx.upsertBackend({ name: "b1", backendId: "x", config: null, createdAt: "now" });
      await store.getVolume("v1");
    }),
  ).rejects.toThrow(/inside one of its own transactions/);
  expect(await store.getBackend("b1")).toBeUndefined();
  await store.close();
});
