/**
 * Rows of the SQLite schema and the store's row types, both ways: column names by field, and the
 * conversions SQLite needs (booleans as 0/1, maps as JSON text, NULL for absent values).
 */
import type { AttachmentRow, BackendRow, LunRow, PairRow, ProfileRow, TargetRow, VolumeRow } from "./store";

/** A row as better-sqlite3 returns it: column name → value. */
export type Row = Record<string, unknown>;

export const volumeColumns: Record<keyof VolumeRow, string> = {
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

export const profileColumns: Record<keyof ProfileRow, string> = {
  id: "id",
  name: "name",
  owner: "owner",
  description: "description",
  storageType: "storage_type",
  extraSpecs: "extra_specs_json",
  createdAt: "created_at",
  updatedAt: "updated_at",
};

export const attachmentColumns: Record<keyof AttachmentRow, string> = {
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
  brokenReason: "broken_reason",
  createdAt: "created_at",
  updatedAt: "updated_at",
};

export const targetColumns: Record<keyof TargetRow, string> = {
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

export const pairColumns: Record<keyof PairRow, string> = {
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

export function pairFromRow(r: Row): PairRow {
  const out = Object.fromEntries(Object.entries(pairColumns).map(([k, c]) => [k, r[c]])) as unknown as PairRow;
  out.enabled = r.enabled === 1;
  return out;
}

export function attachmentFromRow(r: Row): AttachmentRow {
  return {
    id: r.id as string,
    owner: r.owner as string,
    volumeId: r.volume_id as string,
    host: r.host as string,
    mode: r.mode as AttachmentRow["mode"],
    connector: JSON.parse(r.connector_json as string),
    protocol: r.protocol as AttachmentRow["protocol"],
    targetName: (r.target_name as string | null) ?? null,
    status: r.status as AttachmentRow["status"],
    devicePath: (r.device_path as string | null) ?? null,
    brokenReason: (r.broken_reason as string | null) ?? null,
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
  };
}

export function targetFromRow(r: Row): TargetRow {
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
export function toSql(value: unknown): unknown {
  if (typeof value === "boolean") return value ? 1 : 0;
  if (value !== null && typeof value === "object") return JSON.stringify(value);
  return value;
}

export function volumeFromRow(r: Row): VolumeRow {
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
    status: r.status as VolumeRow["status"],
    replicationStatus: r.replication_status as VolumeRow["replicationStatus"],
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
  };
}

export function profileFromRow(r: Row): ProfileRow {
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

export function lunFromRow(r: Row): LunRow {
  return { targetName: r.target_name as string, volumeId: r.volume_id as string, lun: r.lun as number };
}

export function backendFromRow(r: Row): BackendRow {
  return { name: r.name as string, backendId: r.backend_id as string, config: (r.config_json as string | null) ?? null, createdAt: r.created_at as string };
}
