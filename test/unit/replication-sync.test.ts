/**
 * The incremental replication sync engine on real sparse files in a temp folder (no root needed).
 * The 10 GiB case is the Done-when: after the first sync, 64 MiB changed (scattered, some
 * unaligned) must travel as at most 1.1 × 64 MiB. It takes a few seconds: the syncs use the
 * filefrag fast path, and the final comparison skips holes with SEEK_DATA (python3); without
 * python3 it reads 2 × 10 GiB (8 to 35 s on the test machine, depending on the host's load).
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { BackendError, UserError } from "../../provider/src/errors";
import { decodeChunkMap, encodeChunkMap, journalPath, readChunkMap } from "../../provider/src/replication/chunk-map";
import { chunkRunsOf } from "../../provider/src/replication/chunk-scan";
import { FileSource, mergeRanges, parseFilefrag } from "../../provider/src/replication/file-source";
import {
  FileSink,
  adoptMap,
  invalidateMap,
  lagSeconds,
  pairStatePaths,
  readMapInfo,
  syncFiles,
  syncVolume,
  type SinkChunk,
} from "../../provider/src/replication/sync";
import type { RunResult } from "../../provider/src/exec/run";
import { DelegatingSink } from "../helpers/delegating-sink";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
/** Most cases count 1 MiB chunks (the only size before the engine chose one per pair); the choice has its own tests. */
const MiB_CHUNKS = { chunkSizeBytes: MiB };

// Real file I/O on a shared host: hashing two 512 MiB files can take seconds when it is busy.
jest.setTimeout(60_000);

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-repl-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const p = (name: string) => path.join(dir, name);

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

async function sha256(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const b of fs.createReadStream(file, { highWaterMark: MiB })) h.update(b as Buffer);
  return h.digest("hex");
}

