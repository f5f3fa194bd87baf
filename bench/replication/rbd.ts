/**
 * bench/replication, RBD → RBD rows: the same layout as the file rows (data in 16 MiB extents at
 * random 4 KiB-aligned offsets, then `writeKib` writes half over data, half into holes, never
 * overlapping) on RBD images in a throwaway single-node Ceph cluster (test/helpers/ceph.ts), synced
 * two ways:
 * - `rbd diff`: replication/rbd-sync.ts (snapshot + export-diff --from-snap | import-diff);
 * - `engine`: the chunk engine with an RbdSource and an RbdSink (what an RBD ↔ file pair does),
 *   for comparison: it reads all allocated data each sync.
 * Bytes read are data bytes read from the source image (diff: export-diff's data records; engine:
 * its reads); bytes sent are what went into import-diff (diff: the stream; engine: data bytes).
 * Data goes in with `rbd import` (sparse) and the changes with qemu-io through librbd, not through
 * sds. Needs root and Ceph's packages; skipped with the reason otherwise.
 */
import { execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { formatRbdPath } from "../../provider/src/domain/rbd-path";
import { RbdSink } from "../../provider/src/replication/rbd-sink";
import { RbdSource } from "../../provider/src/replication/rbd-source";
import { syncRbdImages } from "../../provider/src/replication/rbd-sync";
import { syncVolume } from "../../provider/src/replication/sync";
import { cephSkipReason, startCeph } from "../../test/helpers/ceph";

const MiB = 1 << 20;

/** One RBD sync measured. */
export interface RbdRow {
  method: "rbd diff" | "engine";
  phase: "initial" | "incremental" | "unchanged";
  ms: number;
  cpuSeconds: number;
  readBytes: number;
  sentBytes: number;
  changedBytes?: number;
  mode?: string;
}

/** Options of {@link benchRbd}: the layout, as the file rows have it. */
export interface RbdBenchOptions {
  sizeBytes: number;
  /** Extents of data, [offset, length]. */
  data: Array<[number, number]>;
  /** The changes, [offset, length], not overlapping. */
  changes: Array<[number, number]>;
  dir: string;
  cpuSeconds: () => number;
  verify: boolean;
}

/** Why the RBD rows cannot run here, or undefined. */
export function rbdBenchSkipReason(): string | undefined {
  return cephSkipReason();
}

/** sha1 of an image's content, streamed out of `rbd export`. */
function imageHash(conf: string, spec: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha1");
    const p = spawn("rbd", ["--conf", conf, "--id", "admin", "export", "--no-progress", spec, "-"], { stdio: ["ignore", "pipe", "inherit"] });
    p.stdout.on("data", (c: Buffer) => h.update(c));
    p.on("error", reject);
    p.on("close", (code) => (code === 0 ? resolve(h.digest("hex")) : reject(new Error(`rbd export ${spec} exited ${code}`))));
  });
}

