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
];
