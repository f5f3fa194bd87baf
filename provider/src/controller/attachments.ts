/**
 * Attach and detach (seeds 000, 003, 004), on the storage side:
 *
 *   attach: validate connector → reserve the volume → createExport(volume, connector)
 *           (target, LUN, ACL for this initiator, CHAP) → initializeConnection (connection info
 *           only, no export work) → attached.
 *   detach: terminateConnection (drop the initiator from the ACL when no other attachment of that
 *           initiator needs it) → removeExport (the LUN when no other attachment needs the volume
 *           there, the target when nothing needs it) → the volume is available again when its
 *           last attachment is gone.
 *
 * Locking rule: on a backend with shared targets, export work for one (host, backendId) runs under
 * a lock held in the store (so it holds across provider processes): otherwise a detach that finds
 * its target unused could remove it while an attach of another volume is adding a LUN to it
 * (seed 000's race). Backends with one target per volume are not serialized.
 * Failures part way roll back what was made; what cannot be rolled back is marked error_*.
 */
import { randomBytes, randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import { UserError } from "../errors";
import type { AttachmentRow, ConnectorRow, Store, TargetRow, VolumeRow } from "../store/store";
import type { Connection, Connector } from "../connectors/connector";
import type { IscsiTarget, NbdTarget } from "../targets/target";
import type { BackendConfig } from "./backends";
import type { Controller } from "./controller";
import type { SecretBox } from "./secret-box";

export const IQN_PREFIX = "iqn.2026-11.io.sds";

export interface ConnectionInfo {
  protocol: "iscsi" | "nbd" | "local";
  portals: string[];
  targetIqn?: string;
  targetLun?: number;
  exportName?: string;
  authMethod?: "CHAP";
  authUsername?: string;
  authPassword?: string;
  readOnly: boolean;
}

/** Where the targets of a backend live; one tgtd per iSCSI portal, one nbdkit manager per node. */
export interface TargetFactory {
  iscsi(portal: string): IscsiTarget;
  /** The NBD servers listening on `host`. */
  nbd(host: string): NbdTarget;
}

/** `127.0.0.1:3260` → `127.0.0.1`. */
export function portalHost(portal: string): string {
  return portal.split(":").slice(0, -1).join(":");
}

export interface AttachSpec {
  volumeId: string;
  host: string;
  mode: "rw" | "ro";
  connector?: ConnectorRow;
  /** Also connect on the host and report the device (only `localhost` until host agents exist). */
  connect?: boolean;
}

export interface AttachmentsOptions {
  store: Store;
  controller: Controller;
  targets: TargetFactory;
  box: SecretBox;
  /** Serialize shared-target export work per (host, backendId). Only tests of the race turn it off. */
  lockSharedTargets?: boolean;
  lockTimeoutMs?: number;
  now?: () => Date;
  /** The connectors of this machine, by protocol: `connect` on host `localhost` uses them. */
  connectorFor?: (protocol: ConnectionInfo["protocol"]) => Connector;
}

const defaultPortals = { iscsi: "127.0.0.1:3260", nbd: "127.0.0.1:10809" };

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

export class Attachments {
  private readonly store: Store;
  private readonly controller: Controller;
  private readonly targets: TargetFactory;
  private readonly box: SecretBox;
  private readonly lockShared: boolean;
  private readonly lockTimeoutMs: number;
  private readonly now: () => Date;
  private readonly holder = randomUUID();
  private readonly connectorFor?: (protocol: ConnectionInfo["protocol"]) => Connector;

  constructor(o: AttachmentsOptions) {
    this.store = o.store;
    this.controller = o.controller;
    this.targets = o.targets;
    this.box = o.box;
    this.lockShared = o.lockSharedTargets ?? true;
    this.lockTimeoutMs = o.lockTimeoutMs ?? 120_000;
    this.now = o.now ?? (() => new Date());
    this.connectorFor = o.connectorFor;
  }

  private at(): string {
    return this.now().toISOString();
  }

  get(id: string): AttachmentRow | undefined {
    return this.store.getAttachment(id);
  }

  // ---------------------------------------------------------------- attach

  /**
   * Attach a volume. Safe to retry: the same owner attaching the same volume to the same host in the
   * same mode gets the attachment it made before.
   */
  async attach(owner: string, spec: AttachSpec): Promise<{ row: AttachmentRow; connectionInfo: ConnectionInfo }> {
    const volume = this.controller.getVolume(spec.volumeId);
    if (!volume) throw new UserError("NOT_FOUND", `no volume with id "${spec.volumeId}"`, "volumeId");
    const { backend } = this.controller.locate(volume);
    const protocol = backend.export.protocol;
    const connector = { ...(spec.host === "localhost" ? localConnector() : {}), ...(spec.connector ?? {}) };
    if (protocol === "iscsi" && !connector.initiator) throw new UserError("INVALID_INPUT", "connector.initiator: an iSCSI attachment needs the host's initiator IQN", "connector.initiator");
    if (protocol === "local" && spec.host !== "localhost") {
      throw new UserError("INVALID_INPUT", `host: backend ${backend.name} exports with protocol "local", which serves only the machine running the provider (host "localhost")`, "host");
    }

    if (spec.connect && this.connectorFor && spec.host !== "localhost") {
      throw new UserError("NOT_AVAILABLE_YET", `connect: connecting on host "${spec.host}" needs its sds-agent, which is not available yet`, "connect");
    }
    const existing = this.store.listAttachments({ owner, volumeId: spec.volumeId }).find((a) => a.host === spec.host && a.mode === spec.mode);
    if (existing && existing.status === "attached") return { row: existing, connectionInfo: this.initializeConnection(existing, volume) };

    const row = existing ?? this.reserve(owner, volume, backend, spec, connector, protocol);
    try {
      await this.withExportLock(spec.host, volume, () => this.createExport(row, volume, backend));
    } catch (err) {
      await this.rollback(row, volume);
      throw err;
    }
    const connectionInfo = this.initializeConnection(row, volume);
    let devicePath: string | null = null;
    if (spec.connect && this.connectorFor) {
      try {
        // Serialized per (host, volume, mode): attachments sharing the device must not both make one.
        devicePath = await this.withLock(`connect:${spec.host}:${volume.id}:${spec.mode}`, async () => {
          const path = (await this.connectorFor!(connectionInfo.protocol).connectVolume({ ...connectionInfo, volumeId: volume.id })).path;
          this.store.updateAttachment(row.id, { devicePath: path, updatedAt: this.at() });
          return path;
        });
      } catch (err) {
        await this.rollback(row, volume);
        throw err;
      }
    }
    const attached = this.store.transaction(() => {
      const r = this.store.updateAttachment(row.id, { status: "attached", devicePath, updatedAt: this.at() });
      this.refreshVolumeStatus(volume.id);
      return r;
    });
    return { row: attached, connectionInfo };
  }

  /** Reserve: check the volume can take this attachment, record it (attaching), mark the volume. */
  private reserve(owner: string, volume: VolumeRow, backend: BackendConfig, spec: AttachSpec, connector: ConnectorRow, protocol: AttachmentRow["protocol"]): AttachmentRow {
    return this.store.transaction(() => {
      const v = this.store.getVolume(volume.id);
      if (!v) throw new UserError("NOT_FOUND", `no volume with id "${volume.id}"`, "volumeId");
      const others = this.store.listAttachments({ volumeId: v.id });
      if (!v.multiAttach && others.length > 0) {
        const o = others[0];
        throw new UserError(
          "CONFLICT",
          `volume ${v.name} (${v.id}) is not multiAttach and is already attached: attachment ${o.id} to host ${o.host} (${o.mode}, ${o.status}); detach it first or use a multiAttach volume`,
          "volumeId",
        );
      }
      const allowed = v.multiAttach ? ["available", "reserved", "attaching", "in-use", "detaching"] : ["available"];
      if (!allowed.includes(v.status)) throw new UserError("INVALID_STATE", `volume ${v.name} is ${v.status}; it can be attached only when ${allowed.join(" or ")}`, "volumeId");
      const at = this.at();
      const row: AttachmentRow = {
        id: randomUUID(),
        owner,
        volumeId: v.id,
        host: spec.host,
        mode: spec.mode,
        connector,
        protocol,
        targetName: protocol === "local" ? null : this.targetName(backend, v, spec.mode),
        status: "attaching",
        devicePath: null,
        createdAt: at,
        updatedAt: at,
      };
      this.store.insertAttachment(row);
      if (v.status === "available") this.store.updateVolume(v.id, { status: "reserved", updatedAt: at });
      this.store.updateVolume(v.id, { status: "attaching", updatedAt: at });
      return row;
    });
  }

  /** The target serving a volume in a mode: one per backend (shared) or one per volume. */
  targetName(backend: BackendConfig, volume: Pick<VolumeRow, "id" | "backendId">, mode: "rw" | "ro"): string {
    const suffix = mode === "ro" ? ".ro" : "";
    if (backend.export.protocol === "nbd") return backend.sharedTargets ? `${backend.name}-${mode}` : `volume-${volume.id}-${mode}`;
    return backend.sharedTargets ? `${IQN_PREFIX}:${volume.backendId}${suffix}` : `${IQN_PREFIX}:volume-${volume.id}${suffix}`;
  }

  /** Seed 004: export work happens here, with the connector, before any connection info exists. */
  private async createExport(row: AttachmentRow, volume: VolumeRow, backend: BackendConfig): Promise<void> {
    if (row.protocol === "local") return;
    const path = this.controller.volumePath(volume);
    const target = this.ensureTargetRow(row.targetName!, backend, row.mode);
    const lun = this.ensureLunRow(target.name, volume.id);
    if (row.protocol === "iscsi") {
      const t = this.targets.iscsi(target.portal);
      await t.start();
      const tid = await t.ensureTarget(target.name, target.tid ?? undefined);
      await t.ensureLun(tid, lun, path, row.mode === "ro");
      await t.ensureInitiator(tid, row.connector.initiator!);
      if (target.chapUser && target.chapSecretEnc) await t.ensureChap(tid, { username: target.chapUser, password: this.box.open(target.chapSecretEnc) });
    } else {
      const t = this.targets.nbd(portalHost(target.portal));
      await t.ensureServer(target.name, target.port!, row.mode === "ro");
      await t.ensureExport(target.name, exportName(volume.id), path);
    }
  }

  /** The target's row, made on first use: tid or port allocated, CHAP credentials sealed. */
  private ensureTargetRow(name: string, backend: BackendConfig, mode: "rw" | "ro"): TargetRow {
    return this.store.transaction(() => {
      const existing = this.store.getTarget(name);
      if (existing) return existing;
      const protocol = backend.export.protocol as "iscsi" | "nbd";
      const portal = backend.export.portal ?? defaultPortals[protocol];
      const same = this.store.listTargets({ portal });
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
        chapUser: chap ? `sds${randomBytes(6).toString("hex")}` : null,
        chapSecretEnc: chap ? this.box.seal(randomBytes(12).toString("base64url")) : null,
        createdAt: this.at(),
      };
      this.store.insertTarget(row);
      return row;
    });
  }

  /** The volume's LUN on the target: the one it has, or the lowest free from 1 (LUN 0 is tgt's controller). */
  private ensureLunRow(targetName: string, volumeId: string): number {
    return this.store.transaction(() => {
      const luns = this.store.listLuns(targetName);
      const mine = luns.find((l) => l.volumeId === volumeId);
      if (mine) return mine.lun;
      const used = new Set(luns.map((l) => l.lun));
      let lun = 1;
      while (used.has(lun)) lun++;
      this.store.insertLun({ targetName, volumeId, lun });
      return lun;
    });
  }

  /** Seed 004: connection info only, no export work. The password is in clear here: callers wrap it as a secret. */
  initializeConnection(row: AttachmentRow, volume: VolumeRow): ConnectionInfo {
    const readOnly = row.mode === "ro";
    if (row.protocol === "local") return { protocol: "local", portals: [], exportName: this.controller.volumePath(volume), readOnly };
    const target = this.store.getTarget(row.targetName!);
    if (!target) throw new UserError("INVALID_STATE", `attachment ${row.id}: its target ${row.targetName} is gone; delete and recreate the attachment`);
    if (row.protocol === "nbd") {
      return { protocol: "nbd", portals: [`${portalHost(target.portal)}:${target.port}`], exportName: exportName(volume.id), readOnly };
    }
    const lun = this.store.listLuns(target.name).find((l) => l.volumeId === volume.id)?.lun;
    const info: ConnectionInfo = { protocol: "iscsi", portals: [target.portal], targetIqn: target.name, targetLun: lun, readOnly };
    if (target.chapUser && target.chapSecretEnc) Object.assign(info, { authMethod: "CHAP", authUsername: target.chapUser, authPassword: this.box.open(target.chapSecretEnc) });
    return info;
  }

  // ---------------------------------------------------------------- detach

  /**
   * Seed 001's verifier: disconnect on the host, then ask the host for the volume's paths; a path
   * left behind fails the detach (orphans corrupt I/O when a LUN id is reused), unless `force`.
   */
  private async disconnect(row: AttachmentRow, volume: VolumeRow, options: { force?: boolean }): Promise<void> {
    // Attachments of one volume to one host in one mode share the host's device: only the last one
    // disconnects, and the devices the others still hold are not orphans. The decision is taken
    // under a lock, after giving up this attachment's claim, so two detaches at once cannot both
    // leave the device to the other.
    await this.withLock(`connect:${row.host}:${volume.id}:${row.mode}`, async () => {
      this.store.updateAttachment(row.id, { devicePath: null, updatedAt: this.at() });
      const others = this.store.listAttachments({ volumeId: volume.id }).filter((a) => a.id !== row.id && a.host === row.host && a.devicePath);
      if (others.some((a) => a.mode === row.mode)) return;
      const info = this.initializeConnection(row, volume);
      const connector = this.connectorFor!(info.protocol);
      const connection: Connection = { ...info, volumeId: volume.id };
      try {
        await connector.disconnectVolume(connection, { force: options.force });
        const held = new Set(others.map((a) => a.devicePath));
        const left = (await connector.getVolumePaths(connection)).filter((p) => !held.has(p.path));
        if (left.length > 0 && !options.force) {
          throw new UserError("INVALID_STATE", `detach of volume ${volume.name} left paths on ${row.host}: ${left.map((p) => p.path).join(", ")}; find what holds them, or detach with force`);
        }
      } catch (err) {
        this.store.updateAttachment(row.id, { devicePath: row.devicePath, updatedAt: this.at() });
        throw err;
      }
    });
  }

  /** Detach. Detaching what is already gone succeeds. */
  async detach(id: string, options: { force?: boolean } = {}): Promise<void> {
    const row = this.store.getAttachment(id);
    if (!row) return;
    const volume = this.controller.getVolume(row.volumeId);
    this.store.transaction(() => {
      this.store.updateAttachment(id, { status: "detaching", updatedAt: this.at() });
      if (volume) this.store.updateVolume(volume.id, { status: "detaching", updatedAt: this.at() });
    });
    try {
      if (volume && row.devicePath && this.connectorFor) await this.disconnect(row, volume, options);
      if (volume) await this.withExportLock(row.host, volume, () => this.removeExport(row));
    } catch (err) {
      this.store.transaction(() => {
        this.store.updateAttachment(id, { status: "error_detaching", updatedAt: this.at() });
        if (volume) this.store.updateVolume(volume.id, { status: "error_detaching", updatedAt: this.at() });
      });
      throw err;
    }
    this.store.transaction(() => {
      this.store.deleteAttachment(id);
      if (volume) this.refreshVolumeStatus(volume.id);
    });
  }

  /**
   * terminateConnection + removeExport: remove only what no other attachment needs. Decided from
   * the store now, so it must run under the export lock on shared targets.
   */
  private async removeExport(row: AttachmentRow): Promise<void> {
    if (row.protocol === "local" || !row.targetName) return;
    const target = this.store.getTarget(row.targetName);
    if (!target) return;
    const others = this.store.listAttachments({ targetName: target.name }).filter((a) => a.id !== row.id);
    const volumeStillServed = others.some((a) => a.volumeId === row.volumeId);
    if (target.protocol === "iscsi") {
      const t = this.targets.iscsi(target.portal);
      const tid = target.tid!;
      if (others.length === 0) {
        await t.removeTarget(tid);
        if (target.chapUser) await t.removeChapAccount(target.chapUser);
        this.store.deleteTarget(target.name);
        return;
      }
      if (!others.some((a) => a.connector.initiator === row.connector.initiator)) await t.removeInitiator(tid, row.connector.initiator!);
      if (!volumeStillServed) {
        const lun = this.store.listLuns(target.name).find((l) => l.volumeId === row.volumeId);
        if (lun) await t.removeLun(tid, lun.lun);
        this.store.deleteLun(target.name, row.volumeId);
      }
    } else {
      const t = this.targets.nbd(portalHost(target.portal));
      if (others.length === 0) {
        await t.removeServer(target.name);
        this.store.deleteTarget(target.name);
        return;
      }
      if (!volumeStillServed) {
        await t.removeExport(target.name, exportName(row.volumeId));
        this.store.deleteLun(target.name, row.volumeId);
      }
    }
  }

  /** Undo a failed attach: remove what createExport made that nothing else needs, forget the row. */
  private async rollback(row: AttachmentRow, volume: VolumeRow): Promise<void> {
    try {
      await this.withExportLock(row.host, volume, () => this.removeExport(row));
      this.store.transaction(() => {
        this.store.deleteAttachment(row.id);
        this.refreshVolumeStatus(volume.id);
      });
    } catch {
      this.store.transaction(() => {
        this.store.updateAttachment(row.id, { status: "error_attaching", updatedAt: this.at() });
        this.store.updateVolume(volume.id, { status: "error_attaching", updatedAt: this.at() });
      });
    }
  }

  /** The volume's status follows its attachments: attaching/detaching while work is in flight, in-use, available. */
  private refreshVolumeStatus(volumeId: string): void {
    const v = this.store.getVolume(volumeId);
    if (!v) return;
    const rows = this.store.listAttachments({ volumeId });
    const has = (s: string) => rows.some((a) => a.status === s);
    const status = has("error_attaching") ? "error_attaching" : has("error_detaching") ? "error_detaching" : has("attaching") ? "attaching" : has("detaching") ? "detaching" : rows.length > 0 ? "in-use" : "available";
    if (status !== v.status) this.store.updateVolume(volumeId, { status, updatedAt: this.at() });
  }

  /** Run export work under the (host, backendId) lock when the volume's backend shares targets. */
  private async withExportLock<T>(host: string, volume: VolumeRow, fn: () => Promise<T>): Promise<T> {
    if (!volume.sharedTargets || !this.lockShared) return fn();
    return this.withLock(`export:${host}:${volume.backendId}`, fn);
  }

  /** Run `fn` holding lock `name` in the store (exclusive across processes and across operations). */
  private async withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    // One holder per operation, not per process: two operations of one process exclude each other too.
    const holder = `${this.holder}:${randomUUID()}`;
    const deadline = Date.now() + this.lockTimeoutMs;
    let wait = 2;
    while (!this.store.tryLock(name, holder, this.lockTimeoutMs)) {
      if (Date.now() > deadline) throw new UserError("INVALID_STATE", `timed out after ${this.lockTimeoutMs} ms waiting for lock ${name}`);
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 50);
    }
    try {
      return await fn();
    } finally {
      this.store.unlock(name, holder);
    }
  }

  // ---------------------------------------------------------------- restart

  /**
   * Cinder's ensure_export, at provider start: every export the store knows is made again (a
   * rebooted storage node loses tgtd's configuration), and targets of ours the store does not know
   * are removed. Returns what it did, for the log.
   */
  async ensureExports(): Promise<{ ensured: number; removed: string[] }> {
    let ensured = 0;
    const removed: string[] = [];
    // First what the store does not know (it may hold a tid or port the store's exports need)…
    const portals = new Set(this.store.listTargets().filter((t) => t.protocol === "iscsi").map((t) => t.portal));
    for (const b of this.controller.backendConfigs()) if (b.export.protocol === "iscsi") portals.add(b.export.portal ?? defaultPortals.iscsi);
    for (const portal of portals) {
      const t = this.targets.iscsi(portal);
      let live: Awaited<ReturnType<IscsiTarget["list"]>>;
      try {
        live = await t.list();
      } catch {
        continue; // no tgtd on that portal: nothing to clean
      }
      for (const e of live) {
        if (!e.name.startsWith(`${IQN_PREFIX}:`) || this.store.getTarget(e.name)?.tid === e.tid) continue;
        await t.removeTarget(e.tid!);
        removed.push(e.name);
      }
    }
    const nbdHosts = new Set(this.controller.backendConfigs().filter((b) => b.export.protocol === "nbd").map((b) => portalHost(b.export.portal ?? defaultPortals.nbd)));
    for (const host of nbdHosts) {
      const t = this.targets.nbd(host);
      for (const server of await t.list()) {
        if (this.store.getTarget(server.server)) continue;
        await t.removeServer(server.server);
        removed.push(server.server);
      }
    }
    // …then every export the store knows, made again where it is missing.
    for (const a of this.store.listAttachments()) {
      const v = this.controller.getVolume(a.volumeId);
      if (!v || a.protocol === "local") continue;
      const { backend } = this.controller.locate(v);
      await this.withExportLock(a.host, v, () => this.createExport(a, v, backend));
      ensured++;
    }
    return { ensured, removed };
  }
}

export function exportName(volumeId: string): string {
  return `volume-${volumeId}`;
}
