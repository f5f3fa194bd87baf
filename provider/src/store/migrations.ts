/**
 * Numbered schema migrations. Append only: a released migration is never edited, a change is a
 * new number. Each runs once, inside a transaction, and is recorded in `schema_migrations`.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
  /**
   * The migration rebuilds tables (SQLite adds a CHECK only by making the table again): it runs
   * with foreign keys off, and the store checks them all before it commits.
   */
  rebuildsTables?: boolean;
}

export const migrations: readonly Migration[] = [
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
        extra_specs_json TEXT NOT NULL DEFAULT '{}',
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
        multi_attach       INTEGER NOT NULL DEFAULT 0,
        source_volume_id   TEXT,
        description        TEXT NOT NULL DEFAULT '',
        metadata_json      TEXT NOT NULL DEFAULT '{}',
        pool_id            TEXT NOT NULL,
        backend_name       TEXT NOT NULL,
        backend_id         TEXT NOT NULL,
        shared_targets     INTEGER NOT NULL DEFAULT 1,
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
        connector_json  TEXT NOT NULL,
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
        expires_at  INTEGER NOT NULL
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
        enabled              INTEGER NOT NULL,
        active_side          TEXT NOT NULL CHECK (active_side IN ('primary', 'secondary')),
        status               TEXT NOT NULL,
        last_sync_at         TEXT,
        bytes_transferred    INTEGER NOT NULL DEFAULT 0,
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
    // Why: several states (projects, stacks, teams) can share one target daemon or storage node;
    // what this state makes there carries this id so reconciliation touches only its own.
    sql: `
      CREATE TABLE state_info (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
      );
      INSERT INTO state_info (key, value) VALUES ('state_id', lower(hex(randomblob(16))));
      -- A target's tid (and an NBD server's port) is what the daemon gave it, learnt again after
      -- a restart or beside other states' targets: a stale row must not block recording a new one.
      DROP INDEX targets_tid;
      DROP INDEX targets_port;
    `,
  },
  {
    version: 5,
    name: "statuses and modes checked by the database",
    // Why: statuses were free strings; a typo would leave a row no code path recognises. The
    // lists are the unions of domain/status.ts as they are today (a migration is never edited:
    // a new status is a new migration). SQLite cannot add a CHECK to a table, so each table is
    // made again (https://sqlite.org/lang_altertable.html#otheralter): new table, copy every row
    // as it is, drop the old, rename, make its indexes again. Dropping the old table first and
    // renaming the new one after keeps the REFERENCES of other tables (attachments → volumes,
    // replication_pairs → volumes) pointing at the right name.
    rebuildsTables: true,
    sql: `
      CREATE TABLE volumes_new (
        id                 TEXT PRIMARY KEY,
        name               TEXT NOT NULL UNIQUE,
        owner              TEXT NOT NULL,
        size_gib           INTEGER NOT NULL CHECK (size_gib >= 1),
        profile_id         TEXT REFERENCES profiles(id),
        availability_zone  TEXT NOT NULL,
        multi_attach       INTEGER NOT NULL DEFAULT 0,
        source_volume_id   TEXT,
        description        TEXT NOT NULL DEFAULT '',
        metadata_json      TEXT NOT NULL DEFAULT '{}',
        pool_id            TEXT NOT NULL,
        backend_name       TEXT NOT NULL,
        backend_id         TEXT NOT NULL,
        shared_targets     INTEGER NOT NULL DEFAULT 1,
        status             TEXT NOT NULL CHECK (status IN ('creating', 'available', 'reserved', 'attaching', 'in-use', 'detaching',
                             'extending', 'deleting', 'error', 'error_attaching', 'error_detaching', 'error_extending')),
        replication_status TEXT NOT NULL DEFAULT 'disabled' CHECK (replication_status IN ('enabling', 'enabled', 'disabling',
                             'disabled', 'failing-over', 'failed-over', 'failover-error', 'error')),
        created_at         TEXT NOT NULL,
        updated_at         TEXT NOT NULL
      );
      INSERT INTO volumes_new (id, name, owner, size_gib, profile_id, availability_zone, multi_attach, source_volume_id,
          description, metadata_json, pool_id, backend_name, backend_id, shared_targets, status, replication_status, created_at, updated_at)
        SELECT id, name, owner, size_gib, profile_id, availability_zone, multi_attach, source_volume_id,
          description, metadata_json, pool_id, backend_name, backend_id, shared_targets, status, replication_status, created_at, updated_at
        FROM volumes;
      DROP TABLE volumes;
      ALTER TABLE volumes_new RENAME TO volumes;
      CREATE INDEX volumes_pool ON volumes(pool_id);

      CREATE TABLE attachments_new (
        id              TEXT PRIMARY KEY,
        owner           TEXT NOT NULL,
        volume_id       TEXT NOT NULL REFERENCES volumes(id),
        host            TEXT NOT NULL,
        mode            TEXT NOT NULL CHECK (mode IN ('rw', 'ro')),
        connector_json  TEXT NOT NULL,
        protocol        TEXT NOT NULL CHECK (protocol IN ('iscsi', 'nbd', 'local')),
        target_name     TEXT,
        status          TEXT NOT NULL CHECK (status IN ('attaching', 'attached', 'detaching', 'error_attaching', 'error_detaching')),
        device_path     TEXT,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL
      );
      INSERT INTO attachments_new (id, owner, volume_id, host, mode, connector_json, protocol, target_name, status, device_path, created_at, updated_at)
        SELECT id, owner, volume_id, host, mode, connector_json, protocol, target_name, status, device_path, created_at, updated_at
        FROM attachments;
      DROP TABLE attachments;
      ALTER TABLE attachments_new RENAME TO attachments;
      CREATE INDEX attachments_volume ON attachments(volume_id);
      CREATE INDEX attachments_target ON attachments(target_name);

      CREATE TABLE replication_pairs_new (
        id                   TEXT PRIMARY KEY,
        owner                TEXT NOT NULL,
        primary_volume_id    TEXT NOT NULL UNIQUE REFERENCES volumes(id),
        secondary_volume_id  TEXT,
        target_backend       TEXT NOT NULL,
        target_pool          TEXT,
        rpo_seconds          INTEGER NOT NULL,
        enabled              INTEGER NOT NULL,
        active_side          TEXT NOT NULL CHECK (active_side IN ('primary', 'secondary')),
        status               TEXT NOT NULL CHECK (status IN ('enabling', 'enabled', 'disabling', 'disabled', 'failing-over',
                               'failed-over', 'failover-error', 'error')),
        last_sync_at         TEXT,
        bytes_transferred    INTEGER NOT NULL DEFAULT 0,
        last_error           TEXT,
        created_at           TEXT NOT NULL,
        updated_at           TEXT NOT NULL
      );
      INSERT INTO replication_pairs_new (id, owner, primary_volume_id, secondary_volume_id, target_backend, target_pool, rpo_seconds,
          enabled, active_side, status, last_sync_at, bytes_transferred, last_error, created_at, updated_at)
        SELECT id, owner, primary_volume_id, secondary_volume_id, target_backend, target_pool, rpo_seconds,
          enabled, active_side, status, last_sync_at, bytes_transferred, last_error, created_at, updated_at
        FROM replication_pairs;
      DROP TABLE replication_pairs;
      ALTER TABLE replication_pairs_new RENAME TO replication_pairs;
      CREATE INDEX replication_pairs_secondary ON replication_pairs(secondary_volume_id);
    `,
  },
  {
    version: 6,
    name: "attachments remember a broken path",
    // Why: a target daemon that lost its exports (restarted, killed) breaks the devices on them
    // even when the export is made again at once and an initiator logs in again by itself: the
    // run that found it must be able to tell the next run (a refresh's preview and the refresh
    // itself are two provider processes), until an up repairs the device.
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
    // Why (issue 14): placement read every pool's provisioned capacity as SUM(size_gib) over all
    // volume rows, and every create changed the sum, so each create re-summed 10,000 rows. The
    // totals are kept per pool by triggers, in the statement (so the transaction) that writes the
    // volume row: an insert, a delete, a grow or a move is counted or undone with it, whoever
    // writes the row (the controller, copy-state, a restore). A pool's row goes when its last
    // volume does (a state with nothing made holds no usage rows). A later migration that makes
    // the volumes table again (as 5 did) drops these triggers with it and must make them again.
    // The (owner, status) index serves the create's look-up of a cut-short create of its owner.
    sql: `
      CREATE TABLE pool_usage (
        pool_id          TEXT NOT NULL,
        backend_name     TEXT NOT NULL,
        volumes          INTEGER NOT NULL,
        provisioned_gib  INTEGER NOT NULL,
        PRIMARY KEY (pool_id, backend_name)
      );
      INSERT INTO pool_usage (pool_id, backend_name, volumes, provisioned_gib)
        SELECT pool_id, backend_name, COUNT(*), SUM(size_gib) FROM volumes GROUP BY pool_id, backend_name;
      CREATE TRIGGER volumes_usage_insert AFTER INSERT ON volumes BEGIN
        INSERT INTO pool_usage (pool_id, backend_name, volumes, provisioned_gib) VALUES (NEW.pool_id, NEW.backend_name, 1, NEW.size_gib)
          ON CONFLICT (pool_id, backend_name) DO UPDATE SET volumes = volumes + 1, provisioned_gib = provisioned_gib + excluded.provisioned_gib;
      END;
      CREATE TRIGGER volumes_usage_delete AFTER DELETE ON volumes BEGIN
        UPDATE pool_usage SET volumes = volumes - 1, provisioned_gib = provisioned_gib - OLD.size_gib
          WHERE pool_id = OLD.pool_id AND backend_name = OLD.backend_name;
        DELETE FROM pool_usage WHERE pool_id = OLD.pool_id AND backend_name = OLD.backend_name AND volumes <= 0;
      END;
      CREATE TRIGGER volumes_usage_update AFTER UPDATE OF size_gib, pool_id, backend_name ON volumes BEGIN
        UPDATE pool_usage SET volumes = volumes - 1, provisioned_gib = provisioned_gib - OLD.size_gib
          WHERE pool_id = OLD.pool_id AND backend_name = OLD.backend_name;
        DELETE FROM pool_usage WHERE pool_id = OLD.pool_id AND backend_name = OLD.backend_name AND volumes <= 0;
        INSERT INTO pool_usage (pool_id, backend_name, volumes, provisioned_gib) VALUES (NEW.pool_id, NEW.backend_name, 1, NEW.size_gib)
          ON CONFLICT (pool_id, backend_name) DO UPDATE SET volumes = volumes + 1, provisioned_gib = provisioned_gib + excluded.provisioned_gib;
      END;
      CREATE INDEX volumes_owner_status ON volumes(owner, status);
    `,
  },
];
