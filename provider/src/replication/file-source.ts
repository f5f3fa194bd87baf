/**
 * A local volume file as the source of a sync, with a fast path to skip holes.
 *
 * Node has no SEEK_DATA, so by default every byte would be read and zero-checked (about 3 s for a
 * 10 GiB sparse file on this project's test machine, memory-bandwidth bound). The fast path asks
 * `filefrag -v -e` (e2fsprogs; FIEMAP) for the file's extents and reads only those: a few ms for a
 * sparse volume. It is trusted only on file systems whose FIEMAP reports delayed-allocation
 * extents too (ext2/3/4, XFS, btrfs) and only when the output parses completely and ends with the
 * extent flagged `last`; anything else (no filefrag, tmpfs, NFS, FUSE, odd output, timeout) falls back to reading
 * everything. Correctness never depends on it: an extent only says "may hold data", and every chunk
 * read is still zero-checked; unwritten (preallocated) extents read as zeros and are found so.
 *
 * The source is always a regular file: a symbolic link is refused (O_NOFOLLOW), never read through.
 *
 * Unchanged volumes ({@link FileSource.changeToken}): a file's ctime moves on every write, truncate
 * and hole punch (pwrite from tgtd, nbdkit or qemu-nbd, a loop device's writes and discards, in
 * buffered and direct I/O alike), and nobody can set it back (utimes sets mtime, never ctime). So
 * (device, inode, size, mtime, ctime) equal to what they were before the previous sync read the
 * file means no write since. Two limits, both handled by answering `undefined` (read as usual):
 * timestamps are taken from a coarse clock (a jiffy; 1 s on ext2/3 with small inodes), so a write
 * just after a stat may keep the same ctime, and a write syscall sets ctime when it starts, not
 * when its data lands (a direct-I/O write of a loop device waiting on a slow disk, a buffered one
 * throttled by dirty-page limits): the token is given only when the ctime is at least
 * {@link CHANGE_TOKEN_SETTLE_MS} old, so a write would have to stay in flight that long, across the
 * previous sync's read of its range, to be missed (each write here is one SCSI or NBD request or
 * one loop bio, a few MiB at most: a minute in flight is a hung disk); and only local file
 * systems that keep ctime this way are trusted (ext2/3/4, XFS, btrfs: not NFS, whose times come
 * from another clock, nor FUSE or tmpfs). Writes through a shared writable mmap of the volume
 * file could change bytes without a new ctime; nothing in sds maps volume files (tgtd's backing
 * store is rdwr, nbdkit and qemu-nbd use pwrite).
 */
import { constants } from "node:fs";
import * as fs from "node:fs/promises";
import { openNoFollow } from "../drivers/confine";
import { run as defaultRun, type Runner } from "../exec/run";
import type { ByteRange, SyncSource } from "./sync-sink";

/** How a {@link FileSource} finds data: `auto` tries filefrag then reads all, `none` reads all. */
export type ExtentMode = "auto" | "filefrag" | "none";

/** FIEMAP-capable file systems whose extents include delayed allocations (statfs magic, hex). */
const TRUSTED_FS = new Map([
  ["ef53", "ext2/3/4"],
  ["58465342", "xfs"],
  ["9123683e", "btrfs"],
]);

/** statfs f_type of the file systems whose ctime {@link FileSource.changeToken} trusts. */
const CTIME_TRUSTED_FS = new Set([0xef53, 0x58465342, 0x9123683e]);

/** A ctime younger than this may belong to a write still in flight or share a tick with one to come: no token then. */
export const CHANGE_TOKEN_SETTLE_MS = 60_000;

/** Options of {@link FileSource}. */
export interface FileSourceOptions {
  /** Default `auto`. `filefrag` makes a failed extent query an error (tests, diagnosis). */
  extents?: ExtentMode;
  /** Runs filefrag; injected for tests. */
  run?: Runner;
  /** Offer {@link FileSource.changeToken} (default true); false makes every sync read. */
  changeTokens?: boolean;
  /** How old the ctime must be for a token. Default {@link CHANGE_TOKEN_SETTLE_MS}; shorter only for tests and benches. */
  changeTokenSettleMs?: number;
  /** Wall clock in ms, for tests of the settle rule. */
  nowMs?: () => number;
  /** The request field that named this file, for errors (default `source`). */
  field?: string;
}

/** A volume file read in place. Opens lazily; read-only. */
export class FileSource implements SyncSource {
  /** The open handle, as a promise: concurrent first calls (read-ahead) share one open. */
  private fh?: Promise<fs.FileHandle>;
  /** How the last `dataRanges` call answered: `filefrag`, or why it fell back to zero-checking. */
  extentNote = "not asked";

  constructor(
    readonly path: string,
    private readonly options: FileSourceOptions = {},
  ) {}

  get description(): string {
    return this.path;
  }

  private async handle(): Promise<fs.FileHandle> {
    this.fh ??= openNoFollow(this.path, constants.O_RDONLY, this.options.field ?? "source");
    return this.fh;
  }

