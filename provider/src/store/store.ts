/**
 * The controller's state, behind one interface, asynchronous so that a networked store
 * (PostgreSQL) can implement it as well as SQLite.
 *
 * Contract:
 * - Every method of {@link StoreOps} is atomic on its own and returns a Promise.
 * - `transaction(fn)` runs `fn` with exclusive write access across processes (SQLite
 *   `BEGIN IMMEDIATE`; PostgreSQL will take the same exclusivity), commits when the promise `fn`
 *   returned resolves and rolls back when it rejects (the rejection is passed on). Read-decide-
 *   write sequences such as placement ("pick a pool, then record the volume on it") go in one
 *   transaction, so two of them never interleave, in one process or in several.
 * - Inside `fn`, every read and write goes through the `tx` handle it was given: the store itself
 *   is not to be used from inside its own transaction (SQLite reports that as a bug rather than
 *   waiting for itself forever). The handle is dead once the transaction ended.
 * - Reads outside a transaction see committed data only, never a transaction half done.
 * - Locks (`tryLock`/`unlock`) are held across transactions, exclusive per name among every
 *   holder of every process on the state, and end when their holder dies: SQLite keeps them as
 *   rows naming their holder's process (a dead holder on this host loses its lock at once) with a
 *   TTL for holders it cannot judge (see store/lock.ts, store/lock-holder.ts);
 *   PostgreSQL as session advisory locks, and ignores `ttlMs`: the holder's session is the
 *   lifetime, so a killed runner's locks are free the moment its connection closes.
 * Rows are plain data; ids are opaque strings; times are ISO-8601 UTC.
 */
import type { AccessMode, ActiveSide, AttachmentStatus, ReplicationStatus, VolumeStatus } from "../domain/status";

/** A volume row. Sizes are whole GiB, as users state them. */
export interface VolumeRow {
  id: string;
  name: string;
  /** Who created it (the Pulumi URN), so a retried create adopts the row instead of making a second one. */
  owner: string;
  sizeGib: number;
  profileId: string | null;
  availabilityZone: string;
  multiAttach: boolean;
  sourceVolumeId: string | null;
  description: string;
  metadata: Record<string, string>;
  poolId: string;
  backendName: string;
  backendId: string;
  sharedTargets: boolean;
  status: VolumeStatus;
  replicationStatus: ReplicationStatus;
  createdAt: string;
  updatedAt: string;
}

/** A profile row (Cinder's volume type). */
export interface ProfileRow {
  id: string;
  name: string;
  owner: string;
  description: string;
  storageType: string;
  extraSpecs: Record<string, string>;
  createdAt: string;
  updatedAt: string;
}

/** The connector an attachment was made for (os-brick's connector properties). */
export interface ConnectorRow {
  initiator?: string;
  nqn?: string;
  ip?: string;
  hostname?: string;
  multipath?: boolean;
}

/** An attachment of a volume to a host. */
export interface AttachmentRow {
  id: string;
  owner: string;
  volumeId: string;
  host: string;
  mode: AccessMode;
  connector: ConnectorRow;
  protocol: "iscsi" | "nbd" | "local";
  /** The target (iSCSI IQN or NBD server) serving it; null for `local`. */
  targetName: string | null;
  status: AttachmentStatus;
  devicePath: string | null;
  /**
   * Why the attachment's path is broken, when a run found its export lost (the target daemon
   * restarted or was killed): kept until an up repairs the device. Null when nothing is known.
   */
  brokenReason: string | null;
  createdAt: string;
  updatedAt: string;
}

/** A target the controller made: an iSCSI target (tid) or an NBD server (port). */
export interface TargetRow {
  name: string;
  backendName: string;
  protocol: "iscsi" | "nbd";
  mode: AccessMode;
  portal: string;
  tid: number | null;
  port: number | null;
  chapUser: string | null;
  /** The CHAP password, encrypted (never plain text in the database). */
  chapSecretEnc: string | null;
  createdAt: string;
}

export interface LunRow {
  targetName: string;
  volumeId: string;
  lun: number;
}

/**
 * What the store remembers of a backend: its stable id, and the configuration the state last
 * wrote with (canonical JSON, secrets left out), so that a runner that loaded different backends
 * is told rather than silently placing onto something else (see controller/backend-check.ts).
 */
export interface BackendRow {
  name: string;
  backendId: string;
  /** Canonical JSON of the backend's configuration; null for rows older than migration 7. */
  config: string | null;
  createdAt: string;
}

/** A replication pair: the primary volume, its secondary on a target backend, the sync state. */
export interface PairRow {
  id: string;
  owner: string;
  primaryVolumeId: string;
  secondaryVolumeId: string | null;
  targetBackend: string;
  targetPool: string | null;
  rpoSeconds: number;
  enabled: boolean;
  activeSide: ActiveSide;
  status: ReplicationStatus;
  lastSyncAt: string | null;
  /** Bytes sent by every sync of this pair so far. */
  bytesTransferred: number;
  lastError: string | null;
  createdAt: string;
  updatedAt: string;
}

