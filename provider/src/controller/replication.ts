/**
 * Replication pairs, async: a primary volume, its secondary on one of the primary
 * backend's `replicationTargets`, and an incremental sync (replication/sync.ts) between them.
 *
 *   create    → the secondary volume (same size, placed on the target backend) + a full sync
 *   enabled   → false pauses the sync (disable_replication), true resumes it with a sync
 *   failover  (activeSide primary → secondary): a last sync when the primary is reachable, then
 *              the primary is fenced: every new export of the volume serves the secondary, which
 *              becomes the volume attachments and extends use. Attachments made before the
 *              failover keep their export of the primary until replaced (a warning names them):
 *              cutting a live LUN under a host would turn a planned failover into an outage.
 *   failback  (secondary → primary): resync secondary → primary first, then unfence
 *   delete    → the secondary volume and the maps go; the primary stays
 *
 * Syncs of one pair are serialized by a store lock (`replicate:<id>`), across processes. A sync
 * between files (or a file and an RBD image) copies a live volume: what it carries is
 * crash-consistent per chunk, not a point-in-time snapshot (the file driver has none). RBD → RBD
 * pairs sync a snapshot of the primary with Ceph's own diffs (replication/rbd-sync.ts): point in
 * time, only what changed is read, and their state is the images' `sds-sync-<n>` snapshots (no
 * map; the failback needs no map adoption). replication/sync-paths.ts picks the way per pair.
 * Both backends must be on this machine's node for now.
 */
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { BackendError, UserError } from "../errors";
import { adoptMap, invalidateMap, lagSeconds, pairStatePaths, type SyncDirection } from "../replication/sync";
import { poolOf, poolReachable, removeSyncSnapshots, syncPaths, usesChunkMaps, volumeExists } from "../replication/sync-paths";

import { withStoreLock } from "../store/lock";
import type { PairRow, Store, StoreOps, VolumeRow } from "../store/store";
import type { ReplicationStatus } from "../domain/status";
import type { ProgressListener, ProgressReporter } from "../domain/progress";
import type { Controller } from "./controller";
import { type NodeAgent, PairTopology, type PairSpec, type SyncSummary } from "./replication-topology";

export { type NodeAgent, type PairSpec, replicationDir, type SyncSummary } from "./replication-topology";

export interface ReplicationOptions {
  store: Store;
  controller: Controller;
  /** Where the chunk maps live (`<state dir>/replication`). */
  stateDir: string;
  now?: () => Date;
  log?: (message: string) => void;
  lockTimeoutMs?: number;
  /**
   * Storage nodes: the agent of a node (backends whose `node` is not local sync there). A node's
   * agent reaches its peers through its own `--peers` file; a sync names the peer by its `hosts` key.
   */
  nodeAgent?: (node: string) => NodeAgent;
}

export class Replication {
  private readonly store: Store;
  private readonly controller: Controller;
  private readonly stateDir: string;
  private readonly now: () => Date;
  private readonly log: (message: string) => void;
  private readonly lockTimeoutMs: number;
  private readonly nodeAgent?: (node: string) => NodeAgent;
  private readonly topology: PairTopology;

  constructor(o: ReplicationOptions) {
    this.store = o.store;
    this.controller = o.controller;
    this.stateDir = o.stateDir;
    this.now = o.now ?? (() => new Date());
    this.log = o.log ?? (() => undefined);
    this.lockTimeoutMs = o.lockTimeoutMs ?? 600_000;
    this.nodeAgent = o.nodeAgent;
    this.topology = new PairTopology(o.controller, o.nodeAgent);
  }

  /** Scheduled syncs: storage nodes run them every rpoSeconds; here only while on the primary and enabled. */
  private async reschedule(row: PairRow, warn: (m: string) => void = () => undefined): Promise<void> {
    if (!(await this.topology.remote(row))) return;
    const { node, spec } = await this.topology.nodeSpec(row, "forward");
    try {
      if (row.enabled && row.activeSide === "primary") await this.nodeAgent!(node).schedulePair(spec, row.rpoSeconds);
      else await this.nodeAgent!(node).unschedulePair(row.id);
    } catch (err) {
      if (row.enabled && row.activeSide === "primary") throw err;
      warn(`replication ${row.id}: could not stop the schedule on node ${node}: ${(err as Error).message}`);
    }
  }

