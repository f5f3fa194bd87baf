/**
 * Numbered schema migrations. Append only: a released migration is never edited, a change is a
 * new number. Each runs once, inside a transaction, and is recorded in `schema_migrations`.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
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
];
