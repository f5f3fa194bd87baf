/**
 * RBD → RBD syncs with Ceph's own incremental diffs: each sync snapshots the source
 * (`sds-sync-<n>`) and sends `rbd export-diff --from-snap sds-sync-<m>` (m = the newest snapshot
 * both sides have) into `rbd import-diff`, which applies it and makes `sds-sync-<n>` on the
 * destination too. So a sync reads only what changed since the last one (the object map tells
 * librbd where), sends a point-in-time image (a snapshot, unlike the chunk engine's live read),
 * and the state of the pair lives in the two images' snapshots, not in a map file.
 *
 * Why it is correct: a destination's `sds-sync-<m>` was made by import-diff right after it applied
 * the diff up to the source's `sds-sync-<m>`, so the two snapshots hold the same bytes; and the
 * diff from m to n carries every extent written between them. What it needs is a destination
 * head equal to its `sds-sync-<m>`: before applying, `rbd diff --from-snap sds-sync-<m>` of the
 * destination is asked (metadata only with fast-diff); a destination written since (the old
 * primary after a failover that could not reach it, or anyone writing a secondary) is rolled
 * back to `sds-sync-<m>` first (server-side, no data through us). That is the failback answer:
 * the first reverse sync after a failover reads only what the secondary took since the last
 * common snapshot, and the writes the old primary took after it are undone, as the chunk
 * engine's digest path would undo them, at the cost of a rollback instead of two full reads.
 *
 * No common snapshot (first sync, or snapshots removed by hand):
 * - destination without data (`rbd diff` empty: a new secondary): the whole source as one diff
 *   (`export-diff` without `--from-snap`, allocated extents only);
 * - destination with data: the chunk engine's digest path (sync.ts, seeded from the destination's
 *   digests) from the source's new snapshot into the destination, its end snapshot made by the
 *   same import-diff stream; only differing chunks travel and regions that are zeros on the source
 *   are zeroed. A full diff would leave the destination's extra data in place.
 *
 * Snapshots: after a sync both sides keep only the newest `sds-sync-<n>`; a failed sync leaves
 * its new source snapshot, removed by the next successful one. Nothing else of an image is ever
 * touched. Locking: as for the engine, the caller holds the pair's lock.
 */
import * as fs from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { BackendError } from "../errors";
import type { ProgressListener } from "../domain/progress";
import { writeInput } from "../exec/stream";
import { throwIfAborted } from "./chunk-scan";
import { encodeRecord, RBD_DIFF_BANNER, readRbdDiff, type RbdDiffRecord, type RbdDiffStats } from "./rbd-diff";
import { RbdImage, SYNC_SNAP_PREFIX, type RbdTools } from "./rbd-image";
import { RbdSink } from "./rbd-sink";
import { RbdSource } from "./rbd-source";
import { invalidateMap, syncVolume } from "./sync";

/** Options of {@link syncRbdImages}. */
export interface RbdSyncOptions extends RbdTools {
  /** Where the chunk engine keeps its map when it is used (no common snapshot, destination with data); removed after. */
  mapPath: string;
  mapKey?: string;
  signal?: AbortSignal;
  now?: () => Date;
  onProgress?: ProgressListener;
  log?: (message: string) => void;
}

/** What an RBD → RBD sync did. */
export interface RbdSyncResult {
  /** `incremental` (diff since the common snapshot), `full-diff` (whole source into an empty destination), `engine` (digest path). */
  mode: "incremental" | "full-diff" | "engine";
  /** True unless incremental (the same sense as the engine's `full`). */
  full: boolean;
  fromSnap?: string;
  toSnap: string;
  /** The destination had been written since the common snapshot and was rolled back to it first. */
  rolledBack: boolean;
  /** Bytes sent to the destination: the diff stream (data plus 17 bytes a record), or the engine's data bytes. */
  bytesTransferred: number;
  /** Data bytes read from the source: `w` records of the diff, or the engine's reads. */
  bytesRead: number;
  sourceSizeBytes: number;
  startedAt: string;
  finishedAt: string;
  lastSyncAt: string;
  durationMs: number;
}