  /** Remote pairs: the node's view of the last scheduled sync, folded into the row (refresh). */
  async refresh(id: string): Promise<PairRow | undefined> {
    const row = await this.store.getPair(id);
    if (!row || !(await this.topology.remote(row)) || row.activeSide !== "primary") return row;
    const status = (await this.nodeAgent!((await this.topology.nodes(row)).primary).pairs()).find((p) => p.pairId === id);
    if (!status?.lastSyncAt || (row.lastSyncAt && status.lastSyncAt <= row.lastSyncAt)) return row;
    return this.store.updatePair(id, { lastSyncAt: status.lastSyncAt, bytesTransferred: Math.max(row.bytesTransferred, status.bytesTransferred), lastError: status.lastError, updatedAt: this.at() });
  }

  private at(): string {
    return this.now().toISOString();
  }

  get(id: string): Promise<PairRow | undefined> {
    return this.store.getPair(id);
  }

  list(): Promise<PairRow[]> {
    return this.store.listPairs();
  }

  /** Seconds since the last completed sync (undefined before the first). */
  lag(row: PairRow): number | undefined {
    return lagSeconds(row.lastSyncAt, this.now());
  }

  /** The pair whose primary is `volumeId`, if any (a volume is the primary of one pair at most). */
  async pairOf(volumeId: string, ops: StoreOps = this.store): Promise<PairRow | undefined> {
    return (await ops.listPairs({ primaryVolumeId: volumeId }))[0];
  }

  /** The volume that serves I/O for `volumeId` now: its secondary while its pair is failed over. */
  async activeVolume(volumeId: string): Promise<VolumeRow | undefined> {
    const pair = await this.pairOf(volumeId);
    if (pair?.activeSide === "secondary" && pair.secondaryVolumeId) return this.controller.getVolume(pair.secondaryVolumeId);
    return this.controller.getVolume(volumeId);
  }

  /** Why a spec cannot make a pair, as [property, reason]; [] when it can. */
  validate(spec: Pick<PairSpec, "primaryVolumeId" | "targetBackend" | "targetPool">): Promise<Array<[string, string]>> {
    return this.topology.validate(spec);
  }

  /**
   * Create a pair: the secondary volume, then a full sync (when enabled). Safe to retry: the same
   * owner gets the pair it made before, and a pair whose first sync failed syncs again.
   */
  async create(owner: string, spec: PairSpec, progress?: ProgressReporter): Promise<PairRow> {
    const problems = await this.validate(spec);
    if (problems.length) throw new UserError("INVALID_INPUT", `${problems[0][0]}: ${problems[0][1]}`, problems[0][0]);
    if (spec.activeSide !== "primary") throw new UserError("INVALID_INPUT", "activeSide: a new pair starts with activeSide primary (fail over by changing it afterwards)", "activeSide");
    const primary = (await this.controller.getVolume(spec.primaryVolumeId))!;
    let row = await this.store.transaction(async (tx) => {
      const existing = await this.pairOf(primary.id, tx);
      if (existing) {
        if (existing.owner !== owner) throw new UserError("CONFLICT", `primaryVolumeId: volume ${primary.name} is already replicated by pair ${existing.id} (${existing.owner})`, "primaryVolumeId");
        return existing;
      }
      const at = this.at();
      const r: PairRow = {
        id: randomUUID(),
        owner,
        primaryVolumeId: primary.id,
        secondaryVolumeId: null,
        targetBackend: spec.targetBackend,
        targetPool: spec.targetPool ?? null,
        rpoSeconds: spec.rpoSeconds,
        enabled: spec.enabled,
        activeSide: "primary",
        status: "enabling",
        lastSyncAt: null,
        bytesTransferred: 0,
        lastError: null,
        createdAt: at,
        updatedAt: at,
      };
      await tx.insertPair(r);
      return r;
    });
    if (!row.secondaryVolumeId) {
      try {
        const secondary = await this.controller.createVolume(`${owner}#secondary`, {
          name: `${primary.name}-replica-${row.id.slice(0, 8)}`,
          sizeGib: primary.sizeGib,
          multiAttach: primary.multiAttach,
          description: `secondary of ${primary.name} (replication pair ${row.id})`,
          metadata: { "sds:replicaOf": primary.id, "sds:pair": row.id },
          placeOn: { backend: spec.targetBackend, pool: spec.targetPool },
        });
        row = await this.store.updatePair(row.id, { secondaryVolumeId: secondary.id, updatedAt: this.at() });
      } catch (err) {
        await this.store.deletePair(row.id);
        throw err;
      }
    }
    if (!spec.enabled) return this.setStatus(row.id, "disabled");
    // Scheduled first, so the node counts the initial sync in the pair's bytes.
    await this.reschedule(row);
    await this.sync(row.id, { reason: "initial sync", progress });
    return this.setStatus(row.id, "enabled");
  }

