/**
 * The incremental sync engine of async replication: copy a source volume to a destination so that
 * after the first copy only changed chunks travel.
 *
 * How: the source is read in chunks (size chosen per pair, see {@link chooseChunkSizeBytes}), holes skipped (extents when the file system
 * tells them, a zero check otherwise), each non-zero chunk hashed (sha256 by default, see
 * chunk-scan.ts for the measurements) and compared with the chunk map of the previous sync
 * (chunk-map.ts). Changed chunks go to the {@link SyncSink} in batches; chunks that became zeros are
 * zeroed (hole punched) on the destination; zero chunks never travel. The map is saved only after
 * the sink flushed; a journal of chunks being written (fdatasync'd before each batch) makes a
 * failed or cancelled sync safe to rerun: it resends what may have landed, nothing else.
 *
 * Unchanged source: a source that offers {@link SyncSource.changeToken} gets its token taken before
 * each sync reads, saved next to the map (`<map>.source`, tied to the map's generation). When the
 * next sync's token is the same, the map is complete and no journal amends it, nothing was written
 * since the previous sync read the source: that sync returns without reading (`sourceUnchanged`).
 * An idle volume then costs a stat per sync instead of a read and hash of all its data.
 *
 * No map (first sync, lost state file, other chunk size or hash, other key): a full sync. Onto a
 * new or empty destination it sends the source's data only; onto an existing one it first asks the
 * sink for digests of its own content (`readDigests`) so only chunks that really differ travel.
 *
 * Sizes: volumes only grow. A source larger than the destination grows the destination first; a
 * source smaller than the map or than the destination is an `INVALID_STATE` error.
 *
 * Locking: the caller must hold one lock per replication pair for the whole sync (and around
 * {@link invalidateMap} and {@link adoptMap}); two syncs of one pair at once would corrupt the
 * destination and the map. Nothing here locks.
 *
 * Consistency: a sync of a volume in use copies each chunk as it is when read, so the copy is not a
 * point-in-time image unless the caller syncs a snapshot or a quiesced volume. Every write made
 * before `startedAt` is on the destination when the sync returns (hence `lastSyncAt = startedAt`),
 * and later writes are caught by the next sync, so the copy converges.
 *
 * Directions and failback: a map belongs to one direction (its key says which; see
 * {@link pairStatePaths}) and is valid only while nobody but the sync writes the destination.
 * 1. Failover (the application starts writing the secondary): {@link invalidateMap} the forward map.
 * 2. Failback: sync secondary → primary with the reverse map path and key. The first reverse sync
 *    has no map: it reads the primary's digests (sink `readDigests`) and sends only chunks that
 *    differ, which also undoes writes the primary took after its last forward sync and that never
 *    reached the secondary. Repeat (now incremental) while the secondary is still in use to shrink
 *    the cut-over; then stop writes on the secondary, run a last reverse sync, and
 *    {@link adoptMap} the reverse map as the forward map (both sides are equal to it now).
 * 3. Forward syncs resume incrementally. Skipping `adoptMap` is safe too: the next forward sync is
 *    then a full one, seeded from the secondary's digests.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { UserError, invalidInput } from "../errors";
import type { ProgressListener } from "../domain/progress";
import { ChunkMap, Journal, journalPath, readChunkMap, readJournal, toRuns, writeChunkMap, writeFileAtomic, type StoredChunkMap } from "./chunk-map";
import { scanChunks, throwIfAborted, type ScannedChunk } from "./chunk-scan";
import { FileSink, type FileSinkOptions } from "./file-sink";
import { FileSource, type ExtentMode } from "./file-source";
import type { ByteRange, ChunkHashAlgorithm, SinkChunk, SyncSink, SyncSource } from "./sync-sink";

/** Largest chunk the engine chooses (the only size before per-pair choice): 1 MiB. */
export const DEFAULT_CHUNK_SIZE_BYTES = 1 << 20;
/** Smallest chunk the engine chooses: 64 KiB. */
export const MIN_AUTO_CHUNK_SIZE_BYTES = 64 << 10;
/** Chunks per map the engine aims at most for (32 MiB of sha256 digests, as a 1 TiB volume had at 1 MiB). */
export const MAX_AUTO_CHUNKS = 1 << 20;