  async sizeBytes(): Promise<number> {
    return (await (await this.handle()).stat()).size;
  }

  async read(buffer: Buffer, offset: number): Promise<number> {
    const fh = await this.handle();
    let done = 0;
    while (done < buffer.length) {
      const { bytesRead } = await fh.read(buffer, done, buffer.length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  async dataRanges(): Promise<ByteRange[] | undefined> {
    const mode = this.options.extents ?? "auto";
    if (mode === "none") {
      this.extentNote = "disabled";
      return undefined;
    }
    const size = await this.sizeBytes();
    try {
      const r = await (this.options.run ?? defaultRun)("filefrag", ["-v", "-e", "--", this.path], { timeoutMs: 60_000 });
      const parsed = parseFilefrag(r.stdout, size);
      if (typeof parsed === "string") throw new Error(parsed);
      this.extentNote = "filefrag";
      return parsed;
    } catch (err) {
      this.extentNote = `zero-check (filefrag: ${(err as Error).message.split("\n")[0]})`;
      if (mode === "filefrag") throw err;
      return undefined;
    }
  }

  /** See the file comment: identity, size and times of the open file, when they can be trusted. */
  async changeToken(): Promise<string | undefined> {
    if (this.options.changeTokens === false) return undefined;
    const fh = await this.handle();
    const st = await fh.stat({ bigint: true });
    let fsType: number;
    try {
      fsType = (await fs.statfs(this.path)).type;
    } catch {
      return undefined;
    }
    if (!CTIME_TRUSTED_FS.has(fsType)) return undefined;
    const nowNs = BigInt(Math.floor((this.options.nowMs ?? Date.now)())) * 1_000_000n;
    if (st.ctimeNs > nowNs - BigInt(this.options.changeTokenSettleMs ?? CHANGE_TOKEN_SETTLE_MS) * 1_000_000n) return undefined;
    return ["file1", fsType.toString(16), st.dev, st.ino, st.size, st.mtimeNs, st.ctimeNs].join(":");
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await (await fh?.catch(() => undefined))?.close();
  }
}

/**
 * Parse `filefrag -v -e` output into sorted, merged byte ranges clamped to `sizeBytes`, or a
 * string saying why the output cannot be trusted.
 */
export function parseFilefrag(stdout: string, sizeBytes: number): ByteRange[] | string {
  const lines = stdout.split("\n");
  const fsLine = lines.find((l) => l.startsWith("Filesystem type is:"));
  const fsType = fsLine?.slice("Filesystem type is:".length).trim().toLowerCase();
  if (!fsType || !TRUSTED_FS.has(fsType)) return `file system type ${fsType ?? "unknown"} not trusted for extents`;
  const sizeLine = lines.find((l) => l.startsWith("File size of "));
  const m = sizeLine && /is (\d+) \((\d+) blocks? of (\d+) bytes\)\s*$/.exec(sizeLine);
  if (!m) return "no file size line";
  if (Number(m[1]) !== sizeBytes) return `size changed during the query (${m[1]} != ${sizeBytes})`;
  const blockBytes = Number(m[3]);
  if (!(blockBytes > 0)) return "bad block size";
  const countLine = lines.find((l) => /: (\d+) extents? found\s*$/.test(l));
  if (!countLine) return "no extent count";
  const expected = Number(/: (\d+) extents? found\s*$/.exec(countLine)![1]);
  if (expected > 0 && !lines.some((l) => /^\s*ext:\s+logical_offset:/.test(l))) return "no extent table";
  const raw: ByteRange[] = [];
  for (const l of lines) {
    const e = /^\s*(\d+):\s+(\d+)\.\.\s*(\d+):/.exec(l);
    if (!e) continue;
    const first = Number(e[2]);
    const last = Number(e[3]);
    if (last < first) return `bad extent line: ${l.trim()}`;
    const offset = first * blockBytes;
    const end = Math.min((last + 1) * blockBytes, sizeBytes);
    if (end > offset) raw.push({ offset, length: end - offset });
  }
  // Completeness: filefrag reads FIEMAP until the extent flagged `last`, so a whole listing ends
  // with it. (Its "N extents found" counts physical discontinuities: logically adjacent extents,
  // e.g. a written one followed by a delayed-allocation one, count once, so it is only a lower bound.)
  const listed = lines.filter((l) => /^\s*(\d+):\s+(\d+)\.\.\s*(\d+):/.test(l));
  if (listed.length < expected) return `extent count mismatch (${listed.length} listed, ${expected} reported)`;
  if (listed.length > 0 && !/\blast\b/.test(listed[listed.length - 1])) return "extent listing does not end with the last extent";
  return mergeRanges(raw);
}

/** Sort and merge overlapping or touching ranges. */
export function mergeRanges(ranges: readonly ByteRange[]): ByteRange[] {
  const sorted = [...ranges].sort((a, b) => a.offset - b.offset);
  const out: ByteRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) last.length = Math.max(last.length, r.offset + r.length - last.offset);
    else out.push({ ...r });
  }
  return out;
}
