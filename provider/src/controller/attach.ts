/**
 * Attach, on the storage side and then on the host:
 *
 *   validate the connector → reserve the volume (multi-attach rules) → createExport for this
 *   connector (target, LUN, ACL, CHAP) → initializeConnection (connection info only) → connect on
 *   the host when asked (the device) → attached.
 *
 * Safe to retry: the same owner attaching the same volume to the same host in the same mode gets
 * the attachment it made before. A failure part way rolls back what was made; what cannot be
 * rolled back is marked error_attaching, and the error says both what failed and why the
 * rollback failed.
 */
import { randomUUID } from "node:crypto";
import type { BackendConfig } from "../domain/backend";
import type { ConnectionInfo } from "../domain/connection-info";
import type { VolumeStatus } from "../domain/status";
import { UserError } from "../errors";
import type { AttachmentRow, ConnectorRow, VolumeRow } from "../store/store";
import { type AttachmentCore, localConnector } from "./attachment-core";
import { createExport, removeExport } from "./exports";

export interface AttachSpec {
  volumeId: string;
  host: string;
  mode: "rw" | "ro";
  connector?: ConnectorRow;
  /** Also connect on the host and report the device (localhost: this machine; other hosts: their agent). */
  connect?: boolean;
}

export async function attach(core: AttachmentCore, owner: string, spec: AttachSpec): Promise<{ row: AttachmentRow; connectionInfo: ConnectionInfo }> {
  // While its replication pair is failed over, a volume is served by its secondary.
  const volume = await core.servingVolume(spec.volumeId);
  if (!volume) throw new UserError("NOT_FOUND", `no volume with id "${spec.volumeId}"`, "volumeId");
  const { backend } = core.controller.locate(volume);
  const protocol = backend.export.protocol;
  const remote = spec.host === "localhost" ? undefined : core.remoteHost?.(spec.host);
  if (spec.connect && spec.host !== "localhost" && !remote) {
    throw new UserError("INVALID_INPUT", `host: no host named "${spec.host}" in the provider's hosts, so sds cannot connect there; add it to hosts (its sds-agent), or set connect: false and give the connector`, "host");
  }
  // The connector defaults to what the host says of itself (its agent, or this machine); what the user gave wins.
  const told = spec.connector ?? {};
  const needsProperties = protocol === "iscsi" && !told.initiator;
  const fromHost = spec.host === "localhost" ? localConnector() : remote && needsProperties ? await remote.properties(protocol) : {};
  const connector = { ...fromHost, ...told };
  if (protocol === "iscsi" && !connector.initiator) throw new UserError("INVALID_INPUT", "connector.initiator: an iSCSI attachment needs the host's initiator IQN", "connector.initiator");
  if (protocol === "local" && spec.host !== "localhost") {
    throw new UserError("INVALID_INPUT", `host: backend ${backend.name} exports with protocol "local", which serves only the machine running the provider (host "localhost")`, "host");
  }

  const existing = (await core.store.listAttachments({ owner, volumeId: volume.id })).find((a) => a.host === spec.host && a.mode === spec.mode);
  if (existing && existing.status === "attached") return { row: existing, connectionInfo: await core.initializeConnection(existing, volume) };

  const row = existing ?? (await reserve(core, owner, volume, backend, spec, connector, protocol));
  try {
    await core.withExportLock(row, volume, () => createExport(core, row, volume, backend));
  } catch (err) {
    throw await rollback(core, row, volume, err);
  }
  const connectionInfo = await core.initializeConnection(row, volume);
  let devicePath: string | null = null;
  const hostConnector = spec.connect ? core.hostConnector(spec.host, connectionInfo.protocol) : undefined;
  if (hostConnector) {
    try {
      devicePath = await core.withDeviceLock(spec.host, volume.id, spec.mode, async () => {
        const path = (await hostConnector.connectVolume({ ...connectionInfo, volumeId: volume.id })).path;
        await core.store.updateAttachment(row.id, { devicePath: path, updatedAt: core.at() });
        return path;
      });
    } catch (err) {
      throw await rollback(core, row, volume, err);
    }
  }
  const attached = await core.store.transaction(async (tx) => {
    const r = await tx.updateAttachment(row.id, { status: "attached", devicePath, updatedAt: core.at() });
    await core.refreshVolumeStatus(tx, volume.id);
    return r;
  });
  return { row: attached, connectionInfo };
}

/**
 * Reserve: check the volume can take this attachment, record it (attaching), mark the volume
 * attaching. One transaction, so the check and the marks are one step for every other caller.
 */
function reserve(core: AttachmentCore, owner: string, volume: VolumeRow, backend: BackendConfig, spec: AttachSpec, connector: ConnectorRow, protocol: AttachmentRow["protocol"]): Promise<AttachmentRow> {
  return core.store.transaction(async (tx) => {
    const v = await tx.getVolume(volume.id);
    if (!v) throw new UserError("NOT_FOUND", `no volume with id "${volume.id}"`, "volumeId");
    const others = await tx.listAttachments({ volumeId: v.id });
    if (!v.multiAttach && others.length > 0) {
      const o = others[0];
      throw new UserError(
        "CONFLICT",
        `volume ${v.name} (${v.id}) is not multiAttach and is already attached: attachment ${o.id} to host ${o.host} (${o.mode}, ${o.status}); detach it first or use a multiAttach volume`,
        "volumeId",
      );
    }
    const allowed: VolumeStatus[] = v.multiAttach ? ["available", "reserved", "attaching", "in-use", "detaching"] : ["available"];
    if (!allowed.includes(v.status)) throw new UserError("INVALID_STATE", `volume ${v.name} is ${v.status}; it can be attached only when ${allowed.join(" or ")}`, "volumeId");
    const at = core.at();
    const row: AttachmentRow = {
      id: randomUUID(),
      owner,
      volumeId: v.id,
      host: spec.host,
      mode: spec.mode,
      connector,
      protocol,
      targetName: protocol === "local" ? null : await core.targetName(backend, v, spec.mode, tx),
      status: "attaching",
      devicePath: null,
      brokenReason: null,
      createdAt: at,
      updatedAt: at,
    };
    await tx.insertAttachment(row);
    await tx.updateVolume(v.id, { status: "attaching", updatedAt: at });
    return row;
  });
}

/**
 * Undo a failed attach: remove what createExport made that nothing else needs, forget the row.
 * Returns the error to throw: the original, or, when the rollback failed too (the attachment is
 * then marked error_attaching), an AggregateError of both, the original first.
 */
async function rollback(core: AttachmentCore, row: AttachmentRow, volume: VolumeRow, original: unknown): Promise<unknown> {
  try {
    await core.withExportLock(row, volume, () => removeExport(core, row));
    await core.store.transaction(async (tx) => {
      await tx.deleteAttachment(row.id);
      await core.refreshVolumeStatus(tx, volume.id);
    });
    return original;
  } catch (rollbackError) {
    try {
      await core.store.transaction(async (tx) => {
        await tx.updateAttachment(row.id, { status: "error_attaching", updatedAt: core.at() });
        await tx.updateVolume(volume.id, { status: "error_attaching", updatedAt: core.at() });
      });
    } catch (markError) {
      return new AggregateError([original, rollbackError, markError], `${(original as Error).message} (and its rollback failed: ${(rollbackError as Error).message}; marking it error_attaching failed: ${(markError as Error).message})`, { cause: original });
    }
    return new AggregateError([original, rollbackError], `${(original as Error).message} (and its rollback failed: ${(rollbackError as Error).message}; attachment ${row.id} is error_attaching)`, { cause: original });
  }
}