/** Whole-file equality, read side by side in 1 MiB pieces (faster than two hashes). */
async function sameContent(a: string, b: string): Promise<boolean> {
  const [ha, hb] = await Promise.all([fsp.open(a), fsp.open(b)]);
  try {
    const size = (await ha.stat()).size;
    if ((await hb.stat()).size !== size) return false;
    const ba = Buffer.allocUnsafe(MiB);
    const bb = Buffer.allocUnsafe(MiB);
    for (let at = 0; at < size; at += MiB) {
      const n = Math.min(MiB, size - at);
      await Promise.all([ha.read(ba, 0, n, at), hb.read(bb, 0, n, at)]);
      if (!ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
    }
    return true;
  } finally {
    await Promise.all([ha.close(), hb.close()]);
  }
}

const SEEK_DATA_PY = `
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
off = 0
while off < size:
    try:
        d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    print(d, h)
    off = h
`;

/** Data ranges per lseek(SEEK_DATA/SEEK_HOLE) through python3 (Node has no SEEK_DATA); undefined without python3. */
function seekDataRanges(file: string): Array<[number, number]> | undefined {
  try {
    const out = execFileSync("python3", ["-c", SEEK_DATA_PY, file], { encoding: "utf8", timeout: 30_000 });
    return out.trim().split("\n").filter(Boolean).map((l) => l.split(" ").map(Number) as [number, number]);
  } catch {
    return undefined;
  }
}

/**
 * Whole-file equality of big sparse files without reading their holes: outside the union of both
 * files' SEEK_DATA ranges both read as zeros, so only that union is compared. SEEK_DATA is a kernel
 * answer independent of the FIEMAP (filefrag) fast path under test. Falls back to reading all.
 */
async function sameSparseContent(a: string, b: string): Promise<boolean> {
  const ra = seekDataRanges(a);
  const rb = seekDataRanges(b);
  if (!ra || !rb) return sameContent(a, b);
  if (fs.statSync(a).size !== fs.statSync(b).size) return false;
  const ranges = mergeRanges([...ra, ...rb].map(([s, e]) => ({ offset: s, length: e - s })));
  const [ha, hb] = await Promise.all([fsp.open(a), fsp.open(b)]);
  try {
    const ba = Buffer.allocUnsafe(MiB);
    const bb = Buffer.allocUnsafe(MiB);
    for (const r of ranges) {
      for (let at = r.offset; at < r.offset + r.length; at += MiB) {
        const n = Math.min(MiB, r.offset + r.length - at);
        await Promise.all([ha.read(ba, 0, n, at), hb.read(bb, 0, n, at)]);
        if (!ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
      }
    }
    return true;
  } finally {
    await Promise.all([ha.close(), hb.close()]);
  }
}

const allocatedBytes = (file: string) => fs.statSync(file).blocks * 512;

/** A sink that delegates to a FileSink and fails the n-th writeChunks call. */
class FailingSink extends DelegatingSink {
  calls = 0;
  constructor(
    inner: FileSink,
    private readonly failOnCall: number,
  ) {
    super(inner);
  }
  async writeChunks(chunks: readonly SinkChunk[]) {
    this.calls++;
    if (this.calls === this.failOnCall) throw new BackendError("AGENT_UNAVAILABLE", "link down", true);
    return this.inner.writeChunks(chunks);
  }
}

describe.each(["auto", "none"] as const)("sync with extents=%s", (extents) => {
  test("initial sync of a sparse file: equal content, still sparse, only the data regions sent", async () => {
    const src = p("src.img");
    const dst = p("dst.img");
    sparse(src, 512 * MiB);
    writeAt(src, 10 * MiB, randomBytes(3 * MiB)); // 3 chunks
    writeAt(src, 200 * MiB + 512 * KiB, randomBytes(100 * KiB)); // inside chunk 200
    writeAt(src, 300 * MiB - 4096, randomBytes(8192)); // straddles chunks 299 and 300
    writeAt(src, 512 * MiB - 1, Buffer.from([7])); // last chunk
    const r = await syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, extents });
    expect(r.full).toBe(true);
    expect(r.seeded).toBe(false);
    expect(r.bytesTransferred).toBe(7 * MiB);
    expect(r.chunksSent).toBe(7);
    expect(r.chunksScanned).toBe(512);
    expect(r.bytesScanned).toBe(512 * MiB);
    expect(r.chunksZeroed).toBe(0);
    if (extents === "none") expect(r.extentSource).toBe("zero-check");
    if (extents === "none") expect(r.bytesRead).toBe(512 * MiB);
    if (r.extentSource === "filefrag") expect(r.bytesRead).toBeLessThan(16 * MiB);
    expect(await sha256(dst)).toBe(await sha256(src));
    expect(fs.statSync(dst).size).toBe(512 * MiB);
    expect(allocatedBytes(dst)).toBeLessThanOrEqual(8 * MiB);
    const info = await readMapInfo(p("map"));
    expect(info).toMatchObject({ generation: 1, sourceSizeBytes: 512 * MiB, chunkSizeBytes: MiB, algorithm: "sha256", lastSyncAt: r.startedAt });
  });

  test("no changes: the second sync transfers nothing", async () => {
    const src = p("src.img");
    sparse(src, 64 * MiB);
    writeAt(src, 5 * MiB + 3, randomBytes(2 * MiB));
    await syncFiles(src, p("dst.img"), p("map"), { ...MiB_CHUNKS, extents });
    const r = await syncFiles(src, p("dst.img"), p("map"), { ...MiB_CHUNKS, extents });
    expect(r).toMatchObject({ full: false, bytesTransferred: 0, chunksSent: 0, chunksZeroed: 0, generation: 2 });
    expect(await sameContent(src, p("dst.img"))).toBe(true);
  });
});

