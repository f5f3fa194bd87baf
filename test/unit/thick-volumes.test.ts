/**
 * Thick volumes are allocated (issue 12): on a pool whose extras say
 * `dataStorage.provisioningPolicy: Thick`, the file driver makes and grows volumes with
 * fallocate(1), refuses one the file system cannot hold in one line (the pool and the sizes) and
 * leaves no file behind. Thin pools stay sparse.
 * First the exact argv with a recording runner (anyone); then the real thing on a 64 MiB tmpfs
 * (root only: it mounts one).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { poolSchema, type PoolConfig } from "../../provider/src/domain/backend";
import { FileDriver, isThickPool } from "../../provider/src/drivers/file-driver";
import { CommandFailedError, UserError } from "../../provider/src/errors";
import type { Runner } from "../../provider/src/exec/run";
import { AgentClient } from "../../provider/src/agent/client";
import { RemoteDriver } from "../../provider/src/agent/remote-node";
import { startAgent } from "../../provider/src/agent/server";

const MiB = 1024 ** 2;
const thickPool = (dir: string, name = "thick1"): PoolConfig => poolSchema.parse({ name, path: dir, extras: { dataStorage: { provisioningPolicy: "Thick" } } });
const thinPool = (dir: string, name = "thin1"): PoolConfig => poolSchema.parse({ name, path: dir });
/** Bytes really allocated to a file (st_blocks is in 512-byte units). */
const allocated = (file: string) => fs.statSync(file).blocks * 512;

test("isThickPool reads extras dataStorage.provisioningPolicy as the scheduler does", () => {
  expect(isThickPool(thickPool("/p"))).toBe(true);
  expect(isThickPool(poolSchema.parse({ name: "p", path: "/p", extras: { dataStorage: { provisioningPolicy: "thick" } } }))).toBe(true);
  expect(isThickPool(poolSchema.parse({ name: "p", path: "/p", extras: { dataStorage: { provisioningPolicy: "Thin" } } }))).toBe(false);
  expect(isThickPool(thinPool("/p"))).toBe(false);
  expect(isThickPool({ extras: undefined as unknown as PoolConfig["extras"] })).toBe(false); // a pool off the wire without extras
});