  /** The pair's status and its primary volume's replicationStatus, changed together. */
  private setStatus(id: string, status: ReplicationStatus, lastError: string | null = null): Promise<PairRow> {
    return this.store.transaction(async (tx) => {
      const row = await tx.updatePair(id, { status, lastError, updatedAt: this.at() });
      await tx.updateVolume(row.primaryVolumeId, { replicationStatus: status, updatedAt: this.at() });
      return row;
    });
  }

  /**
   * Sync one pair now, in the direction its active side gives (forward normally; reverse only
   * for failback). Serialized per pair; counts the bytes and records lastSyncAt. `progress` hears
   * how far the sync got (a storage node's: asked of its agent twice a second).
   */
  async sync(id: string, o: { direction?: SyncDirection; reason?: string; fresh?: boolean; progress?: ProgressReporter } = {}): Promise<SyncSummary> {
    return this.withLock(`replicate:${id}`, async () => {
      const row = await this.store.getPair(id);
      if (!row) throw new UserError("NOT_FOUND", `no replication pair ${id}`);
      const direction = o.direction ?? "forward";
      let r: SyncSummary;
      try {
        if (await this.topology.remote(row)) {
          const { node, spec } = await this.topology.nodeSpec(row, direction, o.fresh);
          const agent = this.nodeAgent!(node);
          r = await withNodeProgress(agent, row.id, o.progress?.(o.reason ?? "sync"), agent.syncPair(spec));
        } else {
          const { primary, secondary } = await this.topology.paths(row);
          const maps = pairStatePaths(this.stateDir, row.id);
          fs.mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
          const [from, to] = direction === "forward" ? [primary, secondary] : [secondary, primary];
          // Files, RBD images or one of each: syncPaths picks the way (RBD → RBD: Ceph's own diffs).
          r = await syncPaths(from, to, { ...maps[direction], fresh: o.fresh, onProgress: o.progress?.(o.reason ?? "sync"), log: this.log });
        }
      } catch (err) {
        await this.store.updatePair(id, { lastError: (err as Error).message, updatedAt: this.at() });
        throw err;
      }
      const bytes = row.bytesTransferred + r.bytesTransferred;
      await this.store.updatePair(id, { lastSyncAt: direction === "forward" ? r.lastSyncAt : row.lastSyncAt, bytesTransferred: bytes, lastError: null, updatedAt: this.at() });
      const nodes = await this.topology.nodes(row);
      this.log(`replication ${row.id} (${o.reason ?? "sync"}, ${direction}${nodes.primary !== "local" ? `, on node ${nodes[direction === "forward" ? "primary" : "secondary"]}` : ""}): ${r.bytesTransferred} bytes sent${r.full ? " (full)" : ""} in ${r.durationMs.toFixed(0)} ms`);
      return r;
    });
  }