test("Done-when: 10 GiB sparse volume, 64 MiB changed after the first sync → at most 1.1 × 64 MiB sent", async () => {
  const src = p("vol.img");
  const dst = p("replica.img");
  const map = p("vol.map");
  sparse(src, 10 * GiB);
  // 64 MiB of data at scattered offsets, some not chunk-aligned.
  const initial: Array<[number, number]> = [
    [0, 8 * MiB],
    [1 * GiB + 12345, 16 * MiB],
    [3 * GiB, 8 * MiB],
    [5 * GiB + 777 * KiB, 16 * MiB],
    [8 * GiB + 4096, 12 * MiB],
    [10 * GiB - 4 * MiB, 4 * MiB],
  ];
  for (const [at, len] of initial) writeAt(src, at, randomBytes(len));
  const t0 = Date.now();
  const first = await syncFiles(src, dst, map, MiB_CHUNKS);
  const firstMs = Date.now() - t0;
  expect(first.full).toBe(true);
  // 64 MiB of data touching 8 + 17 + 8 + 17 + 13 + 4 chunks.
  expect(first.bytesTransferred).toBe(67 * MiB);

  // Change exactly 64 MiB: rewrite existing data, fill holes, unaligned big and small writes.
  const changes: Array<[number, number]> = [
    [3 * GiB, 16 * MiB], // aligned, half over existing data, half into a hole
    [7 * GiB, 16 * MiB], // aligned, into a hole
    [1 * GiB + 12345 + 4 * MiB, 16 * MiB], // unaligned over existing data: 17 chunks
    [9 * GiB + 512 * KiB, 15 * MiB], // unaligned into a hole: 16 chunks
    [2 * GiB + 100, 256 * KiB], // small unaligned writes, one chunk each
    [4 * GiB + 3 * MiB + 5000, 256 * KiB],
    [6 * GiB + 33 * MiB + 700 * KiB, 256 * KiB],
    [10 * GiB - 2 * MiB + 1, 256 * KiB],
  ];
  const changedBytes = changes.reduce((s, [, len]) => s + len, 0);
  expect(changedBytes).toBe(64 * MiB);
  for (const [at, len] of changes) writeAt(src, at, randomBytes(len));
  const t1 = Date.now();
  const second = await syncFiles(src, dst, map, MiB_CHUNKS);
  const secondMs = Date.now() - t1;
  expect(second.full).toBe(false);
  expect(second.bytesTransferred).toBeLessThanOrEqual(1.1 * 64 * MiB);
  expect(second.bytesTransferred).toBe(69 * MiB);
  expect(second.chunksScanned).toBe(10 * 1024);
  const t2 = Date.now();
  expect(await sameSparseContent(src, dst)).toBe(true);
  expect(allocatedBytes(dst)).toBeLessThan(200 * MiB);
  // For the report (jest --verbose shows console output).
  console.log(
    `10 GiB: first sync ${firstMs} ms (${first.extentSource}, ${first.bytesTransferred / MiB} MiB), ` +
      `incremental ${secondMs} ms (${second.extentSource}, ${JSON.stringify(second.timings)}, ${second.bytesTransferred / MiB} MiB for 64 MiB changed, ratio ${(second.bytesTransferred / changedBytes).toFixed(3)}), ` +
      `compare ${Date.now() - t2} ms`,
  );
}, 300_000);

test("a chunk zeroed on the source becomes zeros (a hole) on the destination", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  sparse(src, 32 * MiB);
  writeAt(src, 4 * MiB, randomBytes(4 * MiB)); // chunks 4..7
  await syncFiles(src, dst, p("map"), MiB_CHUNKS);
  const before = allocatedBytes(dst);
  writeAt(src, 5 * MiB, Buffer.alloc(2 * MiB)); // chunks 5 and 6 now zeros
  writeAt(src, 7 * MiB, Buffer.alloc(512 * KiB)); // chunk 7 half zeros: still data
  const r = await syncFiles(src, dst, p("map"), MiB_CHUNKS);
  expect(r).toMatchObject({ chunksZeroed: 2, bytesZeroed: 2 * MiB, chunksSent: 1, bytesTransferred: MiB });
  expect(await sha256(dst)).toBe(await sha256(src));
  // fallocate punched the holes (this test machine has util-linux and ext4/xfs/btrfs).
  expect(allocatedBytes(dst)).toBeLessThanOrEqual(before - 2 * MiB);
});

test("zeroing by writing zeros (no fallocate) is correct too", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  sparse(src, 8 * MiB);
  writeAt(src, 2 * MiB, randomBytes(2 * MiB));
  await syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, zeroMethod: "write-zeros" });
  writeAt(src, 2 * MiB, Buffer.alloc(MiB));
  const r = await syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, zeroMethod: "write-zeros" });
  expect(r.chunksZeroed).toBe(1);
  expect(await sha256(dst)).toBe(await sha256(src));
});

test("a failing fallocate falls back to writing zeros", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  sparse(src, 8 * MiB);
  writeAt(src, 0, randomBytes(3 * MiB));
  const calls: string[][] = [];
  const run = async (file: string, args: readonly string[]): Promise<RunResult> => {
    calls.push([file, ...args]);
    throw new BackendError("COMMAND_FAILED", `command failed (exit 1): ${file}: Operation not supported`, false);
  };
  await syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, run });
  writeAt(src, MiB, Buffer.alloc(MiB));
  const sink = new FileSink(dst, { run });
  const source = new FileSource(src, { run });
  const r = await syncVolume(source, sink, p("map"), { ...MiB_CHUNKS, mapKey: `${src} -> ${dst}` });
  await Promise.all([sink.close(), source.close()]);
  expect(r.chunksZeroed).toBe(1);
  expect(sink.zeroMethod).toBe("write-zeros");
  expect(calls).toContainEqual(["fallocate", "--punch-hole", "--keep-size", "--offset", String(MiB), "--length", String(MiB), "--", dst]);
  expect(await sha256(dst)).toBe(await sha256(src));
});