describe("argv (a recording runner)", () => {
  let dir: string;
  let calls: Array<{ argv: string[]; env?: Record<string, string> }>;
  let fail: Error | undefined;
  /** Records the call and, like fallocate, grows the file to the length asked (unless told to fail). */
  const runner: Runner = async (file, args, options) => {
    calls.push({ argv: [file, ...args], env: options?.env });
    if (fail) throw fail;
    if (file === "fallocate") fs.truncateSync(args[args.length - 1], Number(args[1]));
    return { stdout: "", stderr: "", exitCode: 0 };
  };
  const enospc = (file: string, size: number) =>
    new CommandFailedError({ argv: ["fallocate", "-l", String(size), "--", file], exitCode: 1, stderr: "fallocate: fallocate failed: No space left on device" });
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-thick-argv-"));
    calls = [];
    fail = undefined;
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("create and extend on a thick pool run fallocate -l BYTES -- FILE (LC_ALL=C); thin runs nothing", async () => {
    const d = new FileDriver(runner);
    const pool = thickPool(dir);
    const file = d.volumePath(pool, "v1");
    await d.createVolume(pool, "v1", 32 * MiB);
    await d.extendVolume(pool, "v1", 40 * MiB);
    await d.extendVolume(pool, "v1", 40 * MiB); // same size: nothing to do
    expect(calls).toEqual([
      { argv: ["fallocate", "-l", String(32 * MiB), "--", file], env: { LC_ALL: "C" } },
      { argv: ["fallocate", "-l", String(40 * MiB), "--", file], env: { LC_ALL: "C" } },
    ]);
    expect(fs.statSync(file).size).toBe(40 * MiB);
    calls = [];
    const thin = thinPool(path.join(dir, "thin"));
    await d.createVolume(thin, "v2", 32 * MiB);
    await d.extendVolume(thin, "v2", 40 * MiB);
    expect(calls).toEqual([]);
    expect(fs.statSync(d.volumePath(thin, "v2")).size).toBe(40 * MiB);
  });

  it("ENOSPC on create: a UserError naming the pool and the sizes, and no file left", async () => {
    const d = new FileDriver(runner);
    const pool = thickPool(dir, "fast");
    const file = d.volumePath(pool, "v1");
    fail = enospc(file, 64 * MiB);
    const err = await d.createVolume(pool, "v1", 64 * MiB).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err).toMatchObject({ code: "NO_VALID_POOL", property: "sizeGib" });
    expect((err as Error).message).toMatch(new RegExp(`^pool fast \\(${dir}\\) cannot hold thick volume v1 of 64 MiB \\(67108864 bytes\\): no space left on its file system: .* \\(\\d+ bytes\\) free$`));
    expect((err as Error).message).not.toContain("\n");
    expect(fs.existsSync(file)).toBe(false);
  });

  it("ENOSPC on extend: the volume keeps its size", async () => {
    const d = new FileDriver(runner);
    const pool = thickPool(dir, "fast");
    await d.createVolume(pool, "v1", 32 * MiB);
    const file = d.volumePath(pool, "v1");
    fail = enospc(file, 1024 * MiB);
    const err = await d.extendVolume(pool, "v1", 1024 * MiB).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "NO_VALID_POOL" });
    expect((err as Error).message).toMatch(/^pool fast \(.*\) cannot grow thick volume v1 from 32 MiB to 1 GiB \(1073741824 bytes\): no space left on its file system/);
    expect(fs.statSync(file).size).toBe(32 * MiB);
  });

  it("another fallocate failure is passed on as it is (argv, exit code, stderr), and no file is left", async () => {
    const d = new FileDriver(runner);
    const pool = thickPool(dir);
    fail = new CommandFailedError({ argv: ["fallocate"], exitCode: 1, stderr: "fallocate: fallocate failed: Operation not supported" });
    await expect(d.createVolume(pool, "v1", MiB)).rejects.toBe(fail);
    expect(fs.existsSync(d.volumePath(pool, "v1"))).toBe(false);
  });
});

const rootSkip = process.getuid?.() === 0 ? undefined : "needs root to mount a small tmpfs as the pool";
const describeRoot = rootSkip ? describe.skip : describe;
if (rootSkip) test.skip(`real thick volumes skipped: ${rootSkip}`, () => undefined);

