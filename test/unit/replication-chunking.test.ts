/**
 * The replication engine's chunk size per pair (issue 14: unaligned 4 MiB writes must cost at most
 * 1.1 × their bytes), the unchanged-source shortcut (an idle volume is not read again), and their
 * correctness under random writes: whatever happens to the source between syncs, a sync leaves the
 * destination byte for byte equal to it.
 * Real sparse files in a temp folder, no root needed.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DelegatingSink } from "../helpers/delegating-sink";
import { sparseFile, writeAt } from "../helpers/files";
import { seeded } from "../helpers/seeded";
import { CHANGE_TOKEN_SETTLE_MS } from "../../provider/src/replication/file-source";
import {
  FileSink,
  FileSource,
  adoptMap,
  chooseChunkSizeBytes,
  invalidateMap,
  syncFiles,
  syncVolume,
  type SinkChunk,
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

function randomData(rand: () => number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i += 4) b.writeUInt32LE(Math.floor(rand() * 0x100000000), i);
  return b;
}

const sparse = (file: string, size: number) => void sparseFile(file, size);

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
  const rand = seeded(14);
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
class RecordingSink extends DelegatingSink {
  writes: Array<Array<{ offset: number; length: number }>> = [];
  writeChunks(chunks: readonly SinkChunk[]) {
    this.writes.push(chunks.map((c) => ({ offset: c.offset, length: c.data.length })));
    return this.inner.writeChunks(chunks);
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
  ["chosen by the engine", undefined, false],
  ["4 KiB", 4 * KiB, false],
  ["12 KiB (not a power of two)", 12 * KiB, false],
  ["1 MiB", MiB, false],
  ["chosen by the engine, settled source (tokens offered)", undefined, true],
  ["12 KiB, settled source (tokens offered)", 12 * KiB, true],
] as const)("random writes then sync: destination equals source (chunk %s)", (_name, chunkSizeBytes, settled) => {
  test.each([1, 2, 3])("seed %i", async (seed) => {
    const rand = seeded(seed * 7919 + (chunkSizeBytes ?? 0) + (settled ? 1 : 0));
    const src = p("vol.img");
    const dst = p("replica.img");
    let size = 4 * MiB + Math.floor(rand() * 64) * 4096;
    sparse(src, size);
    const saved: Array<{ offset: number; data: Buffer }> = [];
    // Settled: the clock the token rule sees runs ahead by the settle time, so every sync is
    // offered a token and every "nothing changed" sync takes the shortcut; a pause after each
    // sync keeps the writes off the clock tick of its stat (what the settle time guarantees).
    const nowMs = settled ? () => Date.now() + CHANGE_TOKEN_SETTLE_MS + 1000 : undefined;
    const options = { chunkSizeBytes, extents: rand() < 0.5 ? ("auto" as const) : ("none" as const) };
    const sync = async () => {
      const source = new FileSource(src, { extents: options.extents, nowMs });
      const sink = new FileSink(dst, { extents: options.extents });
      try {
        return await syncVolume(source, sink, p("map"), { chunkSizeBytes });
      } finally {
        await Promise.all([source.close(), sink.close()]);
        if (settled) await new Promise((r) => setTimeout(r, 25));
      }
    };
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
      const r = await sync();
      expectSameBytes(src, dst, `seed ${seed}, round ${round}`);
      expect(r.sourceUnchanged).toBe(false);
      const again = await sync();
      expect(again.bytesTransferred).toBe(0);
      expect(again.sourceUnchanged).toBe(settled);
      expectSameBytes(src, dst, `seed ${seed}, round ${round}, unchanged`);
      if (round === 0) expect(r.full).toBe(true);
      else expect(r.full).toBe(false);
    }
  });
});

describe("an unchanged source is not read again", () => {
  /** A source whose token rule sees a clock `aheadMs` in the future (as if its last write were that old). */
  const aged = (file: string, aheadMs: number) => new FileSource(file, { nowMs: () => Date.now() + aheadMs });

  test("a settled file gets a token; a just-written one does not (its write may still be in flight)", async () => {
    const src = p("vol.img");
    sparse(src, 8 * MiB);
    writeAt(src, MiB, Buffer.alloc(10, 1));
    const now = new FileSource(src);
    const later = aged(src, CHANGE_TOKEN_SETTLE_MS + 1000);
    const off = new FileSource(src, { changeTokens: false, nowMs: () => Date.now() + CHANGE_TOKEN_SETTLE_MS + 1000 });
    try {
      expect(await now.changeToken()).toBeUndefined();
      const t = await later.changeToken();
      expect(t).toMatch(/^file1:ef53:|^file1:58465342:|^file1:9123683e:/);
      expect(await later.changeToken()).toBe(t);
      expect(await off.changeToken()).toBeUndefined();
      writeAt(src, MiB, Buffer.alloc(10, 1)); // the same bytes again: still a write, a new ctime
      expect(await later.changeToken()).not.toBe(t);
    } finally {
      await Promise.all([now.close(), later.close(), off.close()]);
    }
  });

  test("the second sync of a settled, untouched volume reads nothing; a write afterwards is found", async () => {
    const src = p("vol.img");
    const dst = p("replica.img");
    sparse(src, 64 * MiB);
    writeAt(src, 3 * MiB, randomBytes(8 * MiB));
    const sync = async (aheadMs = CHANGE_TOKEN_SETTLE_MS + 1000) => {
      const source = aged(src, aheadMs);
      const sink = new FileSink(dst);
      try {
        return await syncVolume(source, sink, p("map"));
      } finally {
        await Promise.all([source.close(), sink.close()]);
      }
    };
    expect(await sync()).toMatchObject({ full: true, sourceUnchanged: false, bytesRead: 8 * MiB });
    const idle = await sync();
    expect(idle).toMatchObject({ full: false, sourceUnchanged: true, bytesRead: 0, bytesTransferred: 0, extentSource: "unchanged", generation: 1 });
    await new Promise((r) => setTimeout(r, 25));
    writeAt(src, 40 * MiB + 3, Buffer.alloc(5, 9));
    // Just written: no token offered (real clock), so the sync reads, finds the write, saves no token.
    expect(await sync(0)).toMatchObject({ sourceUnchanged: false, bytesTransferred: 64 * KiB });
    expectSameBytes(src, dst, "after the write");
    expect(await sync()).toMatchObject({ sourceUnchanged: false, bytesTransferred: 0 });
    expect(await sync()).toMatchObject({ sourceUnchanged: true, bytesRead: 0 });
  });

  test("no shortcut over an unfinished sync, a forgotten map or an adopted one", async () => {
    const src = p("vol.img");
    const dst = p("replica.img");
    sparse(src, 16 * MiB);
    writeAt(src, 0, randomBytes(2 * MiB));
    const sync = async (mapPath = p("map"), sinkFile = dst) => {
      const source = aged(src, CHANGE_TOKEN_SETTLE_MS + 1000);
      const sink = new FileSink(sinkFile);
      try {
        return await syncVolume(source, sink, mapPath);
      } finally {
        await Promise.all([source.close(), sink.close()]);
      }
    };
    await sync();
    expect((await sync()).sourceUnchanged).toBe(true);
    // A journal amending this generation: a sync died after writing some chunks: read again.
    fs.writeFileSync(`${p("map")}.journal`, Buffer.concat([Buffer.from("SDSCJNL1", "latin1"), Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0, 0, 0, 0, 1, 0, 0, 0])]));
    expect((await sync()).sourceUnchanged).toBe(false);
    expect((await sync()).sourceUnchanged).toBe(true);
    await invalidateMap(p("map"));
    expect(fs.existsSync(`${p("map")}.source`)).toBe(false);
    expect(await sync()).toMatchObject({ full: true, sourceUnchanged: false });
    await adoptMap(p("map"), p("other.map"), "");
    expect((await sync(p("other.map"))).sourceUnchanged).toBe(false);
  });
});