test("a grown source grows the destination first; content equal", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  const oldSize = 64 * MiB + 12345; // last chunk partial
  sparse(src, oldSize);
  writeAt(src, oldSize - 1000, randomBytes(1000)); // data in the partial last chunk
  await syncFiles(src, dst, p("map"), MiB_CHUNKS);
  fs.truncateSync(src, 96 * MiB);
  writeAt(src, 90 * MiB, randomBytes(MiB));
  const r = await syncFiles(src, dst, p("map"), MiB_CHUNKS);
  expect(r.full).toBe(false);
  expect(r.sinkSizeBeforeBytes).toBe(oldSize);
  expect(fs.statSync(dst).size).toBe(96 * MiB);
  // The new chunk, and the old last chunk (now longer, so its digest changed).
  expect(r.chunksSent).toBe(2);
  expect(await sha256(dst)).toBe(await sha256(src));
});

test("a source that grows during a sync is synced up to the planned size, the rest next time", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  sparse(src, 8 * MiB);
  writeAt(src, 0, randomBytes(2 * MiB));
  const source = new FileSource(src, { extents: "none" });
  const read = source.read.bind(source);
  let grown = false;
  source.read = async (buffer, offset) => {
    if (!grown) {
      grown = true;
      fs.truncateSync(src, 12 * MiB);
      writeAt(src, 11 * MiB, randomBytes(MiB));
    }
    return read(buffer, offset);
  };
  const sink = new FileSink(dst);
  const r = await syncVolume(source, sink, p("map"), { ...MiB_CHUNKS, mapKey: "k" });
  await Promise.all([source.close(), sink.close()]);
  expect(r).toMatchObject({ sourceSizeBytes: 8 * MiB, chunksScanned: 8, chunksSent: 2 });
  expect(fs.statSync(dst).size).toBe(8 * MiB);
  const next = await syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, mapKey: "k" });
  expect(next).toMatchObject({ full: false, sourceSizeBytes: 12 * MiB, chunksSent: 1 });
  expect(await sha256(dst)).toBe(await sha256(src));
});

test("a shrunk source is refused (volumes only grow)", async () => {
  const src = p("src.img");
  sparse(src, 16 * MiB);
  writeAt(src, 0, randomBytes(MiB));
  await syncFiles(src, p("dst.img"), p("map"), MiB_CHUNKS);
  fs.truncateSync(src, 8 * MiB);
  await expect(syncFiles(src, p("dst.img"), p("map"), MiB_CHUNKS)).rejects.toMatchObject({ code: "INVALID_STATE" });
  await invalidateMap(p("map"));
  // Without a map the larger destination is refused as well.
  await expect(syncFiles(src, p("dst.img"), p("map"), MiB_CHUNKS)).rejects.toThrow(UserError);
});

test("missing map: a full sync, seeded from the destination's digests, still correct", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  sparse(src, 64 * MiB);
  writeAt(src, 0, randomBytes(8 * MiB));
  writeAt(src, 40 * MiB, randomBytes(8 * MiB));
  await syncFiles(src, dst, p("map"), MiB_CHUNKS);
  fs.rmSync(p("map"));
  writeAt(src, 41 * MiB, randomBytes(100)); // one changed chunk
  writeAt(dst, 20 * MiB, randomBytes(MiB)); // garbage on the destination where the source has a hole
  const r = await syncFiles(src, dst, p("map"), MiB_CHUNKS);
  expect(r).toMatchObject({ full: true, seeded: true, chunksSent: 1, bytesTransferred: MiB, chunksZeroed: 1 });
  expect(await sha256(dst)).toBe(await sha256(src));
  const again = await syncFiles(src, dst, p("map"), MiB_CHUNKS);
  expect(again).toMatchObject({ full: false, bytesTransferred: 0 });
});

