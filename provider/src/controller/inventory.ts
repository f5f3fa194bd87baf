/**
 * What a state holds, as operators ask for it (`sds pools`, `volumes`, `attachments`, `targets`,
 * `replication status`): read-only views joining the rows a person would otherwise look up one by
 * one (a volume's profile name, an attachment's volume name, a target's LUNs and users). Field
 * names are the `--json` output of the CLI: keep them stable.
 */
import type { ActiveSide, AttachmentStatus, ReplicationStatus, VolumeStatus } from "../domain/status";
import { lagSeconds } from "../replication/sync";
import type { Store } from "../store/store";
import type { Controller } from "./controller";

export interface PoolView {
  id: string;
  backend: string;
  pool: string;
  availabilityZone: string;
  storageType: string;
  multiAttach: boolean;
  replication: string | null;
  provisioning: "thin" | "thick";
  totalGib: number;
  freeGib: number;
  provisionedGib: number;
  maxOverSubscriptionRatio: number;
  volumes: number;
}

export interface VolumeView {
  id: string;
  name: string;
  sizeGib: number;
  status: VolumeStatus;
  pool: string;
  backend: string;
  profile: string | null;
  multiAttach: boolean;
  replicationStatus: ReplicationStatus;
  attachments: number;
  owner: string;
  createdAt: string;
}

export interface AttachmentView {
  id: string;
  volumeId: string;
  volume: string | null;
  host: string;
  mode: "rw" | "ro";
  protocol: "iscsi" | "nbd" | "local";
  status: AttachmentStatus;
  target: string | null;
  devicePath: string | null;
  brokenReason: string | null;
  owner: string;
  createdAt: string;
}

export interface TargetView {
  name: string;
  protocol: "iscsi" | "nbd";
  backend: string;
  mode: "rw" | "ro";
  portal: string;
  tid: number | null;
  port: number | null;
  chap: boolean;
  luns: Array<{ lun: number; volumeId: string }>;
  attachments: string[];
}

export interface PairView {
  id: string;
  primaryVolumeId: string;
  primaryVolume: string | null;
  secondaryVolumeId: string | null;
  targetBackend: string;
  activeSide: ActiveSide;
  enabled: boolean;
  status: ReplicationStatus;
  rpoSeconds: number;
  lastSyncAt: string | null;
  /** Seconds since the last completed sync; null before the first. */
  lagSeconds: number | null;
  /** Enabled, on its primary, and its last sync older than its RPO (or none yet): `sds replication sync` would sync it. */
  due: boolean;
  bytesTransferred: number;
  lastError: string | null;
}

export class Inventory {
  constructor(
    private readonly store: Store,
    private readonly controller: Controller,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async pools(): Promise<PoolView[]> {
    const counts = new Map<string, number>();
    for (const v of await this.store.listVolumes()) counts.set(v.poolId, (counts.get(v.poolId) ?? 0) + 1);
    return (await this.controller.pools()).map((p) => ({
      id: p.id,
      backend: p.backendName,
      pool: p.poolName,
      availabilityZone: p.availabilityZone,
      storageType: p.storageType,
      multiAttach: p.multiAttach,
      replication: p.replication ?? null,
      provisioning: p.provisioning,
      totalGib: p.totalGib,
      freeGib: p.freeGib,
      provisionedGib: p.provisionedGib,
      maxOverSubscriptionRatio: p.maxOverSubscriptionRatio,
      volumes: counts.get(p.id) ?? 0,
    }));
  }

  async volumes(): Promise<VolumeView[]> {
    const profiles = new Map((await this.store.listProfiles()).map((p) => [p.id, p.name]));
    const attached = new Map<string, number>();
    for (const a of await this.store.listAttachments()) attached.set(a.volumeId, (attached.get(a.volumeId) ?? 0) + 1);
    return (await this.store.listVolumes()).map((v) => ({
      id: v.id,
      name: v.name,
      sizeGib: v.sizeGib,
      status: v.status,
      pool: v.poolId,
      backend: v.backendName,
      profile: v.profileId ? (profiles.get(v.profileId) ?? v.profileId) : null,
      multiAttach: v.multiAttach,
      replicationStatus: v.replicationStatus,
      attachments: attached.get(v.id) ?? 0,
      owner: v.owner,
      createdAt: v.createdAt,
    }));
  }

  async attachments(): Promise<AttachmentView[]> {
    const names = new Map((await this.store.listVolumes()).map((v) => [v.id, v.name]));
    return (await this.store.listAttachments()).map((a) => ({
      id: a.id,
      volumeId: a.volumeId,
      volume: names.get(a.volumeId) ?? null,
      host: a.host,
      mode: a.mode,
      protocol: a.protocol,
      status: a.status,
      target: a.targetName,
      devicePath: a.devicePath,
      brokenReason: a.brokenReason,
      owner: a.owner,
      createdAt: a.createdAt,
    }));
  }

  /** An attachment by id or by a unique prefix of its id (ids are UUIDs, long to type). */
  async attachment(idOrPrefix: string): Promise<AttachmentView | undefined> {
    const all = await this.attachments();
    const exact = all.find((a) => a.id === idOrPrefix);
    if (exact) return exact;
    const some = all.filter((a) => idOrPrefix.length >= 4 && a.id.startsWith(idOrPrefix));
    return some.length === 1 ? some[0] : undefined;
  }

  async targets(): Promise<TargetView[]> {
    const attachments = await this.store.listAttachments();
    const out: TargetView[] = [];
    for (const t of await this.store.listTargets()) {
      out.push({
        name: t.name,
        protocol: t.protocol,
        backend: t.backendName,
        mode: t.mode,
        portal: t.portal,
        tid: t.tid,
        port: t.port,
        chap: t.chapUser !== null,
        luns: (await this.store.listLuns(t.name)).map((l) => ({ lun: l.lun, volumeId: l.volumeId })),
        attachments: attachments.filter((a) => a.targetName === t.name).map((a) => a.id),
      });
    }
    return out;
  }

  async pairs(): Promise<PairView[]> {
    const names = new Map((await this.store.listVolumes()).map((v) => [v.id, v.name]));
    return (await this.store.listPairs()).map((p) => {
      const lag = lagSeconds(p.lastSyncAt, this.now());
      return {
        id: p.id,
        primaryVolumeId: p.primaryVolumeId,
        primaryVolume: names.get(p.primaryVolumeId) ?? null,
        secondaryVolumeId: p.secondaryVolumeId,
        targetBackend: p.targetBackend,
        activeSide: p.activeSide,
        enabled: p.enabled,
        status: p.status,
        rpoSeconds: p.rpoSeconds,
        lastSyncAt: p.lastSyncAt,
        lagSeconds: lag ?? null,
        due: p.enabled && p.activeSide === "primary" && ["enabled", "failover-error"].includes(p.status) && (lag === undefined || lag >= p.rpoSeconds),
        bytesTransferred: p.bytesTransferred,
        lastError: p.lastError,
      };
    });
  }
}
