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
 * Locking rule: export work runs under a lock on the TARGET it touches, held in the store (so it
 * holds across provider processes), whichever host asks: a target, its CHAP account, its ACL and
 * its LUNs are shared by every host attached through it. Otherwise a detach that finds the target
 * unused could remove it while an attach (of another volume, or from another host) adds a LUN to
 * it; or two hosts' first attaches both make the target; or two last detaches each leave it to
 * the other. The last LUN and the target go under the same lock, whoever detaches last.
 *
 * Store transactions are short and hold no target I/O; their reads and writes go through the
 * transaction's handle (`tx`, or `ops` in helpers that run inside or outside one).
 *
 * Several states on one target daemon: every target name (and CHAP account, NBD server) carries
 * this state's tag (the first 12 hex digits of the store's state id), and reconciliation at start
 * touches only names with its own tag.
 * Failures part way roll back what was made; what cannot be rolled back is marked error_*.
 */
import { randomBytes, randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import { UserError } from "../errors";
import { withStoreLock } from "../store/lock";
import type { AttachmentRow, ConnectorRow, Store, StoreOps, TargetRow, VolumeRow } from "../store/store";
import type { Connection, Connector } from "../connectors/connector";
import type { ConnectionInfo } from "../domain/connection-info";
import { exportName, IQN_PREFIX, portalHost } from "../domain/names";
import type { IscsiTarget, TargetFactory } from "../targets/target";

export type { ConnectionInfo } from "../domain/connection-info";
export { exportName, IQN_PREFIX, portalHost } from "../domain/names";
export type { TargetFactory } from "../targets/target";
import type { BackendConfig } from "../domain/backend";
import type { AccessMode, AttachmentStatus, VolumeStatus } from "../domain/status";
import type { Controller } from "./controller";
import type { SecretBox } from "./secret-box";


/** What attachments need of a host's connector: the local one, or the host's agent (AgentClient). */
export type HostConnector = Pick<Connector, "connectVolume" | "disconnectVolume" | "getVolumePaths" | "extendVolume" | "checkVolume" | "fenceVolume">;

/** A host other than `localhost`, reached through its sds-agent. */
export interface RemoteHost {
  connector(protocol: ConnectionInfo["protocol"]): HostConnector;
  /** The host's connector properties (initiator IQN, …) as its agent reports them. */
  properties(protocol: ConnectionInfo["protocol"]): Promise<ConnectorRow>;
}

export interface DetachOptions {
  /** Operators: tear down what can be, and report (not refuse) paths left on the host. */
  force?: boolean;
  /** Where forced detaches report what they left. */
  warn?: (message: string) => void;
}

export interface AttachSpec {
  volumeId: string;
  host: string;
  mode: "rw" | "ro";
  connector?: ConnectorRow;
  /** Also connect on the host and report the device (localhost: this machine; other hosts: their agent). */
  connect?: boolean;
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
  now?: () => Date;
  /** The connectors of this machine, by protocol: `connect` on host `localhost` uses them. */
  connectorFor?: (protocol: ConnectionInfo["protocol"]) => Connector;
  /** Hosts other than localhost (the provider's `hosts`); undefined for a host not configured. */
  remoteHost?: (host: string) => RemoteHost | undefined;
  /** The targets of a remote storage node (a backend whose `node` is not local). */
  nodeTargets?: (node: string) => TargetFactory;
  /** Replication (seed 002): the volume that serves `volumeId` now (its secondary while failed over). */
  activeVolume?: (volumeId: string) => Promise<VolumeRow | undefined>;
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
  private readonly lockScope: "target" | "host" | "none";
  private readonly lockTimeoutMs: number;
  private readonly now: () => Date;
  private readonly holder = randomUUID();
  private tag?: string;
  private readonly connectorFor?: (protocol: ConnectionInfo["protocol"]) => Connector;
  private readonly remoteHost?: (host: string) => RemoteHost | undefined;
  private readonly nodeTargets?: (node: string) => TargetFactory;
  private readonly activeVolume?: (volumeId: string) => Promise<VolumeRow | undefined>;

  constructor(o: AttachmentsOptions) {
    this.store = o.store;
    this.controller = o.controller;
    this.targets = o.targets;
    this.box = o.box;
    this.lockScope = o.exportLockScope ?? "target";
    this.lockTimeoutMs = o.lockTimeoutMs ?? 120_000;
    this.now = o.now ?? (() => new Date());
    this.connectorFor = o.connectorFor;
    this.remoteHost = o.remoteHost;
    this.nodeTargets = o.nodeTargets;
    this.activeVolume = o.activeVolume;
  }

  /** The connector that makes devices on `host`, if that host can be reached. */
  private hostConnector(host: string, protocol: ConnectionInfo["protocol"]): HostConnector | undefined {
    if (host === "localhost") return this.connectorFor?.(protocol);
    return this.remoteHost?.(host)?.connector(protocol);
  }

  /** The targets of the node a backend runs on: this machine's, or a storage node's through its agent. */
  private targetsOf(backendName: string): TargetFactory {
    const b = this.controller.backendConfigs().find((x) => x.name === backendName);
    if (!b || b.node === "local") return this.targets;
    if (!this.nodeTargets) throw new UserError("INVALID_STATE", `backend ${backendName} runs on node "${b.node}", which this provider cannot reach`);
    return this.nodeTargets(b.node);
  }

  private at(): string {
    return this.now().toISOString();
  }

  get(id: string): Promise<AttachmentRow | undefined> {
    return this.store.getAttachment(id);
  }

  // ---------------------------------------------------------------- attach

  /**
   * Attach a volume. Safe to retry: the same owner attaching the same volume to the same host in the
   * same mode gets the attachment it made before.
   */
  async attach(owner: string, spec: AttachSpec): Promise<{ row: AttachmentRow; connectionInfo: ConnectionInfo }> {
    // While its replication pair is failed over, a volume is served by its secondary.
    const volume = this.activeVolume ? await this.activeVolume(spec.volumeId) : await this.controller.getVolume(spec.volumeId);
    if (!volume) throw new UserError("NOT_FOUND", `no volume with id "${spec.volumeId}"`, "volumeId");
    const { backend } = this.controller.locate(volume);
    const protocol = backend.export.protocol;
    const remote = spec.host === "localhost" ? undefined : this.remoteHost?.(spec.host);
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

    const existing = (await this.store.listAttachments({ owner, volumeId: volume.id })).find((a) => a.host === spec.host && a.mode === spec.mode);
    if (existing && existing.status === "attached") return { row: existing, connectionInfo: await this.initializeConnection(existing, volume) };

    const row = existing ?? (await this.reserve(owner, volume, backend, spec, connector, protocol));
    try {
      await this.withExportLock(row, volume, () => this.createExport(row, volume, backend));
    } catch (err) {
      await this.rollback(row, volume);
      throw err;
    }
    const connectionInfo = await this.initializeConnection(row, volume);
    let devicePath: string | null = null;
    const hostConnector = spec.connect ? this.hostConnector(spec.host, connectionInfo.protocol) : undefined;
    if (hostConnector) {
      try {
        // Serialized per (host, volume, mode): attachments sharing the device must not both make one.
        devicePath = await this.withLock(`connect:${spec.host}:${volume.id}:${spec.mode}`, async () => {
          const path = (await hostConnector.connectVolume({ ...connectionInfo, volumeId: volume.id })).path;
          await this.store.updateAttachment(row.id, { devicePath: path, updatedAt: this.at() });
          return path;
        });
      } catch (err) {
        await this.rollback(row, volume);
        throw err;
      }
    }
    const attached = await this.store.transaction(async (tx) => {
      const r = await tx.updateAttachment(row.id, { status: "attached", devicePath, updatedAt: this.at() });
      await this.refreshVolumeStatus(tx, volume.id);
      return r;
    });
    return { row: attached, connectionInfo };
  }

  /**
   * Reserve: check the volume can take this attachment, record it (attaching), mark the volume
   * attaching. One transaction, so the check and the marks are one step for every other caller.
   */
  private reserve(owner: string, volume: VolumeRow, backend: BackendConfig, spec: AttachSpec, connector: ConnectorRow, protocol: AttachmentRow["protocol"]): Promise<AttachmentRow> {
    return this.store.transaction(async (tx) => {
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
      const at = this.at();
      const row: AttachmentRow = {
        id: randomUUID(),
        owner,
        volumeId: v.id,
        host: spec.host,
        mode: spec.mode,
        connector,
        protocol,
        targetName: protocol === "local" ? null : await this.targetName(backend, v, spec.mode, tx),
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

  /** Seed 004: export work happens here, with the connector, before any connection info exists. */
  private async createExport(row: AttachmentRow, volume: VolumeRow, backend: BackendConfig): Promise<void> {
    if (row.protocol === "local") return;
    const path = this.controller.volumePath(volume);
    const target = await this.ensureTargetRow(row.targetName!, backend, row.mode);
    const lun = await this.ensureLunRow(target.name, volume.id);
    if (row.protocol === "iscsi") {
      const t = this.targetsOf(backend.name).iscsi(target.portal);
      await t.start();
      // The stored tid is a hint: after a daemon restart, or beside another state's targets on
      // the same daemon, the target may get another one. What the daemon says is recorded.
      const tid = await t.ensureTarget(target.name, target.tid ?? undefined);
      if (tid !== target.tid) await this.store.updateTarget(target.name, { tid });
      await t.ensureLun(tid, lun, path, row.mode === "ro");
      await t.ensureInitiator(tid, row.connector.initiator!);
      if (target.chapUser && target.chapSecretEnc) await t.ensureChap(tid, { username: target.chapUser, password: this.box.open(target.chapSecretEnc) });
    } else {
      const t = this.targetsOf(backend.name).nbd(portalHost(target.portal));
      // The port is a wish: another state's server may listen there; the server says where it runs.
      const port = await t.ensureServer(target.name, target.port!, row.mode === "ro");
      if (port !== target.port) await this.store.updateTarget(target.name, { port });
      await t.ensureExport(target.name, exportName(volume.id), path);
    }
  }

  /** The target's row, made on first use: tid or port allocated, CHAP credentials sealed. */
  private ensureTargetRow(name: string, backend: BackendConfig, mode: AccessMode): Promise<TargetRow> {
    return this.store.transaction(async (tx) => {
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
        chapUser: chap ? `sds-${await this.stateTag(tx)}-${randomBytes(6).toString("hex")}` : null,
        chapSecretEnc: chap ? this.box.seal(randomBytes(12).toString("base64url")) : null,
        createdAt: this.at(),
      };
      await tx.insertTarget(row);
      return row;
    });
  }

  /** The volume's LUN on the target: the one it has, or the lowest free from 1 (LUN 0 is tgt's controller). */
  private ensureLunRow(targetName: string, volumeId: string): Promise<number> {
    return this.store.transaction(async (tx) => {
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

  /** Seed 004: connection info only, no export work. The password is in clear here: callers wrap it as a secret. */
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

  // ---------------------------------------------------------------- extend

  /**
   * After a volume grew (the driver extended its bytes): the targets serving it report the new
   * size (tgtd reads a LUN's size only when the LUN is added), then every device of it on a host
   * is extended (os-brick's extend_volume). A device that cannot take the new size now (in use on
   * a userspace path) is reported in `pending`, not failed: the volume did grow, and the device
   * shows the size on its next connect. Anything else (an agent unreachable) throws, and the
   * update is retried as a whole (every step is idempotent).
   */
  async volumeGrew(volumeId: string): Promise<{ devices: Array<{ host: string; path: string; sizeBytes: number }>; pending: Array<{ host: string; path: string; reason: string }> }> {
    const volume = await this.controller.getVolume(volumeId);
    const out = { devices: [] as Array<{ host: string; path: string; sizeBytes: number }>, pending: [] as Array<{ host: string; path: string; reason: string }> };
    if (!volume) return out;
    const path = this.controller.volumePath(volume);
    const rows = await this.store.listAttachments({ volumeId });
    for (const name of new Set(rows.map((a) => a.targetName).filter((n): n is string => !!n))) {
      // No export lock: the LUN stays (it is re-added in place), and Pulumi never extends a volume
      // while one of its attachments is being made or removed (they depend on the volume).
      const target = await this.store.getTarget(name);
      const lun = target && (await this.store.listLuns(name)).find((l) => l.volumeId === volumeId);
      if (!target || !lun) continue;
      if (target.protocol === "iscsi") await this.targetsOf(target.backendName).iscsi(target.portal).refreshLun(target.tid!, lun.lun, path, target.mode === "ro");
      else await this.targetsOf(target.backendName).nbd(portalHost(target.portal)).refreshExport(name, exportName(volumeId), path);
    }
    const seen = new Set<string>();
    for (const row of rows) {
      if (!row.devicePath || seen.has(`${row.host}|${row.mode}`)) continue;
      seen.add(`${row.host}|${row.mode}`);
      const connector = this.hostConnector(row.host, row.protocol);
      if (!connector) {
        out.pending.push({ host: row.host, path: row.devicePath, reason: `host "${row.host}" is not in the provider's hosts` });
        continue;
      }
      const connection: Connection = { ...(await this.initializeConnection(row, volume)), volumeId };
      await this.withLock(`connect:${row.host}:${volumeId}:${row.mode}`, async () => {
        try {
          out.devices.push({ host: row.host, path: row.devicePath!, sizeBytes: await connector.extendVolume(connection) });
        } catch (err) {
          if (!(err instanceof UserError) || err.code !== "INVALID_STATE") throw err;
          out.pending.push({ host: row.host, path: row.devicePath!, reason: err.message });
        }
      });
    }
    return out;
  }

  // ---------------------------------------------------------------- health and repair

  /**
   * What an attachment really is now (refresh): the export on the target daemon and, when it was
   * connected, the device on its host, probed end to end (bounded: a probe never hangs). A broken
   * device is fenced on the way (its I/O fails at once instead of waiting for a target that came
   * back without it), so readers see EIO, not a hang; {@link repair} puts it back on the same path.
   */
  async health(id: string, options: { fence?: boolean } = { fence: true }): Promise<{ status: "attached" | "broken" | string; reason?: string }> {
    const row = await this.store.getAttachment(id);
    if (!row) return { status: "gone" };
    if (row.status !== "attached") return { status: row.status };
    const volume = this.activeVolume ? await this.activeVolume(row.volumeId) : await this.controller.getVolume(row.volumeId);
    if (!volume) return { status: "broken", reason: `volume ${row.volumeId} is gone` };
    const exportProblem = (await this.exportProblem(row)) ?? row.brokenReason ?? undefined;
    if (exportProblem) return { status: "broken", reason: exportProblem };
    if (!row.devicePath) return { status: "attached" };
    const connector = this.hostConnector(row.host, row.protocol);
    if (!connector) return { status: "attached" }; // cannot look: not a finding
    const connection: Connection = { ...(await this.initializeConnection(row, volume)), volumeId: volume.id };
    // A preview only looks; refresh also fences what it finds broken.
    const h = options.fence ? await connector.fenceVolume(connection) : await connector.checkVolume(connection);
    if (h.healthy) return { status: "attached" };
    return { status: "broken", reason: `${row.devicePath} on ${row.host}: ${h.reason ?? "unhealthy"}` };
  }

  /** Why the attachment's export is not on its target now, or undefined when it is. */
  private async exportProblem(row: AttachmentRow): Promise<string | undefined> {
    if (row.protocol === "local" || !row.targetName) return undefined;
    const target = await this.store.getTarget(row.targetName);
    if (!target) return `its target ${row.targetName} is not in the state`;
    const lun = (await this.store.listLuns(target.name)).find((l) => l.volumeId === row.volumeId);
    try {
      if (target.protocol === "iscsi") {
        const live = (await this.targetsOf(target.backendName).iscsi(target.portal).list()).find((t) => t.name === target.name);
        if (!live) return `target ${target.name} is gone from the daemon on ${target.portal} (restarted?)`;
        if (lun && !live.luns.some((l) => l.lun === lun.lun)) return `LUN ${lun.lun} is gone from target ${target.name}`;
        if (row.connector.initiator && !live.initiators.includes(row.connector.initiator)) return `initiator ${row.connector.initiator} is not in the ACL of ${target.name}`;
        return undefined;
      }
      const live = (await this.targetsOf(target.backendName).nbd(portalHost(target.portal)).list()).find((s) => s.server === target.name);
      if (!live) return `NBD server ${target.name} is not running (crashed or stopped)`;
      if (!live.exports.some((e) => e.name === exportName(row.volumeId))) return `export ${exportName(row.volumeId)} is gone from NBD server ${target.name}`;
      return undefined;
    } catch (err) {
      return `the target daemon on ${target.portal} does not answer: ${(err as Error).message}`;
    }
  }

  /**
   * Put a broken attachment back (the `up` after a refresh found it broken): the export is made
   * again (idempotent), then the device is reconnected on its host, on the same path whenever the
   * kernel allows it. Safe to repeat.
   */
  async repair(id: string): Promise<{ row: AttachmentRow; connectionInfo: ConnectionInfo; moved?: { from: string; to: string } }> {
    const row = await this.store.getAttachment(id);
    if (!row) throw new UserError("NOT_FOUND", `attachment ${id} no longer exists; run pulumi refresh`);
    const volume = this.activeVolume ? await this.activeVolume(row.volumeId) : await this.controller.getVolume(row.volumeId);
    if (!volume) throw new UserError("NOT_FOUND", `attachment ${id}: volume ${row.volumeId} no longer exists`, "volumeId");
    const { backend } = this.controller.locate(volume);
    await this.withExportLock(row, volume, () => this.createExport(row, volume, backend));
    const connectionInfo = await this.initializeConnection(row, volume);
    let moved: { from: string; to: string } | undefined;
    const connector = row.devicePath ? this.hostConnector(row.host, row.protocol) : undefined;
    if (connector) {
      await this.withLock(`connect:${row.host}:${volume.id}:${row.mode}`, async () => {
        const path = (await connector.connectVolume({ ...connectionInfo, volumeId: volume.id })).path;
        if (path !== row.devicePath) moved = { from: row.devicePath!, to: path };
        await this.store.updateAttachment(row.id, { devicePath: path, updatedAt: this.at() });
      });
    }
    const repaired = await this.store.transaction(async (tx) => {
      const r = await tx.updateAttachment(row.id, { status: "attached", brokenReason: null, updatedAt: this.at() });
      await this.refreshVolumeStatus(tx, volume.id);
      return r;
    });
    return { row: repaired, connectionInfo, moved };
  }

  // ---------------------------------------------------------------- detach

  /**
   * Seed 001's verifier: disconnect on the host, then ask the host for the volume's paths; a path
   * left behind fails the detach (orphans corrupt I/O when a LUN id is reused), unless `force`.
   */
  private async disconnect(row: AttachmentRow, volume: VolumeRow, options: DetachOptions): Promise<void> {
    // Attachments of one volume to one host in one mode share the host's device: only the last one
    // disconnects, and the devices the others still hold are not orphans. The decision is taken
    // under a lock, after giving up this attachment's claim, so two detaches at once cannot both
    // leave the device to the other.
    await this.withLock(`connect:${row.host}:${volume.id}:${row.mode}`, async () => {
      await this.store.updateAttachment(row.id, { devicePath: null, updatedAt: this.at() });
      const others = (await this.store.listAttachments({ volumeId: volume.id })).filter((a) => a.id !== row.id && a.host === row.host && a.devicePath);
      if (others.some((a) => a.mode === row.mode)) return;
      const info = await this.initializeConnection(row, volume);
      const connector = this.hostConnector(row.host, info.protocol);
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
          if (!options.force) throw new UserError("INVALID_STATE", `${what}; find what holds them, or detach with force (SDS_FORCE_DETACH=${row.id})`);
          options.warn?.(`${what} (forced: clean them up on the host)`);
        }
      } catch (err) {
        await this.store.updateAttachment(row.id, { devicePath: row.devicePath, updatedAt: this.at() });
        throw err;
      }
    });
  }

  /** Detach. Detaching what is already gone succeeds. */
  async detach(id: string, options: DetachOptions = {}): Promise<void> {
    const row = await this.store.getAttachment(id);
    if (!row) return;
    const volume = await this.controller.getVolume(row.volumeId);
    await this.store.transaction(async (tx) => {
      await tx.updateAttachment(id, { status: "detaching", updatedAt: this.at() });
      if (volume) await tx.updateVolume(volume.id, { status: "detaching", updatedAt: this.at() });
    });
    try {
      if (volume && row.devicePath && (this.hostConnector(row.host, row.protocol) || !options.force)) await this.disconnect(row, volume, options);
      if (volume) await this.withExportLock(row, volume, () => this.removeExport(row));
    } catch (err) {
      await this.store.transaction(async (tx) => {
        await tx.updateAttachment(id, { status: "error_detaching", updatedAt: this.at() });
        if (volume) await tx.updateVolume(volume.id, { status: "error_detaching", updatedAt: this.at() });
      });
      throw err;
    }
    await this.store.transaction(async (tx) => {
      await tx.deleteAttachment(id);
      if (volume) await this.refreshVolumeStatus(tx, volume.id);
    });
  }

  /**
   * terminateConnection + removeExport: remove only what no other attachment needs. Decided from
   * the store now, so it must run under the export lock on shared targets.
   */
  private async removeExport(row: AttachmentRow): Promise<void> {
    if (row.protocol === "local" || !row.targetName) return;
    const target = await this.store.getTarget(row.targetName);
    if (!target) return;
    const others = (await this.store.listAttachments({ targetName: target.name })).filter((a) => a.id !== row.id);
    const volumeStillServed = others.some((a) => a.volumeId === row.volumeId);
    if (target.protocol === "iscsi") {
      const t = this.targetsOf(target.backendName).iscsi(target.portal);
      const tid = target.tid!;
      if (others.length === 0) {
        await t.removeTarget(tid);
        if (target.chapUser) await t.removeChapAccount(target.chapUser);
        await this.store.deleteTarget(target.name);
        return;
      }
      if (!others.some((a) => a.connector.initiator === row.connector.initiator)) await t.removeInitiator(tid, row.connector.initiator!);
      if (!volumeStillServed) {
        const lun = (await this.store.listLuns(target.name)).find((l) => l.volumeId === row.volumeId);
        if (lun) await t.removeLun(tid, lun.lun);
        await this.store.deleteLun(target.name, row.volumeId);
      }
    } else {
      const t = this.targetsOf(target.backendName).nbd(portalHost(target.portal));
      if (others.length === 0) {
        await t.removeServer(target.name);
        await this.store.deleteTarget(target.name);
        return;
      }
      if (!volumeStillServed) {
        await t.removeExport(target.name, exportName(row.volumeId));
        await this.store.deleteLun(target.name, row.volumeId);
      }
    }
  }

  /** Undo a failed attach: remove what createExport made that nothing else needs, forget the row. */
  private async rollback(row: AttachmentRow, volume: VolumeRow): Promise<void> {
    try {
      await this.withExportLock(row, volume, () => this.removeExport(row));
      await this.store.transaction(async (tx) => {
        await tx.deleteAttachment(row.id);
        await this.refreshVolumeStatus(tx, volume.id);
      });
    } catch {
      await this.store.transaction(async (tx) => {
        await tx.updateAttachment(row.id, { status: "error_attaching", updatedAt: this.at() });
        await tx.updateVolume(volume.id, { status: "error_attaching", updatedAt: this.at() });
      });
    }
  }

  /** The volume's status follows its attachments: attaching/detaching while work is in flight, in-use, available. */
  private async refreshVolumeStatus(tx: StoreOps, volumeId: string): Promise<void> {
    const v = await tx.getVolume(volumeId);
    if (!v) return;
    const rows = await tx.listAttachments({ volumeId });
    const has = (s: AttachmentStatus) => rows.some((a) => a.status === s);
    const status: VolumeStatus = has("error_attaching") ? "error_attaching" : has("error_detaching") ? "error_detaching" : has("attaching") ? "attaching" : has("detaching") ? "detaching" : rows.length > 0 ? "in-use" : "available";
    if (status !== v.status) await tx.updateVolume(volumeId, { status, updatedAt: this.at() });
  }

  /** Run export work under the lock of the attachment's target (see the locking rule above). */
  private async withExportLock<T>(row: AttachmentRow, volume: VolumeRow, fn: () => Promise<T>): Promise<T> {
    if (!row.targetName || this.lockScope === "none") return fn();
    // The old, wrong scope, kept for the race tests' negative run: hosts do not exclude each other.
    if (this.lockScope === "host") return volume.sharedTargets ? this.withLock(`export:${row.host}:${volume.backendId}`, fn) : fn();
    return this.withLock(`export:${row.targetName}`, fn);
  }

  /** Run `fn` holding lock `name` in the store (exclusive across processes and across operations). */
  private withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const timedOut = () => new UserError("INVALID_STATE", `timed out after ${this.lockTimeoutMs} ms waiting for lock ${name}`);
    return withStoreLock(this.store, name, { timeoutMs: this.lockTimeoutMs, holderPrefix: this.holder, timedOut }, fn);
  }

  // ---------------------------------------------------------------- restart

  /**
   * Reconciliation at provider start (Cinder's ensure_export): every export the store knows is
   * made again (a restarted or rebooted target daemon lost its configuration), and strays of
   * THIS state (names with its tag that the store does not know: left by a crash) are removed.
   * Targets of other states on the same daemon are never touched. A stray that still has
   * sessions is left in place and reported: removing it would cut a host's live I/O.
   * Returns what it did, for the log.
   */
  async ensureExports(): Promise<{ ensured: number; removed: string[]; kept: string[] }> {
    let ensured = 0;
    const removed: string[] = [];
    const kept: string[] = [];
    const tag = await this.stateTag();
    // First our strays (one may hold a tid, port or CHAP name the store's exports need)…
    const portals = new Map<string, string>(); // portal → backend name (whose node runs its tgtd)
    for (const t of await this.store.listTargets()) if (t.protocol === "iscsi") portals.set(t.portal, t.backendName);
    for (const b of this.controller.backendConfigs()) if (b.export.protocol === "iscsi") portals.set(b.export.portal ?? defaultPortals.iscsi, b.name);
    for (const [portal, backendName] of portals) {
      const t = this.targetsOf(backendName).iscsi(portal);
      let live: Awaited<ReturnType<IscsiTarget["list"]>>;
      try {
        live = await t.list();
      } catch {
        continue; // no tgtd on that portal (or its node is unreachable): nothing to clean
      }
      for (const e of live) {
        if (!e.name.startsWith(`${IQN_PREFIX}:${tag}:`) || (await this.store.getTarget(e.name))) continue;
        if ((e.sessions ?? 0) > 0) {
          kept.push(`${e.name} (${e.sessions} session(s))`);
          continue;
        }
        await this.withLock(`export:${e.name}`, async () => {
          await t.removeTarget(e.tid!);
          for (const user of e.chapUsers) if (user.startsWith(`sds-${tag}-`)) await t.removeChapAccount(user);
        });
        removed.push(e.name);
      }
    }
    const nbdHosts = new Map<string, string>();
    for (const b of this.controller.backendConfigs()) if (b.export.protocol === "nbd") nbdHosts.set(portalHost(b.export.portal ?? defaultPortals.nbd), b.name);
    for (const [host, backendName] of nbdHosts) {
      const t = this.targetsOf(backendName).nbd(host);
      for (const server of await t.list()) {
        if (!server.server.startsWith(`${tag}-`) || (await this.store.getTarget(server.server))) continue;
        await this.withLock(`export:${server.server}`, () => t.removeServer(server.server));
        removed.push(server.server);
      }
    }
    // …then every export the store knows, made again where it is missing.
    for (const a of await this.store.listAttachments()) {
      const v = await this.controller.getVolume(a.volumeId);
      if (!v || a.protocol === "local") continue;
      const { backend } = this.controller.locate(v);
      // A lost export (the daemon restarted or was killed) broke the path of every device on
      // it, even if the initiator logs in again by itself: refresh reports it, up repairs it.
      const problem = a.status === "attached" ? await this.exportProblem(a) : undefined;
      await this.withExportLock(a, v, () => this.createExport(a, v, backend));
      if (problem) await this.store.updateAttachment(a.id, { brokenReason: `${problem}; the export was made again, its device must reconnect (pulumi up)`, updatedAt: this.at() });
      ensured++;
    }
    return { ensured, removed, kept };
  }
}

/** Why: user-set backendIds ("Array_1") must still make a valid IQN (lowercase, digits, `.-:`). */
function iqnPart(id: string): string {
  return id.toLowerCase().replace(/[^a-z0-9.-]/g, "-");
}