  /**
   * Pairs that are enabled, on their primary, and older than their RPO: sync them (the `sds replicate` command and provider start).
   * `progress(pairId)` reports each pair's sync (the CLI's percent and rate).
   */
  async syncDue(o: { all?: boolean; progress?: (pairId: string) => ProgressReporter } = {}): Promise<Array<{ id: string; ok: boolean; bytes?: number; error?: string }>> {
    const out: Array<{ id: string; ok: boolean; bytes?: number; error?: string }> = [];
    for (const row of await this.store.listPairs()) {
      if (!row.enabled || row.activeSide !== "primary" || !["enabled", "failover-error"].includes(row.status)) continue;
      const lag = this.lag(row);
      if (!o.all && lag !== undefined && lag < row.rpoSeconds) continue;
      try {
        const r = await this.sync(row.id, { reason: "scheduled", progress: o.progress?.(row.id) });
        out.push({ id: row.id, ok: true, bytes: r.bytesTransferred });
      } catch (err) {
        // Deleted while this sync waited for the pair's lock: nothing left to sync, not a failure.
        if (err instanceof UserError && err.code === "NOT_FOUND" && !(await this.store.getPair(row.id))) continue;
        out.push({ id: row.id, ok: false, error: (err as Error).message });
      }
    }
    return out;
  }

  /** Change a pair: rpo, enabled, activeSide (failover / failback). Never replaces. */
  async update(id: string, spec: Pick<PairSpec, "rpoSeconds" | "enabled" | "activeSide">, warn: (m: string) => void = () => undefined, progress?: ProgressReporter): Promise<PairRow> {
    let row = await this.store.getPair(id);
    if (!row) throw new UserError("NOT_FOUND", `no replication pair ${id}; run pulumi refresh`);
    if (spec.rpoSeconds !== row.rpoSeconds) {
      row = await this.store.updatePair(id, { rpoSeconds: spec.rpoSeconds, updatedAt: this.at() });
      await this.reschedule(row, warn);
    }
    if (spec.activeSide !== row.activeSide) {
      row = spec.activeSide === "secondary" ? await this.failover(row, warn, progress) : await this.failback(row, progress);
    }
    if (spec.enabled !== row.enabled) {
      row = await this.store.updatePair(id, { enabled: spec.enabled, updatedAt: this.at() });
      await this.reschedule(row, warn);
      if (row.activeSide === "primary") {
        if (spec.enabled) {
          await this.setStatus(id, "enabling");
          await this.sync(id, { reason: "enable", progress });
          row = await this.setStatus(id, "enabled");
        } else {
          row = await this.setStatus(id, "disabled");
        }
      }
    }
    return row;
  }

  /**
   * Fail over: a last sync when the primary can be read (else the data up to the last sync, with a
   * warning), fence the primary, make the secondary the active side. A failure leaves the pair as
   * it was (on the primary), with the reason in its status.
   */
  private async failover(row: PairRow, warn: (m: string) => void, progress?: ProgressReporter): Promise<PairRow> {
    const before = row.status;
    await this.setStatus(row.id, "failing-over");

    try {
      const { primary, secondary } = await this.topology.paths(row);
      if (!(await this.topology.remote(row)) && !(await volumeExists(secondary))) throw new UserError("INVALID_STATE", `the secondary volume ${secondary} is missing`);
      if (await this.topology.primaryReachable(row, primary)) {
        if (row.enabled) await this.sync(row.id, { reason: "last sync before failover", progress });
        const old = await this.store.listAttachments({ volumeId: row.primaryVolumeId });
        if (old.length > 0) warn(`replication ${row.id}: attachment(s) ${old.map((a) => `${a.id} (${a.host}, ${a.mode})`).join(", ")} still export the primary; replace them to move them to the secondary`);
      } else {
        warn(`replication ${row.id}: the primary ${primary} cannot be read: failing over with the data of the last sync (${row.lastSyncAt ?? "never synced"})`);
      }
      // From now on the secondary is written: the forward map no longer describes it (storage
      // nodes: the first forward sync after failback is a fresh one).
      await invalidateMap(pairStatePaths(this.stateDir, row.id).forward.mapPath);
      const moved = await this.store.updatePair(row.id, { activeSide: "secondary", updatedAt: this.at() });
      await this.reschedule(moved, warn);
      return this.setStatus(row.id, "failed-over");
    } catch (err) {
      // Still on the primary, still syncing (syncDue takes failover-error pairs): the status says why.
      void before;
      await this.setStatus(row.id, "failover-error", (err as Error).message);
      throw new UserError("INVALID_STATE", `failover of replication pair ${row.id} failed, the pair stays on its primary: ${(err as Error).message}`);
    }
  }