/**
 * The chunk size of a new pair's map: the smallest power of two from 64 KiB to 1 MiB that keeps
 * the map within {@link MAX_AUTO_CHUNKS} chunks (volumes over 1 TiB get 1 MiB and a bigger map).
 *
 * Why: a change travels as whole chunks, so a write of W bytes at a random 4 KiB-aligned offset
 * sends about W + chunk bytes: 1.25 × for 4 MiB writes at 1 MiB chunks, 1.016 × at 64 KiB. Finer
 * chunks cost map size (32 bytes a chunk, read and rewritten each sync) and per-chunk work
 * (hashing stays near the same MiB/s: see bench/replication). So the size follows the volume:
 * 64 KiB up to 64 GiB, 128 KiB to 128 GiB, 256 KiB (1.06 ×) to 256 GiB, then 512 KiB and 1 MiB.
 */
export function chooseChunkSizeBytes(sizeBytes: number): number {
  let chunk = MIN_AUTO_CHUNK_SIZE_BYTES;
  while (chunk < DEFAULT_CHUNK_SIZE_BYTES && Math.ceil(sizeBytes / chunk) > MAX_AUTO_CHUNKS) chunk *= 2;
  return chunk;
}
/** Default chunk hash (see chunk-scan.ts for why). */
export const DEFAULT_HASH_ALGORITHM: ChunkHashAlgorithm = "sha256";
/** Default bytes per `writeChunks` call (one HTTP request for a remote sink). */
export const DEFAULT_BATCH_BYTES = 8 << 20;

/** Options of {@link syncVolume}. */
export interface SyncOptions {
  /**
   * Multiple of 4096, 4 KiB to 64 MiB. Changing it means a full sync. Default: the usable map's
   * (a pair keeps its chunk size), else {@link chooseChunkSizeBytes} of the source's size.
   */
  chunkSizeBytes?: number;
  /** Default {@link DEFAULT_HASH_ALGORITHM}. Changing it means a full sync. */
  algorithm?: ChunkHashAlgorithm;
  /**
   * Which pair and direction the map belongs to; a map saved under another key is ignored (full
   * sync). Default `""` for {@link syncVolume}; {@link syncFiles} defaults to `"<source> -> <sink>"`.
   */
  mapKey?: string;
  /** Data bytes per `writeChunks` call. Default {@link DEFAULT_BATCH_BYTES}. */
  batchBytes?: number;
  /** Source reads in flight. Default 2. */
  readAhead?: number;
  /** Full sync onto an existing destination: compare with its digests first. Default true. */
  seedFromSink?: boolean;
  /** Aborts between chunks with a retryable `CANCELLED` error; the next sync resumes safely. */
  signal?: AbortSignal;
  /** Clock, for tests. */
  now?: () => Date;
  /** Told after each scanned chunk how far the scan got (bytes of the source), and once more at the end. */
  onProgress?: ProgressListener;
}

/** Where the time went, in ms of the sync loop's wall clock. Reads and sink writes overlap with hashing, so the parts need not add up. */
export interface SyncTimings {
  /** Extent query of the source (filefrag). */
  extentsMs: number;
  /** Waiting for source reads. */
  readMs: number;
  zeroCheckMs: number;
  hashMs: number;
  /** Full sync onto an existing destination: the sink reading its own digests. */
  seedMs: number;
  /** Waiting for the sink's writes and zeroing (one batch is in flight while the next is scanned). */
  sinkWaitMs: number;
  /** fdatasync of the journal before each batch. */
  journalMs: number;
  /** The sink's final flush (fdatasync). */
  flushMs: number;
  /** Saving the map (atomic write). */
  mapWriteMs: number;
}

/** What a sync did. */
export interface SyncResult {
  /** True when no usable map existed: every chunk was compared with the sink's digests, or sent. */
  full: boolean;
  /** True when a full sync compared with the destination's own digests first. */
  seeded: boolean;
  /** Data bytes sent to the sink (zeroed ranges are not counted: they carry no data). */
  bytesTransferred: number;
  chunksSent: number;
  /** Chunks that were data (or unknown) on the destination and zeros on the source. */
  chunksZeroed: number;
  bytesZeroed: number;
  chunksScanned: number;
  /** Volume bytes covered by the scan (the source size). */
  bytesScanned: number;
  /** Source bytes actually read (holes per the extents are not read). */
  bytesRead: number;
  sourceSizeBytes: number;
  /** Destination size before the sync; `undefined` when it did not exist. */
  sinkSizeBeforeBytes: number | undefined;
  /** How holes were found: `filefrag` extents, or reading everything (`zero-check`); `unchanged`: nothing read. */
  extentSource: "filefrag" | "zero-check" | "unchanged";
  /** True when the source's change token matched the last sync's: nothing was read or sent. */
  sourceUnchanged: boolean;
  /** Generation of the map saved by this sync. */
  generation: number;
  /** Chunk size of the pair's map (the unit a change travels in). */
  chunkSizeBytes: number;
  /** ISO time the sync started; every write made before it is on the destination. */
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  /** Same as `startedAt`: what `lastSyncAt` of the pair becomes. */
  lastSyncAt: string;
  timings: SyncTimings;
}

