/**
 * Exports, per protocol (os-brick/Cinder's create_export and remove_export): an attachment's
 * export is made for its connector — the target, the volume's LUN, the initiator in the ACL,
 * CHAP — before any connection info exists, and removed only as far as no other attachment needs
 * it. The store's rows (target, LUN) are written first, in short transactions, and the daemon
 * is told after; every step is idempotent, so a retry or the reconciliation at start makes the
 * same export again. Callers hold the target's export lock (AttachmentCore.withExportLock).
 */
import { randomBytes } from "node:crypto";
import type { BackendConfig } from "../domain/backend";
import { exportName, portalHost } from "../domain/names";
import type { AccessMode } from "../domain/status";
import type { AttachmentRow, TargetRow, VolumeRow } from "../store/store";
import { type AttachmentCore, defaultPortals } from "./attachment-core";

/** Make the export of `row` (idempotent). */
export async function createExport(core: AttachmentCore, row: AttachmentRow, volume: VolumeRow, backend: BackendConfig): Promise<void> {
  if (row.protocol === "local") return;
  const path = core.controller.volumePath(volume);
  const target = await ensureTargetRow(core, row.targetName!, backend, row.mode);
  const lun = await ensureLunRow(core, target.name, volume.id);
  if (row.protocol === "iscsi") {
    const t = core.targetsOf(backend.name).iscsi(target.portal);
    await t.start();
    // One call, so tgtd is asked for the target's state once, not once per step.
    const chap = target.chapUser && target.chapSecretEnc ? { username: target.chapUser, password: core.box.open(target.chapSecretEnc) } : undefined;
    // The stored tid is a hint: after a daemon restart, or beside another state's targets on
    // the same daemon, the target may get another one. What the daemon says is recorded at once.
    const onTarget = async (tid: number) => {
      if (tid !== target.tid) await core.store.updateTarget(target.name, { tid });
    };
    await t.ensureExport({ iqn: target.name, tid: target.tid ?? undefined, lun, path, readOnly: row.mode === "ro", initiator: row.connector.initiator!, chap, onTarget });
  } else {
    const t = core.targetsOf(backend.name).nbd(portalHost(target.portal));
    // The port is a wish: another state's server may listen there; the server says where it runs.
    const port = await t.ensureServer(target.name, target.port!, row.mode === "ro");
    if (port !== target.port) await core.store.updateTarget(target.name, { port });
    await t.ensureExport(target.name, exportName(volume.id), path);
  }
}

/** The target's row, made on first use: tid or port allocated, CHAP credentials sealed. */
function ensureTargetRow(core: AttachmentCore, name: string, backend: BackendConfig, mode: AccessMode): Promise<TargetRow> {
  return core.store.transaction(async (tx) => {
    const existing = await tx.getTarget(name);
    if (existing) return existing;
    const protocol = backend.export.protocol as "iscsi" | "nbd";
    const portal = backend.export.portal ?? defaultPortals[protocol];
    const same = await tx.listTargets({ portal });
    let tid: number | null = null;
    let port: number | null = null;
    if (protocol === "iscsi") {
      tid = 1 + Math.max(0, ...same.map((t) => t.tid ?? 0));
    } else {
      const base = Number(portal.split(":").pop());
      const used = new Set(same.map((t) => t.port));
      // Shared: the portal's port for rw, the next for ro; one server per volume counts up from there.
      port = backend.sharedTargets ? base + (mode === "ro" ? 1 : 0) : base + 2;
      while (!backend.sharedTargets && used.has(port)) port++;
    }
    const chap = protocol === "iscsi" && backend.export.chap;
    const row: TargetRow = {
      name,
      backendName: backend.name,
      protocol,
      mode,
      portal,
      tid,
      port,
      chapUser: chap ? `sds-${await core.stateTag(tx)}-${randomBytes(6).toString("hex")}` : null,
      chapSecretEnc: chap ? core.box.seal(randomBytes(12).toString("base64url")) : null,
      createdAt: core.at(),
    };
    await tx.insertTarget(row);
    return row;
  });
}

/** The volume's LUN on the target: the one it has, or the lowest free from 1 (LUN 0 is tgt's controller). */
function ensureLunRow(core: AttachmentCore, targetName: string, volumeId: string): Promise<number> {
  return core.store.transaction(async (tx) => {
    const luns = await tx.listLuns(targetName);
    const mine = luns.find((l) => l.volumeId === volumeId);
    if (mine) return mine.lun;
    const used = new Set(luns.map((l) => l.lun));
    let lun = 1;
    while (used.has(lun)) lun++;
    await tx.insertLun({ targetName, volumeId, lun });
    return lun;
  });
}

