/**
 * examples/placement and examples/replication-dr as a user runs them: each copied outside this
 * checkout, with the packaged plugin installed from its tarball and `pulumi-sds` from the packed
 * SDK (test/helpers/packaged.ts), and the README's commands. Placement: each profile lands on its
 * one pool, getPlacement and getPools answer as the README says. Replication: data written on the
 * application's device reaches dr with the packaged `sds replicate`; failover and failback are
 * config changes, after each the device is made from the side that serves and holds the newest
 * data. Both end with preview and refresh --expect-no-changes, destroy, and a census (no volume
 * file, no replication map, no loop device).
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as path from "node:path";
import { destroyAndRemove, filesIn, installedBin, loopBackingFile, loopsUnder, outsideExample } from "../helpers/examples";
import { bytesAt } from "../helpers/files";
import type { OutsideProject } from "../helpers/packaged";
import { summaryCount } from "../helpers/pulumi";

jest.setTimeout(900_000);

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("examples/placement from a copy outside the repo", () => {
  let p: OutsideProject;
  beforeAll(async () => {
    p = await outsideExample("placement", "dev");
    await p.config({ "sds:backendsFile": "backends.yaml" });
  });
  afterAll(() => destroyAndRemove(p));

  test("each profile lands on its one pool; getPlacement and getPools answer; nothing to change after; destroy leaves no volume file", async () => {
    const pre = await p.ok(["preview"]);
    for (const pool of ["fast/nvme", "fast/ssd", "capacity/hdd"]) expect(pre.stdout).toMatch(new RegExp(`placement\\b.*${pool} \\(backend`));
    expect(filesIn(path.join(p.dir, "pools"))).toEqual([]);

    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "created")).toBe(7);
    const out = await p.outputs();
    expect(out.pools).toEqual({ db: "fast/nvme", media: "fast/ssd", backups: "capacity/hdd" });
    expect(out.mediaIsMultiAttach).toBe(true);
    expect(out.nextDatabase).toEqual({
      pool: "fast/nvme",
      rejected: [expect.stringMatching(/^fast\/ssd: capabilities: latency is 1ms, profile asks <= 0\.5ms$/), expect.stringMatching(/^capacity\/hdd: capabilities: diskType is HDD/)],
    });
    expect(out.hugeShared).toEqual({
      pool: "none fits",
      rejected: expect.arrayContaining([
        expect.stringMatching(/^fast\/nvme: capabilities: multiAttach is false/),
        expect.stringMatching(/^fast\/ssd: capacity: 9980 GiB free \(thin: 500 GiB total × 20 - 20 GiB provisioned\), 20000 GiB asked$/),
        expect.stringMatching(/^capacity\/hdd: capabilities: availabilityZone is zone-b, profile asks zone-a$/),
      ]),
    });
    expect(out.capacity).toEqual({
      "fast/nvme": { diskType: "NVMe", zone: "zone-a", totalGib: 200, provisionedGib: 10, multiAttach: false },
      "fast/ssd": { diskType: "SSD", zone: "zone-a", totalGib: 500, provisionedGib: 20, multiAttach: true },
      "capacity/hdd": { diskType: "HDD", zone: "zone-b", totalGib: 2000, provisionedGib: 1, multiAttach: false },
    });
    expect(filesIn(path.join(p.dir, "pools")).sort()).toHaveLength(3);
    // The README's `sds pools`, from the installed plugin: the same pools, with what they hold.
    const pools = JSON.parse(execFileSync(installedBin(p, "sds"), ["pools", "--json", "--stack", "dev"], { cwd: p.dir, env: p.env, encoding: "utf8" })) as Array<{ id: string; provisionedGib: number; volumes: unknown }>;
    expect(pools.map((x) => [x.id, x.provisionedGib, x.volumes]).sort()).toEqual([["capacity/hdd", 1, 1], ["fast/nvme", 10, 1], ["fast/ssd", 20, 1]]);

    await p.ok(["preview", "--expect-no-changes"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
    await p.ok(["destroy", "--yes"]);
    expect(filesIn(path.join(p.dir, "pools"))).toEqual([]);
  });
});

const why = process.getuid?.() !== 0 ? "examples/replication-dr needs root (the application's device is a loop device)" : undefined;
const rootSuite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

rootSuite("examples/replication-dr from a copy outside the repo: sds replicate, failover, failback", () => {
  let p: OutsideProject;
  const patterns: Record<string, Buffer> = {};
  const file = (backend: "main" | "dr", id: unknown) => path.join(p.dir, "pools", backend, `volume-${id}.img`);
  const write = (dev: unknown, data: Buffer) => {
    expect(dev).toMatch(/^\/dev\/loop\d+$/);
    execFileSync("dd", [`of=${dev}`, "bs=1M", "seek=3", "oflag=direct", "conv=fsync", "status=none"], { input: data });
  };
  const read = (dev: unknown) => {
    expect(dev).toMatch(/^\/dev\/loop\d+$/);
    return execFileSync("dd", [`if=${dev}`, "bs=1M", "skip=3", "count=4", "iflag=direct", "status=none"], { maxBuffer: 1 << 26 });
  };

  beforeAll(async () => {
    p = await outsideExample("replication-dr", "dev");
    await p.config({ "sds:backendsFile": "backends.yaml" });
  });
  afterAll(() => destroyAndRemove(p));

  test("up: the volume on main, its copy on dr, the application's device from main; the packaged sds replicate brings a write to dr", async () => {
    await p.ok(["up", "--yes"]);
    const out = await p.outputs();
    expect(out).toMatchObject({ servedBy: "primary", replicationStatus: "enabled" });
    expect(loopBackingFile(String(out.devicePath))).toBe(file("main", out.volumeId));
    patterns.p1 = randomBytes(4 * MiB);
    write(out.devicePath, patterns.p1);
    // What the timer runs (deploy/sds-replicate.service), with --all: the pair is not yet past its rpoSeconds.
    const log = execFileSync(installedBin(p, "sds"), ["replicate", "--all", "--project", p.dir, "--stack", "dev"], { cwd: p.dir, env: p.env, encoding: "utf8" });
    expect(log).toMatch(/1 pair\(s\) synced, 0 failed/);
    expect(sha(bytesAt(file("dr", out.secondaryVolumeId), 3 * MiB, 4 * MiB))).toBe(sha(patterns.p1));
  });

  test("failover (activeSide secondary): the pair is updated, the attachment made again from dr, and it reads what main had", async () => {
    await p.config({ activeSide: "secondary" });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "updated")).toBe(1);
    expect(summaryCount(up.stdout, "replaced")).toBe(1);
    const out = await p.outputs();
    expect(out).toMatchObject({ servedBy: "secondary", replicationStatus: "failed-over" });
    // The README's `sds replication status`, from the installed plugin, says the same.
    const status = JSON.parse(execFileSync(installedBin(p, "sds"), ["replication", "status", "--json", "--stack", "dev"], { cwd: p.dir, env: p.env, encoding: "utf8" }));
    expect(status).toEqual([expect.objectContaining({ primaryVolumeId: out.volumeId, secondaryVolumeId: out.secondaryVolumeId, activeSide: "secondary", status: "failed-over" })]);
    expect(loopBackingFile(String(out.devicePath))).toBe(file("dr", out.secondaryVolumeId));
    expect(sha(read(out.devicePath))).toBe(sha(patterns.p1));
    patterns.p2 = randomBytes(4 * MiB);
    write(out.devicePath, patterns.p2);
  });

  test("failback (activeSide primary): what was written on dr is on main, and the device is main's again", async () => {
    await p.config({ activeSide: "primary" });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "replaced")).toBe(1);
    const out = await p.outputs();
    expect(out).toMatchObject({ servedBy: "primary", replicationStatus: "enabled" });
    expect(loopBackingFile(String(out.devicePath))).toBe(file("main", out.volumeId));
    expect(sha(read(out.devicePath))).toBe(sha(patterns.p2));
  });

  test("no changes to preview or refresh; destroy leaves no volume file, replication map or loop device", async () => {
    await p.ok(["preview", "--expect-no-changes"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
    await p.ok(["destroy", "--yes"]);
    expect(filesIn(path.join(p.dir, "pools"))).toEqual([]);
    expect(filesIn(path.join(p.dir, ".sds", "replication"))).toEqual([]);
    expect(loopsUnder(p.dir)).toEqual([]);
  });
});
