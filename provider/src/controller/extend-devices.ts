/**
 * After a volume grew (its driver extended the bytes): the targets serving it report the new size
 * (tgtd reads a LUN's size only when the LUN is added), then every device of it on a host is
 * extended (os-brick's extend_volume). A device that cannot take the new size now (in use on a
 * userspace path) is reported in `pending`, not failed: the volume did grow, and the device shows
 * the size on its next connect. Anything else (an agent unreachable) throws, and the update is
 * retried as a whole (every step is idempotent).
 */
import type { Connection } from "../connectors/connector";
import { exportName, portalHost } from "../domain/names";
import { DeviceBusyError, UserError } from "../errors";
import type { AttachmentCore } from "./attachment-core";

export interface DevicesGrown {
  devices: Array<{ host: string; path: string; sizeBytes: number }>;
  pending: Array<{ host: string; path: string; reason: string }>;
}

export async function extendDevices(core: AttachmentCore, volumeId: string): Promise<DevicesGrown> {
  const out: DevicesGrown = { devices: [], pending: [] };
  const volume = await core.controller.getVolume(volumeId);
  if (!volume) return out;
  const path = core.controller.volumePath(volume);
  const rows = await core.store.listAttachments({ volumeId });
  for (const name of new Set(rows.map((a) => a.targetName).filter((n): n is string => !!n))) {
    // No export lock: the LUN stays (it is re-added in place), and Pulumi never extends a volume
    // while one of its attachments is being made or removed (they depend on the volume).
    const target = await core.store.getTarget(name);
    const lun = target && (await core.store.listLuns(name)).find((l) => l.volumeId === volumeId);
    if (!target || !lun) continue;
    if (target.protocol === "iscsi") await core.targetsOf(target.backendName).iscsi(target.portal).refreshLun(target.tid!, lun.lun, path, target.mode === "ro");
    else await core.targetsOf(target.backendName).nbd(portalHost(target.portal)).refreshExport(name, exportName(volumeId), path);
  }
  const seen = new Set<string>();
  for (const row of rows) {
    if (!row.devicePath || seen.has(`${row.host}|${row.mode}`)) continue;
    seen.add(`${row.host}|${row.mode}`);
    const connector = core.hostConnector(row.host, row.protocol);
    if (!connector) {
      out.pending.push({ host: row.host, path: row.devicePath, reason: `host "${row.host}" is not in the provider's hosts` });
      continue;
    }
    const connection: Connection = { ...(await core.initializeConnection(row, volume)), volumeId };
    await core.withDeviceLock(row.host, volumeId, row.mode, async () => {
      try {
        out.devices.push({ host: row.host, path: row.devicePath!, sizeBytes: await connector.extendVolume(connection) });
      } catch (err) {
        // In use (mounted, held: a DeviceBusyError), or no longer connected there: the device
        // shows the new size after its next connect. Anything else fails the update, which a
        // retry redoes.
        if (!(err instanceof DeviceBusyError) && !(err instanceof UserError && err.code === "INVALID_STATE")) throw err;
        out.pending.push({ host: row.host, path: row.devicePath!, reason: err.message });
      }
    });
  }
  return out;
}