const elapsed = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

function checkOptions(options: SyncOptions): { algorithm: ChunkHashAlgorithm } {
  const chunkSizeBytes = options.chunkSizeBytes;
  if (chunkSizeBytes !== undefined && (!Number.isInteger(chunkSizeBytes) || chunkSizeBytes % 4096 !== 0 || chunkSizeBytes < 4096 || chunkSizeBytes > 64 << 20)) {
    throw invalidInput("chunkSizeBytes", `must be a multiple of 4096 from 4 KiB to 64 MiB, got ${chunkSizeBytes}`);
  }
  const algorithm = options.algorithm ?? DEFAULT_HASH_ALGORITHM;
  if (!["sha256", "sha1", "md5"].includes(algorithm)) throw invalidInput("algorithm", `unknown hash ${algorithm}`);
  return { algorithm };
}

/**
 * Sync `source` to `sink`, keeping the chunk map in `mapPath` (and its journal next to it).
 * The caller holds the pair's lock. Safe to rerun after any failure.
 */
export async function syncVolume(source: SyncSource, sink: SyncSink, mapPath: string, options: SyncOptions = {}): Promise<SyncResult> {
  const { algorithm } = checkOptions(options);
  const now = options.now ?? (() => new Date());
  const key = options.mapKey ?? "";
  const { signal } = options;
  const started = now();
  const t0 = process.hrtime.bigint();
  const timings: SyncTimings = { extentsMs: 0, readMs: 0, zeroCheckMs: 0, hashMs: 0, seedMs: 0, sinkWaitMs: 0, journalMs: 0, flushMs: 0, mapWriteMs: 0 };

  throwIfAborted(signal);
  // Before anything is read: every write after this moment changes the token (see SyncSource).
  const token = await source.changeToken?.();
  const sourceSize = await source.sizeBytes();
  const sinkSize = await sink.sizeBytes();
  const stored = await readChunkMap(mapPath);
  const chunkSizeBytes = options.chunkSizeBytes ?? ("map" in stored && stored.key === key ? stored.map.chunkSizeBytes : chooseChunkSizeBytes(sourceSize));
  const batchBytes = Math.max(chunkSizeBytes, options.batchBytes ?? DEFAULT_BATCH_BYTES);
  const usable = "map" in stored && stored.key === key && stored.map.chunkSizeBytes === chunkSizeBytes && stored.map.algorithm === algorithm ? stored : undefined;
  if (usable && sourceSize < usable.map.sizeBytes) {
    throw new UserError("INVALID_STATE", `replication source ${source.description} shrank from ${usable.map.sizeBytes} to ${sourceSize} bytes; volumes only grow`);
  }
  if (sinkSize !== undefined && sinkSize > sourceSize) {
    throw new UserError("INVALID_STATE", `replication destination ${sink.description} (${sinkSize} bytes) is larger than its source ${source.description} (${sourceSize} bytes)`);
  }

  // The base: what we believe the destination holds, chunk by chunk.
  let base: ChunkMap;
  let full = false;
  let seeded = false;
  let generation = 0;
  let journal: Journal | undefined;
  if (usable && sinkSize !== undefined && sinkSize >= usable.map.sizeBytes) {
    base = usable.map;
    generation = usable.generation;
    const pending = await readJournal(journalPath(mapPath));
    const amends = pending?.generation === generation;
    if (!amends && token !== undefined && sourceSize === usable.map.sizeBytes && (await readSourceToken(mapPath, generation)) === token) {
      const finished = now();
      return {
        full: false, seeded: false, bytesTransferred: 0, chunksSent: 0, chunksZeroed: 0, bytesZeroed: 0,
        chunksScanned: 0, bytesScanned: 0, bytesRead: 0, sourceSizeBytes: sourceSize, sinkSizeBeforeBytes: sinkSize,
        extentSource: "unchanged", sourceUnchanged: true, generation, chunkSizeBytes,
        startedAt: started.toISOString(), finishedAt: finished.toISOString(), durationMs: elapsed(t0),
        lastSyncAt: started.toISOString(), timings,
      };
    }
    if (amends) for (const [first, count] of pending.runs) base.markUnknown(first, count);
    // Beyond the map's size the destination holds zeros (it was only ever grown), except chunks
    // an unfinished sync wrote: those are in the journal, now unknown.
    base.grow(sourceSize);
    journal = await Journal.open(journalPath(mapPath), generation, amends);
  } else {
    full = true;
    // No stale map may look valid after a crash in the middle of this sync.
    await invalidateMap(mapPath);
    if (sinkSize === undefined || sinkSize === 0) {
      base = ChunkMap.zeros(chunkSizeBytes, algorithm, sourceSize);
    } else if (options.seedFromSink ?? true) {
      const t = process.hrtime.bigint();
      const d = await sink.readDigests(chunkSizeBytes, algorithm, signal);
      timings.seedMs = elapsed(t);
      base = ChunkMap.fromDigests(chunkSizeBytes, algorithm, d.sizeBytes, d.digests);
      base.grow(sourceSize);
      seeded = true;
    } else {
      base = ChunkMap.unknown(chunkSizeBytes, algorithm, sinkSize);
      base.grow(sourceSize);
    }
  }

  let bytesTransferred = 0;
  let chunksSent = 0;
  let chunksZeroed = 0;
  let bytesZeroed = 0;
  // Data of the batch, copied once into an arena (the scan reuses its buffers, and the sink must
  // get exactly the bytes hashed), as runs of adjacent chunks: adjacent chunks are adjacent in the
  // arena, so each run travels as one SinkChunk (fewer writes and, for a remote sink, fewer entries
  // in the request), whatever the chunk size. A batch is sent once it reaches batchBytes, so it
  // never holds more than batchBytes + one chunk.
  const arenaBytes = batchBytes + chunkSizeBytes;
  let arena = Buffer.allocUnsafe(0);
  let dataBatch: Array<{ offset: number; at: number; length: number }> = [];
  let dataBytes = 0;
  let zeroBatch: ByteRange[] = [];
  let batchIndices: number[] = [];
  let inflight: Promise<void> = Promise.resolve();
  let failure: unknown;

  const waitSink = async () => {
    const t = process.hrtime.bigint();
    await inflight;
    timings.sinkWaitMs += elapsed(t);
    if (failure) throw failure;
  };
  const sendBatch = async () => {
    if (batchIndices.length === 0) return;
    const chunks: SinkChunk[] = dataBatch.map((r) => ({ offset: r.offset, data: arena.subarray(r.at, r.at + r.length) }));
    // The sink may still hold these views while the next batch is scanned: a new arena for it.
    if (chunks.length) arena = Buffer.allocUnsafe(0);
    const zeros = zeroBatch;
    const indices = batchIndices;
    dataBatch = [];
    zeroBatch = [];
    batchIndices = [];
    dataBytes = 0;
    if (journal) {
      const t = process.hrtime.bigint();
      await journal.append(toRuns(indices.sort((a, b) => a - b)));
      timings.journalMs += elapsed(t);
    }
    await waitSink();
    inflight = (async () => {
      if (chunks.length) await sink.writeChunks(chunks);
      if (zeros.length) await sink.zeroRanges(zeros);
    })().catch((err: unknown) => {
      failure = err;
    });
  };
  const onChunk = async (c: ScannedChunk) => {
    if (failure) throw failure;
    options.onProgress?.({ doneBytes: c.offset + c.length, totalBytes: sourceSize });
    if (c.zero) {
      if (base.isKnownZero(c.index)) return;
      base.set(c.index, c.digest);
      const last = zeroBatch[zeroBatch.length - 1];
      if (last && last.offset + last.length === c.offset) last.length += c.length;
      else zeroBatch.push({ offset: c.offset, length: c.length });
      chunksZeroed++;
      bytesZeroed += c.length;
    } else {
      if (base.matches(c.index, c.digest)) return;
      base.set(c.index, c.digest);
      if (arena.length === 0) arena = Buffer.allocUnsafe(arenaBytes);
      c.data.copy(arena, dataBytes);
      const run = dataBatch[dataBatch.length - 1];
      if (run && run.offset + run.length === c.offset) run.length += c.length;
      else dataBatch.push({ offset: c.offset, at: dataBytes, length: c.length });
      dataBytes += c.length;
      bytesTransferred += c.length;
      chunksSent++;
    }
    batchIndices.push(c.index);
    if (dataBytes >= batchBytes || zeroBatch.length >= 1024) await sendBatch();
  };

  let scan;
  try {
    if (sinkSize === undefined || sinkSize < sourceSize) await sink.resize(sourceSize);
    // A source that grows meanwhile is synced up to the size planned with; the next sync takes the rest.
    scan = await scanChunks(source, { chunkSizeBytes, algorithm, readAhead: options.readAhead, sizeBytes: sourceSize, signal }, onChunk);
    await sendBatch();
    await waitSink();
    let t = process.hrtime.bigint();
    await sink.flush();
    timings.flushMs = elapsed(t);
    t = process.hrtime.bigint();
    const saved: StoredChunkMap = { map: base, key, generation: generation + 1, lastSyncAt: started };
    await writeChunkMap(mapPath, saved);
    await writeSourceToken(mapPath, generation + 1, token);
    timings.mapWriteMs = elapsed(t);
    options.onProgress?.({ doneBytes: sourceSize, totalBytes: sourceSize });
  } finally {
    // Never leave a write running behind a failed sync.
    await inflight;
    await journal?.close();
  }
  // The new map supersedes the journal (a journal left by a crash here amends an old generation and is ignored).
  await fs.rm(journalPath(mapPath), { force: true });

  Object.assign(timings, { extentsMs: scan.extentsMs, readMs: scan.readMs, zeroCheckMs: scan.zeroCheckMs, hashMs: scan.hashMs });
  const finished = now();
  return {
    full, seeded, bytesTransferred, chunksSent, chunksZeroed, bytesZeroed,
    chunksScanned: scan.chunksScanned, bytesScanned: scan.bytesScanned, bytesRead: scan.bytesRead,
    sourceSizeBytes: sourceSize, sinkSizeBeforeBytes: sinkSize, extentSource: scan.extentSource, sourceUnchanged: false,
    generation: generation + 1, chunkSizeBytes,
    startedAt: started.toISOString(), finishedAt: finished.toISOString(), durationMs: elapsed(t0),
    lastSyncAt: started.toISOString(), timings,
  };
}

