/**
 * Replication through the real Pulumi CLI on real loop devices (root): data written through an
 * attachment of the primary reaches the secondary after `sds replicate`; failover is an update
 * (not a replace) and an attachment made afterwards reads the data on the secondary; failback
 * brings the newest data back to the primary; with the primary's pool gone, failover still works
 * (with the data of the last sync); destroy keeps nothing.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { bytesAt } from "../helpers/files";
import { repoRoot } from "../helpers/provider-process";
import { PulumiProject, summaryCount } from "../helpers/pulumi";

jest.setTimeout(900_000);
const why = process.getuid?.() !== 0 ? "replication e2e needs root (loop devices)" : undefined;
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

suite("replication: sync, failover, failback, failover with the primary unreachable", () => {
  let p: PulumiProject;
  const patterns: Record<string, Buffer> = {};
  const write = (dev: unknown, data: Buffer) => {
    expect(dev).toMatch(/^\/dev\/loop\d+$/);
    execFileSync("dd", [`of=${dev}`, "bs=1M", "seek=3", "oflag=direct", "conv=fsync", "status=none"], { input: data });
  };
  const readDev = (dev: unknown, n: number) => {
    expect(dev).toMatch(/^\/dev\/loop\d+$/);
    return execFileSync("dd", [`if=${dev}`, "bs=1M", "skip=3", `count=${n}`, "iflag=direct", "status=none"], { maxBuffer: 1 << 28 });
  };
  const volumeFile = (pool: string, id: unknown) => path.join(p.dir, "pools", pool, `volume-${id}.img`);
  const replicate = () => execFileSync(path.join(repoRoot, "provider/bin/sds"), ["replicate", "--all", "--project", p.dir], { cwd: p.dir, encoding: "utf8", env: { ...p.env } });

  beforeAll(async () => {
    p = await PulumiProject.create("replication");
    fs.writeFileSync(
      path.join(p.dir, "backends.yaml"),
      [
        "backends:",
        "  - name: main",
        "    driver: file",
        "    replicationTargets: [{backend: dr}]",
        "    pools: [{name: p0, path: pools/main, totalCapacityGib: 20, replication: async}]",
        "  - name: dr",
        "    driver: file",
        "    pools: [{name: p0, path: pools/dr, totalCapacityGib: 20}]",
        "",
      ].join("\n"),
    );
    await p.config({ "sds:backendsFile": "backends.yaml", writer: true });
  });
  afterAll(async () => {
    if (!p) return;
    if (fs.existsSync(path.join(p.dir, "pools", "main.away"))) {
      fs.rmSync(path.join(p.dir, "pools", "main"), { recursive: true, force: true });
      fs.renameSync(path.join(p.dir, "pools", "main.away"), path.join(p.dir, "pools", "main"));
    }
    await p.run(["destroy", "--yes"]);
    p.remove();
  });

  test("up: the pair makes the secondary on backend dr; data written on the primary is there after a sync", async () => {
    await p.ok(["up", "--yes"]);
    const out = await p.outputs();
    expect(out).toMatchObject({ backendName: "main", replicationStatus: "enabled", activeSide: "primary" });
    expect(fs.existsSync(volumeFile("dr", out.secondaryVolumeId))).toBe(true);
    patterns.p1 = randomBytes(4 * MiB);
    write(out.writerDevice, patterns.p1);
    expect(sha(bytesAt(volumeFile("dr", out.secondaryVolumeId), 3 * MiB, 4 * MiB))).not.toBe(sha(patterns.p1));
    const log = replicate();
    expect(log).toMatch(/1 pair\(s\) synced, 0 failed/);
    expect(sha(bytesAt(volumeFile("dr", out.secondaryVolumeId), 3 * MiB, 4 * MiB))).toBe(sha(patterns.p1));
    // Refresh reads the pair's sync state (stack outputs are recomputed only by up: read the state).
    await p.ok(["refresh", "--yes"]);
    const state = (await p.stackExport()).deployment.resources?.find((r) => r.type === "sds:index:ReplicationPair");
    expect(Number(state?.outputs?.bytesTransferred)).toBeGreaterThanOrEqual(4 * MiB);
    expect(state?.outputs?.lastSyncAt).toEqual(expect.any(String));
  });

  test("failover is an update, not a replace; an attachment made afterwards reads the data on the secondary", async () => {
    await p.config({ activeSide: "secondary", writer: false, reader: true });
    const pre = await p.previewJson();
    const pairStep = pre.steps.find((s) => s.urn.endsWith("::pair"));
    expect(pairStep?.op).toBe("update");
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "replaced")).toBe(0);
    const out = await p.outputs();
    expect(out).toMatchObject({ replicationStatus: "failed-over", activeSide: "secondary" });
    expect(sha(readDev(out.readerDevice, 4))).toBe(sha(patterns.p1));
    // The reader's device is made from the secondary's file.
    const loops = JSON.parse(execFileSync("losetup", ["--json", "--list"], { encoding: "utf8" })).loopdevices as Array<{ name: string; "back-file": string }>;
    expect(loops.find((l) => l.name === out.readerDevice)?.["back-file"]).toBe(volumeFile("dr", out.secondaryVolumeId));
    patterns.p2 = randomBytes(4 * MiB);
    write(out.readerDevice, patterns.p2);
  });

  test("failback resyncs the newest data to the primary", async () => {
    await p.config({ activeSide: "primary", writer: true, reader: false });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "replaced")).toBe(0);
    const out = await p.outputs();
    expect(out).toMatchObject({ replicationStatus: "enabled", activeSide: "primary" });
    expect(sha(readDev(out.writerDevice, 4))).toBe(sha(patterns.p2));
    expect(sha(bytesAt(volumeFile("main", out.volumeId), 3 * MiB, 4 * MiB))).toBe(sha(patterns.p2));
  });

  test("with the primary's pool unreachable, failover still succeeds with the data of the last sync", async () => {
    await p.config({ writer: false });
    await p.ok(["up", "--yes"]);
    const before = await p.outputs();
    fs.renameSync(path.join(p.dir, "pools", "main"), path.join(p.dir, "pools", "main.away"));
    await p.config({ activeSide: "secondary", reader: true });
    const up = await p.ok(["up", "--yes"]);
    expect(up.stdout).toMatch(/cannot be read: failing over with the data of the last sync/);
    const out = await p.outputs();
    expect(out).toMatchObject({ replicationStatus: "failed-over", activeSide: "secondary", volumeId: before.volumeId });
    expect(sha(readDev(out.readerDevice, 4))).toBe(sha(patterns.p2));
  });

  test("destroy of a failed-over pair fails back first, then nothing is left", async () => {
    fs.rmSync(path.join(p.dir, "pools", "main"), { recursive: true, force: true });
    fs.renameSync(path.join(p.dir, "pools", "main.away"), path.join(p.dir, "pools", "main"));
    const destroy = await p.ok(["destroy", "--yes"]);
    expect(destroy.stdout).toMatch(/failing back \(resync to the primary\) before removing the secondary/);
    expect(fs.readdirSync(path.join(p.dir, "pools", "main"))).toEqual([]);
    expect(fs.readdirSync(path.join(p.dir, "pools", "dr"))).toEqual([]);
    expect(fs.readdirSync(path.join(p.dir, ".sds", "replication"))).toEqual([]);
    expect(execFileSync("losetup", ["--json", "--list"], { encoding: "utf8" })).not.toContain(p.dir);
  });
});
