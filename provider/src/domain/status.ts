/**
 * The states a volume, an attachment and a replication pair can be in, as stored. The database
 * refuses any other value (CHECK constraints, migration 5), so a typo fails where it is written
 * instead of leaving a row no code path recognises.
 */

/** Cinder's volume states: `creating` … `available` ⇄ `attaching`/`in-use`/`detaching`, the `error*` ones after a failure. */
export const VOLUME_STATUSES = [
  "creating",
  "available",
  "reserved",
  "attaching",
  "in-use",
  "detaching",
  "extending",
  "deleting",
  "error",
  "error_attaching",
  "error_detaching",
  "error_extending",
] as const;
export type VolumeStatus = (typeof VOLUME_STATUSES)[number];

/**
 * An attachment's stored state. `broken` is not one: refresh computes it from probes of the
 * export and the device, and the stored row stays `attached` until a repair or a detach.
 */
export const ATTACHMENT_STATUSES = ["attaching", "attached", "detaching", "error_attaching", "error_detaching"] as const;
export type AttachmentStatus = (typeof ATTACHMENT_STATUSES)[number];

/** A replication pair's state; a primary volume's `replicationStatus` mirrors its pair's (`disabled` without one). */
export const REPLICATION_STATUSES = ["enabling", "enabled", "disabling", "disabled", "failing-over", "failed-over", "failover-error", "error"] as const;
export type ReplicationStatus = (typeof REPLICATION_STATUSES)[number];

/** How an attachment or a target exports a volume: read-write or read-only. */
export type AccessMode = "rw" | "ro";

/** Which volume of a replication pair serves I/O: the primary, or the secondary after a failover. */
export type ActiveSide = "primary" | "secondary";
