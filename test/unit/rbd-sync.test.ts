/**
 * The RBD → RBD sync's decisions and argv (replication/rbd-sync.ts) with a recording fake of the
 * `rbd` command: which snapshot it diffs from, when it rolls the destination back, what goes into
 * import-diff (zeros inside a written extent as zero records), which snapshots it removes, and
 * that every command reaches the cluster with `--conf`/`--id` only. The real thing runs in
 * test/contract/rbd-replication.test.ts.
 */
import { PassThrough, Readable } from "node:stream";
import { formatRbdPath } from "../../provider/src/domain/rbd-path";
import { CommandFailedError } from "../../provider/src/errors";
import type { Runner } from "../../provider/src/exec/run";
import type { StreamedCommand, StreamSpawner } from "../../provider/src/exec/stream";
import { encodeRecord, RBD_DIFF_BANNER, readRbdDiff, type RbdDiffRecord } from "../../provider/src/replication/rbd-diff";
import { syncRbdImages } from "../../provider/src/replication/rbd-sync";

const CONF = "/run/sds/rbd/ceph.conf";
const src = formatRbdPath({ cephPool: "sds", image: "vol-a", user: "sds", conf: CONF });
const dst = formatRbdPath({ cephPool: "dr", image: "vol-b", user: "sds", conf: CONF });
const K64 = 64 << 10;

interface FakeImage {
  size: number;
  snaps: string[];
  /** `rbd diff` answers: of the head (key ""), or since a snapshot. */
  diff: Record<string, Array<{ offset: number; length: number; exists: string }>>;
}

/** A fake `rbd`: images by `pool/image`, a log of every argv, export-diff answering `exportDiff`, import-diff keeping its input. */
function fakeRbd(images: Record<string, FakeImage>, exportDiff: RbdDiffRecord[]) {
  const argv: string[][] = [];
  const imported: Buffer[] = [];
  const strip = (args: readonly string[]) => {
    expect(args.slice(0, 6)).toEqual(["--conf", CONF, "--id", "sds", "--client-mount-timeout", "30"]);
    return args.slice(6);
  };
  const missing = (a: string[]) => new CommandFailedError({ argv: ["rbd", ...a], exitCode: 2, stderr: "rbd: error opening image: (2) No such file or directory" });
  const run: Runner = async (file, args) => {
    const a = strip(args);
    argv.push(a);
    const spec = a[a.length - 1];
    const [name, snap] = spec.split("@");
    const img = images[name];
    const out = (x: unknown) => ({ stdout: JSON.stringify(x), stderr: "", exitCode: 0 });
    switch (`${a[0]} ${a[1]}`) {
      case "info --format":
        if (!img) throw missing(a);
        return out({ size: img.size });
      case "snap ls":
        if (!img) throw missing(a);
        return out(img.snaps.map((n, i) => ({ id: i, name: n, size: img.size })));
      case "snap create":
        img.snaps.push(snap);
        return out("");
      case "snap rm":
        img.snaps = img.snaps.filter((s) => s !== snap);
        return out("");
      case "snap rollback":
        img.diff[snap] = [];
        return out("");
      case "diff --format": {
        const from = a.includes("--from-snap") ? a[a.indexOf("--from-snap") + 1] : "";
        return out(img.diff[from] ?? []);
      }
      default:
        throw new Error(`fake rbd: unexpected ${a.join(" ")} (${file})`);
    }
  };
  const spawn: StreamSpawner = (file, args, options = {}) => {
    const a = strip(args);
    argv.push(a);
    let stdin: PassThrough | null = null;
    let stdout: Readable | null = null;
    let done: Promise<void>;
    if (a[0] === "export-diff") {
      stdout = Readable.from([Buffer.concat([RBD_DIFF_BANNER, ...exportDiff.flatMap(encodeRecord)])]);
      done = Promise.resolve();
    } else {
      expect(options.stdin).toBe(true);
      stdin = new PassThrough();
      const s = stdin;
      done = new Promise((resolve) => {
        s.on("data", (c: Buffer) => imported.push(c));
        s.on("end", () => resolve());
        s.on("close", () => resolve());
      });
    }
    const cmd: StreamedCommand = { argv: [file, ...args], stdin, stdout, done, kill: () => stdin?.destroy() };
    return cmd;
  };
  return { run, spawn, argv, imported };
}

