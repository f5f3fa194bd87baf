/**
 * One sync between two volume paths, whatever they are: a volume file (file driver) or an RBD
 * volume path (`rbd:…`, domain/rbd-path.ts). The controller calls this and never needs to know
 * which way the bytes go:
 * - RBD → RBD: Ceph's incremental diffs between `sds-sync-<n>` snapshots (rbd-sync.ts);
 * - any other pair: the chunk engine (sync.ts) with a {@link FileSource}/{@link RbdSource} and a
 *   {@link FileSink}/{@link RbdSink}, its map and journal as for files.
 * Also the few questions the controller asks of a volume path (exists, readable, pool reachable).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { isRbdPath } from "../domain/rbd-path";
import type { ProgressListener } from "../domain/progress";
import { FileSink } from "./file-sink";
import { FileSource } from "./file-source";
import { RbdImage, type RbdTools } from "./rbd-image";
import { syncRbdImages } from "./rbd-sync";
import { RbdSink } from "./rbd-sink";
import { RbdSource } from "./rbd-source";
import { invalidateMap, syncFiles, syncVolume } from "./sync";
import type { SyncSink, SyncSource } from "./sync-sink";

/** What one sync did, whichever way it went (the controller's view). */
export interface PathSyncResult {
  bytesTransferred: number;
  full: boolean;
  lastSyncAt: string;
  durationMs: number;
  /** `engine` (chunk engine), or the RBD → RBD mode (rbd-sync.ts). */
  via: "engine" | "incremental" | "full-diff" | "rbd-engine";
}

/** Options of {@link syncPaths}. */
export interface SyncPathsOptions {
  mapPath: string;
  mapKey: string;
  /** Forget the map first: the destination may have been written by someone else (failback). */
  fresh?: boolean;
  onProgress?: ProgressListener;
  log?: (message: string) => void;
  rbd?: RbdTools;
}

/** Sync the volume at `from` to the volume at `to`. The caller holds the pair's lock. */
export async function syncPaths(from: string, to: string, o: SyncPathsOptions): Promise<PathSyncResult> {
  if (o.fresh) await invalidateMap(o.mapPath);
  if (isRbdPath(from) && isRbdPath(to)) {
    // No `fresh` needed: every RBD → RBD sync checks the destination against the common snapshot.
    const r = await syncRbdImages(from, to, { ...o.rbd, mapPath: o.mapPath, mapKey: o.mapKey, onProgress: o.onProgress, log: o.log });
    return { bytesTransferred: r.bytesTransferred, full: r.full, lastSyncAt: r.lastSyncAt, durationMs: r.durationMs, via: r.mode === "engine" ? "rbd-engine" : r.mode };
  }
  if (!isRbdPath(from) && !isRbdPath(to)) {
    const r = await syncFiles(from, to, o.mapPath, { mapKey: o.mapKey, onProgress: o.onProgress });
    return { bytesTransferred: r.bytesTransferred, full: r.full, lastSyncAt: r.lastSyncAt, durationMs: r.durationMs, via: "engine" };
  }
  // An RBD source offers change tokens (a snapshot of its own): an idle image is not read again.
  const source: SyncSource = isRbdPath(from) ? new RbdSource(from, { ...o.rbd, changeTokens: true }) : new FileSource(from);
  const sink: SyncSink = isRbdPath(to) ? new RbdSink(to, o.rbd) : new FileSink(to);
  try {
    const r = await syncVolume(source, sink, o.mapPath, { mapKey: o.mapKey, onProgress: o.onProgress });
    return { bytesTransferred: r.bytesTransferred, full: r.full, lastSyncAt: r.lastSyncAt, durationMs: r.durationMs, via: "engine" };
  } finally {
    await Promise.allSettled([source.close(), sink.close()]);
  }
}

/** Whether the pair's maps matter: RBD → RBD keeps its state in snapshots, not in a map. */
export function usesChunkMaps(primary: string, secondary: string): boolean {
  return !(isRbdPath(primary) && isRbdPath(secondary));
}

/** The volume exists now (its file, or its RBD image). A cluster that cannot be reached is an error, not "missing". */
export async function volumeExists(p: string, tools?: RbdTools): Promise<boolean> {
  if (isRbdPath(p)) return (await new RbdImage(p, tools).sizeBytes()) !== undefined;
  return fs.existsSync(p);
}

/** The volume can be read now (its file is readable, or its image answers). */
export async function volumeReadable(p: string, tools?: RbdTools): Promise<boolean> {
  if (isRbdPath(p)) return new RbdImage(p, tools).reachable();
  try {
    fs.accessSync(p, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** The volume's pool can be reached (its folder exists, or its image's cluster answers for it). */
export async function poolReachable(p: string, tools?: RbdTools): Promise<boolean> {
  if (isRbdPath(p)) return new RbdImage(p, tools).reachable();
  return fs.existsSync(path.dirname(p));
}

/** Where to show a volume's pool in messages: the folder, or `rbd pool/image`. */
export function poolOf(p: string): string {
  return isRbdPath(p) ? new RbdImage(p).description : path.dirname(p);
}

/** Remove the snapshots replication left on an RBD volume (`sds-sync-…`: a pair is deleted). Not RBD: nothing. */
export async function removeSyncSnapshots(p: string, tools?: RbdTools): Promise<void> {
  if (isRbdPath(p)) await new RbdImage(p, tools).removeReplicationSnaps();
}