const snapName = (n: number) => `${SYNC_SNAP_PREFIX}${n}`;

/**
 * Sync the RBD volume `sourcePath` to the RBD volume `sinkPath` (volume paths, domain/rbd-path.ts).
 * The destination is created (thin) when missing. Safe to rerun after any failure.
 */
export async function syncRbdImages(sourcePath: string, sinkPath: string, o: RbdSyncOptions): Promise<RbdSyncResult> {
  const now = o.now ?? (() => new Date());
  const started = now();
  const t0 = process.hrtime.bigint();
  const src = new RbdImage(sourcePath, o);
  const dst = new RbdImage(sinkPath, o);
  if (src.path.snap !== undefined || dst.path.snap !== undefined) throw new BackendError("COMMAND_FAILED", `replication between RBD images needs their heads, not snapshots (${src.readSpec} → ${dst.readSpec})`, false);
  throwIfAborted(o.signal);

  // Independent questions at once: each rbd run costs a connection to the cluster (0.1–0.5 s).
  const [sourceSizeBytes, sinkSize, srcGens, dstGens] = await Promise.all([src.sizeBytes(), dst.sizeBytes(), src.syncGenerations(), dst.syncGenerations()]);
  if (sourceSizeBytes === undefined) throw new BackendError("COMMAND_FAILED", `replication source ${src.description} does not exist`, false);
  if (sinkSize === undefined) await dst.resize(sourceSizeBytes);
  const common = srcGens.filter((g) => dstGens.includes(g)).pop();
  const next = Math.max(0, ...srcGens, ...dstGens) + 1;
  const toSnap = snapName(next);
  await src.createSnap(toSnap);

  let mode: RbdSyncResult["mode"];
  let bytesTransferred: number;
  let bytesRead: number;
  let rolledBack = false;
  const fromSnap = common !== undefined ? snapName(common) : undefined;
  if (fromSnap !== undefined) {
    mode = "incremental";
    if ((await dst.extents(fromSnap)).length > 0) {
      o.log?.(`replication ${dst.description}: written since ${fromSnap}; rolling it back to ${fromSnap} before the diff`);
      await dst.rollback(fromSnap);
      rolledBack = true;
    }
  } else {
    mode = (await dst.extents()).length === 0 ? "full-diff" : "engine";
  }
  throwIfAborted(o.signal);

  if (mode === "engine") {
    await invalidateMap(o.mapPath);
    const source = new RbdSource(src.at(toSnap));
    const sink = new RbdSink(dst, { endSnapshot: toSnap });
    try {
      const r = await syncVolume(source, sink, o.mapPath, { mapKey: o.mapKey, signal: o.signal, onProgress: o.onProgress, now: o.now });
      bytesTransferred = r.bytesTransferred;
      bytesRead = r.bytesRead;
    } finally {
      await Promise.allSettled([source.close(), sink.close()]);
      await invalidateMap(o.mapPath);
      await fs.rm(`${o.mapPath}.tmp`, { force: true });
    }
    // Nothing differed: no stream ran, so no import-diff made the end snapshot.
    if (!(await dst.syncGenerations()).includes(next)) await dst.createSnap(toSnap);
  } else {
    const stats = await pipeDiff(src, dst, fromSnap, toSnap, sourceSizeBytes, o);
    bytesTransferred = stats.streamBytes;
    bytesRead = stats.dataBytes;
  }

  // Both sides hold `toSnap` with the same bytes now: older sync snapshots only cost space.
  await Promise.all([src.removeSyncSnaps([next], srcGens), dst.removeSyncSnaps([next], dstGens)]);
  o.onProgress?.({ doneBytes: sourceSizeBytes, totalBytes: sourceSizeBytes });
  const finished = now();
  return {
    mode, full: mode !== "incremental", fromSnap, toSnap, rolledBack, bytesTransferred, bytesRead, sourceSizeBytes,
    startedAt: started.toISOString(), finishedAt: finished.toISOString(), lastSyncAt: started.toISOString(),
    durationMs: Number(process.hrtime.bigint() - t0) / 1e6,
  };
}