const parse = async (b: Buffer[]) => {
  const out: RbdDiffRecord[] = [];
  for await (const r of readRbdDiff(Readable.from([Buffer.concat(b)]))) out.push(r);
  return out;
};

test("incremental: snapshot n+1 on the source, diff from the newest common snapshot, old snapshots removed on both sides", async () => {
  const data = Buffer.alloc(3 * K64);
  data.fill(7, K64, 2 * K64);
  const images: Record<string, FakeImage> = {
    "sds/vol-a": { size: 1 << 30, snaps: ["sds-sync-3", "sds-sync-4", "user-snap"], diff: {} },
    "dr/vol-b": { size: 1 << 30, snaps: ["sds-sync-3"], diff: { "sds-sync-3": [] } },
  };
  const f = fakeRbd(images, [{ type: "from", snap: "sds-sync-3" }, { type: "to", snap: "sds-sync-5" }, { type: "size", sizeBytes: 1 << 30 }, { type: "write", offset: 4 << 20, data }, { type: "end" }]);
  const r = await syncRbdImages(src, dst, { mapPath: "/nonexistent/map", run: f.run, spawn: f.spawn });
  expect(r).toMatchObject({ mode: "incremental", full: false, fromSnap: "sds-sync-3", toSnap: "sds-sync-5", rolledBack: false, bytesRead: 3 * K64 });
  // The questions before and the removals after run at once (their order among themselves is free).
  const sorted = (xs: string[][]) => [...xs].sort((a, b) => a.join(" ").localeCompare(b.join(" ")));
  expect(sorted(f.argv.slice(0, 4))).toEqual(sorted([
    ["info", "--format", "json", "sds/vol-a"],
    ["info", "--format", "json", "dr/vol-b"],
    ["snap", "ls", "--format", "json", "sds/vol-a"],
    ["snap", "ls", "--format", "json", "dr/vol-b"],
  ]));
  expect(f.argv.slice(4, 8)).toEqual([
    ["snap", "create", "sds/vol-a@sds-sync-5"],
    ["diff", "--format", "json", "--from-snap", "sds-sync-3", "dr/vol-b"],
    ["export-diff", "--no-progress", "--from-snap", "sds-sync-3", "sds/vol-a@sds-sync-5", "-"],
    ["import-diff", "--no-progress", "-", "dr/vol-b"],
  ]);
  expect(sorted(f.argv.slice(8))).toEqual(sorted([
    ["snap", "rm", "--no-progress", "sds/vol-a@sds-sync-3"],
    ["snap", "rm", "--no-progress", "sds/vol-a@sds-sync-4"],
    ["snap", "rm", "--no-progress", "dr/vol-b@sds-sync-3"],
  ]));
  // Other snapshots are never touched.
  expect(images["sds/vol-a"].snaps).toEqual(["user-snap", "sds-sync-5"]);
  // import-diff got the records, the zero units of the written extent as zero records.
  expect(await parse(f.imported)).toEqual([
    { type: "from", snap: "sds-sync-3" },
    { type: "to", snap: "sds-sync-5" },
    { type: "size", sizeBytes: 1 << 30 },
    { type: "zero", offset: 4 << 20, length: K64 },
    { type: "write", offset: (4 << 20) + K64, data: Buffer.alloc(K64, 7) },
    { type: "zero", offset: (4 << 20) + 2 * K64, length: K64 },
    { type: "end" },
  ]);
  expect(r.bytesTransferred).toBe(Buffer.concat(f.imported).length);
});

test("a destination written since the common snapshot is rolled back to it before the diff", async () => {
  const images: Record<string, FakeImage> = {
    "sds/vol-a": { size: 1 << 30, snaps: ["sds-sync-7"], diff: {} },
    "dr/vol-b": { size: 1 << 30, snaps: ["sds-sync-7"], diff: { "sds-sync-7": [{ offset: 0, length: 4096, exists: "true" }] } },
  };
  const logs: string[] = [];
  const f = fakeRbd(images, [{ type: "end" }]);
  const r = await syncRbdImages(src, dst, { mapPath: "/nonexistent/map", run: f.run, spawn: f.spawn, log: (m) => logs.push(m) });
  expect(r).toMatchObject({ mode: "incremental", rolledBack: true, toSnap: "sds-sync-8", bytesRead: 0 });
  const i = f.argv.findIndex((a) => a[0] === "snap" && a[1] === "rollback");
  expect(f.argv[i]).toEqual(["snap", "rollback", "--no-progress", "dr/vol-b@sds-sync-7"]);
  expect(f.argv.findIndex((a) => a[0] === "import-diff")).toBeGreaterThan(i);
  expect(logs[0]).toMatch(/written since sds-sync-7; rolling it back/);
});

