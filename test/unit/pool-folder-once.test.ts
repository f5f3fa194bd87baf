/**
 * Creates on a pool (issue 14): the engine creates many volumes at once, and each used to make
 * the pool's folder again and start its own `stat -f` child (a fork of the provider). Now the
 * probe in flight is shared and the folder is made once per driver; a folder removed behind the
 * driver's back is made again by the next create, which still succeeds.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { poolSchema } from "../../provider/src/domain/backend";
import * as userPaths from "../../provider/src/domain/user-paths";
import { FileDriver } from "../../provider/src/drivers/file-driver";
import { run, type Runner } from "../../provider/src/exec/run";

const GiB = 1024 ** 3;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-pool-once-"));
});
afterEach(() => {
  jest.restoreAllMocks();
  fs.rmSync(dir, { recursive: true, force: true });
});

test("20 concurrent creates on a new pool: one statfs child, the folder made once, every volume made", async () => {
  const probes: string[][] = [];
  const probe: Runner = (file, args, options) => {
    probes.push([file, ...args]);
    return run(file, args, options);
  };
  const makeFolder = jest.spyOn(userPaths, "makeFolder");
  const driver = new FileDriver(run, { probe });
  const pool = poolSchema.parse({ name: "p1", path: path.join(dir, "a", "pool") });
  const ids = Array.from({ length: 20 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`);
  await Promise.all(ids.map((id) => driver.createVolume(pool, id, GiB)));
  // One probe: it walks up to the nearest folder that exists (a statfs each), once.
  expect(probes.filter((argv) => argv.at(-1) === pool.path)).toHaveLength(1);
  expect(makeFolder.mock.calls.filter(([p]) => p === pool.path)).toHaveLength(1);
  expect(fs.readdirSync(pool.path).sort()).toEqual(ids.map((id) => `volume-${id}.img`).sort());
  expect(fs.statSync(path.join(pool.path, `volume-${ids[0]}.img`)).size).toBe(GiB);
});

test("a pool folder removed after the first create is made again by the next one", async () => {
  const driver = new FileDriver();
  const pool = poolSchema.parse({ name: "p1", path: path.join(dir, "pool") });
  await driver.createVolume(pool, "00000000-0000-4000-8000-000000000001", GiB);
  fs.rmSync(pool.path, { recursive: true });
  await driver.createVolume(pool, "00000000-0000-4000-8000-000000000002", GiB);
  expect(fs.readdirSync(pool.path)).toEqual(["volume-00000000-0000-4000-8000-000000000002.img"]);
  expect(fs.statSync(pool.path).mode & 0o777).toBe(0o755);
});
