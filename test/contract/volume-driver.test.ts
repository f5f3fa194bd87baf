/**
 * The VolumeDriver contract, run on every implementation: FileDriver, and RemoteDriver (the file
 * driver of a storage node, reached through a real sds-agent over HTTP).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { poolSchema } from "../../provider/src/domain/backend";
import { FileDriver } from "../../provider/src/drivers/file-driver";
import type { VolumeDriver } from "../../provider/src/drivers/volume-driver";
import { AgentClient } from "../../provider/src/agent/client";
import { RemoteDriver } from "../../provider/src/agent/remote-node";
import { startAgent, type RunningAgent } from "../../provider/src/agent/server";

const GiB = 1024 ** 3;
let agent: RunningAgent | undefined;
let client: AgentClient | undefined;
async function remoteDriver(): Promise<VolumeDriver> {
  agent ??= await startAgent({
    host: "127.0.0.1",
    port: 0,
    token: "contract-token",
    version: "test",
    log: () => undefined,
    connectorFor: () => {
      throw new Error("no connectors in this test");
    },
    storage: {
      root: fs.realpathSync(os.tmpdir()),
      driverFor: () => new FileDriver(),
      targets: {
        iscsi: () => {
          throw new Error("no targets in this test");
        },
        nbd: () => {
          throw new Error("no targets in this test");
        },
      },
    },
  });
  client ??= new AgentClient({ url: agent.url, token: "contract-token" });
  return new RemoteDriver(client, "file");
}
afterAll(async () => {
  await client?.close();
  await agent?.close();
});

const implementations: Array<[string, () => VolumeDriver | Promise<VolumeDriver>]> = [
  ["FileDriver", () => new FileDriver()],
  ["RemoteDriver (sds-agent storage node)", remoteDriver],
];

describe.each(implementations)("%s", (_name, make) => {
  let dir: string;
  let driver: VolumeDriver;
  let pool: ReturnType<typeof poolSchema.parse>;
  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), "sds-driver-"));
    driver = await make();
    pool = poolSchema.parse({ name: "p", path: path.join(dir, "pool"), totalCapacityGib: 50 });
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("pool stats: total from totalCapacityGib, free from the file system", async () => {
    const s = await driver.getPoolStats(pool);
    expect(s.totalBytes).toBe(50 * GiB);
    expect(s.freeBytes).toBeGreaterThan(0);
  });

  test("create is idempotent; size is reported; delete of a gone volume succeeds", async () => {
    await driver.createVolume(pool, "v1", 2 * GiB);
    await driver.createVolume(pool, "v1", 2 * GiB);
    expect(await driver.getVolumeSizeBytes(pool, "v1")).toBe(2 * GiB);
    await expect(driver.createVolume(pool, "v1", 3 * GiB)).rejects.toThrow(/already exists/);
    await driver.deleteVolume(pool, "v1");
    await driver.deleteVolume(pool, "v1");
    expect(await driver.getVolumeSizeBytes(pool, "v1")).toBeUndefined();
  });

  test("extend grows and refuses to shrink", async () => {
    await driver.createVolume(pool, "v2", 1 * GiB);
    await driver.extendVolume(pool, "v2", 3 * GiB);
    expect(await driver.getVolumeSizeBytes(pool, "v2")).toBe(3 * GiB);
    await expect(driver.extendVolume(pool, "v2", 1 * GiB)).rejects.toThrow(/cannot shrink/);
  });

  test("clone copies the data, keeps it sparse, and grows to the asked size", async () => {
    await driver.createVolume(pool, "src", 1 * GiB);
    const fd = fs.openSync(driver.volumePath(pool, "src"), "r+");
    fs.writeSync(fd, Buffer.from("hello sds"), 0, 9, 512 * 1024 * 1024);
    fs.closeSync(fd);
    await driver.cloneVolume({ pool, volumeId: "src" }, pool, "dst", 2 * GiB);
    expect(await driver.getVolumeSizeBytes(pool, "dst")).toBe(2 * GiB);
    const buf = Buffer.alloc(9);
    const d = fs.openSync(driver.volumePath(pool, "dst"), "r");
    fs.readSync(d, buf, 0, 9, 512 * 1024 * 1024);
    fs.closeSync(d);
    expect(buf.toString()).toBe("hello sds");
    // Sparse: far fewer blocks allocated than the apparent size.
    expect(fs.statSync(driver.volumePath(pool, "dst")).blocks * 512).toBeLessThan(64 * 1024 * 1024);
  });

  test("pool stats: the file system's own size, where told, holds the free bytes", async () => {
    const s = await driver.getPoolStats(pool);
    if (s.fsBytes !== undefined) expect(s.fsBytes).toBeGreaterThanOrEqual(s.freeBytes);
  });

  test("allocation, where the driver tells it: a new thin volume owns no data blocks; written bytes are allocated; gone is undefined", async () => {
    // Optional in the contract: a storage node's driver does not tell (capacity reports skip the volume-level findings).
    if (!driver.getVolumeAllocation) return;
    await driver.createVolume(pool, "a1", GiB);
    const fresh = await driver.getVolumeAllocation(pool, "a1");
    expect(fresh).toEqual({ sizeBytes: GiB, allocatedBytes: expect.any(Number) });
    expect(fresh!.allocatedBytes).toBeLessThan(1024 * 1024);
    const fd = fs.openSync(driver.volumePath(pool, "a1"), "r+");
    fs.writeSync(fd, Buffer.alloc(4 * 1024 * 1024, 7), 0, 4 * 1024 * 1024, 0);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    expect((await driver.getVolumeAllocation(pool, "a1"))!.allocatedBytes).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    await driver.deleteVolume(pool, "a1");
    expect(await driver.getVolumeAllocation(pool, "a1")).toBeUndefined();
  });

  test("a failed clone leaves nothing behind", async () => {
    await expect(driver.cloneVolume({ pool, volumeId: "missing" }, pool, "dst2", GiB)).rejects.toThrow();
    expect(fs.readdirSync(pool.path)).toEqual([]);
  });
});
