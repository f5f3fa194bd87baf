/**
 * What the rbd driver (drivers/rbd-driver.ts) must do beyond the VolumeDriver contract
 * (volume-driver.test.ts runs that on it too), on a real single-node Ceph cluster: volumes deleted
 * out of band, an image an export still holds, a clone that outlives its source, capacity from
 * `ceph df`, a user with only the rbd profile, and a key that never reaches argv.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { poolSchema } from "../../provider/src/domain/backend";
import { parseRbdPath } from "../../provider/src/domain/rbd-path";
import { RbdDriver } from "../../provider/src/drivers/rbd-driver";
import { run, type Runner } from "../../provider/src/exec/run";
import { type CephCluster, cephSkipReason, startCeph } from "../helpers/ceph";
import { readmeCaps } from "../helpers/rbd-lab";

const GiB = 1024 ** 3;
const skip = cephSkipReason();
const d = skip ? describe.skip : describe;
if (skip) console.warn(`rbd-driver: skipped: ${skip}`);

d("rbd driver on a real Ceph cluster", () => {
  let ceph: CephCluster;
  let dir: string;
  let driver: RbdDriver;
  const pool = poolSchema.parse({ name: "fast", path: "sds" });
  const watchers: ChildProcess[] = [];

  beforeAll(async () => {
    ceph = await startCeph();
    await ceph.pool("sds");
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-rbd-"));
    driver = new RbdDriver({ backend: "ceph", rbd: { cluster: "ceph", user: "admin", conf: ceph.conf, keyringFile: ceph.keyring }, dir: path.join(dir, "rbd") });
  }, 180_000);
  afterAll(async () => {
    for (const w of watchers) if (w.exitCode === null && w.signalCode === null) w.kill("SIGKILL");
    await ceph?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  test("the volume path is qemu's rbd filename on a private conf naming the monitors and the keyring", () => {
    const p = parseRbdPath(driver.volumePath(pool, "v0"));
    expect(p).toEqual({ cephPool: "sds", image: "v0", user: "admin", conf: path.join(dir, "rbd", "ceph.conf") });
    expect(fs.statSync(path.join(dir, "rbd")).mode & 0o777).toBe(0o700);
    expect(fs.statSync(p!.conf).mode & 0o777).toBe(0o600);
    const text = fs.readFileSync(p!.conf, "utf8");
    expect(text).toContain(`mon host = ${ceph.monHost}`);
    expect(text).toContain(`keyring = ${ceph.keyring}`);
    expect(text).not.toMatch(/admin socket|key =/);
  });

  test("a volume deleted out of band: size and allocation undefined, delete succeeds", async () => {
    await driver.createVolume(pool, "oob", GiB);
    await ceph.rbd(["rm", "--pool", "sds", "--image", "oob", "--no-progress"]);
    expect(await driver.getVolumeSizeBytes(pool, "oob")).toBeUndefined();
    expect(await driver.getVolumeAllocation(pool, "oob")).toBeUndefined();
    await driver.deleteVolume(pool, "oob");
  }, 60_000);

  test("delete of an image a client holds open fails clearly, removes nothing, and succeeds once it lets go", async () => {
    await driver.createVolume(pool, "held", GiB);
    // qemu-io in interactive mode keeps the image open (as tgtd or qemu-nbd would) until its stdin closes.
    const w = spawn("qemu-io", ["-f", "raw", driver.volumePath(pool, "held")], { stdio: ["pipe", "ignore", "ignore"] });
    watchers.push(w);
    for (let i = 0; i < 60; i++) {
      const st = JSON.parse(await ceph.rbd(["status", "--pool", "sds", "--image", "held", "--format", "json"])) as { watchers: unknown[] };
      if (st.watchers.length > 0) break;
      if (i === 59) throw new Error("test setup: qemu-io never opened the image");
      await new Promise((r) => setTimeout(r, 250));
    }
    await expect(driver.deleteVolume(pool, "held")).rejects.toThrow(/volume held: image sds\/held is still open \(watchers: client\.\d+ at .*\): an export still serves it .*detach every attachment of the volume, then retry/);
    expect(await driver.getVolumeSizeBytes(pool, "held")).toBe(GiB);
    await new Promise<void>((r) => {
      w.once("exit", () => r());
      w.stdin!.end("quit\n");
    });
    await driver.deleteVolume(pool, "held");
    expect(await driver.getVolumeSizeBytes(pool, "held")).toBeUndefined();
  }, 90_000);

  test("a clone is flattened: its source can be deleted, its data stays, no snapshot is left behind", async () => {
    await driver.createVolume(pool, "parent", GiB);
    const src = parseRbdPath(driver.volumePath(pool, "parent"))!;
    await ceph.rbd(["snap", "create", "--pool", "sds", "--image", "parent", "--snap", "user-snap"]); // a snapshot of someone else's, purged by delete
    execFileSync("qemu-io", ["-f", "raw", "-c", "write -P 0x33 4096 4096", driver.volumePath(pool, "parent")], { stdio: "pipe" });
    await driver.cloneVolume({ pool, volumeId: "parent" }, pool, "child", 2 * GiB);
    const snaps = JSON.parse(await ceph.rbd(["snap", "ls", "--pool", "sds", "--image", "parent", "--format", "json"])) as Array<{ name: string }>;
    expect(snaps.map((s) => s.name)).toEqual(["user-snap"]);
    const info = JSON.parse(await ceph.rbd(["info", "--pool", "sds", "--image", "child", "--format", "json"])) as { parent?: unknown; size: number };
    expect(info.parent).toBeUndefined();
    expect(info.size).toBe(2 * GiB);
    await driver.deleteVolume(pool, "parent");
    expect(await driver.getVolumeSizeBytes(pool, "parent")).toBeUndefined();
    const out = execFileSync("qemu-io", ["-f", "raw", "-r", "-c", "read -P 0x33 4096 4096", driver.volumePath(pool, "child")], { encoding: "utf8" });
    expect(out).not.toMatch(/Pattern verification failed/);
    expect(src.cephPool).toBe("sds");
    await driver.deleteVolume(pool, "child");
  }, 120_000);

  test("capacity comes from ceph df: stored + max_avail, free is max_avail (totalCapacityGib caps it)", async () => {
    await driver.createVolume(pool, "cap", GiB);
    const df = (await ceph.cephJson(["df"])) as { pools: Array<{ name: string; stats: { stored: number; max_avail: number } }> };
    const mine = df.pools.find((p) => p.name === "sds")!.stats;
    const s = await driver.getPoolStats(pool);
    // ceph df moves a little between two reads (lags 1-2 s): compare within 64 MiB.
    expect(Math.abs(s.totalBytes - (mine.stored + mine.max_avail))).toBeLessThan(64 * 1024 ** 2);
    expect(Math.abs(s.freeBytes - mine.max_avail)).toBeLessThan(64 * 1024 ** 2);
    expect(s.totalBytes).toBeLessThan(3 * GiB); // the memstore OSD holds 2 GiB: a thin 1 GiB image takes nothing yet
    const capped = await driver.getPoolStats({ ...pool, totalCapacityGib: 1 });
    expect(capped.totalBytes).toBe(GiB);
    expect(capped.freeBytes).toBeLessThanOrEqual(GiB);
    await driver.deleteVolume(pool, "cap");
  }, 60_000);

  test("a missing Ceph pool is a fault of the configuration, named with what the admin must run, never a gone volume", async () => {
    const none = poolSchema.parse({ name: "ghost", path: "nosuchpool" });
    await expect(driver.getPoolStats(none)).rejects.toThrow('pool ghost: Ceph pool "nosuchpool" does not exist (a Ceph admin makes it: ceph osd pool create nosuchpool; rbd pool init nosuchpool)');
    await expect(driver.getVolumeSizeBytes(none, "v")).rejects.toThrow(/error opening pool/);
  }, 60_000);

  test("an inline key (user with the rbd profile only): written 0600 beside the conf, never in argv, and enough for every call", async () => {
    await ceph.makeUser("sds", readmeCaps(["sds"]));
    const { key } = (await ceph.cephJson(["auth", "get-key", "client.sds"])) as { key: string };
    expect(key).toMatch(/^AQ/);
    const seen: string[][] = [];
    const recording: Runner = (file, args, options) => {
      seen.push([file, ...args]);
      return run(file, args, options);
    };
    const kdir = path.join(dir, "keyed");
    const keyed = new RbdDriver({ backend: "ceph2", rbd: { cluster: "ceph", user: "sds", monHost: ceph.monHost }, key, dir: kdir, runner: recording });
    expect((await keyed.getPoolStats(pool)).freeBytes).toBeGreaterThan(0);
    await keyed.createVolume(pool, "k1", GiB);
    await keyed.extendVolume(pool, "k1", 2 * GiB);
    await keyed.cloneVolume({ pool, volumeId: "k1" }, pool, "k2", 2 * GiB);
    expect((await keyed.getVolumeAllocation(pool, "k2"))?.sizeBytes).toBe(2 * GiB);
    await keyed.deleteVolume(pool, "k2");
    await keyed.deleteVolume(pool, "k1");
    expect(seen.length).toBeGreaterThan(8);
    for (const argv of seen) expect(argv.join(" ")).not.toContain(key);
    const keyring = path.join(kdir, "ceph2.client.sds.keyring");
    expect(fs.statSync(keyring).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(keyring, "utf8")).toContain(key);
    const conf = fs.readFileSync(path.join(kdir, "ceph2.conf"), "utf8");
    expect(conf).not.toContain(key);
    expect(conf).toContain(`keyring = ${keyring}`);
    expect(parseRbdPath(keyed.volumePath(pool, "k1"))).toMatchObject({ user: "sds", conf: path.join(kdir, "ceph2.conf") });
  }, 120_000);
});
