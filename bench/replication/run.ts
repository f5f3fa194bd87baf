/**
 * bench/replication: the incremental sync engine (provider/src/replication/sync.ts) local to
 * local on a sparse volume file: initial sync, incremental sync after changing some data, and a
 * sync with nothing changed, once per hole-finding mode (`auto`: filefrag extents; `none`: read
 * everything and zero-check). Prints throughput, bytes sent / bytes changed, and where the time
 * went; writes bench/results/replication.json.
 *
 *   npm run bench:replication -- [sizeGib=4] [dataMib=512] [changeMib=64] [writeKib=4096]
 *                                [chunkKib=1024] [extents=auto,none] [algorithm=sha256] [verify=1] [dir=<tmp>]
 *
 * Data is random (incompressible), written in 16 MiB extents at random 4 KiB-aligned offsets;
 * changes are `writeKib` writes at random 4 KiB-aligned offsets (half over data, half into holes),
 * never overlapping, so "bytes changed" is exact. Each mode gets a fresh source of the same layout.
 * The source was just written, so its reads come from the page cache; the destination's writes
 * reach the disk in the final fdatasync (`flush`).
 */
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { syncFiles, type SyncResult } from "../../provider/src/replication/sync";

const MiB = 1 << 20;
const GiB = 1 << 30;
const args = Object.fromEntries(process.argv.slice(2).map((a) => a.split("=", 2) as [string, string]));
const sizeGib = Number(args.sizeGib ?? 4);
const dataMib = Number(args.dataMib ?? 512);
const changeMib = Number(args.changeMib ?? 64);
const writeKib = Number(args.writeKib ?? 4096);
const chunkKib = Number(args.chunkKib ?? 1024);
const modes = (args.extents ?? "auto,none").split(",") as Array<"auto" | "none">;
const algorithm = (args.algorithm ?? "sha256") as "sha256" | "sha1" | "md5";
const verify = (args.verify ?? "1") !== "0";
const repoRoot = path.resolve(__dirname, "../..");

/** Deterministic-enough random offsets without overlap: pick slots on a 4 KiB grid, reject overlaps. */
function placeWrites(count: number, length: number, size: number, taken: Array<[number, number]>, want: (at: number) => boolean): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const overlaps = (a: number, b: number) => [...taken, ...out].some(([s, l]) => a < s + l && s < b);
  for (let tries = 0; out.length < count; tries++) {
    if (tries > 100_000) throw new Error("could not place writes; use a bigger volume");
    const at = Math.floor(Math.random() * ((size - length) / 4096)) * 4096;
    if (!overlaps(at, at + length) && want(at)) out.push([at, length]);
  }
  return out;
}

function writeAll(file: string, writes: Array<[number, number]>): void {
  const fd = fs.openSync(file, "r+");
  try {
    for (const [at, len] of writes) fs.writeSync(fd, randomBytes(len), 0, len, at);
  } finally {
    fs.closeSync(fd);
  }
}

async function sameContent(a: string, b: string): Promise<boolean> {
  const hash = async (f: string) => {
    const h = createHash("sha1");
    for await (const c of fs.createReadStream(f, { highWaterMark: MiB })) h.update(c as Buffer);
    return h.digest("hex");
  };
  const [x, y] = await Promise.all([hash(a), hash(b)]);
  return x === y;
}

interface Row {
  extents: string;
  phase: "initial" | "incremental" | "unchanged";
  result: SyncResult;
  changedBytes?: number;
}

