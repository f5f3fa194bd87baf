/**
 * The rbd driver behind the controller (pool-catalog.ts) on a real single-node Ceph cluster:
 * an rbd backend from inline config with its key, its pool measured by `ceph df` and placed on,
 * volumes created, grown, cloned within the cluster and across backends (rbd → file, file →
 * rbd: drivers/rbd-copy.ts), deleted to nothing; and the key never in the state.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseInlineBackends } from "../../provider/src/controller/backends";
import { Controller } from "../../provider/src/controller/controller";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import { type CephCluster, cephSkipReason, startCeph } from "../helpers/ceph";
import { readmeCaps } from "../helpers/rbd-lab";

const skip = cephSkipReason();
const d = skip ? describe.skip : describe;
if (skip) console.warn(`rbd-catalog: skipped: ${skip}`);

d("an rbd backend behind the controller", () => {
  let ceph: CephCluster;
  let dir: string;
  let store: SqliteStore;
  let c: Controller;
  let key: string;

  beforeAll(async () => {
    ceph = await startCeph();
    await ceph.pool("sds");
    await ceph.makeUser("sds", readmeCaps(["sds"]));
    key = ((await ceph.cephJson(["auth", "get-key", "client.sds"])) as { key: string }).key;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-rbd-catalog-"));
    const backends = parseInlineBackends(
      [
        { name: "ceph", driver: "rbd", rbd: { user: "sds", monHost: ceph.monHost, key }, export: { protocol: "iscsi" }, pools: [{ name: "fast", path: "sds", multiAttach: true, extras: { advanced: { diskType: "SSD" } } }] },
        { name: "files", driver: "file", pools: [{ name: "p0", path: "pools/p0", totalCapacityGib: 10 }] },
      ],
      dir,
    );
    store = new SqliteStore(path.join(dir, "state.db"));
    c = new Controller({ store, backends, backendsSource: "inline", rbdDir: path.join(dir, "run", "rbd") });
    await c.discover();
  }, 180_000);
  afterAll(async () => {
    await store?.close();
    await ceph?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  const spec = (name: string, extra: Record<string, unknown> = {}) => ({ name, sizeGib: 1, description: "", metadata: {}, ...extra });
  const images = async () => JSON.parse(await ceph.rbd(["ls", "--pool", "sds", "--format", "json"])) as string[];

  test("the rbd pool is measured by ceph df and reported thin, with its capabilities", async () => {
    const pools = await c.pools();
    const p = pools.find((x) => x.id === "ceph/fast")!;
    expect(p).toMatchObject({ backendName: "ceph", provisioning: "thin", multiAttach: true, maxOverSubscriptionRatio: 20 });
    expect(p.totalGib).toBeGreaterThan(0.5);
    expect(p.totalGib).toBeLessThan(3);
    expect(p.freeGib).toBeGreaterThan(0.5);
  });

  test("create, grow, clone, delete through the controller; the key stays out of the state", async () => {
    const v = await c.createVolume("urn:v", spec("v", { placeOn: { backend: "ceph" } }));
    expect(v).toMatchObject({ backendName: "ceph", poolId: "ceph/fast", status: "available" });
    expect(c.volumePath(v)).toBe(`rbd:sds/${v.id}:id=sds:conf=${path.join(dir, "run", "rbd", "ceph.conf")}`);
    execFileSync("qemu-io", ["-f", "raw", "-c", "write -P 0x44 1048576 65536", c.volumePath(v)], { stdio: "pipe" });
    await c.extendVolume(v.id, 2);
    expect(JSON.parse(await ceph.rbd(["info", "--pool", "sds", "--image", v.id, "--format", "json"])).size).toBe(2 * 1024 ** 3);

    const same = await c.createVolume("urn:same", spec("same", { sizeGib: 2, sourceVolumeId: v.id, placeOn: { backend: "ceph" } }));
    const toFile = await c.createVolume("urn:tofile", spec("tofile", { sizeGib: 3, sourceVolumeId: v.id, placeOn: { backend: "files" } }));
    expect(toFile.backendName).toBe("files");
    expect(fs.statSync(c.volumePath(toFile)).size).toBe(3 * 1024 ** 3);
    expect(fs.statSync(c.volumePath(toFile)).blocks * 512).toBeLessThan(16 * 1024 ** 2); // thin: the holes stayed holes
    const back = await c.createVolume("urn:back", spec("back", { sizeGib: 3, sourceVolumeId: toFile.id, placeOn: { backend: "ceph" } }));
    for (const x of [same, toFile, back]) {
      const out = execFileSync("qemu-io", ["-f", "raw", "-r", "-c", "read -P 0x44 1048576 65536", "-c", "read -P 0 0 65536", c.volumePath(x)], { encoding: "utf8" });
      expect(out).not.toMatch(/Pattern verification failed/);
    }
    expect((await images()).sort()).toEqual([v.id, same.id, back.id].sort());

    const rows = await store.listBackends();
    expect(rows.map((r) => r.config).join("\n")).not.toContain(key);
    expect(JSON.stringify(c.backendConfigs())).not.toContain(key);
    expect(fs.readFileSync(path.join(dir, "state.db")).includes(key)).toBe(false);

    for (const x of [back, toFile, same, v]) await c.deleteVolume(x.id);
    expect(await images()).toEqual([]);
    expect(fs.readdirSync(path.join(dir, "pools/p0"))).toEqual([]);
  }, 180_000);
});
