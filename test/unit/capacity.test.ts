/**
 * Capacity truth and bounded pool calls (issue 12).
 * - The findings, pure: near full (< 10 % free), full, ENOSPC under a volume that has unallocated
 *   blocks, a thin pool provisioned past its free space, the root reserve.
 * - On a real 16 MiB tmpfs (root): a thin 64 MiB volume whose file fills the file system is
 *   reported ENOSPC, and no longer once space is freed.
 * - On a real FUSE mount that stops answering (nbdfuse, SIGSTOPped; root): discovery and every
 *   driver call fail within the bound, in one line naming `backends[0].pools[0].path`, instead of
 *   hanging; the in-process calls are bounded too, and so are a storage node's (sds-agent) walks
 *   of its root.
 */
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { capacityFindings, type PoolUsage, volumeCapacity } from "../../provider/src/controller/capacity";
import { Controller } from "../../provider/src/controller/controller";
import { backendsSchema } from "../../provider/src/domain/backend";
import { FileDriver } from "../../provider/src/drivers/file-driver";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import { AgentClient } from "../../provider/src/agent/client";
import { RemoteDriver } from "../../provider/src/agent/remote-node";
import { startAgent } from "../../provider/src/agent/server";
import { stopProcess } from "../helpers/daemons";

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
jest.setTimeout(60_000);

describe("findings (pure)", () => {
  const usage = (o: Partial<PoolUsage>): PoolUsage => ({
    poolId: "b1/p1",
    backendName: "b1",
    poolName: "p1",
    path: "/pools/p1",
    thin: true,
    fsBytes: 100 * GiB,
    freeBytes: 50 * GiB,
    provisionedBytes: 10 * GiB,
    unallocatedBytes: 0,
    ...o,
  });
  const vol = (sizeBytes: number, allocatedBytes: number) => ({ name: "data", id: "v-1", usage: { sizeBytes, allocatedBytes } });

  it("says nothing about a pool with room", () => {
    expect(capacityFindings(usage({}), vol(GiB, 0))).toEqual({ warnings: [] });
  });

  it("warns below 10 % free, naming pool, backend and the figures", () => {
    const r = capacityFindings(usage({ freeBytes: 9 * GiB }), vol(GiB, GiB));
    expect(r.enospc).toBeUndefined();
    expect(r.warnings).toEqual(["pool b1/p1 (backend b1, /pools/p1) is near full: 9 GiB free, 91 GiB used of 100 GiB (91 % used) (warned below 10 % free)"]);
  });

  it("full under a volume with unallocated blocks: ENOSPC, with how much of the volume is exposed", () => {
    const r = capacityFindings(usage({ fsBytes: 64 * MiB, freeBytes: 0, rootFreeBytes: 0, unallocatedBytes: 0 }), vol(GiB, 60 * MiB));
    expect(r.enospc).toMatch(/^ENOSPC: pool b1\/p1 \(backend b1, \/pools\/p1\) is full \(0 KiB free, 64 MiB used of 64 MiB \(100 % used\)\): writes into the 964 MiB of volume data \(v-1, 1 GiB\) that have no blocks yet fail with ENOSPC/);
    expect(r.enospc).not.toMatch(/root reserve/);
    expect(r.warnings[0]).toBe(r.enospc);
  });

  it("full, but the volume owns all its blocks: the pool is full, the volume's writes still land", () => {
    const r = capacityFindings(usage({ freeBytes: 0 }), vol(GiB, GiB));
    expect(r.enospc).toBeUndefined();
    expect(r.warnings).toEqual([expect.stringMatching(/^pool b1\/p1 .* is full: 0 KiB free/)]);
  });

  it("a root reserve is named: a writer running as root may still use it", () => {
    const r = capacityFindings(usage({ freeBytes: 0, rootFreeBytes: 5 * GiB }), vol(GiB, 0));
    expect(r.enospc).toMatch(/may first use the file system's root reserve \(5 GiB\)/);
  });

  it("a thin pool whose volumes may claim more than is free is provisioned past its free space; a thick one is not warned so", () => {
    const u = usage({ freeBytes: 20 * GiB, unallocatedBytes: 30 * GiB, provisionedBytes: 40 * GiB });
    expect(capacityFindings(u).warnings).toEqual([
      "pool b1/p1 (backend b1, /pools/p1) is provisioned past its free space: its thin volumes (40 GiB in all) may still claim 30 GiB, and 20 GiB is free; their writes fail with ENOSPC once it is used",
    ]);
    expect(capacityFindings({ ...u, thin: false }).warnings).toEqual([]);
  });
});

const rootSkip = process.getuid?.() === 0 ? undefined : "needs root to mount a tmpfs and a FUSE file system";
const nbdfuseSkip = (() => {
  try {
    execFileSync("nbdfuse", ["--version"], { stdio: "ignore" });
    execFileSync("nbdkit", ["--version"], { stdio: "ignore" });
    return undefined;
  } catch {
    return "needs nbdfuse and nbdkit (packages nbdfuse, nbdkit)";
  }
})();
const describeRoot = rootSkip ? describe.skip : describe;
const describeFuse = rootSkip || nbdfuseSkip ? describe.skip : describe;
if (rootSkip || nbdfuseSkip) test.skip(`real file systems skipped: ${rootSkip ?? nbdfuseSkip}`, () => undefined);

let store: SqliteStore;
let work: string;
beforeEach(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "sds-capacity-"));
  store = new SqliteStore(path.join(work, "state.db"));
});
afterEach(async () => {
  await store.close();
  fs.rmSync(work, { recursive: true, force: true });
});