/** Run the RBD rows; stops its cluster whatever happens. */
export async function benchRbd(o: RbdBenchOptions): Promise<RbdRow[]> {
  const dataBytes = o.data.reduce((a, [, l]) => a + l, 0);
  const changed = o.changes.reduce((a, [, l]) => a + l, 0);
  // memstore keeps everything in RAM: three images' data, the snapshots' copies of changed objects, slack.
  const ceph = await startCeph({ dir: o.dir, osdBytes: Math.max(2048 * MiB, 3 * dataBytes + 4 * changed + 512 * MiB) });
  const rows: RbdRow[] = [];
  try {
    await ceph.pool("bench");
    const vol = (image: string) => formatRbdPath({ cephPool: "bench", image, user: "admin", conf: ceph.conf });
    const raw = path.join(o.dir, "rbd-source.raw");
    const fd = fs.openSync(raw, "w");
    fs.ftruncateSync(fd, o.sizeBytes);
    for (const [at, len] of o.data) fs.writeSync(fd, randomBytes(len), 0, len, at);
    fs.closeSync(fd);
    await ceph.rbd(["import", "--no-progress", raw, "bench/src"], 600_000);
    fs.rmSync(raw);
    for (const name of ["diff-dst", "engine-dst"]) await ceph.rbd(["create", "--size", `${o.sizeBytes}B`, `bench/${name}`]);
    const mapPath = path.join(o.dir, "rbd-engine.map");

    const measure = async (method: RbdRow["method"], phase: RbdRow["phase"], f: () => Promise<{ read: number; sent: number; mode?: string }>) => {
      const c0 = o.cpuSeconds();
      const t0 = process.hrtime.bigint();
      const r = await f();
      rows.push({ method, phase, ms: Number(process.hrtime.bigint() - t0) / 1e6, cpuSeconds: o.cpuSeconds() - c0, readBytes: r.read, sentBytes: r.sent, mode: r.mode, changedBytes: phase === "incremental" ? changed : undefined });
    };
    const viaDiff = async () => {
      const r = await syncRbdImages(vol("src"), vol("diff-dst"), { mapPath: path.join(o.dir, "rbd-diff.map") });
      return { read: r.bytesRead, sent: r.bytesTransferred, mode: r.mode };
    };
    const viaEngine = async () => {
      const source = new RbdSource(vol("src"));
      const sink = new RbdSink(vol("engine-dst"));
      try {
        const r = await syncVolume(source, sink, mapPath, { mapKey: "bench" });
        return { read: r.bytesRead, sent: r.bytesTransferred, mode: r.full ? "full" : "incremental" };
      } finally {
        await Promise.allSettled([source.close(), sink.close()]);
      }
    };
    const phase = async (name: RbdRow["phase"]) => {
      await measure("rbd diff", name, viaDiff);
      await measure("engine", name, viaEngine);
    };
    await phase("initial");
    // The changes through librbd (qemu-io), one pattern byte per write.
    const cmds = o.changes.flatMap(([at, len], i) => ["-c", `write -P ${(i % 250) + 3} ${at} ${len}`]);
    for (let i = 0; i < cmds.length; i += 200) execFileSync("qemu-io", ["-f", "raw", ...cmds.slice(i, i + 200), vol("src")], { stdio: "ignore" });
    await phase("incremental");
    await phase("unchanged");
    if (o.verify) {
      // The diff path copies a snapshot; compare with the one it left (the head is the same: no writes since).
      const [a, b, c] = await Promise.all([imageHash(ceph.conf, "bench/src"), imageHash(ceph.conf, "bench/diff-dst"), imageHash(ceph.conf, "bench/engine-dst")]);
      if (a !== b || a !== c) throw new Error(`RBD replica differs from its source (src ${a}, rbd diff ${b}, engine ${c})`);
    }
  } finally {
    await ceph.stop();
  }
  return rows;
}

/** The RBD rows as a table, and the summary the results file keeps. */
export function rbdReport(rows: RbdRow[]): { lines: string[]; summary: Record<string, number> } {
  const f = (x: number, d = 0) => x.toFixed(d);
  const table = [["method", "phase", "mode", "ms", "cpu s", "read MiB", "sent MiB", "read/changed", "sent/changed"]];
  for (const r of rows) {
    table.push([
      r.method, r.phase, r.mode ?? "", f(r.ms), r.cpuSeconds.toFixed(2), f(r.readBytes / MiB, 1), f(r.sentBytes / MiB, 1),
      r.changedBytes ? (r.readBytes / r.changedBytes).toFixed(3) : "", r.changedBytes ? (r.sentBytes / r.changedBytes).toFixed(3) : "",
    ]);
  }
  const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
  const lines = table.map((row) => row.map((cell, c) => (c < 3 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join(" | "));
  lines.splice(1, 0, widths.map((w) => "-".repeat(w)).join("-|-"));
  const inc = (m: RbdRow["method"]) => rows.find((r) => r.method === m && r.phase === "incremental")!;
  const unchanged = (m: RbdRow["method"]) => rows.find((r) => r.method === m && r.phase === "unchanged")!;
  const summary = {
    rbdDiffReadPerChanged: inc("rbd diff").readBytes / inc("rbd diff").changedBytes!,
    rbdDiffSentPerChanged: inc("rbd diff").sentBytes / inc("rbd diff").changedBytes!,
    rbdDiffIncrementalMs: inc("rbd diff").ms,
    rbdDiffUnchangedReadMib: unchanged("rbd diff").readBytes / MiB,
    engineReadPerChanged: inc("engine").readBytes / inc("engine").changedBytes!,
    engineSentPerChanged: inc("engine").sentBytes / inc("engine").changedBytes!,
    engineIncrementalMs: inc("engine").ms,
  };
  return { lines, summary };
}
