/**
 * A connector: the host side of an attachment (os-brick's connectors). It turns connection info
 * into a block device on this host, finds the paths a volume has here (path discovery), and takes them
 * away again.
 *
 * Contract (every implementation, checked by test/contract/connector.test.ts):
 * - `connectVolume` is idempotent: connecting what is already connected returns the same path;
 * - `disconnectVolume` of what is not connected is success; without `force` it fails when the
 *   device cannot be released (in use), with `force` it tears down everything it can and reports
 *   what it could not;
 * - every connection leaves a record under the connector's state folder (e.g. /run/sds/connections)
 *   so a restarted agent finds its paths again; `getVolumePaths`/`getAllVolumePaths` report what
 *   really exists on the host (devices, mounts, processes), not only what was recorded;
 * - `ro` connection info gives a read-only device (writes fail with EROFS/EPERM);
 * - every command runs through exec/ (argv, timeouts, secrets masked: a CHAP password never
 *   appears in an argv that is logged, nor in an error);
 * - a device whose chain broke under it (the target daemon crashed and came back, a helper died)
 *   is found by `checkVolume`, made to fail fast by `fenceVolume`, and put back by `connectVolume`
 *   under the same path whenever the kernel allows it (see connectors/path-health.ts).
 */
import type { ConnectionInfo } from "../domain/connection-info";
import type { Reaped } from "../exec/daemons";

/** What identifies this host to a target (os-brick's get_connector_properties). */
export interface ConnectorProperties {
  initiator?: string;
  nqn?: string;
  ip?: string;
  hostname: string;
  multipath: boolean;
  /** What this host can do: kernel initiators or the userspace paths. */
  capabilities: { iscsiKernel: boolean; nbdKernel: boolean; userspace: boolean };
}

/** One path of a volume on this host. */
export interface VolumePath {
  /** The volume the path belongs to (from the connection record), when known. */
  volumeId?: string;
  /** The block device, e.g. /dev/loop3 or /dev/disk/by-path/ip-…-lun-1. */
  path: string;
  protocol: "iscsi" | "nbd" | "local";
  /** How the path is made: kernel or userspace (qemu-nbd/nbdfuse/losetup). */
  via: "kernel" | "userspace" | "loop";
}

/**
 * Connection info plus what the connector needs to find its record again: the volume id (used to
 * name records and to answer getVolumePaths by volume).
 */
export type Connection = ConnectionInfo & { volumeId: string };

/**
 * What `checkVolume` found: whether the device's chain is alive end to end (device, helper
 * processes, FUSE mount, the target behind them). `path` is the device the volume has here, or
 * null when it is not connected. `reason` is one line, set when `healthy` is false, e.g.
 * "nbdkit at 127.0.0.1:10809 does not answer: …" or "qemu-nbd (pid 812) exited".
 */
export interface PathHealth {
  path: string | null;
  healthy: boolean;
  reason?: string;
}

export interface Connector {
  readonly protocol: "iscsi" | "nbd" | "local";
  getConnectorProperties(): Promise<ConnectorProperties>;
  /**
   * Connects the volume and returns its device. Connected and healthy: the same path, nothing
   * done. Connected but broken (a helper exited, the chain lost its target, e.g. after the
   * target daemon crashed and the exports were made again): the chain is rebuilt under the SAME
   * device. Only where the kernel cannot re-point the device (a userspace loop device still held
   * open or mounted by someone: a loop device changes its file only while nobody holds it) does
   * the volume get a new device, which is returned and recorded. The connection info must carry
   * the CHAP password for a rebuild (a new login).
   */
  connectVolume(connection: Connection): Promise<{ path: string }>;
  /**
   * A bounded probe (every step has a timeout of a few seconds; steps that can hang run in a
   * child process, never on the device itself): is the chain alive end to end? Not connected →
   * `{ path: null, healthy: false, reason: "not connected" }`. Changes nothing. A CHAP password
   * in the connection info lets the iSCSI probe log in (given through the environment, never argv).
   */
  checkVolume(connection: Connection): Promise<PathHealth>;
  /**
   * Makes I/O on a broken device fail now (EIO) instead of waiting for the target: checks first,
   * and only when the chain is unhealthy stops its helpers (qemu-nbd, nbdfuse). The device and
   * the record stay, so `connectVolume` puts the volume back under the same path once the target
   * is back. Healthy, or not connected: nothing done. Returns what the check found. Why a call of
   * its own: the userspace iSCSI chain (libiscsi in qemu-nbd) waits for a lost target forever
   * and no option bounds it; the agent's health loop calls this (the kernel initiator's
   * replacement_timeout does the same job in the kernel).
   */
  fenceVolume(connection: Connection): Promise<PathHealth>;
  /**
   * One pass of a health loop (the agent's): chains broken `strikes` passes in a row are fenced
   * (see {@link fenceVolume}), found from the connector's own records. Returns what it fenced.
   * Optional: connectors whose paths fail fast by themselves need none.
   */
  sweep?(strikes?: number): Promise<Array<{ volumeId: string; mode: "rw" | "ro"; path: string; reason: string }>>;
  /**
   * At start (the provider's first write, an agent's start): the helpers (qemu-nbd, nbdfuse)
   * this host's connectors started, each recorded before it started (exec/daemons.ts), that no
   * connection record uses any more are stopped (SIGTERM, then SIGKILL) with their sockets and
   * dead FUSE mounts, and records of dead ones are dropped. A helper a connection uses is never
   * touched, nor one whose starter still runs. Records live per state folder, so one call covers
   * every protocol of it. Optional: a connector without helpers needs none.
   */
  reapOrphans?(): Promise<Reaped>;
  disconnectVolume(connection: Connection, options?: { force?: boolean }): Promise<void>;
  /** The paths of this volume on this host. */
  getVolumePaths(connection: Connection): Promise<VolumePath[]>;
  /** Path discovery: every path of this protocol on this host (orphans included). */
  getAllVolumePaths(): Promise<VolumePath[]>;
  /** Path discovery: where this connector's devices appear (e.g. /dev/disk/by-path, or the state folder). */
  getSearchPath(): string;
  /**
   * The volume grew and its target reports the new size (IscsiTarget.refreshLun,
   * NbdTarget.refreshExport): make the device show it, at the same path; returns the new size
   * in bytes. Where a live connection cannot grow (userspace paths, kernel NBD) the connector
   * reconnects under the same device, which must not be in use then (mounted, held):
   * INVALID_STATE naming the device otherwise, and the new size shows after the next reconnect.
   * A connection not connected here, or whose device is gone, is INVALID_STATE. Calling it again
   * is success (it shows the size the target reports).
   */
  extendVolume(connection: Connection): Promise<number>;
}
