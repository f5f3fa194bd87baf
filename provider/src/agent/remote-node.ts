/**
 * A storage node reached through its sds-agent: a backend whose `node` names a host in the
 * provider's `hosts` gets a {@link RemoteDriver} and {@link remoteTargets} instead of the local
 * ones, so the controller and the attachment flow run unchanged (and keep their locks in the
 * provider's store) while the bytes, tgtd and nbdkit live on that node.
 *
 * Every call is idempotent by the driver and target contracts, which is what lets the client
 * retry when no response came back.
 */
import type { PoolConfig } from "../domain/backend";
import type { TargetFactory } from "../targets/target";
import { fileVolumePath } from "../drivers/file-driver";
import type { PoolStats, VolumeDriver } from "../drivers/volume-driver";
import { ensureExportByStep, type ExportState, type IscsiExport, type IscsiTarget, type NbdTarget } from "../targets/target";
import type { AgentClient } from "./client";

/** The agent calls a remote node needs (an AgentClient, or a fake in unit tests). */
export type NodeClient = Pick<AgentClient, "driverCall" | "iscsiCall" | "nbdCall">;

export class RemoteDriver implements VolumeDriver {
  constructor(
    private readonly client: NodeClient,
    readonly kind: "file",
  ) {}

  /** Where the file driver keeps a volume: computed here, it is a path on the node. */
  volumePath(pool: PoolConfig, volumeId: string): string {
    return fileVolumePath(pool, volumeId);
  }

  async getPoolStats(pool: PoolConfig): Promise<PoolStats> {
    return (await this.client.driverCall(this.kind, { op: "getPoolStats", args: [pool] })) as PoolStats;
  }

  async createVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    await this.client.driverCall(this.kind, { op: "createVolume", args: [pool, volumeId, sizeBytes] });
  }

  async cloneVolume(source: { pool: PoolConfig; volumeId: string }, pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    await this.client.driverCall(this.kind, { op: "cloneVolume", args: [source, pool, volumeId, sizeBytes] });
  }

  async extendVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    await this.client.driverCall(this.kind, { op: "extendVolume", args: [pool, volumeId, sizeBytes] });
  }

  async deleteVolume(pool: PoolConfig, volumeId: string): Promise<void> {
    await this.client.driverCall(this.kind, { op: "deleteVolume", args: [pool, volumeId] });
  }

  async getVolumeSizeBytes(pool: PoolConfig, volumeId: string): Promise<number | undefined> {
    const r = await this.client.driverCall(this.kind, { op: "getVolumeSizeBytes", args: [pool, volumeId] });
    return typeof r === "number" ? r : undefined;
  }
}

class RemoteIscsiTarget implements IscsiTarget {
  readonly protocol = "iscsi" as const;
  constructor(
    private readonly client: NodeClient,
    readonly portal: string,
  ) {}
  async start(): Promise<void> {
    await this.client.iscsiCall(this.portal, { op: "start", args: [] });
  }
  async stop(): Promise<void> {
    await this.client.iscsiCall(this.portal, { op: "stop", args: [] });
  }
  async ensureTarget(iqn: string, tid?: number): Promise<number> {
    // JSON has no undefined: an absent tid is left out, not sent as null.
    return (await this.client.iscsiCall(this.portal, { op: "ensureTarget", args: tid === undefined ? [iqn] : [iqn, tid] })) as number;
  }
  async ensureLun(tid: number, lun: number, file: string, readOnly: boolean): Promise<void> {
    await this.client.iscsiCall(this.portal, { op: "ensureLun", args: [tid, lun, file, readOnly] });
  }
  async refreshLun(tid: number, lun: number, file: string, readOnly: boolean): Promise<void> {
    await this.client.iscsiCall(this.portal, { op: "refreshLun", args: [tid, lun, file, readOnly] });
  }
  async ensureInitiator(tid: number, initiatorIqn: string): Promise<void> {
    await this.client.iscsiCall(this.portal, { op: "ensureInitiator", args: [tid, initiatorIqn] });
  }
  async ensureChap(tid: number, chap: { username: string; password: string }): Promise<void> {
    await this.client.iscsiCall(this.portal, { op: "ensureChap", args: [tid, chap] });
  }
  ensureExport(e: IscsiExport): Promise<number> {
    return ensureExportByStep(this, e);
  }
  async removeInitiator(tid: number, initiatorIqn: string): Promise<void> {
    await this.client.iscsiCall(this.portal, { op: "removeInitiator", args: [tid, initiatorIqn] });
  }
  async removeLun(tid: number, lun: number): Promise<void> {
    await this.client.iscsiCall(this.portal, { op: "removeLun", args: [tid, lun] });
  }
  async removeTarget(tid: number): Promise<void> {
    await this.client.iscsiCall(this.portal, { op: "removeTarget", args: [tid] });
  }
  async removeChapAccount(username: string): Promise<void> {
    await this.client.iscsiCall(this.portal, { op: "removeChapAccount", args: [username] });
  }
  async list(): Promise<ExportState[]> {
    return (await this.client.iscsiCall(this.portal, { op: "list", args: [] })) as ExportState[];
  }
}

class RemoteNbdTarget implements NbdTarget {
  readonly protocol = "nbd" as const;
  constructor(
    private readonly client: NodeClient,
    readonly host: string,
  ) {}
  async ensureServer(server: string, port: number, readOnly: boolean): Promise<number> {
    const r = await this.client.nbdCall(this.host, { op: "ensureServer", args: [server, port, readOnly] });
    // An agent of round 1 answered nothing: then the server runs where it was asked.
    return typeof r === "number" ? r : port;
  }
  async ensureExport(server: string, exportName: string, file: string): Promise<void> {
    await this.client.nbdCall(this.host, { op: "ensureExport", args: [server, exportName, file] });
  }
  async refreshExport(server: string, exportName: string, file: string): Promise<void> {
    await this.client.nbdCall(this.host, { op: "refreshExport", args: [server, exportName, file] });
  }
  async removeExport(server: string, exportName: string): Promise<void> {
    await this.client.nbdCall(this.host, { op: "removeExport", args: [server, exportName] });
  }
  async removeServer(server: string): Promise<void> {
    await this.client.nbdCall(this.host, { op: "removeServer", args: [server] });
  }
  async list(): Promise<Awaited<ReturnType<NbdTarget["list"]>>> {
    return (await this.client.nbdCall(this.host, { op: "list", args: [] })) as Awaited<ReturnType<NbdTarget["list"]>>;
  }
}

/** The targets of a storage node, driven through its agent. */
export function remoteTargets(client: NodeClient): TargetFactory {
  return { iscsi: (portal) => new RemoteIscsiTarget(client, portal), nbd: (host) => new RemoteNbdTarget(client, host) };
}
