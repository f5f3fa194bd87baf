/**
 * A local volume file as the destination of a sync. Keeps the file thin: zero chunks are never
 * written, new space comes from ftruncate (a hole), and a chunk that turned to zeros on the source
 * is deallocated with `fallocate --punch-hole --keep-size` (util-linux).
 *
 * Why fallocate through a process: Node has no fallocate(2). One run costs about 8 ms (measured),
 * and the engine only zeroes chunks that held data on the destination (discards, wiped regions)
 * or, in a full sync without digests, runs of zero chunks merged into one range each: few calls.
 * When fallocate is missing or the file system refuses (EOPNOTSUPP), the sink falls back to
 * writing zeros from then on (correct, but the range stops being thin); `zeroMethod` tells which.
 *
 * The destination is always a regular file: a symbolic link there is refused, never written
 * through (the open uses O_NOFOLLOW, so a link made after the caller's check cannot redirect it).
 * fallocate still takes the path (Node cannot hand it our descriptor): the race left is the one
 * drivers/confine.ts documents, open only to someone who can write in the storage root.
 */
import * as fs from "node:fs/promises";
import { constants } from "node:fs";
import { openNoFollow, refuseSymlink } from "../drivers/confine";
import { BackendError, UserError } from "../errors";
import { run as defaultRun, type Runner } from "../exec/run";
import { scanChunks } from "./chunk-scan";
import { digestLength } from "./chunk-map";
import { FileSource, mergeRanges, type ExtentMode } from "./file-source";
import type { ByteRange, ChunkHashAlgorithm, SinkChunk, SinkDigests, SyncSink } from "./sync-sink";

/** Options of {@link FileSink}. */
export interface FileSinkOptions {
  /** `punch-hole` (default): fallocate, falling back to zeros; `write-zeros`: always write zeros. */
  zeroMethod?: "punch-hole" | "write-zeros";
  /** Extent fast path for `readDigests` (see FileSource). Default `auto`. */
  extents?: ExtentMode;
  /** Runs fallocate and filefrag; injected for tests. */
  run?: Runner;
  /** fallocate runs at once. Default 4. */
  punchConcurrency?: number;
  /** The request field that named this file, for errors (default `sink`). */
  field?: string;
}

const ZERO_WRITE_BYTES = 1 << 20;

/** A destination volume file, opened read-write on first use and created when missing. */
export class FileSink implements SyncSink {
  /** The open handle, as a promise: concurrent first calls (read-ahead) share one open. */
  private fh?: Promise<fs.FileHandle>;
  /** How zero ranges are applied now; drops to `write-zeros` after the first failed punch. */
  zeroMethod: "punch-hole" | "write-zeros";
  /** Why the sink fell back to writing zeros, if it did. */
  zeroFallbackReason?: string;

  constructor(
    readonly path: string,
    private readonly options: FileSinkOptions = {},
  ) {
    this.zeroMethod = options.zeroMethod ?? "punch-hole";
  }

  get description(): string {
    return this.path;
  }

  private async handle(): Promise<fs.FileHandle> {
    this.fh ??= this.io("open", () => openNoFollow(this.path, constants.O_RDWR | constants.O_CREAT, this.options.field ?? "sink", 0o600));
    return this.fh;
  }

  /** Why: an I/O failure here is a backend fault the next sync may get past. */
  private async io<T>(what: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      if (err instanceof UserError || err instanceof BackendError) throw err;
      throw new BackendError("COMMAND_FAILED", `replication destination ${this.path}: ${what} failed: ${(err as Error).message}`, true, { cause: err });
    }
  }

  async sizeBytes(): Promise<number | undefined> {
    try {
      const st = await fs.lstat(this.path);
      if (st.isSymbolicLink()) await refuseSymlink(this.path, this.options.field ?? "sink");
      return st.size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  async resize(bytes: number): Promise<void> {
    const fh = await this.handle();
    const size = (await fh.stat()).size;
    if (bytes < size) throw new UserError("INVALID_STATE", `replication destination ${this.path} is ${size} bytes; it cannot shrink to ${bytes}`);
    if (bytes > size) await this.io("resize", () => fh.truncate(bytes));
  }

  async writeChunks(chunks: readonly SinkChunk[]): Promise<void> {
    const fh = await this.handle();
    await this.io("write", () => Promise.all(chunks.map((c) => writeFully(fh, c.data, c.offset))));
  }

  async zeroRanges(ranges: readonly ByteRange[]): Promise<void> {
    const fh = await this.handle();
    const merged = mergeRanges(ranges.filter((r) => r.length > 0));
    const queue = [...merged];
    const worker = async () => {
      for (let r = queue.shift(); r; r = queue.shift()) await this.zeroOne(fh, r);
    };
    await Promise.all(Array.from({ length: Math.max(1, this.options.punchConcurrency ?? 4) }, worker));
  }

  private async zeroOne(fh: fs.FileHandle, r: ByteRange): Promise<void> {
    if (this.zeroMethod === "punch-hole") {
      try {
        await (this.options.run ?? defaultRun)(
          "fallocate",
          ["--punch-hole", "--keep-size", "--offset", String(r.offset), "--length", String(r.length), "--", this.path],
          { timeoutMs: 60_000 },
        );
        return;
      } catch (err) {
        this.zeroMethod = "write-zeros";
        this.zeroFallbackReason = (err as Error).message;
      }
    }
    const zeros = Buffer.alloc(Math.min(ZERO_WRITE_BYTES, r.length));
    await this.io("zero write", async () => {
      for (let at = r.offset; at < r.offset + r.length; at += zeros.length) {
        await writeFully(fh, zeros.subarray(0, Math.min(zeros.length, r.offset + r.length - at)), at);
      }
    });
  }

  async flush(): Promise<void> {
    if (!this.fh) return;
    const fh = await this.fh;
    await this.io("fdatasync", () => fh.datasync());
  }

  async readDigests(chunkSizeBytes: number, algorithm: ChunkHashAlgorithm, signal?: AbortSignal): Promise<SinkDigests> {
    const size = await this.sizeBytes();
    if (size === undefined || size === 0) return { chunkSizeBytes, algorithm, sizeBytes: 0, digests: Buffer.alloc(0) };
    const source = new FileSource(this.path, { extents: this.options.extents, run: this.options.run, field: this.options.field ?? "sink" });
    const len = digestLength(algorithm);
    try {
      const parts: Buffer[] = [];
      const stats = await scanChunks(source, { chunkSizeBytes, algorithm, signal }, (c) => {
        parts.push(Buffer.from(c.digest));
      });
      const digests = Buffer.concat(parts, parts.length * len);
      return { chunkSizeBytes, algorithm, sizeBytes: stats.sizeBytes, digests };
    } finally {
      await source.close();
    }
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await (await fh?.catch(() => undefined))?.close();
  }
}

/** Why: pwrite may write less than asked; a chunk must land whole. */
async function writeFully(fh: fs.FileHandle, data: Buffer, offset: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
    if (bytesWritten === 0) throw new Error(`short write at ${offset + done}`);
    done += bytesWritten;
  }
}