/**
 * `rbd export-diff [--from-snap from] src@to -` into `rbd import-diff - dst`, relayed through
 * us: each record is checked (rbd-diff.ts) and counted, and progress told, on its way. Nothing is
 * written to disk. Either side failing stops both; the error of the side that failed first is
 * the one thrown (a broken pipe on the other is its consequence).
 */
async function pipeDiff(src: RbdImage, dst: RbdImage, fromSnap: string | undefined, toSnap: string, sizeBytes: number, o: RbdSyncOptions): Promise<RbdDiffStats> {
  const exp = src.spawn("rbd", [...src.clusterArgs(), "export-diff", "--no-progress", ...(fromSnap !== undefined ? ["--from-snap", fromSnap] : []), `${src.spec}@${toSnap}`, "-"], { stdout: true });
  const imp = dst.spawn("rbd", [...dst.clusterArgs(), "import-diff", "--no-progress", "-", dst.spec], { stdin: true });
  const stats: RbdDiffStats = { streamBytes: 0, dataBytes: 0 };
  let sent = 0;
  const put = async (b: Buffer) => {
    sent += b.length;
    await writeInput(imp, b);
  };
  let firstFailure: unknown;
  const note = (err: unknown) => {
    firstFailure ??= err;
  };
  exp.done.catch(note);
  imp.done.catch(note);
  try {
    await put(RBD_DIFF_BANNER);
    for await (const r of readRbdDiff(exp.stdout!)) {
      throwIfAborted(o.signal);
      // Zeros inside a written extent travel as zero records (17 bytes, and a hole over there):
      // Ceph reports an object made since the last snapshot from its start to its last write, and
      // export-diff sends that extent as data when any of it is not zeros.
      for (const rec of r.type === "write" ? splitZeros(r.offset, r.data) : [r]) for (const part of encodeRecord(rec)) await put(part);
      if (r.type === "write") {
        stats.dataBytes += r.data.length;
        o.onProgress?.({ doneBytes: Math.min(sizeBytes, r.offset + r.data.length), totalBytes: sizeBytes });
      }
    }
    imp.stdin!.end();
    await exp.done;
    await imp.done;
  } catch (err) {
    // A command that failed on its own before we stopped anything says why.
    const own = firstFailure;
    // A cut or bad stream: export-diff's exit status usually lands just after the stream ended.
    const exportEnd = own || (err instanceof BackendError && err.code === "CANCELLED") ? undefined : await Promise.race([exp.done.then(() => undefined, (e: unknown) => e), sleep(2000, undefined, { ref: false })]);
    exp.kill();
    imp.kill();
    await Promise.allSettled([exp.done, imp.done]);
    throw own ?? exportEnd ?? err;
  }
  stats.streamBytes = sent;
  return stats;
}

/** Zero-check unit when splitting a written extent (a multiple of 4 KiB, small against an object). */
const ZERO_UNIT_BYTES = 64 << 10;
const ZEROS = Buffer.alloc(ZERO_UNIT_BYTES);

/**
 * A `w` record's data as `write` and `zero` records: runs of all-zero {@link ZERO_UNIT_BYTES}
 * units (counted from the record's start) become `zero` records, the rest stays data, in order.
 */
export function splitZeros(offset: number, data: Buffer): RbdDiffRecord[] {
  const out: RbdDiffRecord[] = [];
  let runStart = 0;
  let runZero: boolean | undefined;
  const close = (end: number) => {
    if (runZero === undefined || end === runStart) return;
    out.push(runZero ? { type: "zero", offset: offset + runStart, length: end - runStart } : { type: "write", offset: offset + runStart, data: data.subarray(runStart, end) });
  };
  for (let at = 0; at < data.length; at += ZERO_UNIT_BYTES) {
    const n = Math.min(ZERO_UNIT_BYTES, data.length - at);
    const zero = data.subarray(at, at + n).equals(ZEROS.subarray(0, n));
    if (zero !== runZero) {
      close(at);
      runStart = at;
      runZero = zero;
    }
  }
  close(data.length);
  return out;
}