describeRoot("on a 64 MiB tmpfs (real fallocate)", () => {
  let mnt: string;
  beforeAll(() => {
    mnt = fs.mkdtempSync(path.join(os.tmpdir(), "sds-thick-fs-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt]);
  });
  afterAll(() => {
    execFileSync("umount", [mnt]);
    fs.rmdirSync(mnt);
  });
  afterEach(() => {
    for (const f of fs.readdirSync(mnt)) fs.rmSync(path.join(mnt, f), { recursive: true, force: true });
  });

  it("a thick 32 MiB volume really uses 32 MiB; a thin one uses nothing", async () => {
    const d = new FileDriver();
    const thick = thickPool(path.join(mnt, "thick"));
    const thin = thinPool(path.join(mnt, "thin"));
    await d.createVolume(thick, "v1", 32 * MiB);
    await d.createVolume(thin, "v2", 32 * MiB);
    const thickFile = d.volumePath(thick, "v1");
    expect(fs.statSync(thickFile).size).toBe(32 * MiB);
    expect(allocated(thickFile)).toBeGreaterThanOrEqual(32 * MiB);
    expect(fs.statSync(d.volumePath(thin, "v2")).size).toBe(32 * MiB);
    expect(allocated(d.volumePath(thin, "v2"))).toBe(0);
    // Idempotent still: the same volume asked again is success, nothing more allocated.
    const before = allocated(thickFile);
    await d.createVolume(thick, "v1", 32 * MiB);
    expect(allocated(thickFile)).toBe(before);
    // Thin grows sparse.
    await d.extendVolume(thin, "v2", 48 * MiB);
    expect(allocated(d.volumePath(thin, "v2"))).toBe(0);
  });

  it("a thick volume larger than the free space is refused and leaves no file", async () => {
    const d = new FileDriver();
    const pool = thickPool(path.join(mnt, "thick"), "small");
    await d.createVolume(pool, "v1", 32 * MiB);
    const err = await d.createVolume(pool, "v2", 48 * MiB).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/^pool small \(.*\/thick\) cannot hold thick volume v2 of 48 MiB \(50331648 bytes\): no space left on its file system: [\d.]+ MiB \(\d+ bytes\) free$/);
    expect(fs.existsSync(d.volumePath(pool, "v2"))).toBe(false);
    expect(fs.readdirSync(pool.path)).toEqual(["volume-v1.img"]);
    // Nothing of the refused volume stays allocated: the space is there for the next one.
    await d.createVolume(pool, "v3", 16 * MiB);
    expect(allocated(d.volumePath(pool, "v3"))).toBeGreaterThanOrEqual(16 * MiB);
  });

  it("extending a thick volume allocates the growth, and growth past the free space is refused with the size unchanged", async () => {
    const d = new FileDriver();
    const pool = thickPool(path.join(mnt, "thick"), "small");
    await d.createVolume(pool, "v1", 16 * MiB);
    const file = d.volumePath(pool, "v1");
    await d.extendVolume(pool, "v1", 40 * MiB);
    expect(fs.statSync(file).size).toBe(40 * MiB);
    expect(allocated(file)).toBeGreaterThanOrEqual(40 * MiB);
    const err = await d.extendVolume(pool, "v1", 96 * MiB).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "NO_VALID_POOL" });
    expect((err as Error).message).toMatch(/^pool small \(.*\) cannot grow thick volume v1 from 40 MiB to 96 MiB \(100663296 bytes\): no space left on its file system/);
    expect(fs.statSync(file).size).toBe(40 * MiB);
  });

  it("a clone onto a thick pool owns all its blocks", async () => {
    const d = new FileDriver();
    const thin = thinPool(path.join(mnt, "thin"));
    const thick = thickPool(path.join(mnt, "thick"));
    await d.createVolume(thin, "src", 8 * MiB);
    await d.cloneVolume({ pool: thin, volumeId: "src" }, thick, "c1", 16 * MiB);
    const file = d.volumePath(thick, "c1");
    expect(fs.statSync(file).size).toBe(16 * MiB);
    expect(allocated(file)).toBeGreaterThanOrEqual(16 * MiB);
  });

  it("a storage node's driver (through a real sds-agent) gets the pool's extras: thick there too", async () => {
    const agent = await startAgent({
      host: "127.0.0.1",
      port: 0,
      token: "thick-token",
      version: "test",
      log: () => undefined,
      connectorFor: () => {
        throw new Error("no connectors in this test");
      },
      storage: {
        root: mnt,
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
    const client = new AgentClient({ url: agent.url, token: "thick-token" });
    try {
      const d = new RemoteDriver(client, "file");
      const pool = thickPool(path.join(mnt, "remote"), "far");
      await d.createVolume(pool, "v1", 32 * MiB);
      expect(allocated(d.volumePath(pool, "v1"))).toBeGreaterThanOrEqual(32 * MiB);
      const err = await d.createVolume(pool, "v2", 48 * MiB).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "NO_VALID_POOL" });
      expect((err as Error).message).toMatch(/pool far \(.*\) cannot hold thick volume v2 of 48 MiB/);
      expect(fs.existsSync(d.volumePath(pool, "v2"))).toBe(false);
    } finally {
      await client.close();
      await agent.close();
    }
  });
});
