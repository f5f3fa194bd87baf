/**
 * Attachments: the use cases of a volume exported to a host, behind one object the resources and
 * the composition hold. Each use case lives in a file of its own:
 *
 *   attach.ts             validate the connector → reserve → export for it → connection info → device
 *   detach.ts             device off the host, verified → export removed as far as nothing needs it
 *   exports.ts            exports per protocol (iSCSI target/LUN/ACL/CHAP, NBD server/export)
 *   extend-devices.ts     after a grow: targets report the new size, devices are extended
 *   attachment-health.ts  what an attachment really is now (refresh), and its repair (up)
 *   reconcile-exports.ts  at provider start: exports made again, this state's strays removed
 *   attachment-core.ts    what they share: parts, naming, connection info, volume status, locks
 */
import type { ConnectionInfo } from "../domain/connection-info";
import type { AccessMode } from "../domain/status";
import type { AttachmentRow, StoreOps, VolumeRow } from "../store/store";
import { attach, type AttachSpec } from "./attach";
import { AttachmentCore, type AttachmentsOptions } from "./attachment-core";
import { type AttachmentHealth, health, repair } from "./attachment-health";
import { detach, type DetachOptions } from "./detach";
import { type DevicesGrown, extendDevices } from "./extend-devices";
import { type Reconciled, reconcileExports } from "./reconcile-exports";
import type { BackendConfig } from "../domain/backend";

export type { ConnectionInfo } from "../domain/connection-info";
export { exportName, IQN_PREFIX, portalHost } from "../domain/names";
export type { TargetFactory } from "../targets/target";
export type { AttachSpec } from "./attach";
export { type AttachmentsOptions, type HostConnector, localConnector, type RemoteHost } from "./attachment-core";
export type { DetachOptions } from "./detach";

export class Attachments {
  private readonly core: AttachmentCore;

  constructor(o: AttachmentsOptions) {
    this.core = new AttachmentCore(o);
  }

  get(id: string): Promise<AttachmentRow | undefined> {
    return this.core.store.getAttachment(id);
  }

  /** Attach a volume (see attach.ts). Safe to retry. */
  attach(owner: string, spec: AttachSpec): Promise<{ row: AttachmentRow; connectionInfo: ConnectionInfo }> {
    return attach(this.core, owner, spec);
  }

  /** Detach (see detach.ts). Detaching what is already gone succeeds. */
  detach(id: string, options: DetachOptions = {}): Promise<void> {
    return detach(this.core, id, options);
  }

  /** The connection info of an attachment: no export work. */
  initializeConnection(row: AttachmentRow, volume: VolumeRow): Promise<ConnectionInfo> {
    return this.core.initializeConnection(row, volume);
  }

  /** After a volume grew: targets and devices show the new size (see extend-devices.ts). */
  volumeGrew(volumeId: string): Promise<DevicesGrown> {
    return extendDevices(this.core, volumeId);
  }

  /**
   * An attachment as refresh describes it: the row, the volume serving it, its connection info and
   * what it really is now (health, fencing a broken device). Undefined when it or its volume is gone.
   */
  async describe(id: string): Promise<{ row: AttachmentRow; volume: VolumeRow; connectionInfo: ConnectionInfo; health: AttachmentHealth } | undefined> {
    const row = await this.core.store.getAttachment(id);
    const volume = row && (await this.core.controller.getVolume(row.volumeId));
    if (!row || !volume) return undefined;
    const h = await health(this.core, row.id);
    return { row, volume, connectionInfo: await this.core.initializeConnection(row, volume), health: h };
  }

  /** What the attachment really is now (see attachment-health.ts). */
  health(id: string, options?: { fence?: boolean }): Promise<AttachmentHealth> {
    return health(this.core, id, options);
  }

  /** Put a broken attachment back, on the same device path when the kernel allows. */
  repair(id: string): Promise<{ row: AttachmentRow; connectionInfo: ConnectionInfo; moved?: { from: string; to: string } }> {
    return repair(this.core, id);
  }

  /** Reconciliation at provider start (see reconcile-exports.ts). */
  ensureExports(): Promise<Reconciled> {
    return reconcileExports(this.core);
  }

  /** This state's tag in the names of what it makes on shared daemons. */
  stateTag(ops?: StoreOps): Promise<string> {
    return this.core.stateTag(ops);
  }

  /** The target serving a volume in a mode. */
  targetName(backend: BackendConfig, volume: Pick<VolumeRow, "id" | "backendId">, mode: AccessMode, ops?: StoreOps): Promise<string> {
    return this.core.targetName(backend, volume, mode, ops);
  }
}