async function main(): Promise<void> {
  const size = sizeGib * GiB;
  const base = args.dir ?? os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, "sds-bench-repl-"));
  const rows: Row[] = [];
  try {
    const src = path.join(dir, "source.img");
    fs.closeSync(fs.openSync(src, "w"));
    fs.truncateSync(src, size);
    const extent = 16 * MiB;
    const data = placeWrites(Math.ceil((dataMib * MiB) / extent), extent, size, [], () => true);
    writeAll(src, data);
    const isData = (at: number) => data.some(([s, l]) => at >= s && at < s + l);
    const changeCount = Math.ceil((changeMib * 1024) / writeKib);
    const changeLen = writeKib * 1024;
    const changes = [
      ...placeWrites(Math.ceil(changeCount / 2), changeLen, size, [], isData),
      ...placeWrites(Math.floor(changeCount / 2), changeLen, size, [], (at) => !isData(at)),
    ];
    const changedBytes = changes.length * changeLen;
    for (const mode of modes) {
      process.stderr.write(`extents=${mode}\n`);
      const dst = path.join(dir, `replica-${mode}.img`);
      const map = path.join(dir, `replica-${mode}.map`);
      // Same layout for every mode (fresh random content).
      fs.rmSync(src, { force: true });
      fs.closeSync(fs.openSync(src, "w"));
      fs.truncateSync(src, size);
      writeAll(src, data);
      const opts = { extents: mode, chunkSizeBytes: chunkKib * 1024, algorithm };
      rows.push({ extents: mode, phase: "initial", result: await syncFiles(src, dst, map, opts) });
      writeAll(src, changes);
      rows.push({ extents: mode, phase: "incremental", result: await syncFiles(src, dst, map, opts), changedBytes });
      rows.push({ extents: mode, phase: "unchanged", result: await syncFiles(src, dst, map, opts) });
      if (verify && !(await sameContent(src, dst))) throw new Error(`replica differs from source (extents=${mode})`);
      fs.rmSync(dst, { force: true });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const f = (x: number, d = 0) => x.toFixed(d);
  const table: string[][] = [
    ["extents", "phase", "ms", "sent MiB", "sent MiB/s", "scanned MiB/s", "read MiB", "sent/changed", "scan ms", "(extents+read+zero+hash)", "sink ms", "(wait+flush)", "journal+map ms"],
  ];
  for (const r of rows) {
    const s = r.result;
    const t = s.timings;
    const secs = s.durationMs / 1000;
    table.push([
      r.extents, r.phase, f(s.durationMs), f(s.bytesTransferred / MiB, 1), f(s.bytesTransferred / MiB / secs), f(s.bytesScanned / MiB / secs),
      f(s.bytesRead / MiB), r.changedBytes ? (s.bytesTransferred / r.changedBytes).toFixed(3) : "",
      f(t.extentsMs + t.readMs + t.zeroCheckMs + t.hashMs), `${f(t.extentsMs)}+${f(t.readMs)}+${f(t.zeroCheckMs)}+${f(t.hashMs)}`,
      f(t.sinkWaitMs + t.flushMs), `${f(t.sinkWaitMs)}+${f(t.flushMs)}`, f(t.journalMs + t.mapWriteMs),
    ]);
  }
  const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
  const line = (row: string[]) => row.map((cell, c) => (c < 2 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join(" | ");
  console.log(
    `sparse volume ${sizeGib} GiB, ${dataMib} MiB of data, ${changeMib} MiB changed in ${writeKib} KiB writes (4 KiB-aligned), ` +
      `chunk ${chunkKib} KiB, ${algorithm}, verify=${verify}`,
  );
  console.log(line(table[0]));
  console.log(widths.map((w) => "-".repeat(w)).join("-|-"));
  for (const row of table.slice(1)) console.log(line(row));
  console.log("ms columns are time the sync loop waited on each step; reads and sink writes overlap with hashing, so they need not add up.");
  const out = path.join(repoRoot, "bench/results/replication.json");
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(
    out,
    JSON.stringify(
      {
        bench: "replication", when: new Date().toISOString(), sizeGib, dataMib, changeMib, writeKib, chunkKib, algorithm,
        rows: rows.map((r) => ({ extents: r.extents, phase: r.phase, changedBytes: r.changedBytes, ...r.result })),
      },
      null,
      2,
    ),
  );
  console.log(`written ${path.relative(repoRoot, out)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
