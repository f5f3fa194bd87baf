/**
 * The replication engine's chunk size per pair (issue 14: unaligned 4 MiB writes must cost at most
 * 1.1 × their bytes) and its correctness under random writes: whatever happens to the source
 * between syncs, a sync leaves the destination byte for byte equal to it.
 * Real sparse files in a temp folder, no root needed.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  FileSink,
  FileSource,
  chooseChunkSizeBytes,
  invalidateMap,
  syncFiles,
  syncVolume,
  type SinkChunk,
  type SyncSink,
} from "../../provider/src/replication/sync";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

jest.setTimeout(120_000);

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-repl-chunk-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});
const p = (name: string) => path.join(dir, name);

/** Why: a failing seed must be reproducible (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomData(rand: () => number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i += 4) b.writeUInt32LE(Math.floor(rand() * 0x100000000), i);
  return b;
}

function sparse(file: string, size: number): void {
  fs.closeSync(fs.openSync(file, "w"));
  fs.truncateSync(file, size);
}

function writeAt(file: string, offset: number, data: Buffer): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, data, 0, data.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** Byte-for-byte equality, read in 4 MiB pieces; the error names the first differing byte. */
function expectSameBytes(a: string, b: string, context: string): void {
  const size = fs.statSync(a).size;
  if (fs.statSync(b).size !== size) throw new Error(`${context}: sizes differ (${size} != ${fs.statSync(b).size})`);
  const [fa, fb] = [fs.openSync(a, "r"), fs.openSync(b, "r")];
  try {
    const [x, y] = [Buffer.alloc(4 * MiB), Buffer.alloc(4 * MiB)];
    for (let at = 0; at < size; at += x.length) {
      const n = Math.min(x.length, size - at);
      fs.readSync(fa, x, 0, n, at);
      fs.readSync(fb, y, 0, n, at);
      if (!x.subarray(0, n).equals(y.subarray(0, n))) {
        let k = 0;
        while (x[k] === y[k]) k++;
        throw new Error(`${context}: first difference at byte ${at + k}`);
      }
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

/** Non-overlapping `length`-byte writes at random 4 KiB-aligned offsets in `[0, size)`. */
function placeWrites(rand: () => number, count: number, length: number, size: number): number[] {
  const at: number[] = [];
  while (at.length < count) {
    const o = Math.floor(rand() * ((size - length) / 4096)) * 4096;
    if (at.every((x) => o + length <= x || x + length <= o)) at.push(o);
  }
  return at;
}

test("the chunk size follows the volume: 64 KiB up to 64 GiB, doubling up to 1 MiB past 512 GiB", () => {
  expect(chooseChunkSizeBytes(0)).toBe(64 * KiB);
  expect(chooseChunkSizeBytes(4 * GiB)).toBe(64 * KiB);
  expect(chooseChunkSizeBytes(64 * GiB)).toBe(64 * KiB);
  expect(chooseChunkSizeBytes(64 * GiB + 1)).toBe(128 * KiB);
  expect(chooseChunkSizeBytes(256 * GiB)).toBe(256 * KiB);
  expect(chooseChunkSizeBytes(512 * GiB)).toBe(512 * KiB);
  expect(chooseChunkSizeBytes(1024 * GiB)).toBe(MiB);
  expect(chooseChunkSizeBytes(16 * 1024 * GiB)).toBe(MiB);
});

test("issue 14 goal: 4 MiB writes at 4 KiB-aligned offsets travel as at most 1.1 × their bytes", async () => {
  const rand = prng(14);
  const src = p("vol.img");
  const dst = p("replica.img");
  sparse(src, GiB);
  for (const at of placeWrites(rand, 8, 8 * MiB, GiB)) writeAt(src, at, randomBytes(8 * MiB));
  const first = await syncFiles(src, dst, p("map"));
  expect(first.chunkSizeBytes).toBe(64 * KiB);
  const writes = placeWrites(rand, 16, 4 * MiB, GiB);
  expect(writes.filter((at) => at % (64 * KiB) !== 0).length).toBeGreaterThan(12); // unaligned to the chunks, nearly all
  for (const at of writes) writeAt(src, at, randomBytes(4 * MiB));
  const changed = writes.length * 4 * MiB;
  const second = await syncFiles(src, dst, p("map"));
  expect(second.full).toBe(false);
  const ratio = second.bytesTransferred / changed;
  expect(ratio).toBeGreaterThanOrEqual(1);
  expect(ratio).toBeLessThanOrEqual(1.1);
  expectSameBytes(src, dst, "after the incremental sync");
});

test("a pair keeps the chunk size of its map (no full sync when the default changes); a new map gets the chosen one", async () => {
  const src = p("vol.img");
  const dst = p("replica.img");
  sparse(src, 64 * MiB);
  writeAt(src, 3 * MiB, Buffer.alloc(MiB, 7));
  expect(await syncFiles(src, dst, p("map"), { chunkSizeBytes: MiB })).toMatchObject({ full: true, chunkSizeBytes: MiB });
  writeAt(src, 10 * MiB + 5, Buffer.alloc(100, 8));
  expect(await syncFiles(src, dst, p("map"))).toMatchObject({ full: false, chunkSizeBytes: MiB, bytesTransferred: MiB });
  await invalidateMap(p("map"));
  expect(await syncFiles(src, dst, p("map"))).toMatchObject({ full: true, seeded: true, chunkSizeBytes: 64 * KiB, bytesTransferred: 0 });
  writeAt(src, 20 * MiB + 5, Buffer.alloc(100, 9));
  expect(await syncFiles(src, dst, p("map"))).toMatchObject({ full: false, chunkSizeBytes: 64 * KiB, bytesTransferred: 64 * KiB });
  expectSameBytes(src, dst, "end");
});

/** A FileSink that records what it is asked to write. */
class RecordingSink implements SyncSink {
  writes: Array<Array<{ offset: number; length: number }>> = [];
  constructor(private readonly inner: FileSink) {}
  get description() {
    return this.inner.description;
  }
  sizeBytes() {
    return this.inner.sizeBytes();
  }
  resize(bytes: number) {
    return this.inner.resize(bytes);
  }
  writeChunks(chunks: readonly SinkChunk[]) {
    this.writes.push(chunks.map((c) => ({ offset: c.offset, length: c.data.length })));
    return this.inner.writeChunks(chunks);
  }
  zeroRanges(ranges: Parameters<SyncSink["zeroRanges"]>[0]) {
    return this.inner.zeroRanges(ranges);
  }
  flush() {
    return this.inner.flush();
  }
  readDigests(...args: Parameters<SyncSink["readDigests"]>) {
    return this.inner.readDigests(...args);
  }
  close() {
    return this.inner.close();
  }
}

test("adjacent changed chunks travel as one write (small chunks, few requests)", async () => {
  const src = p("vol.img");
  sparse(src, 32 * MiB);
  writeAt(src, 4 * MiB, Buffer.alloc(MiB, 1)); // 16 chunks of 64 KiB, one run
  writeAt(src, 9 * MiB + 100, Buffer.alloc(10, 2)); // one chunk, apart
  const source = new FileSource(src);
  const sink = new RecordingSink(new FileSink(p("dst.img")));
  try {
    const r = await syncVolume(source, sink, p("map"));
    expect(r).toMatchObject({ chunkSizeBytes: 64 * KiB, chunksSent: 17, bytesTransferred: 17 * 64 * KiB });
  } finally {
    await Promise.all([source.close(), sink.close()]);
  }
  expect(sink.writes).toEqual([[{ offset: 4 * MiB, length: MiB }, { offset: 9 * MiB, length: 64 * KiB }]]);
  expectSameBytes(src, p("dst.img"), "end");
});

/**
 * Property: random writes (any offset and length, data or zeros, sometimes undoing an earlier
 * write, sometimes growing the volume), then a sync, then the destination equals the source byte
 * for byte. Each round syncs at once after its writes, and again with nothing changed, so writes
 * made within the same clock tick as the previous sync are in it too.
 */
describe.each([
  ["chosen by the engine", undefined],
  ["4 KiB", 4 * KiB],
  ["12 KiB (not a power of two)", 12 * KiB],
  ["1 MiB", MiB],
] as const)("random writes then sync: destination equals source (chunk %s)", (_name, chunkSizeBytes) => {
  test.each([1, 2, 3])("seed %i", async (seed) => {
    const rand = prng(seed * 7919 + (chunkSizeBytes ?? 0));
    const src = p("vol.img");
    const dst = p("replica.img");
    let size = 4 * MiB + Math.floor(rand() * 64) * 4096;
    sparse(src, size);
    const saved: Array<{ offset: number; data: Buffer }> = [];
    const options = { chunkSizeBytes, extents: rand() < 0.5 ? ("auto" as const) : ("none" as const) };
    for (let round = 0; round < 8; round++) {
      const ops = 1 + Math.floor(rand() * 6);
      for (let k = 0; k < ops; k++) {
        const kind = rand();
        const length = 1 + Math.floor(rand() * (rand() < 0.7 ? 8 * KiB : 600 * KiB));
        const offset = Math.floor(rand() * (size - length));
        if (kind < 0.5) {
          const before = Buffer.alloc(length);
          const fd = fs.openSync(src, "r");
          fs.readSync(fd, before, 0, length, offset);
          fs.closeSync(fd);
          saved.push({ offset, data: before });
          writeAt(src, offset, randomData(rand, (length + 3) & ~3).subarray(0, length));
        } else if (kind < 0.7) {
          writeAt(src, offset, Buffer.alloc(length)); // zeros over data: the chunk may become a zero chunk
        } else if (kind < 0.85 && saved.length) {
          const undo = saved.splice(Math.floor(rand() * saved.length), 1)[0]; // back to an older content
          writeAt(src, undo.offset, undo.data);
        } else if (kind < 0.9) {
          size += 1 + Math.floor(rand() * MiB); // grow, not always to a whole chunk
          fs.truncateSync(src, size);
        } else {
          writeAt(src, offset, Buffer.alloc(length, 0xff)); // one byte value, again and again
        }
      }
      const r = await syncFiles(src, dst, p("map"), options);
      expectSameBytes(src, dst, `seed ${seed}, round ${round}`);
      const again = await syncFiles(src, dst, p("map"), options);
      expect(again.bytesTransferred).toBe(0);
      expectSameBytes(src, dst, `seed ${seed}, round ${round}, unchanged`);
      if (round === 0) expect(r.full).toBe(true);
      else expect(r.full).toBe(false);
    }
  });
});
