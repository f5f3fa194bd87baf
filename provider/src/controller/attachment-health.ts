/**
 * What an attachment really is now, and putting a broken one back: after a target daemon crashed
 * (or a helper died) an attachment's export may be gone and its device dead even though the state
 * says `attached`. Refresh reports it `broken` with the reason; the next up repairs it, on the
 * same device path whenever the kernel allows it.
 */
import type { Connection } from "../connectors/connector";
import type { ConnectionInfo } from "../domain/connection-info";
import { UserError } from "../errors";
import type { AttachmentRow } from "../store/store";
import type { AttachmentCore } from "./attachment-core";
import { volumeCapacity } from "./capacity";
import { createExport, exportProblem } from "./exports";

export interface AttachmentHealth {
  /** `attached`, `broken`, or the stored status while work is in flight (attaching, …). */
  status: string;
  reason?: string;
}

/**
 * The export on the target daemon and, when the attachment was connected, the device on its
 * host, probed end to end (bounded: a probe never hangs). A finding of an earlier run (an export
 * it had to make again) counts until a repair. With `fence` (refresh; not a preview) a broken
 * device is fenced on the way, so its I/O fails at once instead of waiting for a target that
 * came back without it.
 */
export async function health(core: AttachmentCore, id: string, options: { fence?: boolean } = { fence: true }): Promise<AttachmentHealth> {
  const row = await core.store.getAttachment(id);
  if (!row) return { status: "gone" };
  if (row.status !== "attached") return { status: row.status };
  const volume = await core.servingVolume(row.volumeId);
  if (!volume) return { status: "broken", reason: `volume ${row.volumeId} is gone` };
  const problem = (await exportProblem(core, row)) ?? row.brokenReason ?? undefined;
  const connector = row.devicePath ? core.hostConnector(row.host, row.protocol) : undefined;
  if (problem) {
    // The export is gone (its daemon died) and a refresh does not make it again: the device
    // on it waits for a target that is not coming back (libiscsi forever). Fenced, its I/O
    // fails now instead; the next up reconnects it on the same path.
    if (options.fence && connector) {
      const connection: Connection = { ...(await core.initializeConnection(row, volume)), volumeId: volume.id };
      await connector.fenceVolume(connection).catch(() => undefined);
    }
    return { status: "broken", reason: problem };
  }
  if (!row.devicePath || !connector) return withSpace(core, row, volume); // no device, or cannot look at it: not a finding
  const connection: Connection = { ...(await core.initializeConnection(row, volume)), volumeId: volume.id };
  const h = options.fence ? await connector.fenceVolume(connection) : await connector.checkVolume(connection);
  if (h.healthy) return withSpace(core, row, volume);
  return { status: "broken", reason: `${row.devicePath} on ${row.host}: ${h.reason ?? "unhealthy"}` };
}

/**
 * An attached, healthy attachment whose writes fail (or will, at the next write into a block the
 * volume's file does not own yet) because its pool is full: still `attached` (a repair cannot
 * help, and `broken` would make the next up try one), with the ENOSPC finding as its reason
 * (controller/capacity.ts says what it proves). A read-only attachment does not write; a pool
 * that cannot be measured is no finding here (the volume's refresh says so).
 */
async function withSpace(core: AttachmentCore, row: AttachmentRow, volume: Parameters<typeof volumeCapacity>[1]): Promise<AttachmentHealth> {
  if (row.mode === "ro") return { status: "attached" };
  const r = await volumeCapacity(core.controller.catalog, volume).catch(() => undefined);
  return r?.enospc ? { status: "attached", reason: r.enospc } : { status: "attached" };
}

/**
 * Put a broken attachment back: the export is made again (idempotent), then the device is
 * reconnected on its host, on the same path whenever the kernel allows it (`moved` says when it
 * could not: something still held the old device). Safe to repeat.
 */
export async function repair(core: AttachmentCore, id: string): Promise<{ row: AttachmentRow; connectionInfo: ConnectionInfo; moved?: { from: string; to: string } }> {
  const row = await core.store.getAttachment(id);
  if (!row) throw new UserError("NOT_FOUND", `attachment ${id} no longer exists; run pulumi refresh`);
  const volume = await core.servingVolume(row.volumeId);
  if (!volume) throw new UserError("NOT_FOUND", `attachment ${id}: volume ${row.volumeId} no longer exists`, "volumeId");
  const { backend } = core.controller.locate(volume);
  await core.withExportLock(row, volume, () => createExport(core, row, volume, backend));
  const connectionInfo = await core.initializeConnection(row, volume);
  let moved: { from: string; to: string } | undefined;
  const connector = row.devicePath ? core.hostConnector(row.host, row.protocol) : undefined;
  if (connector) {
    await core.withDeviceLock(row.host, volume.id, row.mode, async () => {
      const path = (await connector.connectVolume({ ...connectionInfo, volumeId: volume.id })).path;
      if (path !== row.devicePath) moved = { from: row.devicePath!, to: path };
      await core.store.updateAttachment(row.id, { devicePath: path, updatedAt: core.at() });
    });
  }
  const repaired = await core.store.transaction(async (tx) => {
    const r = await tx.updateAttachment(row.id, { status: "attached", brokenReason: null, updatedAt: core.at() });
    await core.refreshVolumeStatus(tx, volume.id);
    return r;
  });
  return { row: repaired, connectionInfo, moved };
}
