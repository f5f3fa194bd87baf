/**
 * Paths a user gives (issue 12): a `stateUrl` or pool path on one of the kernel's file systems is
 * refused at config time, quickly, in one line naming the property (inline and in a backends
 * file with file:line); decided by the file system (mountinfo, symbolic links followed), not the
 * spelling; folders are made one level at a time, so /proc answers an error instead of a spin.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { loadBackendsFile, parseInlineBackends } from "../../provider/src/controller/backends";
import { resolveProviderConfig } from "../../provider/src/controller/config";
import { type Mount, makeFolder, makeFolderSync, parseMountInfo, specialPathReason } from "../../provider/src/domain/user-paths";

const repoRoot = path.resolve(__dirname, "../..");
/** Children run the TypeScript sources, even where a build left .js files beside them. */
const tsEnv = { ...process.env, TS_NODE_PREFER_TS_EXTS: "true" };
let dir: string;
beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-paths-"))));
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The refusal, timed: it must come within a second. */
function refusal(fn: () => unknown): { message: string; property?: string; ms: number } {
  const t0 = Date.now();
  try {
    fn();
  } catch (err) {
    return { message: (err as Error).message, property: (err as { property?: string }).property, ms: Date.now() - t0 };
  }
  throw new Error("expected a refusal, got none");
}

const onLinux = fs.existsSync("/proc/self/mountinfo") ? test : test.skip;

onLinux("a stateUrl under /proc is refused within 1 s, in one line naming stateUrl (it used to spin in mkdir forever)", () => {
  const r = refusal(() => resolveProviderConfig({ stateUrl: "sqlite:/proc/sds-test/state.db" }, dir));
  expect(r.ms).toBeLessThan(1000);
  expect(r.property).toBe("stateUrl");
  expect(r.message).toMatch(/^stateUrl: the state \/proc\/sds-test\/state\.db: its folder is on \/proc, a proc file system/);
  expect(r.message).not.toContain("\n");
});

onLinux("SDS_STATE_URL and /sys are refused the same way", () => {
  const r = refusal(() => resolveProviderConfig({}, dir, { SDS_STATE_URL: "sqlite:/sys/kernel/sds/state.db" }));
  expect(r.message).toMatch(/^stateUrl: .*is on \/sys, a sysfs file system/);
});

onLinux("a stateUrl through a symbolic link into /sys is refused: the file system decides, not the spelling", () => {
  fs.symlinkSync("/sys/kernel", path.join(dir, "link"));
  const r = refusal(() => resolveProviderConfig({ stateUrl: "sqlite:link/sds/state.db" }, dir));
  expect(r.message).toMatch(/^stateUrl: .*link\/sds\/state\.db: its folder is on \/sys \(through symbolic links: \/sys\/kernel\/sds\), a sysfs file system/);
});

onLinux("an inline pool path under /proc is refused naming backends[i].pools[j].path", () => {
  const backends = [{ name: "b", driver: "file", pools: [{ name: "ok", path: "pools/ok" }, { name: "bad", path: "/proc/sds/pool" }] }];
  const r = refusal(() => parseInlineBackends(backends, dir));
  expect(r.ms).toBeLessThan(1000);
  expect(r.property).toBe("backends[0].pools[1].path");
  expect(r.message).toMatch(/^backends\[0\]\.pools\[1\]\.path: "\/proc\/sds\/pool" is on \/proc, a proc file system/);
  // And through the whole config, as CheckConfig sees it.
  expect(refusal(() => resolveProviderConfig({ backends }, dir)).message).toMatch(/^backends\[0\]\.pools\[1\]\.path: /);
});

onLinux("a pool path under /proc in a backends file is refused with file:line", () => {
  const file = path.join(dir, "backends.yaml");
  fs.writeFileSync(file, ["backends:", "  - name: b", "    driver: file", "    pools:", "      - name: p", "        path: /proc/sds/pool", ""].join("\n"));
  const r = refusal(() => loadBackendsFile(file));
  expect(r.message).toBe(`${file}:6: backends[0].pools[0].path: "/proc/sds/pool" is on /proc, a proc file system, the kernel's own, where sds cannot keep files; choose a folder on a disk`);
  expect(r.property).toBe("backendsFile");
});

