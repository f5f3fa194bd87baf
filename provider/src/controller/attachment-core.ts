/**
 * What every attachment use case shares: the parts it is given (store, controller, targets,
 * connectors, hosts), and the few rules they all follow — where a backend's targets live, which
 * connector reaches a host, how targets are named for this state, the connection info of an
 * attachment, the volume status that follows its attachments, and the locks.
 *
 * Locking rule: export work runs under a lock on the TARGET it touches, held in the store (so it
 * holds across provider processes), whichever host asks: a target, its CHAP account, its ACL and
 * its LUNs are shared by every host attached through it. Otherwise a detach that finds the target
 * unused could remove it while an attach (of another volume, or from another host) adds a LUN to
 * it; or two hosts' first attaches both make the target; or two last detaches each leave it to
 * the other. The last LUN and the target go under the same lock, whoever detaches last. Work on a
 * host's device runs under a lock per (host, volume, mode): attachments sharing a device must not
 * both make or both remove it.
 *
 * Store transactions are short and hold no target I/O; their reads and writes go through the
 * transaction's handle (`tx`, or `ops` in helpers that run inside or outside one).
 *
 * Several states on one target daemon: every target name (and CHAP account, NBD server) carries
 * this state's tag (the first 12 hex digits of the store's state id), and reconciliation at start
 * touches only names with its own tag.
 */
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import type { Connector } from "../connectors/connector";
import type { BackendConfig } from "../domain/backend";
import type { ConnectionInfo, Protocol } from "../domain/connection-info";
import { exportName, IQN_PREFIX, portalHost } from "../domain/names";
import type { AccessMode, AttachmentStatus, VolumeStatus } from "../domain/status";
import { LockTimeoutError, UserError } from "../errors";
import { withStoreLock } from "../store/lock";
import type { AttachmentRow, ConnectorRow, Store, StoreOps, VolumeRow } from "../store/store";
import type { TargetFactory } from "../targets/target";
import type { Controller } from "./controller";
import type { SecretBox } from "./secret-box";

/** What attachments need of a host's connector: the local one, or the host's agent (AgentClient). */
export type HostConnector = Pick<Connector, "connectVolume" | "disconnectVolume" | "getVolumePaths" | "extendVolume" | "checkVolume" | "fenceVolume" | "reapOrphans">;

/** A host other than `localhost`, reached through its sds-agent. */
export interface RemoteHost {
  connector(protocol: Protocol): HostConnector;
  /** The host's connector properties (initiator IQN, …) as its agent reports them. */
  properties(protocol: Protocol): Promise<ConnectorRow>;
}

export interface AttachmentsOptions {
  store: Store;
  controller: Controller;
  targets: TargetFactory;
  box: SecretBox;
  /**
   * What the export lock covers: the target (the default and the only correct scope), or, for
   * the race tests' negative runs only, the (host, backendId) pair or nothing.
   */
  exportLockScope?: "target" | "host" | "none";
  lockTimeoutMs?: number;
  /** Where a wait for a lock says who holds it. */
  log?: (message: string) => void;
  now?: () => Date;
  /** The connectors of this machine, by protocol: `connect` on host `localhost` uses them. */
  connectorFor?: (protocol: Protocol) => Connector;
  /** Hosts other than localhost (the provider's `hosts`); undefined for a host not configured. */
  remoteHost?: (host: string) => RemoteHost | undefined;
  /** The targets of a remote storage node (a backend whose `node` is not local). */
  nodeTargets?: (node: string) => TargetFactory;
  /**
   * This machine's targets for `driver: rbd` backends (compose: tgt's rbd backing store for
   * iSCSI, qemu-nbd for NBD); `targets` when not given.
   */
  rbdTargets?: TargetFactory;
  /** Replication: the volume that serves `volumeId` now (its secondary while failed over). */
  activeVolume?: (volumeId: string) => Promise<VolumeRow | undefined>;
}

export const defaultPortals = { iscsi: "127.0.0.1:3260", nbd: "127.0.0.1:10809" };

