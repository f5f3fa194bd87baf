/**
 * Replication from RBD volumes through the real Pulumi CLI (root): a real single-node Ceph
 * (test/helpers/ceph.ts) with a Ceph user holding only rbd caps on two Ceph pools, backends
 * "ceph" (primary, replication: async), "cephdr" (another Ceph pool) and "files". Two volumes on
 * "ceph", each the primary of a pair: RBD → RBD (Ceph's diffs between sds-sync snapshots) and
 * RBD → file (the chunk engine). Data is written through librbd (qemu-io) and into the file, as an
 * application on the active side would; `sds replicate` syncs; failover and failback are
 * `activeSide` updates (never replaces); the RBD primary takes writes after its last sync
 * (a failover that could not wait), which the failback undoes; refresh finds nothing to change;
 * deleting the RBD pair keeps its primary without replication's snapshot; destroy leaves no
 * image, snapshot, file or map.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { cannotRun } from "../datapath/harness";
import { type CephCluster, cephSkipReason, startCeph } from "../helpers/ceph";
import { repoRoot } from "../helpers/provider-process";
import { PulumiProject, summaryCount } from "../helpers/pulumi";
import { qemuIo, rbdHolds, rbdImages, readmeCaps, replicationBackendsYaml } from "../helpers/rbd-lab";

jest.setTimeout(900_000);
const why = cannotRun() ?? cephSkipReason() ?? (fs.existsSync("/usr/bin/qemu-io") ? undefined : "qemu-io is missing (Debian qemu-utils)");
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const MiB = 1024 ** 2;

suite("replication from RBD volumes: RBD → RBD and RBD → file, failover, failback, destroy", () => {
  let ceph: CephCluster;
  let p: PulumiProject;

  const io = (pool: string, image: unknown, ...cmds: string[]) => qemuIo(ceph, pool, image, ...cmds);
  const holds = (pool: string, image: unknown, pattern: number, offset: number, len: number) => rbdHolds(ceph, pool, image, pattern, offset, len);
  const fileHolds = (file: string, pattern: number, offset: number, len: number) => {
    const fd = fs.openSync(file, "r");
    try {
      const b = Buffer.alloc(len);
      fs.readSync(fd, b, 0, len, offset);
      return b.every((x) => x === pattern);
    } finally {
      fs.closeSync(fd);
    }
  };
  const fileWrite = (file: string, pattern: number, offset: number, len: number) => {
    const fd = fs.openSync(file, "r+");
    try {
      fs.writeSync(fd, Buffer.alloc(len, pattern), 0, len, offset);
      fs.fdatasyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  };
  const images = (pool: string) => rbdImages(ceph, pool);
  const snaps = async (pool: string, image: unknown) => (JSON.parse(await ceph.rbd(["snap", "ls", `${pool}/${String(image)}`, "--format", "json"])) as Array<{ name: string }>).map((s) => s.name);
  const secondaryFile = (id: unknown) => path.join(p.dir, "pools", "files", `volume-${String(id)}.img`);
  const replicate = () => execFileSync(path.join(repoRoot, "provider/bin/sds"), ["replicate", "--all", "--project", p.dir], { cwd: p.dir, encoding: "utf8", env: { ...p.env } });

  beforeAll(async () => {
    ceph = await startCeph();
    await ceph.pool("sds");
    await ceph.pool("dr");
    // Only what the README tells a Ceph admin to grant, for both pools.
    const keyring = await ceph.makeUser("sds", readmeCaps(["sds", "dr"]));
    p = await PulumiProject.create("rbd-replication");
    fs.writeFileSync(path.join(p.dir, "backends.yaml"), replicationBackendsYaml({ conf: ceph.conf, keyring }, { conf: ceph.conf, keyring }));
    await p.config({ "sds:backendsFile": "backends.yaml" });
  }, 300_000);

  afterAll(async () => {
    try {
      if (p) await p.run(["destroy", "--yes"]);
    } finally {
      await ceph?.stop();
      p?.remove();
    }
  }, 300_000);

  test("up: both primaries on RBD, the secondaries on cephdr (an image) and files (a file), each initial sync leaving one snapshot per RBD side", async () => {
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "created")).toBe(6); // stack, profile, 2 volumes, 2 pairs
    const out = await p.outputs();
    expect(out).toMatchObject({ rbdBackend: "ceph", fileBackend: "ceph", rbdStatus: "enabled", fileStatus: "enabled" });
    expect((await images("sds")).sort()).toEqual([out.rbdVolumeId, out.fileVolumeId].sort());
    expect(await images("dr")).toEqual([out.rbdSecondaryId]);
    expect(fs.statSync(secondaryFile(out.fileSecondaryId)).size).toBe(1024 * MiB);
    expect(await snaps("sds", out.rbdVolumeId)).toEqual(["sds-sync-1"]);
    expect(await snaps("dr", out.rbdSecondaryId)).toEqual(["sds-sync-1"]);
    // The engine's change token: one snapshot of the primary, so an idle primary is not read again.
    expect(await snaps("sds", out.fileVolumeId)).toEqual(["sds-sync-token-1"]);
    await p.ok(["preview", "--expect-no-changes"]);
  });

  test("data written on the primaries reaches both secondaries with sds replicate; the RBD pair sends about what changed", async () => {
    const out = await p.outputs();
    io("sds", out.rbdVolumeId, "write -P 0xa1 3M 4M");
    io("sds", out.fileVolumeId, "write -P 0xa2 3M 4M");
    expect(holds("dr", out.rbdSecondaryId, 0xa1, 3 * MiB, 4 * MiB)).toBe(false);
    expect(replicate()).toMatch(/2 pair\(s\) synced, 0 failed/);
    expect(holds("dr", out.rbdSecondaryId, 0xa1, 3 * MiB, 4 * MiB)).toBe(true);
    expect(fileHolds(secondaryFile(out.fileSecondaryId), 0xa2, 3 * MiB, 4 * MiB)).toBe(true);
    expect(await snaps("sds", out.rbdVolumeId)).toEqual(["sds-sync-2"]);
    expect(await snaps("dr", out.rbdSecondaryId)).toEqual(["sds-sync-2"]);
    await p.ok(["refresh", "--yes"]);
    const state = (await p.stackExport()).deployment.resources ?? [];
    const bytes = (name: string) => Number(state.find((r) => r.urn.endsWith(`::${name}`))?.outputs?.bytesTransferred);
    // The RBD pair's second sync carried the 4 MiB written (plus record heads), not the volume.
    expect(bytes("rbd-pair")).toBeGreaterThanOrEqual(4 * MiB);
    expect(bytes("rbd-pair")).toBeLessThan(4 * MiB + 64 * 1024);
    expect(bytes("file-pair")).toBeGreaterThanOrEqual(4 * MiB);
    expect(await snaps("sds", out.fileVolumeId)).toEqual(["sds-sync-token-2"]);
  });

  test("failover is an update; the secondaries take writes; the RBD primary takes writes after its last sync", async () => {
    await p.config({ activeSide: "secondary" });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "replaced")).toBe(0);
    const out = await p.outputs();
    expect(out).toMatchObject({ rbdStatus: "failed-over", fileStatus: "failed-over" });
    // The application on the secondaries.
    io("dr", out.rbdSecondaryId, "write -P 0xb1 8M 1M");
    fileWrite(secondaryFile(out.fileSecondaryId), 0xb2, 8 * MiB, MiB);
    // A write the old primary took after the failover's last sync (it never reached the secondary).
    io("sds", out.rbdVolumeId, "write -P 0xc1 20M 1M");
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("failback brings the secondaries' data home and undoes the old primary's late write; syncs resume from the common snapshot", async () => {
    await p.config({ activeSide: "primary" });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "replaced")).toBe(0);
    const out = await p.outputs();
    expect(out).toMatchObject({ rbdStatus: "enabled", fileStatus: "enabled" });
    expect(holds("sds", out.rbdVolumeId, 0xb1, 8 * MiB, MiB)).toBe(true);
    expect(holds("sds", out.rbdVolumeId, 0xa1, 3 * MiB, 4 * MiB)).toBe(true);
    expect(holds("sds", out.rbdVolumeId, 0, 20 * MiB, MiB)).toBe(true); // the late write is gone: the secondary never had it
    expect(holds("sds", out.fileVolumeId, 0xb2, 8 * MiB, MiB)).toBe(true);
    const [primarySnaps, secondarySnaps] = [await snaps("sds", out.rbdVolumeId), await snaps("dr", out.rbdSecondaryId)];
    expect(primarySnaps).toHaveLength(1);
    expect(secondarySnaps).toEqual(primarySnaps);
    // Forward again, incrementally.
    io("sds", out.rbdVolumeId, "write -P 0xd1 30M 64k");
    expect(replicate()).toMatch(/2 pair\(s\) synced, 0 failed/);
    expect(holds("dr", out.rbdSecondaryId, 0xd1, 30 * MiB, 64 * 1024)).toBe(true);
    expect(holds("dr", out.rbdSecondaryId, 0xb1, 8 * MiB, MiB)).toBe(true);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("deleting the RBD pair keeps its primary, without replication's snapshot; the secondary image goes", async () => {
    const before = await p.outputs();
    await p.config({ rbdPair: false });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "deleted")).toBe(1);
    expect(await images("dr")).toEqual([]);
    expect((await images("sds")).sort()).toEqual([before.rbdVolumeId, before.fileVolumeId].sort());
    expect(await snaps("sds", before.rbdVolumeId)).toEqual([]);
    expect(holds("sds", before.rbdVolumeId, 0xd1, 30 * MiB, 64 * 1024)).toBe(true);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("destroy leaves no image, snapshot, file or map", async () => {
    await p.ok(["destroy", "--yes"]);
    expect(await images("sds")).toEqual([]);
    expect(await images("dr")).toEqual([]);
    expect(fs.readdirSync(path.join(p.dir, "pools", "files"))).toEqual([]);
    expect(fs.readdirSync(path.join(p.dir, ".sds", "replication"))).toEqual([]);
  });
});
