/**
 * bench/replication: the incremental sync engine (provider/src/replication/sync.ts) local to
 * local on a sparse volume file: initial sync, incremental sync after changing some data, and a
 * sync with nothing changed, once per hole-finding mode (`auto`: filefrag extents; `none`: read
 * everything and zero-check). Prints throughput, bytes sent and bytes read per byte changed, CPU
 * time (this process plus its children: filefrag, fallocate) and where the time went; writes
 * bench/results/replication.json (`sentPerChanged`, `readPerChanged`: medians of the incremental
 * syncs of this tree's engine with extents=auto).
 *
 *   npm run bench:replication -- [sizeGib=4] [dataMib=512] [changeMib=64] [writeKib=4096]
 *                                [chunkKib=auto] [extents=auto,none] [algorithm=sha256] [verify=1] [dir=<tmp>]
 *                                [rounds=1] [baseline=<dist folder>] [seed=14] [idle=1] [tokenSettleMs=60000]
 *                                [rbd=auto] [rbdSizeGib=2] [rbdDataMib=256] [rbdChangeMib=64]
 *
 * `baseline=/work/main/provider/dist` also runs that build's engine (`require`d from its
 * replication/sync.js) on the same source in the same round, interleaved with this tree's (the
 * order alternates per round), so before/after are compared under the same load.
 * `chunkKib=auto` lets each engine choose (the baseline's default is 1 MiB). After the
 * "unchanged" sync (right after the writes) the bench waits the engine's settle time for change
 * tokens + 1 s (`tokenSettleMs`, default the product's: 60 s) and syncs twice more: "settled" and
 * "idle" (an idle volume's syncs from then on); `idle=0` leaves those out.
 *
 * Data is random (incompressible), written in 16 MiB extents at random 4 KiB-aligned offsets (placed
 * by a generator seeded with `seed`);
 * changes are `writeKib` writes at random 4 KiB-aligned offsets (half over data, half into holes),
 * never overlapping, so "bytes changed" is exact. Each mode gets a fresh source of the same layout.
 * The source was just written, so its reads come from the page cache; the destination's writes
 * reach the disk in the final fdatasync (`flush`).
 *
 * RBD → RBD rows (bench/replication/rbd.ts; `rbd=auto` runs them where a single-node Ceph can
 * start: root and Ceph's packages, `rbd=0` skips, `rbd=1` fails when it cannot): the same kind of
 * layout on RBD images (`rbdSizeGib`, `rbdDataMib`, `rbdChangeMib` in `writeKib` writes), synced
 * with Ceph's diffs and, for comparison, with the chunk engine; bytes read and sent per byte
 * changed land in replication.json under `rbd`.
 */
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { seeded } from "../../test/helpers/seeded";
import { CHANGE_TOKEN_SETTLE_MS } from "../../provider/src/replication/file-source";
import { syncFiles as currentSyncFiles, type SyncResult } from "../../provider/src/replication/sync";
import { benchRbd, rbdBenchSkipReason, rbdReport } from "./rbd";

const MiB = 1 << 20;
const GiB = 1 << 30;
const args = Object.fromEntries(process.argv.slice(2).map((a) => a.split("=", 2) as [string, string]));
const sizeGib = Number(args.sizeGib ?? 4);
const dataMib = Number(args.dataMib ?? 512);
const changeMib = Number(args.changeMib ?? 64);
const writeKib = Number(args.writeKib ?? 4096);
const chunkKib = args.chunkKib === undefined || args.chunkKib === "auto" ? undefined : Number(args.chunkKib);
const rounds = Number(args.rounds ?? 1);
/** The engine's settle time for change tokens (shorter only for a quick look; the product's is the default). */
const tokenSettleMs = Number(args.tokenSettleMs ?? CHANGE_TOKEN_SETTLE_MS);
/** Wait this long after the last write, then sync twice ("settled", "idle"); idle=0 skips those phases. */
const settleMs = (args.idle ?? "1") === "0" ? 0 : tokenSettleMs + 1000;
const modes = (args.extents ?? "auto,none").split(",") as Array<"auto" | "none">;
const algorithm = (args.algorithm ?? "sha256") as "sha256" | "sha1" | "md5";
const verify = (args.verify ?? "1") !== "0";
const repoRoot = path.resolve(__dirname, "../..");