test("missing map without seeding: every data chunk is sent and every zero run is zeroed", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  sparse(src, 32 * MiB);
  writeAt(src, 0, randomBytes(4 * MiB));
  await syncFiles(src, dst, p("map"), MiB_CHUNKS);
  writeAt(dst, 20 * MiB, randomBytes(MiB));
  fs.rmSync(p("map"));
  const r = await syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, seedFromSink: false });
  expect(r).toMatchObject({ full: true, seeded: false, bytesTransferred: 4 * MiB, chunksZeroed: 28 });
  expect(await sha256(dst)).toBe(await sha256(src));
});

test("a map of another chunk size, key or a corrupt map means a full sync", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  sparse(src, 16 * MiB);
  writeAt(src, 0, randomBytes(2 * MiB));
  await syncFiles(src, dst, p("map"), MiB_CHUNKS);
  expect((await syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, chunkSizeBytes: 256 * KiB })).full).toBe(true);
  expect((await syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, chunkSizeBytes: 256 * KiB })).full).toBe(false);
  expect((await syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, chunkSizeBytes: 256 * KiB, mapKey: "other" })).full).toBe(true);
  const bytes = fs.readFileSync(p("map"));
  bytes[bytes.length - 40] ^= 0xff;
  fs.writeFileSync(p("map"), bytes);
  expect(await readChunkMap(p("map"))).toEqual({ problem: "corrupt" });
  expect((await syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, chunkSizeBytes: 256 * KiB, mapKey: "other" })).full).toBe(true);
  expect(await sha256(dst)).toBe(await sha256(src));
});

test("the map is written only after success; a retry resends, even if the source went back", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  const map = p("map");
  const key = "pair-1:forward";
  sparse(src, 32 * MiB);
  const old = randomBytes(4 * MiB);
  writeAt(src, 0, old);
  await syncFiles(src, dst, map, { ...MiB_CHUNKS, mapKey: key });
  const mapBefore = fs.readFileSync(map);
  // Change 4 chunks; one chunk per batch; the second batch fails.
  writeAt(src, 0, randomBytes(4 * MiB));
  const failing = new FailingSink(new FileSink(dst), 2);
  const source = new FileSource(src);
  await expect(syncVolume(source, failing, map, { ...MiB_CHUNKS, mapKey: key, batchBytes: MiB })).rejects.toMatchObject({ code: "AGENT_UNAVAILABLE" });
  await Promise.all([failing.close(), source.close()]);
  expect(fs.readFileSync(map).equals(mapBefore)).toBe(true);
  expect(fs.existsSync(journalPath(map))).toBe(true);
  // Chunk 0 reached the destination; now the source goes back to the old content there.
  writeAt(src, 0, old.subarray(0, MiB));
  const retry = await syncFiles(src, dst, map, { ...MiB_CHUNKS, mapKey: key });
  expect(retry.full).toBe(false);
  expect(retry.chunksSent).toBe(4); // chunk 0 (journaled, now unknown) + chunks 1..3 (changed)
  expect(await sha256(dst)).toBe(await sha256(src));
  expect(fs.existsSync(journalPath(map))).toBe(false);
  expect((await syncFiles(src, dst, map, { ...MiB_CHUNKS, mapKey: key })).bytesTransferred).toBe(0);
});

test("a journal survives two failures in a row", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  const map = p("map");
  sparse(src, 16 * MiB);
  const old = randomBytes(4 * MiB);
  writeAt(src, 0, old);
  await syncFiles(src, dst, map, { ...MiB_CHUNKS, mapKey: "k" });
  writeAt(src, 0, randomBytes(4 * MiB));
  for (const failOn of [3, 2]) {
    const failing = new FailingSink(new FileSink(dst), failOn);
    const source = new FileSource(src);
    await expect(syncVolume(source, failing, map, { ...MiB_CHUNKS, mapKey: "k", batchBytes: MiB })).rejects.toThrow("link down");
    await Promise.all([failing.close(), source.close()]);
  }
  // Back to what the map says; the destination got new data in chunks 0 and 1, and the journal
  // (kept across the two failures) marks every chunk either attempt may have written.
  writeAt(src, 0, old);
  const r = await syncFiles(src, dst, map, { ...MiB_CHUNKS, mapKey: "k" });
  // Chunks 0..2 at least; chunk 3 too when the first attempt journaled it before seeing the failure.
  expect(r.chunksSent).toBeGreaterThanOrEqual(3);
  expect(await sha256(dst)).toBe(await sha256(src));
});