test("no common snapshot and an empty destination: the whole source as one diff; a missing destination is created first", async () => {
  const images: Record<string, FakeImage> = { "sds/vol-a": { size: 8 << 20, snaps: [], diff: {} } };
  const f = fakeRbd(images, [{ type: "to", snap: "sds-sync-1" }, { type: "end" }]);
  const run: Runner = async (file, args, o) => {
    if (args.includes("create") && !args.includes("snap")) {
      images["dr/vol-b"] = { size: 8 << 20, snaps: [], diff: {} };
      f.argv.push(args.slice(6));
      return { stdout: "", stderr: "", exitCode: 0 };
    }
    return f.run(file, args, o);
  };
  const r = await syncRbdImages(src, dst, { mapPath: "/nonexistent/map", run, spawn: f.spawn });
  expect(r).toMatchObject({ mode: "full-diff", full: true, fromSnap: undefined, toSnap: "sds-sync-1" });
  expect(f.argv).toContainEqual(["create", "--size", `${8 << 20}B`, "dr/vol-b"]);
  expect(f.argv).toContainEqual(["diff", "--format", "json", "dr/vol-b"]);
  expect(f.argv).toContainEqual(["export-diff", "--no-progress", "sds/vol-a@sds-sync-1", "-"]);
});

test("refuses snapshots as either side", async () => {
  const f = fakeRbd({}, []);
  await expect(syncRbdImages(formatRbdPath({ cephPool: "sds", image: "a", snap: "s", user: "sds", conf: CONF }), dst, { mapPath: "/x", run: f.run, spawn: f.spawn })).rejects.toThrow(/needs their heads, not snapshots/);
});

test("a failing side is the error: import-diff's own (not the broken pipe it causes), export-diff's after a cut stream", async () => {
  const images = (): Record<string, FakeImage> => ({
    "sds/vol-a": { size: 1 << 30, snaps: ["sds-sync-1"], diff: {} },
    "dr/vol-b": { size: 1 << 30, snaps: ["sds-sync-1"], diff: { "sds-sync-1": [] } },
  });
  const big: RbdDiffRecord[] = [{ type: "write", offset: 0, data: Buffer.alloc(4 << 20, 1) }, { type: "end" }];
  // import-diff dies at once.
  const a = fakeRbd(images(), big);
  const failingImport: StreamSpawner = (file, args, o) => {
    const cmd = a.spawn(file, args, o);
    if (!args.includes("import-diff")) return cmd;
    const done = Promise.reject(new CommandFailedError({ argv: [file, ...args], exitCode: 22, stderr: "rbd: import-diff failed: (22) Invalid argument" }));
    done.catch(() => undefined);
    cmd.stdin!.destroy();
    return { ...cmd, done };
  };
  await expect(syncRbdImages(src, dst, { mapPath: "/x", run: a.run, spawn: failingImport })).rejects.toThrow(/import-diff failed: \(22\)/);
  // export-diff's stream stops short and it exits 1 a moment later.
  const b = fakeRbd(images(), []);
  const cutExport: StreamSpawner = (file, args, o) => {
    const cmd = b.spawn(file, args, o);
    if (!args.includes("export-diff")) return cmd;
    const done = new Promise<void>((_, reject) => setTimeout(() => reject(new CommandFailedError({ argv: [file, ...args], exitCode: 1, stderr: "rbd: export-diff error: (2) No such file or directory" })), 50));
    done.catch(() => undefined);
    return { ...cmd, stdout: Readable.from([RBD_DIFF_BANNER, Buffer.from("w")]), done };
  };
  await expect(syncRbdImages(src, dst, { mapPath: "/x", run: b.run, spawn: cutExport })).rejects.toThrow(/export-diff error: \(2\)/);
});
