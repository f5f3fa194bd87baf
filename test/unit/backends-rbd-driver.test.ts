/**
 * The rbd driver's commands and its answers to Ceph's errors, with a recording runner (no
 * cluster: test/contract/rbd-driver.test.ts runs it on a real one): every argv is `-c <conf> --id
 * <user>` and holds no key; an existing image of the same size is success; a missing image is
 * undefined but a missing pool is an error; an image still open is one error naming its watchers.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { poolSchema } from "../../provider/src/domain/backend";
import { RbdDriver } from "../../provider/src/drivers/rbd-driver";
import { CommandFailedError } from "../../provider/src/errors";
import type { RunOptions, RunResult } from "../../provider/src/exec/run";

const GiB = 1024 ** 3;
const KEY = "AQBzZHMtdW5pdC10ZXN0LWtleS0wMDAwMDAwMDA9PQ==";
let dir: string;
beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-rbd-unit-"))));
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

type Answer = Partial<RunResult> | { fail: string; exitCode?: number };
function recorder(answer: (argv: string[]) => Answer) {
  const seen: string[][] = [];
  const runner = async (file: string, args: readonly string[], _o?: RunOptions): Promise<RunResult> => {
    const argv = [file, ...args];
    seen.push(argv);
    const a = answer(argv);
    if ("fail" in a) throw new CommandFailedError({ argv, exitCode: a.exitCode ?? 1, stderr: a.fail });
    return { stdout: a.stdout ?? "", stderr: a.stderr ?? "", exitCode: 0 };
  };
  return { seen, runner };
}
const pool = poolSchema.parse({ name: "fast", path: "sds" });
const make = (runner: ReturnType<typeof recorder>["runner"]) => new RbdDriver({ backend: "ceph", rbd: { cluster: "ceph", user: "sds", monHost: "10.0.0.1:6789" }, key: KEY, dir: path.join(dir, "rbd"), runner });

test("argv: rbd -c <conf> --id <user>, pool and image as options, sizes in bytes; never the key", async () => {
  const r = recorder((argv) => (argv.includes("info") ? { stdout: JSON.stringify({ size: GiB }) } : {}));
  const d = make(r.runner);
  await d.createVolume(pool, "v:1", GiB);
  await d.extendVolume(pool, "v:1", 2 * GiB);
  const conf = path.join(dir, "rbd", "ceph.conf");
  expect(r.seen[0]).toEqual(["rbd", "-c", conf, "--id", "sds", "create", "--pool", "sds", "--image", "v:1", "--size", `${GiB}B`]);
  expect(r.seen.at(-1)).toEqual(["rbd", "-c", conf, "--id", "sds", "resize", "--pool", "sds", "--image", "v:1", "--size", `${2 * GiB}B`, "--no-progress"]);
  for (const argv of r.seen) expect(argv.join(" ")).not.toContain(KEY);
  expect(fs.readFileSync(conf, "utf8")).toContain(`keyring = ${path.join(dir, "rbd", "ceph.client.sds.keyring")}`);
  expect(fs.readFileSync(conf, "utf8")).toContain("mon host = 10.0.0.1:6789");
  expect(fs.statSync(path.join(dir, "rbd", "ceph.client.sds.keyring")).mode & 0o777).toBe(0o600);
  expect(d.volumePath(pool, "v:1")).toBe(`rbd:sds/v\\:1:id=sds:conf=${conf}`);
});

test("create of an existing image: same size is success, another size a conflict", async () => {
  const r = recorder((argv) => (argv.includes("create") ? { fail: "rbd: create error: (17) File exists" } : { stdout: JSON.stringify({ size: GiB }) }));
  const d = make(r.runner);
  await d.createVolume(pool, "v1", GiB);
  await expect(d.createVolume(pool, "v1", 2 * GiB)).rejects.toThrow(`volume v1 already exists in Ceph pool sds with ${GiB} bytes, not ${2 * GiB}`);
});

test("a missing image is undefined (and its delete success); a missing pool is an error", async () => {
  const gone = make(recorder(() => ({ fail: "rbd: error opening image v1: (2) No such file or directory", exitCode: 2 })).runner);
  expect(await gone.getVolumeSizeBytes(pool, "v1")).toBeUndefined();
  await gone.deleteVolume(pool, "v1");
  const noPool = make(recorder(() => ({ fail: "rbd: error opening pool 'sds': (2) No such file or directory", exitCode: 2 })).runner);
  await expect(noPool.getVolumeSizeBytes(pool, "v1")).rejects.toThrow(/error opening pool/);
});

test("an image still open: one error naming the watchers and what to do; nothing else tried", async () => {
  const r = recorder((argv) => {
    if (argv.includes("info")) return { stdout: JSON.stringify({ size: GiB }) };
    if (argv.includes("rm")) return { fail: "rbd: error: image still has watchers\nThis means the image is still open or the client using it crashed.", exitCode: 16 };
    if (argv.includes("status")) return { stdout: JSON.stringify({ watchers: [{ address: "127.0.0.1:0/42", client: 4150, cookie: 1 }] }) };
    return {};
  });
  await expect(make(r.runner).deleteVolume(pool, "v1")).rejects.toThrow(
    "volume v1: image sds/v1 is still open (watchers: client.4150 at 127.0.0.1:0/42): an export still serves it (a tgt LUN or a qemu-nbd server of this volume; see `sds exports` or tgtadm --op show), or a client that crashed holds it for up to 30 s; detach every attachment of the volume, then retry",
  );
  expect(r.seen.map((a) => a[5])).toEqual(["info", "snap", "rm", "status"]);
});

test("capacity: the Ceph pool's stored + max_avail, capped by totalCapacityGib; a missing Ceph pool says what to create", async () => {
  const df = { pools: [{ name: "sds", stats: { stored: 3 * GiB, max_avail: 5 * GiB } }] };
  const d = make(recorder(() => ({ stdout: JSON.stringify(df) })).runner);
  expect(await d.getPoolStats(pool)).toEqual({ totalBytes: 8 * GiB, freeBytes: 5 * GiB, fsBytes: 8 * GiB, fsFreeBytes: 5 * GiB });
  expect(await d.getPoolStats({ ...pool, totalCapacityGib: 4 })).toMatchObject({ totalBytes: 4 * GiB, freeBytes: 4 * GiB });
  await expect(d.getPoolStats({ ...pool, path: "other" })).rejects.toThrow('Ceph pool "other" does not exist (a Ceph admin makes it: ceph osd pool create other; rbd pool init other)');
});
