/**
 * Where a replication pair lives: the nodes of its two volumes (this machine, or storage nodes
 * whose agents run the syncs), the files on them, and the sync spec an agent is given. Pure
 * lookups on the controller's configuration and state; no I/O of its own.
 */
import * as os from "node:os";
import * as path from "node:path";
import type { AgentClient } from "../agent/client";
import type { SyncSpec } from "../agent/api";
import type { ActiveSide } from "../domain/status";
import { UserError } from "../errors";
import type { SyncDirection } from "../replication/sync";
import { volumeReadable } from "../replication/sync-paths";
import type { PairRow } from "../store/store";
import type { Controller } from "./controller";

/** What one sync did, wherever it ran. */
export interface SyncSummary {
  bytesTransferred: number;
  full: boolean;
  lastSyncAt: string;
  durationMs: number;
}

/** The agent calls replication needs of a storage node. */
export type NodeAgent = Pick<AgentClient, "syncPair" | "syncProgress" | "schedulePair" | "unschedulePair" | "pairs" | "health">;

/** Chunk maps of replication pairs: beside the state database (`.sds/replication`). */
export function replicationDir(stateFile: string): string {
  return path.join(stateFile === ":memory:" ? os.tmpdir() : path.dirname(stateFile), "replication");
}

export interface PairSpec {
  primaryVolumeId: string;
  targetBackend: string;
  targetPool?: string;
  rpoSeconds: number;
  enabled: boolean;
  activeSide: ActiveSide;
}

export class PairTopology {
  constructor(
    private readonly controller: Controller,
    private readonly nodeAgent?: (node: string) => NodeAgent,
  ) {}

  /** Why a spec cannot make a pair, as [property, reason]; [] when it can. */
  async validate(spec: Pick<PairSpec, "primaryVolumeId" | "targetBackend" | "targetPool">): Promise<Array<[string, string]>> {
    const v = await this.controller.getVolume(spec.primaryVolumeId);
    if (!v) return [["primaryVolumeId", `no volume with id "${spec.primaryVolumeId}"`]];
    const { backend, pool } = this.controller.locate(v);
    const targets = backend.replicationTargets.map((t) => t.backend);
    if (!targets.includes(spec.targetBackend)) {
      return [["targetBackend", `backend ${backend.name} (volume ${v.name}) does not replicate to "${spec.targetBackend}"; its replicationTargets: ${targets.join(", ") || "none"}`]];
    }
    if (pool.replication !== "async") return [["primaryVolumeId", `volume ${v.name} is on pool ${backend.name}/${pool.name}, which does not report replication: async; place it with a profile asking "capabilities:replication": "<is> true"`]];
    const target = this.controller.backendConfigs().find((b) => b.name === spec.targetBackend)!;
    if (spec.targetPool !== undefined && !target.pools.some((p) => p.name === spec.targetPool)) {
      return [["targetPool", `backend ${target.name} has no pool "${spec.targetPool}" (pools: ${target.pools.map((p) => p.name).join(", ")})`]];
    }
    if ((backend.node === "local") !== (target.node === "local")) {
      return [["targetBackend", `backend ${backend.name} is on node ${backend.node} and ${target.name} on node ${target.node}: replication runs between two storage nodes (in their agents) or on this machine, not between the two`]];
    }
    if (backend.node !== "local" && !this.nodeAgent) return [["targetBackend", "replication between storage nodes needs their agents in the provider's hosts"]];
    return [];
  }

  /** The primary can be read: its file or RBD image (this machine), or its node's agent answers. */
  async primaryReachable(row: PairRow, file: string): Promise<boolean> {
    if (!(await this.remote(row))) return volumeReadable(file);
    try {
      await this.nodeAgent!((await this.nodes(row)).primary).health();
      return true;
    } catch {
      return false;
    }
  }

  /** The nodes of a pair's two volumes. */
  async nodes(row: Pick<PairRow, "primaryVolumeId" | "targetBackend">): Promise<{ primary: string; secondary: string }> {
    const v = await this.controller.getVolume(row.primaryVolumeId);
    const primary = v ? this.controller.locate(v).backend.node : "local";
    const secondary = this.controller.backendConfigs().find((b) => b.name === row.targetBackend)?.node ?? "local";
    return { primary, secondary };
  }

  /** Syncs of this pair run in storage node agents (both volumes on nodes), not here. */
  async remote(row: Pick<PairRow, "primaryVolumeId" | "targetBackend">): Promise<boolean> {
    return (await this.nodes(row)).primary !== "local";
  }

  /**
   * One direction of a pair as a storage node agent runs it: on the source's node, naming the
   * sink's node (its `hosts` key) as the peer when it is another; the source's agent finds that
   * name in its own `--peers` file.
   */
  async nodeSpec(row: PairRow, direction: SyncDirection, fresh = false): Promise<{ node: string; spec: SyncSpec }> {
    const { primary, secondary } = await this.paths(row);
    const n = await this.nodes(row);
    const [fromNode, toNode, source, sink] = direction === "forward" ? [n.primary, n.secondary, primary, secondary] : [n.secondary, n.primary, secondary, primary];
    const spec: SyncSpec = { pairId: row.id, direction, source, sink, ...(fromNode !== toNode ? { peer: toNode } : {}), ...(fresh ? { fresh } : {}) };
    return { node: fromNode, spec };
  }

  async paths(row: PairRow): Promise<{ primary: string; secondary: string }> {
    const p = await this.controller.getVolume(row.primaryVolumeId);
    const s = row.secondaryVolumeId ? await this.controller.getVolume(row.secondaryVolumeId) : undefined;
    if (!p || !s) throw new UserError("INVALID_STATE", `replication pair ${row.id}: its ${p ? "secondary" : "primary"} volume is gone`);
    return { primary: this.controller.volumePath(p), secondary: this.controller.volumePath(s) };
  }
}