  /** Fail back: resync secondary → primary (the newest data), unfence the primary, forward again. */
  private async failback(row: PairRow, progress?: ProgressReporter): Promise<PairRow> {
    const { primary, secondary } = await this.topology.paths(row);
    if ((await this.topology.remote(row)) ? !(await this.topology.primaryReachable(row, primary)) : !(await poolReachable(primary))) {
      throw new UserError("INVALID_STATE", `failback of replication pair ${row.id}: the primary's pool ${poolOf(primary)} cannot be reached; the pair stays failed over`);
    }
    await this.setStatus(row.id, "enabling");
    try {
      const maps = pairStatePaths(this.stateDir, row.id);
      await this.sync(row.id, { direction: "reverse", reason: "failback resync", fresh: true, progress });
      if (await this.topology.remote(row)) {
        // The maps live on two nodes: the forward one starts again, comparing digests (only what differs travels).
        await this.sync(row.id, { direction: "forward", reason: "resume after failback", fresh: true, progress });
      } else if (usesChunkMaps(primary, secondary)) {
        // Both sides equal the reverse map now: the forward direction can start from it.
        await adoptMap(maps.reverse.mapPath, maps.forward.mapPath, maps.forward.mapKey);
        await invalidateMap(maps.reverse.mapPath);
      }
      // RBD → RBD: both images hold the reverse sync's snapshot; the next forward sync diffs from it.
      const back = await this.store.updatePair(row.id, { activeSide: "primary", lastSyncAt: this.at(), updatedAt: this.at() });
      await this.reschedule(back);
      return this.setStatus(row.id, row.enabled ? "enabled" : "disabled");
    } catch (err) {
      await this.setStatus(row.id, "failed-over", (err as Error).message);
      throw new UserError("INVALID_STATE", `failback of replication pair ${row.id} failed, the pair stays failed over: ${(err as Error).message}`);
    }
  }

  /** Growing the primary grows the secondary (and the other way round while failed over). */
  async volumeGrew(volumeId: string, sizeGib: number): Promise<VolumeRow | undefined> {
    const pair = await this.pairOf(volumeId);
    if (!pair?.secondaryVolumeId) return undefined;
    const secondary = await this.controller.getVolume(pair.secondaryVolumeId);
    if (secondary && secondary.sizeGib < sizeGib) return this.controller.extendVolume(secondary.id, sizeGib);
    return secondary;
  }

  /**
   * Grow the primary of a failed-over pair: with the driver when the primary can be reached, else
   * only in the state (capacity is counted) with a warning; the failback resync grows the file.
   */
  async growFailedOverPrimary(volumeId: string, sizeGib: number, warn: (m: string) => void = () => undefined): Promise<VolumeRow> {
    const pair = await this.pairOf(volumeId);
    const primary = await this.controller.getVolume(volumeId);
    if (!primary) throw new UserError("NOT_FOUND", `no volume with id "${volumeId}"`);
    if (!pair || (await this.topology.primaryReachable(pair, this.controller.volumePath(primary)))) return this.controller.extendVolume(volumeId, sizeGib);
    if (sizeGib < primary.sizeGib) throw new UserError("INVALID_INPUT", `sizeGib: cannot shrink volume ${primary.name} from ${primary.sizeGib} to ${sizeGib} GiB`, "sizeGib");
    warn(`volume ${primary.name} is failed over and its primary cannot be reached: the secondary grew to ${sizeGib} GiB; the primary takes the new size when it fails back`);
    return this.store.updateVolume(volumeId, { sizeGib, updatedAt: this.at() });
  }