/** The reads and writes of rows: what the store offers, and what a transaction's handle offers. */
export interface StoreOps {
  getVolume(id: string): Promise<VolumeRow | undefined>;
  getVolumeByName(name: string): Promise<VolumeRow | undefined>;
  /** Volumes, oldest first; each filter key given must equal (`owner` + `status`: a resource's cut-short creates). */
  listVolumes(filter?: Partial<Pick<VolumeRow, "poolId" | "owner" | "status">>): Promise<VolumeRow[]>;
  insertVolume(row: VolumeRow): Promise<void>;
  /** Change a volume and return it as it is now; NOT_FOUND when it does not exist. */
  updateVolume(id: string, changes: Partial<Omit<VolumeRow, "id" | "createdAt">>): Promise<VolumeRow>;
  deleteVolume(id: string): Promise<void>;
  /**
   * Sum of sizeGib of the volumes on each pool (provisioned capacity); pools without volumes are
   * absent. Read from totals the store keeps with the volume rows (migration 8), not re-summed:
   * placement asks it on every create, and its cost must not grow with the number of volumes.
   */
  provisionedGibByPool(): Promise<ReadonlyMap<string, number>>;
  /** How many volumes each backend holds (from the same totals); backends without volumes are absent. */
  volumeCountByBackend(): Promise<ReadonlyMap<string, number>>;
  /** Record that a backend's volumes report `sharedTargets` (the backend corrects its volumes); how many changed. */
  setSharedTargets(backendName: string, sharedTargets: boolean): Promise<number>;

  getProfile(id: string): Promise<ProfileRow | undefined>;
  getProfileByName(name: string): Promise<ProfileRow | undefined>;
  listProfiles(): Promise<ProfileRow[]>;
  insertProfile(row: ProfileRow): Promise<void>;
  updateProfile(id: string, changes: Partial<Omit<ProfileRow, "id" | "createdAt">>): Promise<ProfileRow>;
  deleteProfile(id: string): Promise<void>;

  getAttachment(id: string): Promise<AttachmentRow | undefined>;
  listAttachments(filter?: { volumeId?: string; targetName?: string; owner?: string }): Promise<AttachmentRow[]>;
  insertAttachment(row: AttachmentRow): Promise<void>;
  updateAttachment(id: string, changes: Partial<Omit<AttachmentRow, "id" | "createdAt">>): Promise<AttachmentRow>;
  deleteAttachment(id: string): Promise<void>;

  getTarget(name: string): Promise<TargetRow | undefined>;
  listTargets(filter?: { portal?: string; backendName?: string }): Promise<TargetRow[]>;
  insertTarget(row: TargetRow): Promise<void>;
  /** Record what the daemon says of a target now (its tid or port after a restart). */
  updateTarget(name: string, changes: Partial<Pick<TargetRow, "tid" | "port">>): Promise<void>;
  /** Delete a target and (cascade) its LUNs. */
  deleteTarget(name: string): Promise<void>;
  listLuns(targetName: string): Promise<LunRow[]>;
  insertLun(row: LunRow): Promise<void>;
  deleteLun(targetName: string, volumeId: string): Promise<void>;

  getPair(id: string): Promise<PairRow | undefined>;
  listPairs(filter?: { primaryVolumeId?: string; secondaryVolumeId?: string }): Promise<PairRow[]>;
  insertPair(row: PairRow): Promise<void>;
  updatePair(id: string, changes: Partial<Omit<PairRow, "id" | "createdAt">>): Promise<PairRow>;
  deletePair(id: string): Promise<void>;

  getBackend(name: string): Promise<BackendRow | undefined>;
  listBackends(): Promise<BackendRow[]>;
  /** Insert, or change the id and config of, the backend named `row.name`. */
  upsertBackend(row: BackendRow): Promise<void>;

  /** A value of the state's own facts (`state_id`, `key_check`, …); undefined when never set. */
  getInfo(key: string): Promise<string | undefined>;
  setInfo(key: string, value: string): Promise<void>;

  /**
   * This state's identity: 32 hex digits made once, when the state was created. Targets, CHAP
   * accounts and NBD servers made for this state carry it, so that several states sharing one
   * target daemon or storage node never take each other's for strays.
   */
  stateId(): Promise<string>;
}

export interface Store extends StoreOps {
  /**
   * Run `fn` in one write transaction, exclusive across processes: committed when `fn` resolves,
   * rolled back when it rejects. `fn` uses `tx`, never the store (see the contract above); it may
   * await, but should do only store work: other writers wait while it runs.
   */
  transaction<T>(fn: (tx: StoreOps) => Promise<T>): Promise<T>;

  /**
   * Take lock `name` for `holder`; false when another holder (of this process or another) has it.
   * Re-taking one's own lock succeeds, still one lock (one unlock releases it). `ttlMs`: how long
   * it outlives a holder that died without unlocking, where the store cannot tell (SQLite; an
   * expired lock is free, and re-taking extends it); PostgreSQL ignores it, the lock ending with
   * the session of the process that holds it.
   */
  tryLock(name: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Release lock `name` if `holder` holds it; releasing what one does not hold does nothing. */
  unlock(name: string, holder: string): Promise<void>;
  /**
   * Who holds lock `name` now, for messages: the holder text (see store/lock-holder.ts) or, where
   * the store keeps none (PostgreSQL), a description of the holding session; undefined when free
   * or unknown.
   */
  lockHolder(name: string): Promise<string | undefined>;

  /** Release the connection(s); the store is unusable afterwards. */
  close(): Promise<void>;
}
