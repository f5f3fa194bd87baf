/**
 * Failover when the primary's Ceph cluster is down, through the real Pulumi CLI (root): two real
 * single-node Ceph clusters, "site A" (backend "ceph", the primaries) and "site B" (backend
 * "cephdr"), and a file backend. Both pairs of the rbd-replication program (RBD → RBD on site B,
 * RBD → file) are synced; then every daemon of site A is frozen (SIGSTOP: mon, mgr, OSD; a
 * memstore OSD loses its data when it is killed), as a site that stopped answering. The failover
 * is then an `activeSide` update that succeeds with the data of the last sync, says so, and
 * leaves the secondaries writable. Site A comes back; the failback brings the secondaries' data
 * home; refresh finds nothing to change; destroy leaves no image.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { procProcesses } from "../../provider/src/exec/processes";
import { cannotRun } from "../datapath/harness";
import { type CephCluster, cephSkipReason, startCeph } from "../helpers/ceph";
import { stopProcess } from "../helpers/daemons";
import { repoRoot } from "../helpers/provider-process";
import { PulumiProject, summaryCount } from "../helpers/pulumi";
import { bytesAt } from "../helpers/files";
import { qemuIo, rbdHolds, rbdImages, readmeCaps, replicationBackendsYaml } from "../helpers/rbd-lab";

jest.setTimeout(1_200_000);
const why = cannotRun() ?? cephSkipReason() ?? (fs.existsSync("/usr/bin/qemu-io") ? undefined : "qemu-io is missing (Debian qemu-utils)");
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const MiB = 1024 ** 2;

suite("failover with the primary's Ceph cluster down", () => {
  let siteA: CephCluster;
  let siteB: CephCluster;
  let p: PulumiProject;
  let frozen: number[] = [];

  const secondaryFile = (id: unknown) => path.join(p.dir, "pools", "files", `volume-${String(id)}.img`);
  const fileHolds = (file: string, pattern: number, offset: number, len: number) => bytesAt(file, offset, len).every((x) => x === pattern);
  const replicate = () => execFileSync(path.join(repoRoot, "provider/bin/sds"), ["replicate", "--all", "--project", p.dir], { cwd: p.dir, encoding: "utf8", env: { ...p.env } });
  const thaw = () => {
    for (const pid of frozen) procProcesses.kill(pid, "SIGCONT");
    frozen = [];
  };

  beforeAll(async () => {
    siteA = await startCeph();
    siteB = await startCeph();
    await siteA.pool("sds");
    await siteB.pool("dr");
    const keyA = await siteA.makeUser("sds", readmeCaps(["sds"]));
    const keyB = await siteB.makeUser("sds", readmeCaps(["dr"]));
    p = await PulumiProject.create("rbd-replication", { name: "rbd-failover-down" });
    fs.writeFileSync(path.join(p.dir, "backends.yaml"), replicationBackendsYaml({ conf: siteA.conf, keyring: keyA }, { conf: siteB.conf, keyring: keyB }));
    await p.config({ "sds:backendsFile": "backends.yaml" });
  }, 300_000);

  afterAll(async () => {
    thaw();
    try {
      if (p) await p.run(["destroy", "--yes"]);
    } finally {
      await siteA?.stop();
      await siteB?.stop();
      p?.remove();
    }
  }, 600_000);

  test("up and a sync: both secondaries hold the primaries' data", async () => {
    await p.ok(["up", "--yes"]);
    const out = await p.outputs();
    expect(out).toMatchObject({ rbdBackend: "ceph", fileBackend: "ceph", rbdStatus: "enabled", fileStatus: "enabled" });
    qemuIo(siteA, "sds", out.rbdVolumeId, "write -P 0xa1 3M 4M");
    qemuIo(siteA, "sds", out.fileVolumeId, "write -P 0xa2 5M 2M");
    expect(replicate()).toMatch(/2 pair\(s\) synced, 0 failed/);
    expect(rbdHolds(siteB, "dr", out.rbdSecondaryId, 0xa1, 3 * MiB, 4 * MiB)).toBe(true);
    expect(fileHolds(secondaryFile(out.fileSecondaryId), 0xa2, 5 * MiB, 2 * MiB)).toBe(true);
  });

  test("site A frozen: failover is an update that says it uses the last sync's data; the secondaries take writes", async () => {
    const dir = siteA.dir;
    const daemons = (await procProcesses.list()).filter((x) => /^ceph-(mon|mgr|osd)$/.test(path.basename(x.argv[0]!)) && x.argv.some((a) => a.startsWith(dir)));
    expect(daemons.map((d) => path.basename(d.argv[0]!)).sort()).toEqual(["ceph-mgr", "ceph-mon", "ceph-osd"]);
    for (const d of daemons) {
      await stopProcess(d.pid);
      frozen.push(d.pid);
    }
    await p.config({ activeSide: "secondary" });
    const t = Date.now();
    const up = await p.ok(["up", "--yes", "--skip-preview"]);
    console.log(`failover with site A frozen: pulumi up took ${((Date.now() - t) / 1000).toFixed(1)} s`);
    expect(summaryCount(up.stdout, "replaced")).toBe(0);
    expect(up.stdout).toMatch(/cannot be read: failing over with the data of the last sync/);
    // Site A's pool is named, left out of placement, and fails nothing else.
    expect(up.stdout).toMatch(/backends\[0\]\.pools\[0\]\.path: pool r0 \(sds\): .*; pool ceph\/r0 is left out of placement until it answers/);
    const out = await p.outputs();
    expect(out).toMatchObject({ rbdStatus: "failed-over", fileStatus: "failed-over" });
    qemuIo(siteB, "dr", out.rbdSecondaryId, "write -P 0xb1 8M 1M");
    expect(rbdHolds(siteB, "dr", out.rbdSecondaryId, 0xa1, 3 * MiB, 4 * MiB)).toBe(true);
  });

  test("site A back: refresh finds nothing to change; failback brings the secondary's data home", async () => {
    thaw();
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
    await p.config({ activeSide: "primary" });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "replaced")).toBe(0);
    const out = await p.outputs();
    expect(out).toMatchObject({ rbdStatus: "enabled", fileStatus: "enabled" });
    expect(rbdHolds(siteA, "sds", out.rbdVolumeId, 0xb1, 8 * MiB, MiB)).toBe(true);
    expect(rbdHolds(siteA, "sds", out.rbdVolumeId, 0xa1, 3 * MiB, 4 * MiB)).toBe(true);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("destroy leaves no image on either site", async () => {
    await p.ok(["destroy", "--yes"]);
    expect(await rbdImages(siteA, "sds")).toEqual([]);
    expect(await rbdImages(siteB, "dr")).toEqual([]);
  });
});
