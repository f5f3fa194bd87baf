/**
 * An RBD image (or one of its snapshots) as the source of a sync: the engine's positional reads
 * served from one `rbd export-diff <image> -` stream, so only allocated data leaves the cluster
 * and nothing needs a block device, a FUSE file or a daemon.
 *
 * Why a stream and not an NBD or FUSE view: the engine reads in ascending order (scanChunks walks
 * the chunks with a small read-ahead, skipping holes), and export-diff writes its records in
 * ascending order, so one pass over the stream answers every read. A read behind the stream's
 * position (never made by the engine) restarts the stream: slower, still correct.
 *
 * `dataRanges` is `rbd diff --format json`: the allocated extents, exact (not whole objects).
 * Both come from the same head at slightly different times; like a file's extents they only let
 * the engine skip reads, and a write into a hole after the query is caught by the next sync (the
 * map then still says zero there and the chunk's digest differs).
 *
 * Change token (`changeTokens: true`, the head only): the engine skips reading a source whose token
 * did not change since the last sync. The token is a snapshot of the image's own,
 * `sds-sync-token-<n>` (name and snapshot id): when `rbd diff --from-snap` of it is empty (metadata
 * only with fast-diff), nothing was written since it was taken and the same token comes back;
 * otherwise a new snapshot is taken (before the engine reads: a write after it shows in the next
 * diff) and the old one removed. Costs one snapshot on the primary of an RBD → file pair, holding
 * the objects written since the last sync.
 */
import { BackendError } from "../errors";
import type { StreamedCommand } from "../exec/stream";
import { readRbdDiff, type RbdDiffRecord, type RbdDiffStats } from "./rbd-diff";
import { RbdImage, TOKEN_SNAP_PREFIX, type RbdTools } from "./rbd-image";
import type { ByteRange, SyncSource } from "./sync-sink";

/** Reading an image through export-diff. */
export class RbdSource implements SyncSource {
  readonly image: RbdImage;
  private cmd?: StreamedCommand;
  private records?: AsyncGenerator<RbdDiffRecord>;
  /** A `write` record not used up by the last read. */
  private held?: { offset: number; data: Buffer };
  /** The stream's position: every read so far ended at or before it. */
  private position = 0;
  private ended = false;
  /** Reads are served one at a time, in the order they were asked. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Streams started (1 when the engine read in order). */
  streamsStarted = 0;
  /** Bytes of all streams so far (data plus record heads). */
  readonly stats: RbdDiffStats = { streamBytes: 0, dataBytes: 0 };
  private streamStats: RbdDiffStats = { streamBytes: 0, dataBytes: 0 };

  private readonly changeTokens: boolean;

  constructor(volumePath: string | RbdImage, options: RbdTools & { changeTokens?: boolean } = {}) {
    this.image = typeof volumePath === "string" ? new RbdImage(volumePath, options) : volumePath;
    this.changeTokens = options.changeTokens ?? false;
  }

  /** See the header: the same token while nothing was written since its snapshot. */
  async changeToken(): Promise<string | undefined> {
    if (!this.changeTokens || this.image.path.snap !== undefined) return undefined;
    const tokens = (await this.image.snaps())
      .map((s) => ({ ...s, n: s.name.startsWith(TOKEN_SNAP_PREFIX) ? Number(s.name.slice(TOKEN_SNAP_PREFIX.length)) : NaN }))
      .filter((s) => Number.isInteger(s.n))
      .sort((a, b) => a.n - b.n);
    const newest = tokens[tokens.length - 1];
    if (newest && tokens.length === 1 && (await this.image.extents(newest.name)).length === 0) return `${newest.name}#${newest.id}`;
    const name = `${TOKEN_SNAP_PREFIX}${(newest?.n ?? 0) + 1}`;
    await this.image.createSnap(name);
    for (const old of tokens) await this.image.removeSnap(old.name);
    const made = (await this.image.snaps()).find((s) => s.name === name);
    return made ? `${made.name}#${made.id}` : undefined;
  }

  get description(): string {
    return this.image.description;
  }

  async sizeBytes(): Promise<number> {
    const size = await this.image.sizeBytes();
    if (size === undefined) throw new BackendError("COMMAND_FAILED", `replication source ${this.description} does not exist`, false);
    return size;
  }

  async dataRanges(): Promise<ByteRange[] | undefined> {
    return (await this.image.extents()).filter((e) => e.exists).map(({ offset, length }) => ({ offset, length }));
  }

  read(buffer: Buffer, offset: number): Promise<number> {
    const p = this.queue.then(() => this.readInOrder(buffer, offset));
    this.queue = p.catch(() => undefined);
    return p;
  }

  private async start(): Promise<void> {
    await this.stop();
    this.streamStats = { streamBytes: 0, dataBytes: 0 };
    this.cmd = this.image.spawn("rbd", [...this.image.clusterArgs(), "export-diff", "--no-progress", this.image.readSpec, "-"], { stdout: true });
    this.records = readRbdDiff(this.cmd.stdout!, this.streamStats);
    this.held = undefined;
    this.position = 0;
    this.ended = false;
    this.streamsStarted++;
  }

  private async stop(): Promise<void> {
    const cmd = this.cmd;
    const records = this.records;
    this.cmd = undefined;
    this.records = undefined;
    if (!cmd) return;
    this.stats.streamBytes += this.streamStats.streamBytes;
    this.stats.dataBytes += this.streamStats.dataBytes;
    cmd.kill();
    await records?.return(undefined).catch(() => undefined);
    await cmd.done.catch(() => undefined);
  }

  /** The next `write` record, or undefined at the end of the stream (checked: export-diff exited 0). */
  private async next(): Promise<{ offset: number; data: Buffer } | undefined> {
    if (this.held) {
      const h = this.held;
      this.held = undefined;
      return h;
    }
    while (!this.ended) {
      let r: IteratorResult<RbdDiffRecord>;
      try {
        r = await this.records!.next();
      } catch (err) {
        // The command's own error says more than a cut stream.
        await this.cmd!.done;
        throw err;
      }
      if (r.done || r.value.type === "end") {
        this.ended = true;
        await this.cmd!.done;
        break;
      }
      if (r.value.type === "write") return { offset: r.value.offset, data: r.value.data };
      // Zero records and header records: nothing to copy (the buffer is zeroed first).
    }
    return undefined;
  }

  private async readInOrder(buffer: Buffer, offset: number): Promise<number> {
    const size = await this.sizeOnce();
    const length = Math.max(0, Math.min(buffer.length, size - offset));
    if (length === 0) return 0;
    if (!this.cmd || offset < this.position) await this.start();
    const end = offset + length;
    buffer.fill(0, 0, length);
    for (;;) {
      const rec = await this.next();
      if (!rec) break;
      const recEnd = rec.offset + rec.data.length;
      if (recEnd <= offset) continue;
      if (rec.offset >= end) {
        this.held = rec;
        break;
      }
      const from = Math.max(offset, rec.offset);
      const to = Math.min(end, recEnd);
      rec.data.copy(buffer, from - offset, from - rec.offset, to - rec.offset);
      if (recEnd > end) {
        this.held = rec;
        break;
      }
    }
    this.position = end;
    return length;
  }

  /** The size, asked once per source: reads must not cost an `rbd info` each. */
  private size?: Promise<number>;
  private sizeOnce(): Promise<number> {
    this.size ??= this.sizeBytes();
    return this.size;
  }

  async close(): Promise<void> {
    await this.queue;
    await this.stop();
  }
}
