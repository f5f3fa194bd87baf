/**
 * The per-chunk digest map of a replication direction, and its two state files.
 *
 * The map says, for every chunk of the volume, what the destination holds as of the last
 * completed sync: a digest of the chunk, or the all-zero digest when the chunk is zeros (a hole).
 * A sync hashes the source and sends only chunks whose digest differs from the map.
 *
 * Invariant that makes this correct: for every chunk `i`, either `map[i]` is the digest of the
 * destination's chunk `i`, or `map[i]` is unknown. It holds because a map is only written after the
 * destination flushed exactly the bytes that were hashed, and because, before any chunk is written,
 * its index is appended (fdatasync'd) to the journal; a sync that dies leaves those chunks unknown
 * for the next one, which then resends them even if the source went back to the old content.
 *
 * Map file (little endian), written to `<path>.tmp`, fsync'd, renamed over `<path>`, dir fsync'd:
 * ```
 *  0  8  magic "SDSCMAP1"
 *  8  2  format version (1)
 * 10  1  hash algorithm id (1 sha256, 2 sha1, 3 md5)
 * 11  1  digest length in bytes
 * 12  4  chunk size in bytes
 * 16  8  source size in bytes
 * 24  8  generation (1 for the first sync, +1 per sync)
 * 32  8  lastSyncAt: start of the sync that wrote it, ms since epoch
 * 40  4  chunk count = ceil(source size / chunk size)
 * 44  2  key length K, then K bytes of key (UTF-8): which pair and direction this map belongs to
 * ..     chunk count × digest length bytes; all zero bytes = zero chunk
 * ..  32 sha256 of everything above (a torn or corrupt file is treated as missing)
 * ```
 * Journal file `<map path>.journal`: magic "SDSCJNL1", generation of the map it amends (8 bytes),
 * then records of (first chunk index u32, chunk count u32). A trailing partial record is ignored.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { assert } from "../errors";
import type { ChunkHashAlgorithm } from "./sync-sink";

const MAP_MAGIC = Buffer.from("SDSCMAP1", "latin1");
const JOURNAL_MAGIC = Buffer.from("SDSCJNL1", "latin1");
const FORMAT_VERSION = 1;
const HEADER_FIXED = 46;
const TRAILER = 32;
const ALGORITHM_IDS: Record<ChunkHashAlgorithm, number> = { sha256: 1, sha1: 2, md5: 3 };
const DIGEST_LENGTHS: Record<ChunkHashAlgorithm, number> = { sha256: 32, sha1: 20, md5: 16 };

/** Bytes per digest of `algorithm`. */
export function digestLength(algorithm: ChunkHashAlgorithm): number {
  return DIGEST_LENGTHS[algorithm];
}

/** Number of chunks of a volume of `sizeBytes`. */
export function chunkCount(sizeBytes: number, chunkSizeBytes: number): number {
  return Math.ceil(sizeBytes / chunkSizeBytes);
}

/**
 * Digests in memory: one slot per chunk plus a "known" flag. An unknown chunk is always resent
 * (or zeroed); a known chunk is skipped when the source's digest equals the slot.
 */
export class ChunkMap {
  readonly digestLength: number;
  private digests: Buffer;
  private known: Uint8Array;

  private constructor(
    readonly chunkSizeBytes: number,
    readonly algorithm: ChunkHashAlgorithm,
    private size: number,
    digests: Buffer,
    known: Uint8Array,
  ) {
    this.digestLength = digestLength(algorithm);
    this.digests = digests;
    this.known = known;
  }

  /** A map of `sizeBytes` where every chunk is known to be zeros (a fresh, empty destination). */
  static zeros(chunkSizeBytes: number, algorithm: ChunkHashAlgorithm, sizeBytes: number): ChunkMap {
    const n = chunkCount(sizeBytes, chunkSizeBytes);
    return new ChunkMap(chunkSizeBytes, algorithm, sizeBytes, Buffer.alloc(n * digestLength(algorithm)), new Uint8Array(n).fill(1));
  }

  /** A map of `sizeBytes` where nothing is known (every chunk will be written or zeroed). */
  static unknown(chunkSizeBytes: number, algorithm: ChunkHashAlgorithm, sizeBytes: number): ChunkMap {
    const n = chunkCount(sizeBytes, chunkSizeBytes);
    return new ChunkMap(chunkSizeBytes, algorithm, sizeBytes, Buffer.alloc(n * digestLength(algorithm)), new Uint8Array(n));
  }

