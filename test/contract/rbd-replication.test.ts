/**
 * Replication from and to RBD volumes against a real single-node Ceph cluster (test/helpers/ceph.ts):
 * - RBD → RBD with Ceph's diffs (replication/rbd-sync.ts): a first full diff, then incremental
 *   syncs that read about what changed, discards, growth, snapshots kept to the newest on both
 *   sides, failover/failback (a diverged old primary rolled back), a destination with data and no
 *   common snapshot (the engine's digest path);
 * - RBD → RBD between two clusters (a second one started for that test);
 * - RBD → file and file → RBD through the chunk engine (RbdSource, RbdSink);
 * Data is written with qemu-io through librbd (not through sds), images compared with `rbd export`
 * and sha256.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { formatRbdPath } from "../../provider/src/domain/rbd-path";
import { RbdImage } from "../../provider/src/replication/rbd-image";
import { RbdSink } from "../../provider/src/replication/rbd-sink";
import { RbdSource } from "../../provider/src/replication/rbd-source";
import { syncRbdImages } from "../../provider/src/replication/rbd-sync";
import { syncVolume, FileSink, FileSource } from "../../provider/src/replication/sync";
import { syncPaths, volumeReadable } from "../../provider/src/replication/sync-paths";
import { cephSkipReason, startCeph, type CephCluster } from "../helpers/ceph";

const skip = cephSkipReason();
const d = skip ? describe.skip : describe;
if (skip) console.warn(`rbd-replication: skipped: ${skip}`);

const MiB = 1 << 20;
jest.setTimeout(240_000);

d("replication with RBD volumes (real Ceph)", () => {
  let ceph: CephCluster;
  let work: string;
  let n = 0;
  const vol = (image: string, pool = "rp") => formatRbdPath({ cephPool: pool, image, user: "admin", conf: ceph.conf });
  const newImage = async (sizeBytes: number, pool = "rp") => {
    const name = `img${++n}`;
    await ceph.rbd(["create", "--size", `${sizeBytes}B`, `${pool}/${name}`]);
    return vol(name, pool);
  };
  /** Writes through librbd with qemu-io (not sds's code): `write -P 0xab 1M 64k`, `discard 0 4M`. */
  const io = (volPath: string, ...cmds: string[]) => {
    execFileSync("qemu-io", ["-f", "raw", ...cmds.flatMap((c) => ["-c", c]), volPath], { stdio: "pipe" });
  };
  const exportFile = async (volPath: string, snap?: string) => {
    const img = new RbdImage(volPath);
    const out = path.join(work, `export-${++n}.raw`);
    await ceph.rbd(["export", "--no-progress", snap ? `${img.spec}@${snap}` : img.spec, out]);
    return out;
  };
  const sha = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");
  const hashOf = async (volPath: string) => sha(await exportFile(volPath));
  const snapsOf = async (volPath: string) => (await new RbdImage(volPath).snaps()).map((s) => s.name).sort();

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "sds-rbd-repl-"));
    ceph = await startCeph({ osdBytes: 1536 * MiB });
    await ceph.pool("rp");
    await ceph.pool("rq");
  }, 240_000);

  afterAll(async () => {
    await ceph?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  test("RBD → RBD: a full diff first, then each sync reads and sends about what changed", async () => {
    const src = await newImage(64 * MiB);
    const dst = await newImage(64 * MiB, "rq"); // another Ceph pool
    io(src, "write -P 0x11 0 8M", "write -P 0x22 40M 3M");
    const mapPath = path.join(work, "m1.map");
    const first = await syncRbdImages(src, dst, { mapPath });
    expect(first.mode).toBe("full-diff");
    expect(first.bytesRead).toBe(11 * MiB);
    expect(first.bytesTransferred).toBeGreaterThanOrEqual(11 * MiB);
    expect(first.bytesTransferred).toBeLessThan(11 * MiB + 4096);
    expect(await hashOf(dst)).toBe(await hashOf(src));

    // Change 1 MiB + 64 KiB, discard 2 MiB.
    io(src, "write -P 0x33 4M 1M", "write -P 0x44 50M 64k", "discard 40M 2M");
    const second = await syncRbdImages(src, dst, { mapPath });
    expect(second.mode).toBe("incremental");
    expect(second.fromSnap).toBe("sds-sync-1");
    expect(second.toSnap).toBe("sds-sync-2");
    expect(second.rolledBack).toBe(false);
    // Ceph reads what was written, plus the new object at 48 MiB from its start to the write (it
    // reports an object made since the snapshot from offset 0); those zeros travel as a zero
    // record, not as data. The discard is a zero record of export-diff's own.
    expect(second.bytesRead).toBe(MiB + 64 * 1024 + 2 * MiB);
    expect(second.bytesTransferred).toBeLessThan(MiB + 64 * 1024 + 4096);
    expect(await hashOf(dst)).toBe(await hashOf(src));
    expect(await snapsOf(src)).toEqual(["sds-sync-2"]);
    expect(await snapsOf(dst)).toEqual(["sds-sync-2"]);
    // The discarded range is a hole again on the destination (thin), not written zeros.
    const extents = await new RbdImage(dst).extents();
    const covered = extents.filter((e) => e.exists).reduce((a, e) => a + e.length, 0);
    expect(covered).toBeLessThan(64 * MiB);

    // Nothing changed: nothing read.
    const third = await syncRbdImages(src, dst, { mapPath });
    expect(third.bytesRead).toBe(0);
    expect(await snapsOf(dst)).toEqual(["sds-sync-3"]);

    // Growth travels with the diff (its size record).
    await ceph.rbd(["resize", "--size", `${80 * MiB}B`, new RbdImage(src).spec]);
    io(src, "write -P 0x55 79M 1M");
    const grown = await syncRbdImages(src, dst, { mapPath });
    expect(grown.bytesRead).toBe(4 * MiB); // a new object, read from its start (see above)
    expect(grown.bytesTransferred).toBeLessThan(MiB + 4096);
    expect(await new RbdImage(dst).sizeBytes()).toBe(80 * MiB);
    expect(await hashOf(dst)).toBe(await hashOf(src));
    expect(fs.existsSync(mapPath)).toBe(false);
  });

  test("RBD → RBD failover and failback: the diverged old primary is rolled back to the common snapshot, then diffs resume", async () => {
    const primary = await newImage(32 * MiB);
    const secondary = await newImage(32 * MiB);
    const mapPath = path.join(work, "m2.map");
    io(primary, "write -P 0x61 0 4M");
    await syncRbdImages(primary, secondary, { mapPath });
    // Failover: the application writes the secondary; the unreachable primary took writes the secondary never saw.
    io(secondary, "write -P 0x62 8M 1M");
    io(primary, "write -P 0x63 16M 2M", "write -P 0x64 1M 4k");
    const logs: string[] = [];
    const back = await syncRbdImages(secondary, primary, { mapPath, log: (m) => logs.push(m) });
    expect(back.mode).toBe("incremental");
    expect(back.rolledBack).toBe(true);
    expect(back.bytesRead).toBe(MiB);
    expect(logs.join("\n")).toMatch(/rolling it back to sds-sync-1/);
    expect(await hashOf(primary)).toBe(await hashOf(secondary));
    // Forward again: incremental from the reverse sync's snapshot, nothing to send.
    const fwd = await syncRbdImages(primary, secondary, { mapPath });
    expect(fwd.mode).toBe("incremental");
    expect(fwd.rolledBack).toBe(false);
    expect(fwd.bytesRead).toBe(0);
    io(primary, "write -P 0x65 20M 128k");
    const fwd2 = await syncRbdImages(primary, secondary, { mapPath });
    expect(fwd2.bytesRead).toBe(128 * 1024);
    expect(await hashOf(primary)).toBe(await hashOf(secondary));
  });

  test("RBD → RBD onto a destination with data and no common snapshot: the engine's digest path, ending with a common snapshot", async () => {
    const src = await newImage(24 * MiB);
    const dst = await newImage(24 * MiB);
    io(src, "write -P 0x71 0 6M");
    io(dst, "write -P 0x71 0 5M", "write -P 0x72 12M 2M"); // 5 MiB alike, 1 MiB missing, 2 MiB extra
    const mapPath = path.join(work, "m3.map");
    const r = await syncRbdImages(src, dst, { mapPath });
    expect(r.mode).toBe("engine");
    expect(r.bytesTransferred).toBe(MiB);
    expect(await hashOf(dst)).toBe(await hashOf(src));
    expect(await snapsOf(dst)).toEqual(["sds-sync-1"]);
    expect(await snapsOf(src)).toEqual(["sds-sync-1"]);
    // The snapshots are equal: the next sync is a diff.
    io(src, "write -P 0x73 20M 64k");
    const next = await syncRbdImages(src, dst, { mapPath });
    expect(next.mode).toBe("incremental");
    expect(next.bytesRead).toBe(64 * 1024);
    expect(await hashOf(dst)).toBe(await hashOf(src));
    // Equal content, no snapshots: the engine sends nothing and still leaves the end snapshot.
    const a = await newImage(8 * MiB);
    const b = await newImage(8 * MiB);
    io(a, "write -P 0x74 0 1M");
    io(b, "write -P 0x74 0 1M");
    const same = await syncRbdImages(a, b, { mapPath });
    expect(same.mode).toBe("engine");
    expect(same.bytesTransferred).toBe(0);
    expect(await snapsOf(b)).toEqual(["sds-sync-1"]);
  });

  test("RBD → file and file → RBD through the chunk engine; only allocated data is read", async () => {
    const src = await newImage(48 * MiB);
    io(src, "write -P 0x81 0 3M", "write -P 0x82 30M 1M");
    const file = path.join(work, "copy.raw");
    const map1 = path.join(work, "m4.map");
    const source = new RbdSource(src);
    const fileSink = new FileSink(file);
    const r1 = await syncVolume(source, fileSink, map1, { mapKey: "k" });
    await Promise.all([source.close(), fileSink.close()]);
    expect(r1.bytesTransferred).toBe(4 * MiB);
    expect(r1.extentSource).toBe("filefrag"); // dataRanges answered (rbd diff)
    expect(r1.bytesRead).toBeLessThanOrEqual(8 * MiB); // object-granular extents at most, never the 48 MiB
    expect(source.streamsStarted).toBe(1); // the engine read in order: one export-diff
    expect(sha(file)).toBe(await hashOf(src));
    io(src, "write -P 0x83 1M 64k", "discard 30M 1M");
    const r2 = await syncPaths(src, file, { mapPath: map1, mapKey: "k" });
    expect(r2.via).toBe("engine");
    expect(r2.full).toBe(false);
    expect(r2.bytesTransferred).toBe(64 * 1024); // one 64 KiB chunk changed; the discarded range is zeroed, not sent
    expect(sha(file)).toBe(await hashOf(src));
    // An idle image is not read again: its change token (a snapshot of its own) still holds.
    const tokened = async () => {
      const [so, si] = [new RbdSource(src, { changeTokens: true }), new FileSink(file)];
      try {
        return await syncVolume(so, si, map1, { mapKey: "k" });
      } finally {
        await Promise.all([so.close(), si.close()]);
      }
    };
    const idle = await tokened();
    expect(idle).toMatchObject({ sourceUnchanged: true, bytesRead: 0 });
    expect(await snapsOf(src)).toEqual(["sds-sync-token-1"]);
    io(src, "write -P 0x85 2M 4k");
    const woken = await syncPaths(src, file, { mapPath: map1, mapKey: "k" });
    expect(woken.bytesTransferred).toBe(64 * 1024);
    expect(sha(file)).toBe(await hashOf(src));
    expect(await snapsOf(src)).toEqual(["sds-sync-token-2"]);
    const again = await tokened();
    expect(again.sourceUnchanged).toBe(true);

    // file → RBD: a file with data and holes into a new image, then a change.
    const back = await newImage(48 * MiB);
    const fd = fs.openSync(path.join(work, "src.raw"), "w");
    fs.ftruncateSync(fd, 48 * MiB);
    const blob = randomBytes(3 * MiB);
    fs.writeSync(fd, blob, 0, blob.length, 5 * MiB);
    fs.closeSync(fd);
    const map2 = path.join(work, "m5.map");
    const sink = new RbdSink(back);
    const fileSource = new FileSource(path.join(work, "src.raw"));
    const r3 = await syncVolume(fileSource, sink, map2, { mapKey: "k2" });
    await Promise.all([sink.close(), fileSource.close()]);
    expect(r3.bytesTransferred).toBe(3 * MiB);
    expect(sink.streamsStarted).toBe(1);
    expect(await hashOf(back)).toBe(sha(path.join(work, "src.raw")));
    // Zeroed chunks on the source become discarded (thin) ranges on the image.
    const fd2 = fs.openSync(path.join(work, "src.raw"), "r+");
    fs.writeSync(fd2, Buffer.alloc(MiB), 0, MiB, 6 * MiB);
    fs.closeSync(fd2);
    const r4 = await syncPaths(path.join(work, "src.raw"), back, { mapPath: map2, mapKey: "k2" });
    expect(r4.bytesTransferred).toBe(0);
    expect(await hashOf(back)).toBe(sha(path.join(work, "src.raw")));
    // A failback onto the image with no map (digest path): only what differs travels.
    io(back, "write -P 0x84 20M 1M");
    const r5 = await syncPaths(path.join(work, "src.raw"), back, { mapPath: map2, mapKey: "k2", fresh: true });
    expect(r5.full).toBe(true);
    expect(r5.bytesTransferred).toBe(0); // 20M..21M is data on the image and zeros in the file: zeroed, not sent
    expect(await hashOf(back)).toBe(sha(path.join(work, "src.raw")));
  });

  test("a read behind the stream restarts it; reads beyond the end are short", async () => {
    const src = await newImage(12 * MiB);
    io(src, "write -P 0x91 4M 1M");
    const s = new RbdSource(src);
    const b = Buffer.alloc(4096);
    expect(await s.read(b, 4 * MiB)).toBe(4096);
    expect(b.every((x) => x === 0x91)).toBe(true);
    expect(await s.read(b, 0)).toBe(4096);
    expect(b.every((x) => x === 0)).toBe(true);
    expect(s.streamsStarted).toBe(2);
    expect(await s.read(Buffer.alloc(8192), 12 * MiB - 4096)).toBe(4096);
    await s.close();
  });

  test("a cluster that cannot be reached: not readable within seconds, a sync fails naming the connection", async () => {
    const dead = path.join(work, "dead.conf");
    fs.writeFileSync(dead, fs.readFileSync(ceph.conf, "utf8").replace(/^\s*mon[ _]host\s*=.*$/m, "mon host = [v2:127.0.0.1:1,v1:127.0.0.1:2]"));
    const away = formatRbdPath({ cephPool: "rp", image: "img1", user: "admin", conf: dead });
    const t0 = Date.now();
    expect(await volumeReadable(away)).toBe(false);
    expect(Date.now() - t0).toBeLessThan(25_000);
    expect(await volumeReadable(vol("img1"))).toBe(true);
    await expect(syncRbdImages(away, vol("img2"), { mapPath: path.join(work, "m7.map"), mountTimeoutSeconds: 3 })).rejects.toThrow(/couldn't connect to the cluster/);
  });

  test("RBD → RBD between two clusters: each side reached with its own conf, the diff relayed through sds", async () => {
    const other = await startCeph({ osdBytes: 512 * MiB });
    try {
      await other.pool("far");
      const far = formatRbdPath({ cephPool: "far", image: "copy", user: "admin", conf: other.conf });
      await other.rbd(["create", "--size", `${16 * MiB}B`, "far/copy"]);
      const src = await newImage(16 * MiB);
      io(src, "write -P 0xb1 0 2M");
      const mapPath = path.join(work, "m8.map");
      expect((await syncRbdImages(src, far, { mapPath })).mode).toBe("full-diff");
      io(src, "write -P 0xb2 8M 64k");
      const r = await syncRbdImages(src, far, { mapPath });
      expect(r).toMatchObject({ mode: "incremental", bytesRead: 64 * 1024 });
      const out = path.join(work, "far.raw");
      await other.rbd(["export", "--no-progress", "far/copy", out]);
      expect(sha(out)).toBe(await hashOf(src));
      expect(await snapsOf(far)).toEqual(["sds-sync-2"]);
    } finally {
      await other.stop();
    }
  });

  test("a missing source image is a clear error; a missing destination is created", async () => {
    const gone = vol("nope");
    const dst = await newImage(4 * MiB);
    await expect(syncRbdImages(gone, dst, { mapPath: path.join(work, "m6.map") })).rejects.toThrow(/does not exist/);
    const src = await newImage(4 * MiB);
    io(src, "write -P 0xa1 0 1M");
    const created = vol("made-by-sync");
    await syncRbdImages(src, created, { mapPath: path.join(work, "m6.map") });
    expect(await hashOf(created)).toBe(await hashOf(src));
  });
});
