/**
 * The RBD diff stream, format v1: what `rbd export-diff` writes and `rbd import-diff` reads
 * (Ceph's doc/dev/rbd-diff.rst). Both RBD sides of a sync speak it: the source parses the stream
 * `rbd export-diff` gives, the sink encodes one for `rbd import-diff`, so neither needs a block
 * device, a FUSE file or a daemon, and only allocated data is read or sent.
 *
 * ```
 * "rbd diff v1\n"
 * 'f' le32 len, name     from snapshot (import-diff checks the destination has it)
 * 't' le32 len, name     to snapshot (import-diff creates it on the destination at the end)
 * 's' le64 size          image size (import-diff resizes the destination to it)
 * 'w' le64 offset, le64 length, data
 * 'z' le64 offset, le64 length   reads as zeros (import-diff discards the range)
 * 'e'                    end
 * ```
 * Header records (`f`, `t`, `s`) come first, then data records in ascending offset order (export-diff
 * orders them), then `e`.
 */
import type { Readable } from "node:stream";
import { BackendError } from "../errors";

/** The first bytes of every v1 diff. */
export const RBD_DIFF_BANNER = Buffer.from("rbd diff v1\n", "latin1");

/** One record of a diff. `data` of a `w` record is its own copy. */
export type RbdDiffRecord =
  | { type: "from"; snap: string }
  | { type: "to"; snap: string }
  | { type: "size"; sizeBytes: number }
  | { type: "write"; offset: number; data: Buffer }
  | { type: "zero"; offset: number; length: number }
  | { type: "end" };

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

function named(tag: string, name: string): Buffer {
  const s = Buffer.from(name, "utf8");
  const b = Buffer.alloc(5);
  b.write(tag, 0, "latin1");
  b.writeUInt32LE(s.length, 1);
  return Buffer.concat([b, s]);
}

/** The bytes of the banner and header records (from, to, size: each only when given). */
export function encodeHeader(h: { fromSnap?: string; toSnap?: string; sizeBytes?: number } = {}): Buffer {
  const parts: Buffer[] = [RBD_DIFF_BANNER];
  if (h.fromSnap !== undefined) parts.push(named("f", h.fromSnap));
  if (h.toSnap !== undefined) parts.push(named("t", h.toSnap));
  if (h.sizeBytes !== undefined) parts.push(Buffer.concat([Buffer.from("s", "latin1"), u64(h.sizeBytes)]));
  return Buffer.concat(parts);
}

/** The 17-byte head of a `w` record; its `length` data bytes follow. */
export function encodeWriteHead(offset: number, length: number): Buffer {
  return Buffer.concat([Buffer.from("w", "latin1"), u64(offset), u64(length)]);
}

/** A `z` record. */
export function encodeZero(offset: number, length: number): Buffer {
  return Buffer.concat([Buffer.from("z", "latin1"), u64(offset), u64(length)]);
}

/** The `e` record. */
export const RBD_DIFF_END = Buffer.from("e", "latin1");

/** The bytes of one record (a `w` record as its head and its data, not copied). */
export function encodeRecord(r: RbdDiffRecord): Buffer[] {
  switch (r.type) {
    case "from":
      return [named("f", r.snap)];
    case "to":
      return [named("t", r.snap)];
    case "size":
      return [Buffer.concat([Buffer.from("s", "latin1"), u64(r.sizeBytes)])];
    case "write":
      return [encodeWriteHead(r.offset, r.data.length), r.data];
    case "zero":
      return [encodeZero(r.offset, r.length)];
    case "end":
      return [RBD_DIFF_END];
  }
}

function bad(why: string): BackendError {
  return new BackendError("COMMAND_FAILED", `rbd diff stream: ${why}`, true);
}

/**
 * Reads exact byte counts from a stream. Why not `stream.read(n)`: it returns null until n bytes
 * are buffered and needs event plumbing; an async iterator with a carry-over is simpler to get right.
 */
class ByteReader {
  private readonly it: AsyncIterator<Buffer>;
  private buf: Buffer = Buffer.alloc(0);
  /** Bytes handed out so far. */
  consumed = 0;

  constructor(stream: AsyncIterable<Buffer>) {
    this.it = stream[Symbol.asyncIterator]();
  }

  /** Exactly `n` bytes, or fewer only at the end of the stream. */
  async take(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      const r = await this.it.next();
      if (r.done) break;
      this.buf = this.buf.length ? Buffer.concat([this.buf, r.value]) : r.value;
    }
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    this.consumed += out.length;
    return out;
  }

  async exact(n: number, what: string): Promise<Buffer> {
    const b = await this.take(n);
    if (b.length !== n) throw bad(`ends inside ${what}`);
    return b;
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

/** What a reader saw, for measurements. */
export interface RbdDiffStats {
  /** Bytes of the stream read so far. */
  streamBytes: number;
  /** Data bytes of `w` records so far. */
  dataBytes: number;
}

/**
 * Parse a v1 diff from `stream`, record by record, checking the banner, the record tags, that data
 * records ascend and do not overlap, and that the stream ends with `e`. A `w` record's data is
 * copied out (at most what one record holds: export-diff writes one record per extent of an object).
 */
export async function* readRbdDiff(stream: Readable | AsyncIterable<Buffer>, stats?: RbdDiffStats): AsyncGenerator<RbdDiffRecord> {
  const r = new ByteReader(stream as AsyncIterable<Buffer>);
  const count = () => {
    if (stats) stats.streamBytes = r.consumed;
  };
  try {
    const banner = await r.take(RBD_DIFF_BANNER.length);
    if (!banner.equals(RBD_DIFF_BANNER)) throw bad(`does not start with "rbd diff v1" (got ${JSON.stringify(banner.toString("latin1").slice(0, 16))})`);
    let lastEnd = 0;
    let data = false;
    for (;;) {
      const tag = await r.take(1);
      count();
      if (tag.length === 0) throw bad("ends without its end record");
      const t = String.fromCharCode(tag[0]);
      if (t === "e") {
        yield { type: "end" };
        return;
      }
      if (t === "f" || t === "t") {
        if (data) throw bad(`header record '${t}' after data`);
        const len = (await r.exact(4, "a snapshot name length")).readUInt32LE(0);
        const snap = (await r.exact(len, "a snapshot name")).toString("utf8");
        yield t === "f" ? { type: "from", snap } : { type: "to", snap };
      } else if (t === "s") {
        if (data) throw bad("size record after data");
        yield { type: "size", sizeBytes: Number((await r.exact(8, "a size")).readBigUInt64LE(0)) };
      } else if (t === "w" || t === "z") {
        data = true;
        const head = await r.exact(16, "a data record");
        const offset = Number(head.readBigUInt64LE(0));
        const length = Number(head.readBigUInt64LE(8));
        if (offset < lastEnd) throw bad(`data records out of order (${offset} after ${lastEnd})`);
        lastEnd = offset + length;
        if (t === "z") {
          yield { type: "zero", offset, length };
        } else {
          const bytes = Buffer.from(await r.exact(length, "data"));
          if (stats) stats.dataBytes += length;
          count();
          yield { type: "write", offset, data: bytes };
        }
      } else {
        throw bad(`unknown record tag 0x${tag[0].toString(16)}`);
      }
      count();
    }
  } finally {
    count();
    await r.close();
  }
}
