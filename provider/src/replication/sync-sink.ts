/**
 * The two sides of a replication sync, as interfaces.
 *
 * The engine (`sync.ts`) runs where the source volume lives: it reads the source through a
 * {@link SyncSource} and pushes changes to a {@link SyncSink}. Today both are local files
 * ({@link FileSource}, {@link FileSink}); a remote destination becomes a sink whose methods are
 * HTTP calls to the sds-agent of the storage node that holds the secondary volume (one route per
 * method, the body of `writeChunks` binary), with the agent driving a `FileSink` on its side.
 *
 * Contract for every sink (the engine relies on each point):
 * - Calls come from one sync at a time; the caller holds a lock per replication pair.
 * - `writeChunks` and `zeroRanges` never touch the same byte twice within one sync, so a sink may
 *   apply them in any order and in parallel. Neither is durable until `flush` resolves.
 * - A range passed to `zeroRanges` must read back as zeros afterwards; a sink should deallocate it
 *   (punch a hole) to stay thin. Zero chunks are never passed to `writeChunks`.
 * - Every method may be retried after a failure; a failed sync is simply run again.
 *
 * @see FileSink for the local implementation.
 */

/** A byte range `[offset, offset + length)`. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** One chunk of volume data to write at `offset`. `data.length` is the chunk length. */
export interface SinkChunk {
  offset: number;
  data: Buffer;
}

/** Hash functions the chunk map may use (all from node:crypto). */
export type ChunkHashAlgorithm = "sha256" | "sha1" | "md5";

/** What a sink holds, chunk by chunk: one digest per chunk, all-zero digest for a zero chunk. */
export interface SinkDigests {
  chunkSizeBytes: number;
  algorithm: ChunkHashAlgorithm;
  /** Size of the sink in bytes when it was read. */
  sizeBytes: number;
  /** `ceil(sizeBytes / chunkSizeBytes)` digests back to back, `digestLength(algorithm)` bytes each. */
  digests: Buffer;
}

/** The destination of a sync. */
export interface SyncSink {
  /** Human-readable name for messages (a path, or `host:volume`). */
  readonly description: string;
  /** Current size in bytes, or `undefined` when the destination volume does not exist yet. */
  sizeBytes(): Promise<number | undefined>;
  /**
   * Make the destination exactly `bytes` long, creating it when missing; new bytes read as zeros
   * (no blocks allocated). Never shrinks: a smaller `bytes` than the current size is an error.
   * Idempotent.
   */
  resize(bytes: number): Promise<void>;
  /** Write each chunk's data at its offset. The chunks never overlap. */
  writeChunks(chunks: readonly SinkChunk[]): Promise<void>;
  /** Make each range read as zeros, deallocating it where the sink can. */
  zeroRanges(ranges: readonly ByteRange[]): Promise<void>;
  /** Make everything written so far durable (fdatasync). The engine commits its map only after this. */
  flush(): Promise<void>;
  /**
   * Digests of the sink's own content, chunk by chunk (hole-skipping). Used when the engine has no
   * valid map (first sync onto an existing volume, failback, lost state file): then only chunks that
   * really differ travel. Costs one read of the sink's allocated data on its own node.
   */
  readDigests(chunkSizeBytes: number, algorithm: ChunkHashAlgorithm, signal?: AbortSignal): Promise<SinkDigests>;
  /** Release handles. Safe to call twice. */
  close(): Promise<void>;
}

/** The origin of a sync: a volume read in chunks. */
export interface SyncSource {
  readonly description: string;
  /** Current size in bytes. */
  sizeBytes(): Promise<number>;
  /** Read up to `buffer.length` bytes at `offset` into `buffer`; resolves to the count read. */
  read(buffer: Buffer, offset: number): Promise<number>;
  /**
   * Ranges that may hold data, sorted and non-overlapping; every byte outside them reads as zero.
   * `undefined` when unknown: the engine then reads everything and checks for zeros. A fast path
   * only: an implementation that is unsure must answer `undefined`, never guess.
   */
  dataRanges(): Promise<ByteRange[] | undefined>;
  /**
   * Optional fast path for a source that did not change: a token taken before the sync reads
   * anything, equal to the token taken before the previous sync only if no byte changed in
   * between. `undefined` when the source cannot promise that now (then the sync reads as usual).
   * An implementation that is unsure must answer `undefined`: a wrong match loses writes.
   */
  changeToken?(): Promise<string | undefined>;
  /** Release handles. Safe to call twice. */
  close(): Promise<void>;
}