/** The connector of the machine running the provider (os-brick's get_connector_properties). */
export function localConnector(): ConnectorRow {
  let initiator: string | undefined;
  try {
    const m = /^InitiatorName=(\S+)/m.exec(fs.readFileSync("/etc/iscsi/initiatorname.iscsi", "utf8"));
    initiator = m?.[1];
  } catch {
    // no open-iscsi here: a stable name of our own
  }
  return { initiator: initiator ?? `${IQN_PREFIX}:initiator:${os.hostname()}`, ip: "127.0.0.1", hostname: os.hostname(), multipath: false };
}

export class AttachmentCore {
  readonly store: Store;
  readonly controller: Controller;
  readonly box: SecretBox;
  private readonly targets: TargetFactory;
  private readonly lockScope: "target" | "host" | "none";
  private readonly lockTimeoutMs: number;
  private readonly log?: (message: string) => void;
  private readonly now: () => Date;
  private readonly holder = randomUUID();
  private tag?: string;
  private readonly connectorFor?: (protocol: Protocol) => Connector;
  readonly remoteHost?: (host: string) => RemoteHost | undefined;
  private readonly nodeTargets?: (node: string) => TargetFactory;
  private readonly rbdTargets?: TargetFactory;
  private readonly activeVolume?: (volumeId: string) => Promise<VolumeRow | undefined>;

  constructor(o: AttachmentsOptions) {
    this.store = o.store;
    this.controller = o.controller;
    this.targets = o.targets;
    this.box = o.box;
    this.lockScope = o.exportLockScope ?? "target";
    this.lockTimeoutMs = o.lockTimeoutMs ?? 120_000;
    this.log = o.log;
    this.now = o.now ?? (() => new Date());
    this.connectorFor = o.connectorFor;
    this.remoteHost = o.remoteHost;
    this.nodeTargets = o.nodeTargets;
    this.rbdTargets = o.rbdTargets;
    this.activeVolume = o.activeVolume;
  }

  /** The connector that makes devices on `host`, if that host can be reached. */
  hostConnector(host: string, protocol: Protocol): HostConnector | undefined {
    if (host === "localhost") return this.connectorFor?.(protocol);
    return this.remoteHost?.(host)?.connector(protocol);
  }

  /** The targets of the node a backend runs on: this machine's, or a storage node's through its agent. */
  targetsOf(backendName: string): TargetFactory {
    const b = this.controller.backendConfigs().find((x) => x.name === backendName);
    if (!b || b.node === "local") return b?.driver === "rbd" ? (this.rbdTargets ?? this.targets) : this.targets;
    if (!this.nodeTargets) throw new UserError("INVALID_STATE", `backend ${backendName} runs on node "${b.node}", which this provider cannot reach`);
    return this.nodeTargets(b.node);
  }

  at(): string {
    return this.now().toISOString();
  }

  /** The volume that serves `volumeId` now: itself, or its secondary while its pair is failed over. */
  async servingVolume(volumeId: string): Promise<VolumeRow | undefined> {
    return this.activeVolume ? this.activeVolume(volumeId) : this.controller.getVolume(volumeId);
  }

  /** This state's tag in the names of what it makes on shared daemons (see the file comment). */
  async stateTag(ops: StoreOps = this.store): Promise<string> {
    return (this.tag ??= (await ops.stateId()).slice(0, 12));
  }

  /**
   * The target serving a volume in a mode: one per backend (shared) or one per volume, named
   * with this state's tag: `iqn.2026-11.io.sds:<tag>:<backendId>[.ro]` or
   * `…:<tag>:volume-<id>[.ro]`; NBD servers `<tag>-<backend>-<mode>` or `<tag>-volume-<id>-<mode>`.
   */
  async targetName(backend: BackendConfig, volume: Pick<VolumeRow, "id" | "backendId">, mode: AccessMode, ops: StoreOps = this.store): Promise<string> {
    const suffix = mode === "ro" ? ".ro" : "";
    const tag = await this.stateTag(ops);
    if (backend.export.protocol === "nbd") return backend.sharedTargets ? `${tag}-${backend.name}-${mode}` : `${tag}-volume-${volume.id}-${mode}`;
    return backend.sharedTargets ? `${IQN_PREFIX}:${tag}:${iqnPart(volume.backendId)}${suffix}` : `${IQN_PREFIX}:${tag}:volume-${volume.id}${suffix}`;
  }

