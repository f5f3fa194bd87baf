/**
 * The controller's state, behind one interface.
 *
 * Contract: every method is atomic; `transaction(fn)` runs `fn` with exclusive write access
 * across processes (SQLite `BEGIN IMMEDIATE`), so read-decide-write sequences such as placement
 * ("pick a pool, then record the volume on it") cannot interleave with another provider process.
 * Rows are plain data; ids are opaque strings; times are ISO-8601 UTC.
 */

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
  status: string;
  replicationStatus: string;
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
  mode: "rw" | "ro";
  connector: ConnectorRow;
  protocol: "iscsi" | "nbd" | "local";
  /** The target (iSCSI IQN or NBD server) serving it; null for `local`. */
  targetName: string | null;
  status: string;
  devicePath: string | null;
  createdAt: string;
  updatedAt: string;
}

/** A target the controller made: an iSCSI target (tid) or an NBD server (port). */
export interface TargetRow {
  name: string;
  backendName: string;
  protocol: "iscsi" | "nbd";
  mode: "rw" | "ro";
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

/** What the store remembers of a backend: its stable id. */
export interface BackendRow {
  name: string;
  backendId: string;
  createdAt: string;
}

/** A replication pair (seed 002): the primary volume, its secondary on a target backend, the sync state. */
export interface PairRow {
  id: string;
  owner: string;
  primaryVolumeId: string;
  secondaryVolumeId: string | null;
  targetBackend: string;
  targetPool: string | null;
  rpoSeconds: number;
  enabled: boolean;
  activeSide: "primary" | "secondary";
  /** enabling, enabled, disabling, disabled, failing-over, failed-over, failover-error, error. */
  status: string;
  lastSyncAt: string | null;
  /** Bytes sent by every sync of this pair so far. */
  bytesTransferred: number;
  lastError: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface Store {
  /** Run `fn` inside one write transaction, exclusive across processes. `fn` must not await. */
  transaction<T>(fn: () => T): T;

  getVolume(id: string): VolumeRow | undefined;
  getVolumeByName(name: string): VolumeRow | undefined;
  listVolumes(filter?: { poolId?: string }): VolumeRow[];
  insertVolume(row: VolumeRow): void;
  updateVolume(id: string, changes: Partial<Omit<VolumeRow, "id" | "createdAt">>): VolumeRow;
  deleteVolume(id: string): void;
  /** Sum of sizeGib of the volumes on each pool (provisioned capacity). */
  provisionedGibByPool(): ReadonlyMap<string, number>;

  getProfile(id: string): ProfileRow | undefined;
  getProfileByName(name: string): ProfileRow | undefined;
  listProfiles(): ProfileRow[];
  insertProfile(row: ProfileRow): void;
  updateProfile(id: string, changes: Partial<Omit<ProfileRow, "id" | "createdAt">>): ProfileRow;
  deleteProfile(id: string): void;

  getAttachment(id: string): AttachmentRow | undefined;
  listAttachments(filter?: { volumeId?: string; targetName?: string; owner?: string }): AttachmentRow[];
  insertAttachment(row: AttachmentRow): void;
  updateAttachment(id: string, changes: Partial<Omit<AttachmentRow, "id" | "createdAt">>): AttachmentRow;
  deleteAttachment(id: string): void;

  getTarget(name: string): TargetRow | undefined;
  listTargets(filter?: { portal?: string; backendName?: string }): TargetRow[];
  insertTarget(row: TargetRow): void;
  /** Record what the daemon says of a target now (its tid or port after a restart). */
  updateTarget(name: string, changes: Partial<Pick<TargetRow, "tid" | "port">>): void;
  deleteTarget(name: string): void;
  listLuns(targetName: string): LunRow[];
  insertLun(row: LunRow): void;
  deleteLun(targetName: string, volumeId: string): void;

  /** Take lock `name` for `holder` until `ttlMs` from now; false when someone else holds it. */
  getPair(id: string): PairRow | undefined;
  listPairs(filter?: { primaryVolumeId?: string; secondaryVolumeId?: string }): PairRow[];
  insertPair(row: PairRow): void;
  updatePair(id: string, changes: Partial<Omit<PairRow, "id" | "createdAt">>): PairRow;
  deletePair(id: string): void;

  tryLock(name: string, holder: string, ttlMs: number): boolean;
  unlock(name: string, holder: string): void;
  /** Record that backend volumes report `sharedTargets` (seed 000: the backend corrects its volumes). */
  setSharedTargets(backendName: string, sharedTargets: boolean): number;

  /**
   * This state's identity: 32 hex digits made once, when the state was created. Targets, CHAP
   * accounts and NBD servers made for this state carry it, so that several states sharing one
   * target daemon or storage node never take each other's for strays.
   */
  stateId(): string;

  getBackend(name: string): BackendRow | undefined;
  upsertBackend(row: BackendRow): void;

  close(): void;
}