  /** A fully known map from digests laid back to back (a map file's body, or a sink's digests). */
  static fromDigests(chunkSizeBytes: number, algorithm: ChunkHashAlgorithm, sizeBytes: number, digests: Buffer): ChunkMap {
    const n = chunkCount(sizeBytes, chunkSizeBytes);
    assert(digests.length === n * digestLength(algorithm), `digest buffer of ${digests.length} bytes for ${n} chunks`);
    return new ChunkMap(chunkSizeBytes, algorithm, sizeBytes, Buffer.from(digests), new Uint8Array(n).fill(1));
  }

  get sizeBytes(): number {
    return this.size;
  }

  get count(): number {
    return this.known.length;
  }

  /** True when chunk `i` is known and its slot equals `digest`. */
  matches(i: number, digest: Buffer): boolean {
    if (i >= this.known.length || !this.known[i]) return false;
    const at = i * this.digestLength;
    return this.digests.compare(digest, 0, this.digestLength, at, at + this.digestLength) === 0;
  }

  /** True when chunk `i` is known to be zeros. */
  isKnownZero(i: number): boolean {
    if (i >= this.known.length || !this.known[i]) return false;
    const at = i * this.digestLength;
    for (let k = at; k < at + this.digestLength; k++) if (this.digests[k] !== 0) return false;
    return true;
  }

  set(i: number, digest: Buffer): void {
    digest.copy(this.digests, i * this.digestLength, 0, this.digestLength);
    this.known[i] = 1;
  }

  markUnknown(first: number, count = 1): void {
    this.known.fill(0, Math.min(first, this.known.length), Math.min(first + count, this.known.length));
  }

  /** True when every chunk is known (a map may only be saved then). */
  complete(): boolean {
    return this.known.every((k) => k === 1);
  }

  /**
   * Grow to `sizeBytes`: the destination was (or will be) extended with zeros, so new chunks are
   * known zeros. The old last chunk keeps its digest, taken over its old, shorter length; the
   * source's digest of the now longer chunk differs unless both are zeros, so it is resent.
   */
  grow(sizeBytes: number): void {
    assert(sizeBytes >= this.size, "chunk map cannot shrink");
    const n = chunkCount(sizeBytes, this.chunkSizeBytes);
    if (n > this.known.length) {
      const d = Buffer.alloc(n * this.digestLength);
      this.digests.copy(d);
      const k = new Uint8Array(n).fill(1);
      k.set(this.known);
      this.digests = d;
      this.known = k;
    }
    this.size = sizeBytes;
  }

  /** The digest slots, back to back (a view; complete maps only are meaningful). */
  digestBytes(): Buffer {
    return this.digests;
  }
}

/** A map read back from its file, with the header fields. */
export interface StoredChunkMap {
  map: ChunkMap;
  key: string;
  generation: number;
  lastSyncAt: Date;
}

/** Why a map file could not be used (for logs and tests). */
export type MapReadProblem = "missing" | "corrupt";

/** Read a map file. Missing or corrupt (bad magic, version, checksum, length) → `{problem}`. */
export async function readChunkMap(file: string): Promise<StoredChunkMap | { problem: MapReadProblem }> {
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { problem: "missing" };
    throw err;
  }
  return decodeChunkMap(buf) ?? { problem: "corrupt" };
}

/** Why: kept apart from I/O so tests can feed damaged bytes. */
export function decodeChunkMap(buf: Buffer): StoredChunkMap | undefined {
  if (buf.length < HEADER_FIXED + TRAILER || !buf.subarray(0, 8).equals(MAP_MAGIC)) return undefined;
  const body = buf.subarray(0, buf.length - TRAILER);
  if (!createHash("sha256").update(body).digest().equals(buf.subarray(buf.length - TRAILER))) return undefined;
  if (buf.readUInt16LE(8) !== FORMAT_VERSION) return undefined;
  const algorithm = (Object.keys(ALGORITHM_IDS) as ChunkHashAlgorithm[]).find((a) => ALGORITHM_IDS[a] === buf.readUInt8(10));
  if (!algorithm || buf.readUInt8(11) !== digestLength(algorithm)) return undefined;
  const chunkSizeBytes = buf.readUInt32LE(12);
  const sizeBytes = Number(buf.readBigUInt64LE(16));
  const generation = Number(buf.readBigUInt64LE(24));
  const lastSyncAt = new Date(Number(buf.readBigUInt64LE(32)));
  const count = buf.readUInt32LE(40);
  const keyLength = buf.readUInt16LE(44);
  const digestsAt = HEADER_FIXED + keyLength;
  if (chunkSizeBytes === 0 || count !== chunkCount(sizeBytes, chunkSizeBytes)) return undefined;
  if (body.length !== digestsAt + count * digestLength(algorithm)) return undefined;
  const key = buf.subarray(HEADER_FIXED, digestsAt).toString("utf8");
  const map = ChunkMap.fromDigests(chunkSizeBytes, algorithm, sizeBytes, body.subarray(digestsAt));
  return { map, key, generation, lastSyncAt };
}

