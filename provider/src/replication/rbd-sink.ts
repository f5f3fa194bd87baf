/**
 * An RBD image as the destination of a sync: the engine's chunks and zero ranges become an RBD diff
 * stream (rbd-diff.ts) written into one `rbd import-diff - <image>` per sync, so the image is
 * written through librbd with nothing in between (no block device, FUSE file or daemon).
 *
 * - `writeChunks` → `w` records, `zeroRanges` → `z` records (import-diff discards them: thin).
 * - `flush` ends the stream (`e`) and waits for import-diff to exit 0: only then is every record
 *   applied (import-diff flushes the image before it exits). A later write starts a new stream.
 * - With `endSnapshot`, the stream's header names it and import-diff creates that snapshot once all
 *   records are applied: the incremental RBD → RBD path uses it to leave the destination with the
 *   same `sds-sync-<n>` snapshot as the source after a sync through the engine.
 * - `readDigests` reads the image's allocated data through an {@link RbdSource}.
 * - A failed stream fails the next call (the engine reruns the sync; its journal resends).
 */
import { writeInput, type StreamedCommand } from "../exec/stream";
import { digestLength } from "./chunk-map";
import { scanChunks } from "./chunk-scan";
import { mergeRanges } from "./file-source";
import { encodeHeader, encodeWriteHead, encodeZero, RBD_DIFF_END } from "./rbd-diff";
import { RbdImage, type RbdTools } from "./rbd-image";
import { RbdSource } from "./rbd-source";
import type { ByteRange, ChunkHashAlgorithm, SinkChunk, SinkDigests, SyncSink } from "./sync-sink";

/** Options of {@link RbdSink}. */
export interface RbdSinkOptions extends RbdTools {
  /** Snapshot import-diff creates after the first stream's records (see the header). */
  endSnapshot?: string;
}

/** Writing an image through import-diff. */
export class RbdSink implements SyncSink {
  readonly image: RbdImage;
  private cmd?: StreamedCommand;
  /** Streams started so far: import-diff runs. */
  streamsStarted = 0;
  /** Data bytes written into streams (`w` records). */
  dataBytes = 0;
  /** Bytes of all streams (data plus record heads). */
  streamBytes = 0;
  private endSnapshot?: string;

  constructor(volumePath: string | RbdImage, options: RbdSinkOptions = {}) {
    this.image = typeof volumePath === "string" ? new RbdImage(volumePath, options) : volumePath;
    this.endSnapshot = options.endSnapshot;
  }

  get description(): string {
    return this.image.description;
  }

  sizeBytes(): Promise<number | undefined> {
    return this.image.sizeBytes();
  }

  resize(bytes: number): Promise<void> {
    return this.image.resize(bytes);
  }

  /** The running import-diff, started with the stream's header on first use. */
  private stream(): StreamedCommand {
    if (!this.cmd) {
      this.cmd = this.image.spawn("rbd", [...this.image.clusterArgs(), "import-diff", "--no-progress", "-", this.image.spec], { stdin: true });
      this.streamsStarted++;
      // The end snapshot is made once: a second stream of the same sync must not try again.
      const header = encodeHeader({ toSnap: this.endSnapshot });
      this.endSnapshot = undefined;
      void this.putTo(this.cmd, header).catch(() => undefined); // a failure shows at the next write or the flush
    }
    return this.cmd;
  }

  /** Write `b` into the stream, waiting when its pipe is full; a dead import-diff fails here. */
  private async put(b: Buffer): Promise<void> {
    await this.putTo(this.stream(), b);
  }

  private async putTo(cmd: StreamedCommand, b: Buffer): Promise<void> {
    this.streamBytes += b.length;
    await writeInput(cmd, b);
  }

  async writeChunks(chunks: readonly SinkChunk[]): Promise<void> {
    for (const c of [...chunks].sort((a, b) => a.offset - b.offset)) {
      await this.put(encodeWriteHead(c.offset, c.data.length));
      await this.put(c.data);
      this.dataBytes += c.data.length;
    }
  }

  async zeroRanges(ranges: readonly ByteRange[]): Promise<void> {
    for (const r of mergeRanges(ranges.filter((x) => x.length > 0))) await this.put(encodeZero(r.offset, r.length));
  }

  async flush(): Promise<void> {
    const cmd = this.cmd;
    if (!cmd) return;
    this.cmd = undefined;
    await this.putTo(cmd, RBD_DIFF_END);
    cmd.stdin!.end();
    await cmd.done;
  }

  async readDigests(chunkSizeBytes: number, algorithm: ChunkHashAlgorithm, signal?: AbortSignal): Promise<SinkDigests> {
    const size = await this.sizeBytes();
    if (size === undefined || size === 0) return { chunkSizeBytes, algorithm, sizeBytes: 0, digests: Buffer.alloc(0) };
    const source = new RbdSource(this.image);
    try {
      const parts: Buffer[] = [];
      const stats = await scanChunks(source, { chunkSizeBytes, algorithm, signal, sizeBytes: size }, (c) => {
        parts.push(Buffer.from(c.digest));
      });
      return { chunkSizeBytes, algorithm, sizeBytes: stats.sizeBytes, digests: Buffer.concat(parts, parts.length * digestLength(algorithm)) };
    } finally {
      await source.close();
    }
  }

  /** Stops a stream that was never flushed: what it carried may be half applied (the engine's journal knows). */
  async close(): Promise<void> {
    const cmd = this.cmd;
    this.cmd = undefined;
    if (!cmd) return;
    cmd.kill();
    await cmd.done.catch(() => undefined);
  }
}