/** Options of {@link syncFiles}: the sync's, plus how the two files are handled. */
export interface SyncFilesOptions extends SyncOptions {
  /** Extent fast path for the source and for the sink's digests. Default `auto`. */
  extents?: ExtentMode;
  /** How the destination zeroes ranges (see FileSink). */
  zeroMethod?: FileSinkOptions["zeroMethod"];
  /** Runs filefrag and fallocate; injected for tests. */
  run?: FileSinkOptions["run"];
  /** Skip reading an unchanged source (see FileSource.changeToken). Default true. */
  changeTokens?: boolean;
  /** See FileSourceOptions; shorter than the default only for tests and benches. */
  changeTokenSettleMs?: number;
}

/** Local to local: sync the file `sourcePath` to `sinkPath` (created when missing). */
export async function syncFiles(sourcePath: string, sinkPath: string, mapPath: string, options: SyncFilesOptions = {}): Promise<SyncResult> {
  const source = new FileSource(sourcePath, { extents: options.extents, run: options.run, changeTokens: options.changeTokens, changeTokenSettleMs: options.changeTokenSettleMs });
  const sink = new FileSink(sinkPath, { extents: options.extents, run: options.run, zeroMethod: options.zeroMethod });
  try {
    return await syncVolume(source, sink, mapPath, { ...options, mapKey: options.mapKey ?? `${path.resolve(sourcePath)} -> ${path.resolve(sinkPath)}` });
  } finally {
    await Promise.allSettled([source.close(), sink.close()]);
  }
}