/**
 * terminateConnection + removeExport: remove only what no other attachment needs (the initiator
 * from the ACL, the LUN, the target and its CHAP account with the last of them). Decided from
 * the store now, so the caller holds the target's export lock.
 */
export async function removeExport(core: AttachmentCore, row: AttachmentRow): Promise<void> {
  if (row.protocol === "local" || !row.targetName) return;
  const target = await core.store.getTarget(row.targetName);
  if (!target) return;
  const others = (await core.store.listAttachments({ targetName: target.name })).filter((a) => a.id !== row.id);
  const volumeStillServed = others.some((a) => a.volumeId === row.volumeId);
  if (target.protocol === "iscsi") {
    const t = core.targetsOf(target.backendName).iscsi(target.portal);
    const tid = target.tid!;
    if (others.length === 0) {
      await t.removeTarget(tid);
      if (target.chapUser) await t.removeChapAccount(target.chapUser);
      await core.store.deleteTarget(target.name);
      return;
    }
    if (!others.some((a) => a.connector.initiator === row.connector.initiator)) await t.removeInitiator(tid, row.connector.initiator!);
    if (!volumeStillServed) {
      const lun = (await core.store.listLuns(target.name)).find((l) => l.volumeId === row.volumeId);
      if (lun) await t.removeLun(tid, lun.lun);
      await core.store.deleteLun(target.name, row.volumeId);
    }
  } else {
    const t = core.targetsOf(target.backendName).nbd(portalHost(target.portal));
    if (others.length === 0) {
      await t.removeServer(target.name);
      await core.store.deleteTarget(target.name);
      return;
    }
    if (!volumeStillServed) {
      await t.removeExport(target.name, exportName(row.volumeId));
      await core.store.deleteLun(target.name, row.volumeId);
    }
  }
}

/**
 * What a daemon lists, by daemon, for the length of one pass over many attachments (the
 * reconciliation at start): one list per daemon instead of one per attachment, and every
 * attachment judged against the daemon as the pass found it.
 */
export type DaemonListings = Map<string, Promise<unknown>>;

function listOnce<T>(listings: DaemonListings | undefined, key: string, list: () => Promise<T>): Promise<T> {
  if (!listings) return list();
  let p = listings.get(key) as Promise<T> | undefined;
  if (!p) listings.set(key, (p = list()));
  return p;
}

/** Why the attachment's export is not on its target now (asked of the daemon), or undefined when it is. */
export async function exportProblem(core: AttachmentCore, row: AttachmentRow, listings?: DaemonListings): Promise<string | undefined> {
  if (row.protocol === "local" || !row.targetName) return undefined;
  const target = await core.store.getTarget(row.targetName);
  if (!target) return `its target ${row.targetName} is not in the state`;
  const lun = (await core.store.listLuns(target.name)).find((l) => l.volumeId === row.volumeId);
  try {
    if (target.protocol === "iscsi") {
      const t = core.targetsOf(target.backendName).iscsi(target.portal);
      const live = (await listOnce(listings, `iscsi ${target.backendName} ${target.portal}`, () => t.list())).find((x) => x.name === target.name);
      if (!live) return `target ${target.name} is gone from the daemon on ${target.portal} (restarted?)`;
      if (lun && !live.luns.some((l) => l.lun === lun.lun)) return `LUN ${lun.lun} is gone from target ${target.name}`;
      if (row.connector.initiator && !live.initiators.includes(row.connector.initiator)) return `initiator ${row.connector.initiator} is not in the ACL of ${target.name}`;
      return undefined;
    }
    const n = core.targetsOf(target.backendName).nbd(portalHost(target.portal));
    const live = (await listOnce(listings, `nbd ${target.backendName} ${portalHost(target.portal)}`, () => n.list())).find((s) => s.server === target.name);
    if (!live) return `NBD server ${target.name} is not running (crashed or stopped)`;
    if (!live.exports.some((e) => e.name === exportName(row.volumeId))) return `export ${exportName(row.volumeId)} is gone from NBD server ${target.name}`;
    return undefined;
  } catch (err) {
    return `the target daemon on ${target.portal} does not answer: ${(err as Error).message}`;
  }
}