  /** Delete a pair: the secondary volume and the maps go, the primary stays (unfenced). Gone is fine. */
  async delete(id: string, warn: (m: string) => void = () => undefined): Promise<void> {
    const row = await this.store.getPair(id);
    if (!row) return;
    if (row.activeSide === "secondary") {
      // The newest data is on the secondary: it goes back to the primary before the secondary goes.
      warn(`replication ${id} is failed over: failing back (resync to the primary) before removing the secondary`);
      await this.failback(row);
    }
    // Under the pair's sync lock: a sync in flight (one this provider asked for when it started)
    // writes the secondary through the sink, which would make its file again after the delete.
    await this.withLock(`replicate:${id}`, async () => {
      const current = await this.store.getPair(id);
      if (!current) return;
      await this.setStatus(id, "disabling");
      if (await this.topology.remote(current)) await this.reschedule({ ...current, enabled: false }, warn);
      const primary = await this.controller.getVolume(current.primaryVolumeId);
      if (current.secondaryVolumeId) {
        const inUse = await this.store.listAttachments({ volumeId: current.secondaryVolumeId });
        if (inUse.length > 0) {
          throw new UserError("INVALID_STATE", `replication pair ${id}: its secondary volume still has ${inUse.length} attachment(s) (${inUse.map((a) => a.id).join(", ")}); delete them first`);
        }
        await this.controller.deleteVolume(current.secondaryVolumeId);
      }
      // The primary stays: without the snapshots replication made on it (RBD), which only cost space now.
      if (primary) {
        await removeSyncSnapshots(this.controller.volumePath(primary)).catch((err: unknown) => {
          warn(`replication ${id}: could not remove its sds-sync snapshots of ${primary.name}: ${(err as Error).message}; remove them with rbd snap rm`);
        });
      }
      const maps = pairStatePaths(this.stateDir, id);
      await invalidateMap(maps.forward.mapPath);
      await invalidateMap(maps.reverse.mapPath);
      await this.store.transaction(async (tx) => {
        await tx.deletePair(id);
        if (primary) await tx.updateVolume(primary.id, { replicationStatus: "disabled", updatedAt: this.at() });
      });
    });
  }

  private withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const timedOut = (heldBy?: string) => new BackendError("TIMEOUT", `timed out waiting for lock ${name} (another sync of this pair is running${heldBy ? `: held by ${heldBy}` : ""})`, true);
    return withStoreLock(this.store, name, { timeoutMs: this.lockTimeoutMs, timedOut, log: this.log }, fn);
  }
}

/**
 * While a storage node's sync call waits, ask the node how far it got (every 500 ms) and tell
 * `listener`; the end is reported once the call returns. A question the node cannot answer is
 * skipped: progress is a courtesy, the sync call alone decides success.
 */
export async function withNodeProgress<T>(agent: NodeAgent, pairId: string, listener: ProgressListener | undefined, work: Promise<T>): Promise<T> {
  if (!listener) return work;
  const stop = new AbortController();
  const poller = (async () => {
    let total = 0;
    try {
      for (;;) {
        await sleep(500, undefined, { signal: stop.signal });
        const p = await agent.syncProgress(pairId).catch(() => null);
        if (p && !stop.signal.aborted) {
          total = p.totalBytes;
          listener(p);
        }
      }
    } catch {
      // aborted: the sync call returned
    }
    return total;
  })();
  try {
    const r = await work;
    stop.abort();
    const total = await poller;
    if (total > 0) listener({ doneBytes: total, totalBytes: total });
    return r;
  } finally {
    stop.abort();
    await poller;
  }
}