/**
 * Seconds since `lastSyncAt` (whole seconds, never negative); `undefined` before the first sync.
 * This is the pair's current RPO exposure: writes newer than that are not on the destination yet.
 */
export function lagSeconds(lastSyncAt: Date | string | undefined | null, now: Date = new Date()): number | undefined {
  if (lastSyncAt === undefined || lastSyncAt === null) return undefined;
  const at = typeof lastSyncAt === "string" ? new Date(lastSyncAt) : lastSyncAt;
  if (Number.isNaN(at.getTime())) return undefined;
  return Math.max(0, Math.floor((now.getTime() - at.getTime()) / 1000));
}

/** What a saved map says (for status after a restart), or `undefined` when there is none. */
export interface MapInfo {
  key: string;
  generation: number;
  lastSyncAt: string;
  sourceSizeBytes: number;
  chunkSizeBytes: number;
  algorithm: ChunkHashAlgorithm;
}

/** Read the header of a map file. Missing or corrupt → `undefined`. */
export async function readMapInfo(mapPath: string): Promise<MapInfo | undefined> {
  const s = await readChunkMap(mapPath);
  if (!("map" in s)) return undefined;
  return {
    key: s.key, generation: s.generation, lastSyncAt: s.lastSyncAt.toISOString(),
    sourceSizeBytes: s.map.sizeBytes, chunkSizeBytes: s.map.chunkSizeBytes, algorithm: s.map.algorithm,
  };
}