test("cancel: a CANCELLED error, and the next sync completes", async () => {
  const src = p("src.img");
  const dst = p("dst.img");
  sparse(src, 64 * MiB);
  writeAt(src, 0, randomBytes(32 * MiB));
  const ac = new AbortController();
  ac.abort();
  await expect(syncFiles(src, dst, p("map"), { ...MiB_CHUNKS, signal: ac.signal })).rejects.toMatchObject({ code: "CANCELLED", retryable: true });
  const r = await syncFiles(src, dst, p("map"), MiB_CHUNKS);
  expect(r.bytesTransferred).toBe(32 * MiB);
  expect(await sha256(dst)).toBe(await sha256(src));
});

test("failback: reverse sync with its own map, then adopt it for the forward direction", async () => {
  const primary = p("primary.img");
  const secondary = p("secondary.img");
  const state = pairStatePaths(p("state"), "pair-7");
  sparse(primary, 64 * MiB);
  writeAt(primary, 0, randomBytes(16 * MiB));
  await syncFiles(primary, secondary, state.forward.mapPath, { ...MiB_CHUNKS, mapKey: state.forward.mapKey });
  // A write on the primary that never reached the secondary, then failover.
  writeAt(primary, 30 * MiB, randomBytes(MiB));
  await invalidateMap(state.forward.mapPath);
  // The application now writes the secondary.
  writeAt(secondary, 2 * MiB, randomBytes(2 * MiB));
  writeAt(secondary, 50 * MiB, randomBytes(MiB));
  // Failback: secondary → primary. No reverse map yet: seeded from the primary's own digests.
  const back = await syncFiles(secondary, primary, state.reverse.mapPath, { ...MiB_CHUNKS, mapKey: state.reverse.mapKey });
  expect(back).toMatchObject({ full: true, seeded: true, chunksSent: 3, chunksZeroed: 1 });
  expect(await sha256(primary)).toBe(await sha256(secondary));
  const back2 = await syncFiles(secondary, primary, state.reverse.mapPath, { ...MiB_CHUNKS, mapKey: state.reverse.mapKey });
  expect(back2).toMatchObject({ full: false, bytesTransferred: 0 });
  // Cut-over: both sides equal the reverse map; the forward direction resumes incrementally.
  await adoptMap(state.reverse.mapPath, state.forward.mapPath, state.forward.mapKey);
  await invalidateMap(state.reverse.mapPath);
  const fwd = await syncFiles(primary, secondary, state.forward.mapPath, { ...MiB_CHUNKS, mapKey: state.forward.mapKey });
  expect(fwd).toMatchObject({ full: false, bytesTransferred: 0 });
  writeAt(primary, 60 * MiB, randomBytes(10));
  expect((await syncFiles(primary, secondary, state.forward.mapPath, { ...MiB_CHUNKS, mapKey: state.forward.mapKey })).chunksSent).toBe(1);
  expect(await sha256(primary)).toBe(await sha256(secondary));
});

test("lagSeconds and map info", async () => {
  expect(lagSeconds(undefined)).toBeUndefined();
  expect(lagSeconds("2026-01-01T00:00:00.000Z", new Date("2026-01-01T00:01:30.900Z"))).toBe(90);
  expect(lagSeconds(new Date("2026-01-01T00:00:10Z"), new Date("2026-01-01T00:00:00Z"))).toBe(0);
  expect(await readMapInfo(p("nothing"))).toBeUndefined();
  const src = p("src.img");
  sparse(src, 4 * MiB);
  writeAt(src, 0, randomBytes(10));
  const at = new Date("2026-03-04T05:06:07.000Z");
  const r = await syncFiles(src, p("dst.img"), p("map"), { ...MiB_CHUNKS, now: () => at, mapKey: "k" });
  expect(r.lastSyncAt).toBe(at.toISOString());
  expect(await readMapInfo(p("map"))).toEqual({ key: "k", generation: 1, lastSyncAt: at.toISOString(), sourceSizeBytes: 4 * MiB, chunkSizeBytes: MiB, algorithm: "sha256" });
  expect(() => pairStatePaths(dir, "../evil")).toThrow(UserError);
});