/** Encode a complete map (see the file comment for the layout). */
export function encodeChunkMap(stored: StoredChunkMap): Buffer {
  const { map } = stored;
  assert(map.complete(), "only a complete chunk map can be saved");
  const key = Buffer.from(stored.key, "utf8");
  assert(key.length <= 0xffff, "chunk map key too long");
  const head = Buffer.alloc(HEADER_FIXED);
  MAP_MAGIC.copy(head, 0);
  head.writeUInt16LE(FORMAT_VERSION, 8);
  head.writeUInt8(ALGORITHM_IDS[map.algorithm], 10);
  head.writeUInt8(map.digestLength, 11);
  head.writeUInt32LE(map.chunkSizeBytes, 12);
  head.writeBigUInt64LE(BigInt(map.sizeBytes), 16);
  head.writeBigUInt64LE(BigInt(stored.generation), 24);
  head.writeBigUInt64LE(BigInt(stored.lastSyncAt.getTime()), 32);
  head.writeUInt32LE(map.count, 40);
  head.writeUInt16LE(key.length, 44);
  const body = Buffer.concat([head, key, map.digestBytes().subarray(0, map.count * map.digestLength)]);
  return Buffer.concat([body, createHash("sha256").update(body).digest()]);
}

/** Write a map atomically and durably: tmp file, fsync, rename, fsync of the folder. */
export async function writeChunkMap(file: string, stored: StoredChunkMap): Promise<void> {
  await writeFileAtomic(file, encodeChunkMap(stored));
}

/** Why: every state file of ours must be either the old or the new version after a crash. */
export async function writeFileAtomic(file: string, data: Buffer): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  const fh = await fs.open(tmp, "w", 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
  await syncDir(path.dirname(file));
}

async function syncDir(dir: string): Promise<void> {
  let fh: fs.FileHandle | undefined;
  try {
    fh = await fs.open(dir, "r");
    await fh.sync();
  } catch {
    // Some file systems refuse fsync on a folder; the rename is then as durable as they make it.
  } finally {
    await fh?.close();
  }
}

/** The journal path of a map path. */
export function journalPath(mapFile: string): string {
  return `${mapFile}.journal`;
}

/** Chunk runs a previous, unfinished sync may have written (only those amending `generation`). */
export async function readJournal(file: string): Promise<{ generation: number; runs: Array<[first: number, count: number]> } | undefined> {
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  if (buf.length < 16 || !buf.subarray(0, 8).equals(JOURNAL_MAGIC)) return undefined;
  const generation = Number(buf.readBigUInt64LE(8));
  const runs: Array<[number, number]> = [];
  for (let at = 16; at + 8 <= buf.length; at += 8) runs.push([buf.readUInt32LE(at), buf.readUInt32LE(at + 4)]);
  return { generation, runs };
}

/**
 * Append-only journal of chunks about to be written. `append` returns after fdatasync, so every
 * chunk the destination may have received is on disk here first.
 */
export class Journal {
  private constructor(private readonly fh: fs.FileHandle) {}

  /** Open for appending: keep the existing records when they amend `generation`, else start anew. */
  static async open(file: string, generation: number, keepExisting: boolean): Promise<Journal> {
    const fh = await fs.open(file, keepExisting ? "a" : "w", 0o600);
    try {
      if (!keepExisting) {
        const head = Buffer.alloc(16);
        JOURNAL_MAGIC.copy(head, 0);
        head.writeBigUInt64LE(BigInt(generation), 8);
        await fh.write(head); // at the file position, so appends follow it
        await fh.datasync();
        await syncDir(path.dirname(file));
      }
    } catch (err) {
      await fh.close();
      throw err;
    }
    return new Journal(fh);
  }

  /** Record chunk runs (first index, count) durably. */
  async append(runs: ReadonlyArray<readonly [number, number]>): Promise<void> {
    if (runs.length === 0) return;
    const buf = Buffer.alloc(runs.length * 8);
    runs.forEach(([first, count], k) => {
      assert(first + count <= 0xffffffff, "chunk index beyond 2^32");
      buf.writeUInt32LE(first, k * 8);
      buf.writeUInt32LE(count, k * 8 + 4);
    });
    await this.fh.write(buf);
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Compress sorted chunk indices into (first, count) runs. */
export function toRuns(indices: readonly number[]): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (const i of indices) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  }
  return runs;
}