/** One direction's state: where its map lives and the key that ties the map to it. */
export interface DirectionState {
  mapPath: string;
  mapKey: string;
}

/** The direction of a pair's sync: `forward` primary → secondary, `reverse` secondary → primary (failback). */
export type SyncDirection = "forward" | "reverse";

/** Map paths and keys of both directions of a pair, under `stateDir`. */
export function pairStatePaths(stateDir: string, pairId: string): Record<SyncDirection, DirectionState> {
  if (!/^[A-Za-z0-9._-]+$/.test(pairId)) throw invalidInput("pairId", `must be letters, digits, '.', '_' or '-', got ${JSON.stringify(pairId)}`);
  const at = (d: SyncDirection) => ({ mapPath: path.join(stateDir, `replication-${pairId}.${d}.map`), mapKey: `${pairId}:${d}` });
  return { forward: at("forward"), reverse: at("reverse") };
}

/** Where a map's source change token lives. */
function sourceTokenPath(mapPath: string): string {
  return `${mapPath}.source`;
}

/** The source token saved with map generation `generation`, or `undefined` (none, another generation, unreadable). */
async function readSourceToken(mapPath: string, generation: number): Promise<string | undefined> {
  try {
    const saved = JSON.parse(await fs.readFile(sourceTokenPath(mapPath), "utf8")) as { generation?: unknown; token?: unknown };
    return saved.generation === generation && typeof saved.token === "string" ? saved.token : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Save the token taken before the sync that wrote map `generation` (after the map: a crash in
 * between leaves a token of an older generation, ignored). No token: remove the old one.
 */
async function writeSourceToken(mapPath: string, generation: number, token: string | undefined): Promise<void> {
  if (token === undefined) await fs.rm(sourceTokenPath(mapPath), { force: true });
  else await writeFileAtomic(sourceTokenPath(mapPath), Buffer.from(JSON.stringify({ generation, token })));
}

/**
 * Forget a direction's map (and journal and source token): its next sync is a full one. Call it
 * when the destination of that direction starts being written by anyone else (failover). Idempotent.
 */
export async function invalidateMap(mapPath: string): Promise<void> {
  const files = [mapPath, `${mapPath}.tmp`, journalPath(mapPath), sourceTokenPath(mapPath), `${sourceTokenPath(mapPath)}.tmp`];
  await Promise.all(files.map((f) => fs.rm(f, { force: true })));
}

/**
 * Reuse a map for the opposite direction: valid only right after a completed sync with no
 * writes on either side since (the failback cut-over), when both volumes equal the map.
 */
export async function adoptMap(fromMapPath: string, toMapPath: string, toMapKey: string): Promise<void> {
  const s = await readChunkMap(fromMapPath);
  if (!("map" in s)) throw new UserError("INVALID_STATE", `no usable replication map at ${fromMapPath} (${s.problem})`);
  const j = await readJournal(journalPath(fromMapPath));
  if (j?.generation === s.generation) throw new UserError("INVALID_STATE", `the last sync of ${fromMapPath} did not complete; sync again first`);
  await invalidateMap(toMapPath);
  await writeChunkMap(toMapPath, { ...s, key: toMapKey });
}

export type { ByteRange, ChunkHashAlgorithm, SinkChunk, SinkDigests, SyncSink, SyncSource } from "./sync-sink";
export { FileSink, type FileSinkOptions } from "./file-sink";
export { FileSource, type ExtentMode, type FileSourceOptions } from "./file-source";