describe("pieces", () => {
  test("map encoding round-trips; damaged bytes are rejected", async () => {
    const src = p("src.img");
    sparse(src, 3 * MiB + 5);
    writeAt(src, MiB, randomBytes(7));
    await syncFiles(src, p("dst.img"), p("map"), { ...MiB_CHUNKS, algorithm: "md5", mapKey: "ключ" });
    const bytes = fs.readFileSync(p("map"));
    const decoded = decodeChunkMap(bytes)!;
    expect(decoded.key).toBe("ключ");
    expect(decoded.map.count).toBe(4);
    expect(decoded.map.isKnownZero(0)).toBe(true);
    expect(decoded.map.isKnownZero(1)).toBe(false);
    expect(encodeChunkMap(decoded).equals(bytes)).toBe(true);
    expect(decodeChunkMap(bytes.subarray(0, bytes.length - 1))).toBeUndefined();
  });

  test("filefrag output parsing", () => {
    const out = [
      "Filesystem type is: ef53",
      "File size of /x is 10737418240 (2621440 blocks of 4096 bytes)",
      " ext:     logical_offset:        physical_offset: length:   expected: flags:",
      "   0:    25600..   29695:          0..         0:      0:             unknown_loc,delalloc",
      "   1:    29696..   29699:     123456..    123459:      4:             ",
      "   2:  2621439.. 2621440:     200000..    200001:      2:             last,eof",
      "/x: 3 extents found",
    ].join("\n");
    expect(parseFilefrag(out, 10 * GiB)).toEqual([
      { offset: 100 * MiB, length: 16 * MiB + 16 * KiB },
      { offset: 10 * GiB - 4096, length: 4096 },
    ]);
    expect(parseFilefrag(out.replace("3 extents", "4 extents"), 10 * GiB)).toMatch(/count mismatch/);
    // Logically adjacent extents count once in filefrag's total: fewer reported than listed is fine.
    expect(parseFilefrag(out.replace("3 extents", "2 extents"), 10 * GiB)).toHaveLength(2);
    expect(parseFilefrag(out.replace("last,eof", "eof"), 10 * GiB)).toMatch(/does not end with the last extent/);
    expect(parseFilefrag(out.replace("ef53", "1021994"), 10 * GiB)).toMatch(/not trusted/);
    expect(parseFilefrag(out, 5 * GiB)).toMatch(/size changed/);
    expect(parseFilefrag("Filesystem type is: 58465342\nFile size of /y is 1048576 (256 blocks of 4096 bytes)\n/y: 0 extents found\n", MiB)).toEqual([]);
    expect(mergeRanges([{ offset: 10, length: 5 }, { offset: 0, length: 10 }, { offset: 30, length: 1 }])).toEqual([{ offset: 0, length: 15 }, { offset: 30, length: 1 }]);
    expect(chunkRunsOf([{ offset: 100, length: 10 }, { offset: 1000, length: 5000 }, { offset: 9000, length: 1 }], 1024, 8)).toEqual([[0, 6]]);
  });

  test("garbage from filefrag falls back to reading everything, still correct", async () => {
    const src = p("src.img");
    sparse(src, 8 * MiB);
    writeAt(src, 6 * MiB, randomBytes(10));
    const run = async (): Promise<RunResult> => ({ stdout: "Filesystem type is: ef53\nnonsense\n", stderr: "", exitCode: 0 });
    const source = new FileSource(src, { run });
    const sink = new FileSink(p("dst.img"), { run });
    const r = await syncVolume(source, sink, p("map"), MiB_CHUNKS);
    await Promise.all([source.close(), sink.close()]);
    expect(r.extentSource).toBe("zero-check");
    expect(source.extentNote).toMatch(/^zero-check \(filefrag: no file size line/);
    expect(r.chunksSent).toBe(1);
    expect(await sha256(p("dst.img"))).toBe(await sha256(src));
  });

  test("this machine's filefrag is used when present (fast path check)", async () => {
    const src = p("src.img");
    sparse(src, GiB);
    writeAt(src, 512 * MiB, randomBytes(MiB));
    const source = new FileSource(src);
    const ranges = await source.dataRanges();
    await source.close();
    if (ranges === undefined) return; // no filefrag or untrusted file system here: the fallback is covered above
    expect(ranges.some((r) => r.offset <= 512 * MiB && r.offset + r.length >= 513 * MiB)).toBe(true);
    expect(ranges.reduce((s, r) => s + r.length, 0)).toBeLessThan(8 * MiB);
  });
});
