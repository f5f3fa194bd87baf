/**
 * The schema migrations of the PostgreSQL store: the same numbered list as SQLite's
 * (migrations.ts), version for version and name for name, in PostgreSQL's dialect. Append only,
 * as there: a released migration is never edited, a change is a new number in both lists (the
 * contract suite runs both stores, so a change made in one list only shows up there).
 *
 * Types: times stay TEXT (ISO-8601 strings, compared and ordered as text, exactly as in SQLite);
 * flags are BOOLEAN and maps JSONB, which node-postgres hands back as JS booleans and objects;
 * byte counters and lock expiries are BIGINT (the store reads int8 as a JS number).
 */
import type { Migration } from "./migrations";

export const postgresMigrations: readonly Omit<Migration, "rebuildsTables">[] = [
  {
    version: 1,
    name: "initial: backends, profiles, volumes",
    sql: `
      CREATE TABLE backends (
        name        TEXT PRIMARY KEY,
        backend_id  TEXT NOT NULL,
        created_at  TEXT NOT NULL
      );
      CREATE TABLE profiles (
        id               TEXT PRIMARY KEY,
        name             TEXT NOT NULL UNIQUE,
        owner            TEXT NOT NULL,
        description      TEXT NOT NULL DEFAULT '',
        storage_type     TEXT NOT NULL DEFAULT 'block',
        extra_specs_json JSONB NOT NULL DEFAULT '{}',
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL
      );
      CREATE TABLE volumes (
        id                 TEXT PRIMARY KEY,
        name               TEXT NOT NULL UNIQUE,
        owner              TEXT NOT NULL,
        size_gib           INTEGER NOT NULL CHECK (size_gib >= 1),
        profile_id         TEXT REFERENCES profiles(id),
        availability_zone  TEXT NOT NULL,
        multi_attach       BOOLEAN NOT NULL DEFAULT false,
        source_volume_id   TEXT,
        description        TEXT NOT NULL DEFAULT '',
        metadata_json      JSONB NOT NULL DEFAULT '{}',
        pool_id            TEXT NOT NULL,
        backend_name       TEXT NOT NULL,
        backend_id         TEXT NOT NULL,
        shared_targets     BOOLEAN NOT NULL DEFAULT true,
        status             TEXT NOT NULL,
        replication_status TEXT NOT NULL DEFAULT 'disabled',
        created_at         TEXT NOT NULL,
        updated_at         TEXT NOT NULL
      );
      CREATE INDEX volumes_pool ON volumes(pool_id);
    `,
  },
  {
    version: 2,
    name: "attachments, targets and their LUNs, cross-process locks",
    sql: `
      CREATE TABLE targets (
        name             TEXT PRIMARY KEY,
        backend_name     TEXT NOT NULL,
        protocol         TEXT NOT NULL CHECK (protocol IN ('iscsi', 'nbd')),
        mode             TEXT NOT NULL CHECK (mode IN ('rw', 'ro')),
        portal           TEXT NOT NULL,
        tid              INTEGER,
        port             INTEGER,
        chap_user        TEXT,
        chap_secret_enc  TEXT,
        created_at       TEXT NOT NULL
      );
      CREATE UNIQUE INDEX targets_tid ON targets(portal, tid) WHERE tid IS NOT NULL;
      CREATE UNIQUE INDEX targets_port ON targets(portal, port) WHERE port IS NOT NULL;
      CREATE TABLE luns (
        target_name  TEXT NOT NULL REFERENCES targets(name) ON DELETE CASCADE,
        volume_id    TEXT NOT NULL,
        lun          INTEGER NOT NULL,
        PRIMARY KEY (target_name, volume_id),
        UNIQUE (target_name, lun)
      );
      CREATE TABLE attachments (
        id              TEXT PRIMARY KEY,
        owner           TEXT NOT NULL,
        volume_id       TEXT NOT NULL REFERENCES volumes(id),
        host            TEXT NOT NULL,
        mode            TEXT NOT NULL CHECK (mode IN ('rw', 'ro')),
        connector_json  JSONB NOT NULL,
        protocol        TEXT NOT NULL,
        target_name     TEXT,
        status          TEXT NOT NULL,
        device_path     TEXT,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL
      );
      CREATE INDEX attachments_volume ON attachments(volume_id);
      CREATE INDEX attachments_target ON attachments(target_name);
      CREATE TABLE locks (
        name        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        expires_at  BIGINT NOT NULL
      );
    `,
  },
  {
    version: 3,
    name: "replication pairs",
    sql: `
      CREATE TABLE replication_pairs (
        id                   TEXT PRIMARY KEY,
        owner                TEXT NOT NULL,
        primary_volume_id    TEXT NOT NULL UNIQUE REFERENCES volumes(id),
        secondary_volume_id  TEXT,
        target_backend       TEXT NOT NULL,
        target_pool          TEXT,
        rpo_seconds          INTEGER NOT NULL,
        enabled              BOOLEAN NOT NULL,
        active_side          TEXT NOT NULL CHECK (active_side IN ('primary', 'secondary')),
        status               TEXT NOT NULL,
        last_sync_at         TEXT,
        bytes_transferred    BIGINT NOT NULL DEFAULT 0,
        last_error           TEXT,
        created_at           TEXT NOT NULL,
        updated_at           TEXT NOT NULL
      );
      CREATE INDEX replication_pairs_secondary ON replication_pairs(secondary_volume_id);
    `,
  },
  {
    version: 4,
    name: "state identity",
    // Why: as in SQLite's migration 4. gen_random_uuid() is built in since PostgreSQL 13 (no
    // pgcrypto needed): a version-4 UUID without its dashes is 32 hex digits, 122 of them random.
    sql: `
      CREATE TABLE state_info (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
      );
      INSERT INTO state_info (key, value) VALUES ('state_id', replace(gen_random_uuid()::text, '-', ''));
      DROP INDEX targets_tid;
      DROP INDEX targets_port;
    `,
  },
  {
    version: 5,
    name: "statuses and modes checked by the database",
    // Why: as in SQLite's migration 5, with the same lists. PostgreSQL adds a CHECK in place (it
    // validates the rows already there), so no table is made again.
    sql: `
      ALTER TABLE volumes ADD CONSTRAINT volumes_status CHECK (status IN ('creating', 'available', 'reserved', 'attaching',
        'in-use', 'detaching', 'extending', 'deleting', 'error', 'error_attaching', 'error_detaching', 'error_extending'));
      ALTER TABLE volumes ADD CONSTRAINT volumes_replication_status CHECK (replication_status IN ('enabling', 'enabled',
        'disabling', 'disabled', 'failing-over', 'failed-over', 'failover-error', 'error'));
      ALTER TABLE attachments ADD CONSTRAINT attachments_protocol CHECK (protocol IN ('iscsi', 'nbd', 'local'));
      ALTER TABLE attachments ADD CONSTRAINT attachments_status CHECK (status IN ('attaching', 'attached', 'detaching',
        'error_attaching', 'error_detaching'));
      ALTER TABLE replication_pairs ADD CONSTRAINT replication_pairs_status CHECK (status IN ('enabling', 'enabled',
        'disabling', 'disabled', 'failing-over', 'failed-over', 'failover-error', 'error'));
    `,
  },
  {
    version: 6,
    name: "attachments remember a broken path",
    sql: `ALTER TABLE attachments ADD COLUMN broken_reason TEXT;`,
  },
  {
    version: 7,
    name: "backends remember their configuration",
    // Why: runners sharing one state (CI, teammates) each load their own backends file; the
    // configuration a state was last written with is kept beside the backend's id, so a runner
    // whose file is missing or different is told instead of quietly placing onto other pools.
    sql: `ALTER TABLE backends ADD COLUMN config_json TEXT;`,
  },
  {
    version: 8,
    name: "pool usage kept with the volume rows",
    // Why: as in SQLite's migration 8, one trigger function for the three cases. Concurrent
    // creates on one pool queue on its usage row (the UPDATE's row lock) until the first commits,
    // then add to the committed figure (READ COMMITTED re-reads the row), so no count is lost.
    sql: `
      CREATE TABLE pool_usage (
        pool_id          TEXT NOT NULL,
        backend_name     TEXT NOT NULL,
        volumes          INTEGER NOT NULL,
        provisioned_gib  BIGINT NOT NULL,
        PRIMARY KEY (pool_id, backend_name)
      );
      INSERT INTO pool_usage (pool_id, backend_name, volumes, provisioned_gib)
        SELECT pool_id, backend_name, COUNT(*), SUM(size_gib) FROM volumes GROUP BY pool_id, backend_name;
      CREATE FUNCTION volumes_pool_usage() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
          UPDATE pool_usage SET volumes = volumes - 1, provisioned_gib = provisioned_gib - OLD.size_gib
            WHERE pool_id = OLD.pool_id AND backend_name = OLD.backend_name;
          DELETE FROM pool_usage WHERE pool_id = OLD.pool_id AND backend_name = OLD.backend_name AND volumes <= 0;
        END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN
          INSERT INTO pool_usage (pool_id, backend_name, volumes, provisioned_gib) VALUES (NEW.pool_id, NEW.backend_name, 1, NEW.size_gib)
            ON CONFLICT (pool_id, backend_name) DO UPDATE SET volumes = pool_usage.volumes + 1, provisioned_gib = pool_usage.provisioned_gib + EXCLUDED.provisioned_gib;
        END IF;
        RETURN NULL;
      END
      $$;
      CREATE TRIGGER volumes_pool_usage AFTER INSERT OR DELETE OR UPDATE OF size_gib, pool_id, backend_name ON volumes
        FOR EACH ROW EXECUTE FUNCTION volumes_pool_usage();
      CREATE INDEX volumes_owner_status ON volumes(owner, status);
    `,
  },
];
