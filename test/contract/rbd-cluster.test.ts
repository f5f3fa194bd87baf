/**
 * The single-node Ceph harness itself (test/helpers/ceph.ts): a cluster comes up in its own
 * folder, an RBD pool is usable, a user with rbd caps reaches it through the conf alone, and
 * stop() leaves no daemon and no folder behind.
 */
import * as fs from "node:fs";
import { type CephCluster, cephSkipReason, startCeph } from "../helpers/ceph";
import { readmeCaps } from "../helpers/rbd-lab";

const skip = cephSkipReason();
const d = skip ? describe.skip : describe;
if (skip) console.warn(`rbd-cluster: skipped: ${skip}`);

d("single-node Ceph harness", () => {
  let ceph: CephCluster | undefined;
  afterAll(async () => await ceph?.stop(), 60_000);

  it("starts, makes a pool, serves images, stops clean", async () => {
    ceph = await startCeph();
    expect(fs.statSync(ceph.conf).mode & 0o777).toBe(0o600);
    expect(fs.statSync(ceph.keyring).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(ceph.conf, "utf8")).not.toMatch(/admin socket/);
    await ceph.pool("sds");
    await ceph.pool("sds"); // idempotent
    await ceph.rbd(["create", "sds/v1", "--size", "64M"]);
    const info = JSON.parse(await ceph.rbd(["info", "sds/v1", "--format", "json"])) as { size: number };
    expect(info.size).toBe(64 * 1024 ** 2);
    const df = (await ceph.cephJson(["df"])) as { pools: Array<{ name: string; stats: { max_avail: number } }> };
    expect(df.pools.find((p) => p.name === "sds")?.stats.max_avail).toBeGreaterThan(0);
    const kr = await ceph.makeUser("sds", readmeCaps(["sds"]));
    expect(fs.statSync(kr).mode & 0o777).toBe(0o600);

    const { dir } = ceph;
    const pids = fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).filter((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes(ceph!.conf);
      } catch {
        return false;
      }
    });
    expect(pids.length).toBeGreaterThanOrEqual(3);
    await ceph.stop();
    for (const p of pids) expect(fs.existsSync(`/proc/${p}/cmdline`) && fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes(dir)).toBe(false);
    expect(fs.existsSync(dir)).toBe(false);
  }, 180_000);
});