  /**
   * The connection info of an attachment (os-brick's initialize_connection): only what a host
   * needs to log in, no export work (that was made for this connector before). The password is
   * in clear here: callers wrap it as a secret.
   */
  async initializeConnection(row: AttachmentRow, volume: VolumeRow): Promise<ConnectionInfo> {
    const readOnly = row.mode === "ro";
    if (row.protocol === "local") return { protocol: "local", portals: [], exportName: this.controller.volumePath(volume), readOnly };
    const target = await this.store.getTarget(row.targetName!);
    if (!target) throw new UserError("INVALID_STATE", `attachment ${row.id}: its target ${row.targetName} is gone; delete and recreate the attachment`);
    if (row.protocol === "nbd") {
      return { protocol: "nbd", portals: [`${portalHost(target.portal)}:${target.port}`], exportName: exportName(volume.id), readOnly };
    }
    const lun = (await this.store.listLuns(target.name)).find((l) => l.volumeId === volume.id)?.lun;
    const info: ConnectionInfo = { protocol: "iscsi", portals: [target.portal], targetIqn: target.name, targetLun: lun, readOnly };
    if (target.chapUser && target.chapSecretEnc) Object.assign(info, { authMethod: "CHAP", authUsername: target.chapUser, authPassword: this.box.open(target.chapSecretEnc) });
    return info;
  }

  /** The volume's status follows its attachments: attaching/detaching while work is in flight, in-use, available. */
  async refreshVolumeStatus(tx: StoreOps, volumeId: string): Promise<void> {
    const v = await tx.getVolume(volumeId);
    if (!v) return;
    const rows = await tx.listAttachments({ volumeId });
    const has = (s: AttachmentStatus) => rows.some((a) => a.status === s);
    const status: VolumeStatus = has("error_attaching") ? "error_attaching" : has("error_detaching") ? "error_detaching" : has("attaching") ? "attaching" : has("detaching") ? "detaching" : rows.length > 0 ? "in-use" : "available";
    if (status !== v.status) await tx.updateVolume(volumeId, { status, updatedAt: this.at() });
  }

  /** Run export work under the lock of the attachment's target (see the locking rule above). */
  withExportLock<T>(row: AttachmentRow, volume: VolumeRow, fn: () => Promise<T>): Promise<T> {
    if (!row.targetName || this.lockScope === "none") return fn();
    // The old, wrong scope, kept for the race tests' negative run: hosts do not exclude each other.
    if (this.lockScope === "host") return volume.sharedTargets ? this.withLock(`export:${row.host}:${volume.backendId}`, fn) : fn();
    return this.withLock(`export:${row.targetName}`, fn);
  }

  /** Run device work for one (host, volume, mode) under its lock. */
  withDeviceLock<T>(host: string, volumeId: string, mode: AccessMode, fn: () => Promise<T>): Promise<T> {
    return this.withLock(`connect:${host}:${volumeId}:${mode}`, fn);
  }

  /** Run `fn` holding lock `name` in the store (exclusive across processes and across operations). */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const timedOut = (heldBy?: string) => new LockTimeoutError(name, this.lockTimeoutMs, { holder: heldBy });
    return withStoreLock(this.store, name, { timeoutMs: this.lockTimeoutMs, holderPrefix: this.holder, timedOut, log: this.log }, fn);
  }
}

/** Why: user-set backendIds ("Array_1") must still make a valid IQN (lowercase, digits, `.-:`). */
function iqnPart(id: string): string {
  return id.toLowerCase().replace(/[^a-z0-9.-]/g, "-");
}
