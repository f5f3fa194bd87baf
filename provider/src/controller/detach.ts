/**
 * Detach, host first, then the storage side:
 *
 *   disconnect on the host (when this attachment was the last to use the device there) → ask the
 *   host for the volume's paths: one left behind fails the detach (a stale path corrupts I/O when
 *   a LUN id is reused), unless an operator forces it → removeExport (the initiator from the ACL,
 *   the LUN, the target, as far as no other attachment needs them) → the row goes, and the volume
 *   is available again when its last attachment is gone.
 *
 * Detaching what is already gone succeeds. A failure marks the attachment error_detaching and is
 * retried by the next destroy or up as a whole (every step is idempotent).
 */
import type { Connection } from "../connectors/connector";
import { DeviceBusyError, UserError } from "../errors";
import type { AttachmentRow, VolumeRow } from "../store/store";
import type { AttachmentCore } from "./attachment-core";
import { removeExport } from "./exports";

export interface DetachOptions {
  /** Operators: tear down what can be, and report (not refuse) paths left on the host. */
  force?: boolean;
  /** Where forced detaches report what they left. */
  warn?: (message: string) => void;
}

export async function detach(core: AttachmentCore, id: string, options: DetachOptions = {}): Promise<void> {
  const row = await core.store.getAttachment(id);
  if (!row) return;
  const volume = await core.controller.getVolume(row.volumeId);
  await core.store.transaction(async (tx) => {
    await tx.updateAttachment(id, { status: "detaching", updatedAt: core.at() });
    if (volume) await tx.updateVolume(volume.id, { status: "detaching", updatedAt: core.at() });
  });
  // The row goes in the same hold of the export lock as its export: a second last detach that
  // waited for the lock must not still see this row and leave the target to it (two runners'
  // last detaches would each leave the target, its CHAP account and its row to the other).
  const forget = () =>
    core.store.transaction(async (tx) => {
      await tx.deleteAttachment(id);
      if (volume) await core.refreshVolumeStatus(tx, volume.id);
    });
  try {
    if (volume && row.devicePath && (core.hostConnector(row.host, row.protocol) || !options.force)) await disconnect(core, row, volume, options);
    if (volume) {
      await core.withExportLock(row, volume, async () => {
        await removeExport(core, row);
        await forget();
      });
    }
  } catch (err) {
    await core.store.transaction(async (tx) => {
      await tx.updateAttachment(id, { status: "error_detaching", updatedAt: core.at() });
      if (volume) await tx.updateVolume(volume.id, { status: "error_detaching", updatedAt: core.at() });
    });
    throw err;
  }
  if (!volume) await forget();
}

/**
 * Disconnect on the host, then verify with the host's own view of the volume's paths. Attachments
 * of one volume to one host in one mode share the host's device: only the last one disconnects,
 * and the devices the others still hold are not orphans. The decision is taken under the device
 * lock, after giving up this attachment's claim, so two detaches at once cannot both leave the
 * device to the other.
 */
async function disconnect(core: AttachmentCore, row: AttachmentRow, volume: VolumeRow, options: DetachOptions): Promise<void> {
  await core.withDeviceLock(row.host, volume.id, row.mode, async () => {
    await core.store.updateAttachment(row.id, { devicePath: null, updatedAt: core.at() });
    const others = (await core.store.listAttachments({ volumeId: volume.id })).filter((a) => a.id !== row.id && a.host === row.host && a.devicePath);
    if (others.some((a) => a.mode === row.mode)) return;
    const info = await core.initializeConnection(row, volume);
    const connector = core.hostConnector(row.host, info.protocol);
    if (!connector) throw new UserError("INVALID_STATE", `attachment ${row.id}: host "${row.host}" is no longer in the provider's hosts, so its device ${row.devicePath} cannot be disconnected; add the host back, or detach with force`);
    const connection: Connection = { ...info, volumeId: volume.id };
    try {
      try {
        await connector.disconnectVolume(connection, { force: options.force });
      } catch (err) {
        if (!options.force) throw err;
        options.warn?.(`forced detach of volume ${volume.name} on ${row.host}: ${(err as Error).message}`);
      }
      const held = new Set(others.map((a) => a.devicePath));
      const left = (await connector.getVolumePaths(connection)).filter((p) => !held.has(p.path));
      if (left.length > 0) {
        const what = `detach of volume ${volume.name} left paths on ${row.host}: ${left.map((p) => p.path).join(", ")}`;
        if (!options.force) throw new DeviceBusyError(left[0]!.path, `${what}; find what holds them, or detach with force (SDS_FORCE_DETACH=${row.id})`);
        options.warn?.(`${what} (forced: clean them up on the host)`);
      }
    } catch (err) {
      // The device is still there: this attachment keeps its claim on it.
      await core.store.updateAttachment(row.id, { devicePath: row.devicePath, updatedAt: core.at() });
      throw err;
    }
  });
}
