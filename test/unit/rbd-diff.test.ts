/**
 * The RBD diff v1 codec (replication/rbd-diff.ts) and the zero split of the RBD → RBD relay
 * (replication/rbd-sync.ts), with no cluster: bytes as `rbd export-diff` writes them (the layout of
 * Ceph's doc/dev/rbd-diff.rst, checked against a real export-diff in test/contract/rbd-replication).
 */
import { Readable } from "node:stream";
import { encodeHeader, encodeRecord, RBD_DIFF_BANNER, RBD_DIFF_END, readRbdDiff, type RbdDiffRecord, type RbdDiffStats } from "../../provider/src/replication/rbd-diff";
import { splitZeros } from "../../provider/src/replication/rbd-sync";

const collect = async (chunks: Buffer[], stats?: RbdDiffStats) => {
  const out: RbdDiffRecord[] = [];
  for await (const r of readRbdDiff(Readable.from(chunks), stats)) out.push(r);
  return out;
};

/** Split `b` into pieces of `n` bytes: the parser must not care where the pipe cuts. */
const pieces = (b: Buffer, n: number) => Array.from({ length: Math.ceil(b.length / n) }, (_, i) => b.subarray(i * n, (i + 1) * n));

describe("rbd diff v1", () => {
  const data = Buffer.alloc(10_000, 0xab);
  const records: RbdDiffRecord[] = [
    { type: "from", snap: "sds-sync-1" },
    { type: "to", snap: "sds-sync-2" },
    { type: "size", sizeBytes: 5 * 2 ** 32 },
    { type: "write", offset: 4096, data },
    { type: "zero", offset: 65536, length: 2 ** 33 },
    { type: "end" },
  ];
  const stream = Buffer.concat([RBD_DIFF_BANNER, ...records.flatMap(encodeRecord)]);

  test("the bytes are export-diff's layout", () => {
    expect(stream.subarray(0, 12).toString("latin1")).toBe("rbd diff v1\n");
    expect(stream.subarray(12, 27)).toEqual(Buffer.concat([Buffer.from("f"), Buffer.from([10, 0, 0, 0]), Buffer.from("sds-sync-1")]));
    const w = 12 + 15 + 15 + 9;
    expect(stream[w]).toBe("w".charCodeAt(0));
    expect(stream.readBigUInt64LE(w + 1)).toBe(4096n);
    expect(stream.readBigUInt64LE(w + 9)).toBe(10_000n);
    expect(stream[stream.length - 1]).toBe("e".charCodeAt(0));
    expect(encodeHeader({ toSnap: "x", sizeBytes: 1 })).toEqual(Buffer.concat([RBD_DIFF_BANNER, ...encodeRecord({ type: "to", snap: "x" }), ...encodeRecord({ type: "size", sizeBytes: 1 })]));
  });

  test.each([1, 7, 4096, 1 << 20])("round trip, the stream cut every %i bytes; stats count data and stream bytes", async (n) => {
    const stats: RbdDiffStats = { streamBytes: 0, dataBytes: 0 };
    expect(await collect(pieces(stream, n), stats)).toEqual(records);
    expect(stats).toEqual({ streamBytes: stream.length, dataBytes: 10_000 });
  });

  test("refuses what is not a whole, ordered v1 diff", async () => {
    await expect(collect([Buffer.from("rbd diff v2\n")])).rejects.toThrow(/does not start with "rbd diff v1"/);
    await expect(collect([stream.subarray(0, stream.length - 1)])).rejects.toThrow(/ends without its end record/);
    await expect(collect([stream.subarray(0, 100)])).rejects.toThrow(/ends inside data/);
    const backwards = Buffer.concat([RBD_DIFF_BANNER, ...encodeRecord({ type: "zero", offset: 8192, length: 4096 }), ...encodeRecord({ type: "zero", offset: 0, length: 4096 }), RBD_DIFF_END]);
    await expect(collect([backwards])).rejects.toThrow(/out of order/);
    const late = Buffer.concat([RBD_DIFF_BANNER, ...encodeRecord({ type: "zero", offset: 0, length: 1 }), ...encodeRecord({ type: "size", sizeBytes: 1 }), RBD_DIFF_END]);
    await expect(collect([late])).rejects.toThrow(/size record after data/);
    await expect(collect([Buffer.concat([RBD_DIFF_BANNER, Buffer.from("q")])])).rejects.toThrow(/unknown record tag 0x71/);
  });
});

describe("splitZeros", () => {
  const K64 = 64 << 10;
  test("all-zero 64 KiB units of a written extent become zero records, in order", () => {
    const b = Buffer.alloc(5 * K64 + 100);
    b.fill(1, K64, 2 * K64); // unit 1 data
    b[4 * K64 + 5] = 7; // unit 4 data; the short tail unit is zeros
    const out = splitZeros(1 << 30, b).map((r) => (r.type === "write" ? { w: r.offset - (1 << 30), n: r.data.length } : r.type === "zero" ? { z: r.offset - (1 << 30), n: r.length } : r));
    expect(out).toEqual([
      { z: 0, n: K64 },
      { w: K64, n: K64 },
      { z: 2 * K64, n: 2 * K64 },
      { w: 4 * K64, n: K64 },
      { z: 5 * K64, n: 100 },
    ]);
  });

  test("data stays one record; an empty extent gives none", () => {
    const b = Buffer.alloc(3 * K64, 2);
    const out = splitZeros(0, b);
    expect(out).toHaveLength(1);
    expect(out[0]).toEqual({ type: "write", offset: 0, data: b });
    expect(splitZeros(0, Buffer.alloc(0))).toEqual([]);
  });
});
