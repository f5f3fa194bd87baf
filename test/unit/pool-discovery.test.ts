/**
 * Pool discovery at provider start (issue 14): the pools' file systems are measured in a few
 * `stat -f` children for all pools, not one child per pool one after another; a pool whose
 * folder does not exist yet is measured at the nearest folder above, as getPoolStats does; a
 * mount that stops answering still fails its pool (and only it) within the bound, named.
 * The statfs runs for real (the probe runs `stat`); the probe is wrapped to count its children.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { backendsSchema } from "../../provider/src/domain/backend";
import { Controller } from "../../provider/src/controller/controller";
import { FsTimeoutError } from "../../provider/src/drivers/confine";
import { FileDriver } from "../../provider/src/drivers/file-driver";
import { CommandTimeoutError } from "../../provider/src/errors";
import { run, type Runner } from "../../provider/src/exec/run";
import { SqliteStore } from "../../provider/src/store/sqlite-store";

let dir: string;
let store: SqliteStore;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-discovery-"));
  store = new SqliteStore(path.join(dir, "state.db"));
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A probe that runs `stat` for real and records each child's argv; `hung` paths make their child time out, as a dead mount would. */
function countingProbe(hung: string[] = []): { probe: Runner; calls: string[][] } {
  const calls: string[][] = [];
  const probe: Runner = async (file, args, options) => {
    calls.push([file, ...args]);
    const h = args.findIndex((a) => hung.includes(a));
    if (h >= 0) {
      // As a dead mount does: stat answers the paths before it, then never returns.
      const before = args[h - 1] === "--" ? undefined : await run(file, args.slice(0, h), { ...options, okExitCodes: [1] });
      throw new CommandTimeoutError([file, ...args], options?.timeoutMs ?? 0, { stdout: before?.stdout, stderr: before?.stderr });
    }
    return run(file, args, options);
  };
  return { probe, calls };
}

function backends(count: number, made: (n: number) => boolean) {
  const out = [];
  for (let b = 0; b * 50 < count; b++) {
    const pools = [];
    for (let i = 0; i < 50 && b * 50 + i < count; i++) {
      const p = path.join(dir, `b${b}`, `p${i}`);
      if (made(b * 50 + i)) fs.mkdirSync(p, { recursive: true });
      pools.push({ name: `p${i}`, path: p, ...(i % 2 ? { totalCapacityGib: 7 } : {}) });
    }
    out.push({ name: `b${b}`, driver: "file", pools });
  }
  return backendsSchema.parse(out);
}

test("300 pools are measured by a few stat children, not one per pool; each pool's figures are what getPoolStats says alone, missing folders measured above", async () => {
  const config = backends(300, (n) => n % 3 !== 0);
  const { probe, calls } = countingProbe();
  const driver = new FileDriver(undefined, { probe });
  const c = new Controller({ store, backends: config, drivers: { file: driver } });
  await c.discover();
  // One round for all folders (4 children at most), then one more for the parents of those not made yet.
  expect(calls.length).toBeLessThanOrEqual(8);
  expect(calls.every((argv) => argv.slice(0, 4).join(" ") === "stdbuf -oL stat -f")).toBe(true);
  const alone = new FileDriver();
  const pools = await c.pools();
  for (const b of config) {
    for (const p of b.pools.filter((_, j) => j % 10 < 2)) {
      const s = await alone.getPoolStats(p);
      const got = pools.find((x) => x.id === `${b.name}/${p.name}`)!;
      expect(got.totalGib).toBe(s.totalBytes / 1024 ** 3);
      // Free space moves as the (shared) test machine writes; the same file system within 1 GiB.
      expect(Math.abs(got.freeGib - s.freeBytes / 1024 ** 3)).toBeLessThan(1);
    }
  }
}, 60_000);

test("a pool on a mount that stops answering is measured within one bound and named; the others of its batch answer (those after it in a child of their own); it is left out of placement, with a warning", async () => {
  const config = backends(120, () => true);
  const hungPath = config[1].pools[3].path;
  const { probe, calls } = countingProbe([hungPath]);
  const driver = new FileDriver(undefined, { probe, fsTimeoutMs: 8000 });
  const answers = await driver.getPoolsStats(config.flatMap((b) => b.pools));
  const flat = config.flatMap((b) => b.pools);
  answers.forEach((a, i) => {
    if (flat[i].path === hungPath) expect(a).toBeInstanceOf(FsTimeoutError);
    else expect(a).toMatchObject({ freeBytes: expect.any(Number) });
  });
  // Only its batch asked it: what stat answered before it stopped tells which path hung (asking it alone again made a hung pool cost two bounds).
  expect(calls.filter((argv) => argv.includes(hungPath))).toHaveLength(1);
  // The others answered: discovery goes on without it (a failover away from a site that went
  // down must not need that site); the warning names the pool's property and why.
  const warnings: string[] = [];
  const c = new Controller({ store, backends: config, drivers: { file: driver }, warn: (m: string) => warnings.push(m) });
  await c.discover();
  expect(warnings).toEqual([expect.stringMatching(/^backends\[1\]\.pools\[3\]\.path: pool p3 .*check the mount, then retry; pool b1\/p3 is left out of placement until it answers$/)]);
  const pools = await c.pools();
  expect(pools.filter((x) => x.unavailable !== undefined).map((x) => x.id)).toEqual(["b1/p3"]);
  expect(pools.find((x) => x.id === "b1/p2")).toMatchObject({ totalGib: expect.any(Number) });
  // Placement skips it, and says why.
  const r = await c.explain({ sizeGib: 1 });
  expect(r.ok && r.pool.id).not.toBe("b1/p3");
  expect(r.rejections.find((x) => x.poolId === "b1/p3")).toMatchObject({ filter: "answered", reason: expect.stringMatching(/^did not answer at discovery: backends\[1\]\.pools\[3\]\.path: pool p3 /) });
}, 60_000);

test("every pool on a mount that stops answering: discovery fails within one bound, naming the first", async () => {
  const config = backends(2, () => true);
  const { probe } = countingProbe(config[0].pools.map((p) => p.path));
  const driver = new FileDriver(undefined, { probe, fsTimeoutMs: 3000 });
  const c = new Controller({ store, backends: config, drivers: { file: driver } });
  await expect(c.discover()).rejects.toMatchObject({ code: "TIMEOUT", message: expect.stringMatching(/^backends\[0\]\.pools\[0\]\.path: pool p0 .*check the mount, then retry/) });
}, 60_000);