/** The scheduler is told 4 GiB (a thin pool on 16 MiB would take only 0.3 GiB of volumes); the findings measure the file system. */
function controller(poolPath: string, driver = new FileDriver()): Controller {
  const backends = backendsSchema.parse([{ name: "b1", driver: "file", pools: [{ name: "p1", path: poolPath, totalCapacityGib: 4 }] }]);
  return new Controller({ store, backends, drivers: { file: driver } });
}

describeRoot("on a real 16 MiB tmpfs", () => {
  let mnt: string;
  beforeAll(() => {
    mnt = fs.mkdtempSync(path.join(os.tmpdir(), "sds-capacity-fs-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt]);
  });
  afterAll(() => {
    execFileSync("umount", [mnt]);
    fs.rmdirSync(mnt);
  });

  it("a thin volume bigger than the pool: fine while there is room, ENOSPC once its file filled the file system, fine again once space is freed", async () => {
    const c = controller(path.join(mnt, "pool"));
    await c.discover();
    await c.prepareWrites();
    const row = await c.createVolume("urn:v", { name: "big", sizeGib: 1, multiAttach: false, description: "", metadata: {} });
    const before = await volumeCapacity(c.catalog, row);
    expect(before.enospc).toBeUndefined();
    expect(before.warnings).toEqual([expect.stringMatching(/is provisioned past its free space: its thin volumes \(1 GiB in all\) may still claim 1 GiB/)]);
    // Fill the file system through the volume's file, as a device's writes would.
    const file = c.catalog.volumePath(row);
    const filler = path.join(mnt, "filler");
    fs.writeFileSync(filler, Buffer.alloc(4 * MiB));
    const fd = fs.openSync(file, "r+");
    let failed: unknown;
    try {
      for (let off = 0; off < 64 * MiB; off += MiB) fs.writeSync(fd, Buffer.alloc(MiB, 1), 0, MiB, off);
    } catch (err) {
      failed = err;
    } finally {
      fs.closeSync(fd);
    }
    expect(failed).toMatchObject({ code: "ENOSPC" });
    const full = await volumeCapacity(c.catalog, row);
    expect(full.enospc).toMatch(/^ENOSPC: pool b1\/p1 \(backend b1, .*\) is full \(\d+ KiB free, .* used of 16 MiB .*\): writes into the .* of volume big \(.*, 1 GiB\) that have no blocks yet fail with ENOSPC/);
    fs.rmSync(filler);
    const after = await volumeCapacity(c.catalog, row);
    expect(after.enospc).toBeUndefined();
    await c.deleteVolume(row.id);
  });
});

describeRoot("on a read-only file system", () => {
  let mnt: string;
  beforeAll(() => {
    mnt = fs.mkdtempSync(path.join(os.tmpdir(), "sds-capacity-ro-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m,ro", "tmpfs", mnt]);
  });
  afterAll(() => {
    execFileSync("umount", [mnt]);
    fs.rmdirSync(mnt);
  });

  it("a pool folder that cannot be made is one line naming backends[0].pools[0].path, as a check of the input", async () => {
    const c = controller(path.join(mnt, "pool"));
    await c.discover();
    await c.prepareWrites();
    const err = await c.createVolume("urn:v", { name: "v", sizeGib: 1, multiAttach: false, description: "", metadata: {} }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "INVALID_INPUT", property: "backends[0].pools[0].path" });
    expect((err as Error).message).toBe(`backends[0].pools[0].path: pool p1 (${mnt}/pool): EROFS: read-only file system, mkdir '${mnt}/pool'`);
    expect(await c.listVolumes()).toEqual([]);
  });
});

describeFuse("on a FUSE mount that stops answering (nbdfuse, SIGSTOPped)", () => {
  let mnt: string;
  let pid: number;
  beforeAll(async () => {
    mnt = fs.mkdtempSync(path.join(os.tmpdir(), "sds-capacity-fuse-"));
    const pidFile = `${mnt}.pid`;
    const child = spawn("nbdfuse", ["-P", pidFile, mnt, "[", "nbdkit", "memory", "1M", "]"], { stdio: "ignore", detached: true });
    child.unref();
    const mounted = () => fs.readFileSync("/proc/self/mountinfo", "utf8").includes(` ${mnt} `);
    for (let i = 0; i < 100 && !(fs.existsSync(pidFile) && mounted()); i++) await new Promise((r) => setTimeout(r, 100));
    expect(mounted()).toBe(true);
    pid = Number(fs.readFileSync(pidFile, "utf8"));
    fs.rmSync(pidFile);
  });
  afterAll(async () => {
    process.kill(pid, "SIGCONT");
    execFileSync("umount", [mnt]);
    for (let i = 0; i < 50; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    // Unmounted: what is left is ours. A call the bound gave up on may still finish after the mount
    // came back, or after it was gone (the storage node's walk made `pool` here): see confine.ts.
    fs.rmSync(mnt, { recursive: true, force: true });
  });

  it("discovery, create and refresh fail within the bound in one line naming backends[0].pools[0].path", async () => {
    const driver = new FileDriver(undefined, { fsTimeoutMs: 1500 });
    const c = controller(path.join(mnt, "pool"), driver);
    await stopProcess(pid);
    try {
      let t = Date.now();
      const err = await c.discover().catch((e: unknown) => e);
      expect(Date.now() - t).toBeLessThan(5000);
      expect(err).toMatchObject({ code: "TIMEOUT", retryable: true });
      expect((err as Error).message).toBe(`backends[0].pools[0].path: pool p1 (${mnt}/pool): statfs of ${mnt}/pool did not answer within 1500 ms (a hung mount?); check the mount, then retry`);
      t = Date.now();
      const [b] = c.catalog.backendConfigs();
      const d = c.catalog.driverFor(b);
      await expect(d.createVolume(b.pools[0], "v1", GiB)).rejects.toThrow(/^backends\[0\]\.pools\[0\]\.path: pool p1 .* did not answer within 1500 ms/);
      await expect(d.getVolumeSizeBytes(b.pools[0], "v1")).rejects.toThrow(/^backends\[0\]\.pools\[0\]\.path: .* did not answer/);
      expect(Date.now() - t).toBeLessThan(10_000);
    } finally {
      process.kill(pid, "SIGCONT");
    }
  });

  it("an in-process call that hangs after the mount answered is bounded too", async () => {
    const driver = new FileDriver(undefined, { fsTimeoutMs: 1500 });
    const pool = backendsSchema.parse([{ name: "b1", driver: "file", pools: [{ name: "p1", path: mnt }] }])[0].pools[0];
    expect(await driver.getVolumeSizeBytes(pool, "v1")).toBeUndefined(); // the mount answered: probed
    await stopProcess(pid);
    try {
      const t = Date.now();
      // Within the probe's freshness the lstat runs in-process, and hangs there: the caller is freed.
      await expect(driver.getVolumeSizeBytes(pool, "v2")).rejects.toMatchObject({ code: "TIMEOUT", retryable: true, message: expect.stringMatching(/^reading a volume file in .* did not answer within 1500 ms/) });
      expect(Date.now() - t).toBeLessThan(5000);
    } finally {
      process.kill(pid, "SIGCONT");
    }
  });

  it("a storage node's pool on that mount: the agent answers within its bound, and the provider names backends[0].pools[0].path", async () => {
    const root = fs.realpathSync(os.tmpdir());
    const agent = await startAgent({
      host: "127.0.0.1",
      port: 0,
      token: "capacity-token",
      version: "test",
      log: () => undefined,
      connectorFor: () => {
        throw new Error("no connectors in this test");
      },
      storage: { root, driverFor: () => new FileDriver(), targets: { iscsi: () => ({}) as never, nbd: () => ({}) as never } },
    });
    const client = new AgentClient({ url: agent.url, token: "capacity-token" });
    // Everything synchronous on the mount happens before it stops (a sync call there would block this test's own thread).
    const backends = backendsSchema.parse([{ name: "far", driver: "file", node: "n1", pools: [{ name: "p1", path: path.join(fs.realpathSync(mnt), "pool") }] }]);
    await stopProcess(pid);
    try {
      const c = new Controller({ store, backends, nodeDriver: () => new RemoteDriver(client, "file") });
      const t = Date.now();
      const err = await c.discover().catch((e: unknown) => e);
      expect(Date.now() - t).toBeLessThan(15_000);
      expect(err).toMatchObject({ code: "TIMEOUT", retryable: true });
      expect((err as Error).message).toMatch(/^backends\[0\]\.pools\[0\]\.path: pool p1 \(.*\/pool\): sds-agent at http:\/\/127\.0\.0\.1:\d+: resolving the folder .*\/pool did not answer within 10000 ms \(a hung mount\?\); check the mount, then retry$/);
    } finally {
      process.kill(pid, "SIGCONT");
      await client.close();
      await agent.close();
    }
  });
});