type SyncFiles = typeof currentSyncFiles;
/** The engines to compare: this tree's, and optionally a built baseline's. */
const engines: Array<{ name: string; syncFiles: SyncFiles }> = [{ name: "this tree", syncFiles: currentSyncFiles }];
if (args.baseline) {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(path.resolve(args.baseline, "replication/sync.js")) as { syncFiles: SyncFiles };
  engines.push({ name: "baseline", syncFiles: mod.syncFiles });
}

const TICKS_PER_SECOND = 100;
/** CPU seconds of this process plus its waited-for children (filefrag, fallocate), from /proc. */
function cpuSeconds(): number {
  const u = process.cpuUsage();
  let children = 0;
  try {
    const fields = fs.readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ");
    children = (Number(fields[13]) + Number(fields[14])) / TICKS_PER_SECOND; // cutime, cstime
  } catch {
    // not Linux: own CPU only
  }
  return (u.user + u.system) / 1e6 + children;
}

async function timed(f: () => Promise<SyncResult>): Promise<{ result: SyncResult; cpuSeconds: number }> {
  const c0 = cpuSeconds();
  const result = await f();
  return { result, cpuSeconds: cpuSeconds() - c0 };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Offsets from a seeded generator, so every run places its writes alike. */
const random = seeded(Number(args.seed ?? 14));

/** Random offsets without overlap: pick slots on a 4 KiB grid, reject overlaps. */
function placeWrites(count: number, length: number, size: number, taken: Array<[number, number]>, want: (at: number) => boolean): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const overlaps = (a: number, b: number) => [...taken, ...out].some(([s, l]) => a < s + l && s < b);
  for (let tries = 0; out.length < count; tries++) {
    if (tries > 100_000) throw new Error("could not place writes; use a bigger volume");
    const at = Math.floor(random() * ((size - length) / 4096)) * 4096;
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
  engine: string;
  round: number;
  extents: string;
  phase: "initial" | "incremental" | "unchanged" | "settled" | "idle";
  result: SyncResult;
  cpuSeconds: number;
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
    // The second half must not overlap the first either (it did before: "bytes changed" then
    // counted some bytes twice and the ratios came out low).
    const overData = placeWrites(Math.ceil(changeCount / 2), changeLen, size, [], isData);
    const changes = [...overData, ...placeWrites(Math.floor(changeCount / 2), changeLen, size, overData, (at) => !isData(at))];
    const changedBytes = changes.length * changeLen;
    for (let round = 0; round < rounds; round++) {
      // Alternate which engine goes first, so neither always runs on a warmer cache.
      const order = round % 2 ? [...engines].reverse() : engines;
      for (const mode of modes) {
        process.stderr.write(`round ${round + 1}/${rounds} extents=${mode}\n`);
        // Same layout for every mode and round (fresh random content).
        fs.rmSync(src, { force: true });
        fs.closeSync(fs.openSync(src, "w"));
        fs.truncateSync(src, size);
        writeAll(src, data);
        const opts = { extents: mode, chunkSizeBytes: chunkKib === undefined ? undefined : chunkKib * 1024, algorithm, changeTokenSettleMs: tokenSettleMs };
        const dst = (e: { name: string }) => path.join(dir, `replica-${e.name.replace(/\W/g, "_")}-${mode}.img`);
        const map = (e: { name: string }) => path.join(dir, `replica-${e.name.replace(/\W/g, "_")}-${mode}.map`);
        const phase = async (name: Row["phase"], changed?: number) => {
          for (const e of order) {
            const t = await timed(() => e.syncFiles(src, dst(e), map(e), opts));
            rows.push({ engine: e.name, round, extents: mode, phase: name, ...t, changedBytes: changed });
          }
        };
        await phase("initial");
        writeAll(src, changes);
        await phase("incremental", changedBytes);
        await phase("unchanged");
        if (settleMs > 0) {
          // An idle volume: once its last write is older than the settle time, the first sync
          // reads it (and saves a change token), the next ones need not read it at all.
          process.stderr.write(`waiting ${settleMs} ms for the source to settle\n`);
          await new Promise((r) => setTimeout(r, settleMs));
          await phase("settled");
          await phase("idle");
        }
        for (const e of order) {
          if (verify && !(await sameContent(src, dst(e)))) throw new Error(`replica differs from source (engine ${e.name}, extents=${mode})`);
          fs.rmSync(dst(e), { force: true });
          fs.rmSync(map(e), { force: true });
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const f = (x: number, d = 0) => x.toFixed(d);
  const table: string[][] = [
    ["engine", "extents", "phase", "chunk KiB", "cpu s", "ms", "sent MiB", "sent MiB/s", "scanned MiB/s", "read MiB", "sent/changed", "read/changed", "scan ms", "(extents+read+zero+hash)", "sink ms", "(wait+flush)", "journal+map ms"],
  ];
  for (const r of rows) {
    const s = r.result;
    const t = s.timings;
    const secs = s.durationMs / 1000;
    table.push([
      r.engine, r.extents, r.phase, f((s.chunkSizeBytes ?? (chunkKib ?? 1024) * 1024) / 1024), r.cpuSeconds.toFixed(2), f(s.durationMs), f(s.bytesTransferred / MiB, 1), f(s.bytesTransferred / MiB / secs), f(s.bytesScanned / MiB / secs),
      f(s.bytesRead / MiB), r.changedBytes ? (s.bytesTransferred / r.changedBytes).toFixed(3) : "",
      r.changedBytes ? (s.bytesRead / r.changedBytes).toFixed(2) : "",
      f(t.extentsMs + t.readMs + t.zeroCheckMs + t.hashMs), `${f(t.extentsMs)}+${f(t.readMs)}+${f(t.zeroCheckMs)}+${f(t.hashMs)}`,
      f(t.sinkWaitMs + t.flushMs), `${f(t.sinkWaitMs)}+${f(t.flushMs)}`, f(t.journalMs + t.mapWriteMs),
    ]);
  }
  const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
  const line = (row: string[]) => row.map((cell, c) => (c < 3 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join(" | ");
  console.log(
    `sparse volume ${sizeGib} GiB, ${dataMib} MiB of data, ${changeMib} MiB changed in ${writeKib} KiB writes (4 KiB-aligned), ` +
      `chunk ${chunkKib === undefined ? "chosen by the engine" : `${chunkKib} KiB`}, ${algorithm}, verify=${verify}, ${rounds} round(s)`,
  );
  console.log(line(table[0]));
  console.log(widths.map((w) => "-".repeat(w)).join("-|-"));
  for (const row of table.slice(1)) console.log(line(row));
  console.log("ms columns are time the sync loop waited on each step; reads and sink writes overlap with hashing, so they need not add up.");
  // Per engine: medians over rounds of the incremental sync with extents=auto (else the first mode).
  const summary = engines.map((e) => {
    const mode = modes.includes("auto") ? "auto" : modes[0];
    const of = (phase: Row["phase"]) => rows.filter((r) => r.engine === e.name && r.extents === mode && r.phase === phase);
    const inc = of("incremental");
    return {
      engine: e.name,
      extents: mode,
      sentPerChanged: median(inc.map((r) => r.result.bytesTransferred / r.changedBytes!)),
      readPerChanged: median(inc.map((r) => r.result.bytesRead / r.changedBytes!)),
      incrementalCpuSeconds: median(inc.map((r) => r.cpuSeconds)),
      unchangedCpuSeconds: median(of("unchanged").map((r) => r.cpuSeconds)),
      unchangedReadMib: median(of("unchanged").map((r) => r.result.bytesRead / MiB)),
      idleCpuSeconds: median(of("idle").map((r) => r.cpuSeconds)),
      idleReadMib: median(of("idle").map((r) => r.result.bytesRead / MiB)),
      initialCpuSeconds: median(of("initial").map((r) => r.cpuSeconds)),
    };
  });
  console.log("");
  console.log("engine     | sent/changed | read/changed | cpu s incremental | cpu s unchanged | read MiB unchanged | cpu s idle | read MiB idle | cpu s initial");
  for (const x of summary) {
    console.log(
      `${x.engine.padEnd(10)} | ${x.sentPerChanged.toFixed(3).padStart(12)} | ${x.readPerChanged.toFixed(2).padStart(12)} | ${x.incrementalCpuSeconds.toFixed(2).padStart(17)} | ` +
        `${x.unchangedCpuSeconds.toFixed(2).padStart(15)} | ${x.unchangedReadMib.toFixed(0).padStart(18)} | ${x.idleCpuSeconds.toFixed(2).padStart(10)} | ${x.idleReadMib.toFixed(0).padStart(13)} | ` +
        `${x.initialCpuSeconds.toFixed(2).padStart(13)}`,
    );
  }
  const rbd = await rbdRows();
  const [current, baseline] = summary;
  const out = path.join(repoRoot, "bench/results/replication.json");
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(
    out,
    JSON.stringify(
      {
        bench: "replication", when: new Date().toISOString(), sizeGib, dataMib, changeMib, writeKib, chunkKib: chunkKib ?? "auto", algorithm, rounds, tokenSettleMs,
        sentPerChanged: current.sentPerChanged,
        readPerChanged: current.readPerChanged,
        summary,
        baseline: baseline && { dist: path.resolve(args.baseline), sentPerChanged: baseline.sentPerChanged, readPerChanged: baseline.readPerChanged },
        rbd,
        rows: rows.map((r) => ({ engine: r.engine, round: r.round, extents: r.extents, phase: r.phase, changedBytes: r.changedBytes, cpuSeconds: r.cpuSeconds, ...r.result })),
      },
      null,
      2,
    ),
  );
  console.log(`written ${path.relative(repoRoot, out)}`);
}

/** The RBD → RBD rows (see the header), printed; what replication.json keeps of them. */
async function rbdRows(): Promise<Record<string, unknown>> {
  const want = args.rbd ?? "auto";
  if (want === "0") return { skipped: "rbd=0" };
  const why = rbdBenchSkipReason();
  if (why) {
    if (want === "1") throw new Error(`rbd=1 but the RBD rows cannot run: ${why}`);
    console.log(`\nRBD → RBD rows skipped: ${why}`);
    return { skipped: why };
  }
  const size = Number(args.rbdSizeGib ?? 2) * GiB;
  const dataBytes = Number(args.rbdDataMib ?? 256) * MiB;
  const changeBytes = Number(args.rbdChangeMib ?? 64) * MiB;
  const extent = 16 * MiB;
  const data = placeWrites(Math.ceil(dataBytes / extent), extent, size, [], () => true);
  const isData = (at: number) => data.some(([s, l]) => at >= s && at < s + l);
  const changeLen = writeKib * 1024;
  const count = Math.ceil(changeBytes / changeLen);
  const overData = placeWrites(Math.ceil(count / 2), changeLen, size, [], isData);
  const changes = [...overData, ...placeWrites(Math.floor(count / 2), changeLen, size, overData, (at) => !isData(at))];
  const dir = fs.mkdtempSync(path.join(args.dir ?? os.tmpdir(), "sds-bench-rbd-"));
  try {
    process.stderr.write("RBD → RBD rows: starting a single-node Ceph\n");
    const rows = await benchRbd({ sizeBytes: size, data, changes, dir, cpuSeconds, verify });
    const { lines, summary } = rbdReport(rows);
    console.log("");
    console.log(`RBD → RBD: ${size / GiB} GiB images, ${dataBytes / MiB} MiB of data, ${changes.length * changeLen / MiB} MiB changed in ${writeKib} KiB writes (4 KiB-aligned); cpu s counts this process and its children (rbd, qemu-io)`);
    for (const l of lines) console.log(l);
    return { sizeGib: size / GiB, dataMib: dataBytes / MiB, changeMib: (changes.length * changeLen) / MiB, writeKib, ...summary, rows };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