test("a folder on a disk, and a pool on another node (its agent checks it), are accepted", () => {
  expect(() => resolveProviderConfig({ stateUrl: `sqlite:${path.join(dir, "s/state.db")}` }, dir)).not.toThrow();
  expect(() => parseInlineBackends([{ name: "b", driver: "file", node: "n1", export: { protocol: "iscsi", portal: "10.0.0.1:3260" }, pools: [{ name: "p", path: "/proc/elsewhere" }] }], dir)).not.toThrow();
  expect(() => resolveProviderConfig({ stateUrl: "sqlite::memory:" }, dir)).not.toThrow();
});

describe("specialPathReason on a given mount table", () => {
  const mounts: Mount[] = parseMountInfo(
    [
      "22 27 0:21 / /proc rw,relatime - proc proc rw",
      "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw",
      "24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw",
      "25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw",
      "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
      "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
      "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
      "50 27 0:40 / /mnt/my\\040disk rw shared:1 - xfs /dev/sdb rw",
      "51 27 0:41 / /mnt/dbg rw - debugfs debugfs rw",
    ].join("\n"),
  );

  test.each([
    ["/proc/sds-none/x", "/proc, a proc"],
    ["/sys/fs/cgroup/sds-none", "/sys, a sysfs"], // a tmpfs inside /sys is still /sys
    ["/sys/fs/cgroup/unified/sds-none", "/sys/fs/cgroup/unified, a cgroup2"],
    ["/dev/sds-none", "/dev, a devtmpfs"],
    ["/mnt/dbg/sds-none", "/mnt/dbg, a debugfs"],
  ])("%s is refused (%s)", (p, what) => {
    expect(specialPathReason(p, mounts)).toContain(`is on ${what} file system`);
  });

  test.each(["/dev/shm/sds-none", "/mnt/my disk/sds-none", "/srv/sds-none", "/processes/x", "/system/x"])("%s is accepted", (p) => {
    expect(specialPathReason(p, mounts)).toBeUndefined();
  });
});

onLinux("folders are made one level at a time: under /proc an error at once, where Node's recursive mkdir spins", () => {
  // In a child, so that a spin fails the test by its timeout instead of freezing the test runner.
  const code = `require(${JSON.stringify(path.join(repoRoot, "provider/src/domain/user-paths"))}).makeFolderSync("/proc/sds-test/a/b")`;
  const r = spawnSync(process.execPath, ["-r", "ts-node/register/transpile-only", "-e", code], { cwd: repoRoot, timeout: 20_000, encoding: "utf8", env: tsEnv });
  expect(r.error).toBeUndefined(); // no ETIMEDOUT
  expect(r.status).not.toBe(0);
  expect(r.stderr).toMatch(/ENOENT: no such file or directory, mkdir '\/proc\/sds-test'/);
});

test("makeFolderSync and makeFolder make missing folders 0700 and leave existing ones alone", async () => {
  fs.chmodSync(dir, 0o755);
  expect(makeFolderSync(path.join(dir, "a/b"))).toBe(path.join(dir, "a"));
  await makeFolder(path.join(dir, "c/d"));
  for (const d of ["a", "a/b", "c", "c/d"]) expect(fs.statSync(path.join(dir, d)).mode & 0o777).toBe(0o700);
  expect(fs.statSync(dir).mode & 0o777).toBe(0o755);
  expect(makeFolderSync(path.join(dir, "a/b"))).toBeUndefined();
});

test("makeFolder is bounded: a call that does not answer rejects after its timeout", async () => {
  const { bounded } = await import("../../provider/src/domain/user-paths");
  const t0 = Date.now();
  await expect(bounded("/hung/mount", 200, "making the folder", () => new Promise<never>(() => undefined))).rejects.toThrow("making the folder /hung/mount did not answer within 200 ms (a hung mount?)");
  expect(Date.now() - t0).toBeLessThan(1000);
});
