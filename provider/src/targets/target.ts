/**
 * A target: what exports a volume's bytes to initiators over a protocol. The controller
 * composes a driver (which owns the bytes, and says where they are) with a target; targets never
 * touch the store. The controller decides, under its locks, what to keep and what to remove; a
 * target only does what it is told, idempotently.
 *
 * Contract (every implementation, checked by test/contract/target.test.ts):
 * - every `ensure*` is idempotent: calling it again with the same arguments is success and
 *   changes nothing;
 * - every `remove*` of something already gone is success;
 * - `start` is idempotent and leaves a daemon that survives the provider process (exports
 *   outlive `pulumi up`); `stop` ends what `start` started (tests, teardown);
 * - `list` reports what really exists (asked of the daemon, not remembered), so the controller
 *   can re-ensure exports its state knows and remove those it does not (Cinder's ensure_export);
 * - commands run through exec/ (argv, timeouts, secrets masked): a CHAP password never appears
 *   in an error message or a log line.
 */

/** CHAP credentials of one export. */
export interface Chap {
  username: string;
  password: string;
}

/** One export as the target daemon reports it. */
export interface ExportState {
  /** iSCSI: the target IQN; NBD: the export name. */
  name: string;
  /** iSCSI: tgt's numeric target id. */
  tid?: number;
  /**
   * iSCSI: LUN number → backing path (a file, or an RBD volume path `rbd:pool/image:id=…:conf=…`,
   * as it was given to `ensureLun`) and read-only flag. NBD: one entry, lun 0.
   */
  luns: Array<{ lun: number; path: string; readOnly: boolean }>;
  /** iSCSI: initiator IQNs allowed to log in (ACL). */
  initiators: string[];
  /** iSCSI: CHAP usernames bound to the target. */
  chapUsers: string[];
  /** NBD: the TCP port of the server serving this export. */
  port?: number;
  /** iSCSI: live sessions (logged-in initiators) on the target, when the daemon reports them. */
  sessions?: number;
}

/** What one attachment needs exported on an iSCSI target: {@link IscsiTarget.ensureExport}'s argument. */
export interface IscsiExport {
  /** The target's IQN. */
  iqn: string;
  /** A tid hint, as {@link IscsiTarget.ensureTarget}'s. */
  tid?: number;
  lun: number;
  /** The LUN's backing file, or an RBD volume path (domain/rbd-path.ts) where the target can serve one. */
  path: string;
  readOnly: boolean;
  /** The initiator allowed in the ACL. */
  initiator: string;
  /** CHAP required on the target, when given. */
  chap?: Chap;
  /**
   * Told the target's real tid as soon as it is known, before the other steps: the caller
   * records it, so that a rollback after a later step failed removes this target, not the one
   * the hint named.
   */
  onTarget?: (tid: number) => Promise<void>;
}

/** iSCSI through tgtd/tgtadm: a target holds LUNs, an ACL of initiators and optional CHAP. */
export interface IscsiTarget {
  readonly protocol: "iscsi";
  /** The portal initiators log in to, `ip:port`. */
  readonly portal: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Create the target if missing; returns its tid (the given one, or a free one). */
  ensureTarget(iqn: string, tid?: number): Promise<number>;
  /** Add LUN `lun` backed by `path` if missing; `readOnly` LUNs refuse writes at the SCSI level. */
  ensureLun(tid: number, lun: number, path: string, readOnly: boolean): Promise<void>;
  /**
   * Make LUN `lun` report its backing file's current size (after the volume grew): the daemon
   * may have read the size once, when the LUN was added. Same arguments as {@link ensureLun};
   * the LUN keeps its number, backing file, read-only flag and SCSI identity. Idempotent: a LUN
   * that is missing (a refresh cut short) is added; a LUN backed by another file is a CONFLICT.
   * Initiators connected meanwhile see the LUN briefly go away (their I/O may fail during the
   * swap) and must re-read the capacity themselves (the connector's `extendVolume`).
   */
  refreshLun(tid: number, lun: number, path: string, readOnly: boolean): Promise<void>;
  /** Allow `initiatorIqn` to log in to the target. */
  ensureInitiator(tid: number, initiatorIqn: string): Promise<void>;
  /** Require CHAP for the target with these credentials (creates the account, binds it). */
  ensureChap(tid: number, chap: Chap): Promise<void>;
  /**
   * The whole export of one attachment, in one call: {@link ensureTarget}, {@link ensureLun},
   * {@link ensureInitiator} and {@link ensureChap} with the same arguments, the same races won
   * and lost the same way, and the same result (the target's real tid). Why one call: an
   * implementation may ask the daemon once for the target's state and do only what is missing,
   * instead of once per step (tgtd lists every target it has for each ask).
   */
  ensureExport(e: IscsiExport): Promise<number>;
  removeInitiator(tid: number, initiatorIqn: string): Promise<void>;
  removeLun(tid: number, lun: number): Promise<void>;
  /** Remove the target, its LUNs, ACL and CHAP account bindings (force: even with sessions). */
  removeTarget(tid: number): Promise<void>;
  /** Remove a CHAP account no target uses any more. */
  removeChapAccount(username: string): Promise<void>;
  list(): Promise<ExportState[]>;
}

/** {@link IscsiTarget.ensureExport} done step by step: for targets that have no shortcut (a storage node's, through its agent). */
export async function ensureExportByStep(t: IscsiTarget, e: IscsiExport): Promise<number> {
  const tid = await t.ensureTarget(e.iqn, e.tid);
  await e.onTarget?.(tid);
  await t.ensureLun(tid, e.lun, e.path, e.readOnly);
  await t.ensureInitiator(tid, e.initiator);
  if (e.chap) await t.ensureChap(tid, e.chap);
  return tid;
}

/** NBD through nbdkit: one server per (name, mode) serving named exports. */
export interface NbdTarget {
  readonly protocol: "nbd";
  /** Address servers listen on. */
  readonly host: string;
  /**
   * Make sure a server `server` runs (read-only servers refuse writes), serving the exports added
   * to it; returns the port it listens on. `port` is a wish: a server already running keeps its
   * port, and a port another program (another state's server) holds is skipped for a free one.
   * Starting it again with the same arguments is success.
   */
  ensureServer(server: string, port: number, readOnly: boolean): Promise<number>;
  /** Serve `path` under `exportName` on `server` (no restart: existing clients keep going). */
  ensureExport(server: string, exportName: string, path: string): Promise<void>;
  /**
   * Make export `exportName` of `server` report its volume file's current size to new
   * connections (after the volume grew). Connected clients keep the size they read at their
   * handshake (NBD has no resize notice): they see it after a reconnect (the connector's
   * `extendVolume`). The export must exist and serve `path` (NOT_FOUND / CONFLICT otherwise).
   */
  refreshExport(server: string, exportName: string, path: string): Promise<void>;
  removeExport(server: string, exportName: string): Promise<void>;
  /** Stop the server and forget it. */
  removeServer(server: string): Promise<void>;
  /** Servers running and their exports. */
  list(): Promise<Array<{ server: string; port: number; readOnly: boolean; pid: number; exports: Array<{ name: string; path: string }> }>>;
}

/** Where the targets of a backend live: one tgtd per iSCSI portal, one nbdkit manager per address (this machine's, or a storage node's through its agent). */
export interface TargetFactory {
  iscsi(portal: string): IscsiTarget;
  /** The NBD servers listening on `host`. */
  nbd(host: string): NbdTarget;
}
