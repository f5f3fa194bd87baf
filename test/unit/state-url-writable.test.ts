/**
 * A SQLite stateUrl in a folder this process cannot write is refused at config time, in one line
 * naming stateUrl (issue 12): before, a preview passed and the first write of `up` failed with a
 * raw EPERM/EROFS. A read-only mount (root ignores file modes, not that) and a folder without
 * write permission for the user; a folder not made yet under a writable one is fine, and nothing
 * is made. Through the real CLI: test/e2e/bad-state.test.ts.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { resolveProviderConfig } from "../../provider/src/controller/config";

const repoRoot = path.resolve(__dirname, "../..");
const root = process.getuid?.() === 0;
const asRoot = root ? test : test.skip; // a mount, and a child run as another user, need root
let dir: string;
beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-state-url-"))));
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function refusal(fn: () => unknown): Error & { property?: string } {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a refusal");
}

asRoot("a read-only mount: one line naming stateUrl, the folder and EROFS", () => {
  const mnt = path.join(dir, "ro");
  fs.mkdirSync(mnt);
  expect(spawnSync("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", mnt]).status).toBe(0);
  try {
    const err = refusal(() => resolveProviderConfig({ stateUrl: `sqlite:${mnt}/sds/state.db` }, dir));
    expect(err.property).toBe("stateUrl");
    expect(err.message).toBe(`stateUrl: the state ${mnt}/sds/state.db: ${mnt} is on a read-only file system (EROFS); set sds:stateUrl (or SDS_STATE_URL) to a folder this user can write`);
  } finally {
    spawnSync("umount", [mnt]);
  }
});

asRoot("a folder the user cannot write: one line naming stateUrl and EACCES", () => {
  fs.chmodSync(dir, 0o755);
  const locked = path.join(dir, "locked");
  fs.mkdirSync(locked, { mode: 0o755 });
  const code = `const { resolveProviderConfig } = require(${JSON.stringify(path.join(repoRoot, "provider/src/controller/config"))});
try { resolveProviderConfig({ stateUrl: "sqlite:${locked}/state.db" }, "/tmp"); console.log("accepted"); } catch (e) { console.log(e.property + "|" + e.message); }`;
  const r = spawnSync(process.execPath, ["-r", "ts-node/register/transpile-only", "-e", code], {
    cwd: repoRoot,
    encoding: "utf8",
    timeout: 60_000,
    uid: 65534,
    gid: 65534,
    env: { ...process.env, TS_NODE_PREFER_TS_EXTS: "true", SDS_STATE_URL: "", SDS_BACKENDS_FILE: "", HOME: "/tmp" },
  });
  expect(r.stdout.trim()).toBe(`stateUrl|stateUrl: the state ${locked}/state.db: ${locked} is not writable by this user (EACCES); set sds:stateUrl (or SDS_STATE_URL) to a folder this user can write`);
});

test("a state folder not made yet under a writable one is accepted, and nothing is made", () => {
  expect(() => resolveProviderConfig({ stateUrl: `sqlite:${dir}/a/b/state.db` }, dir)).not.toThrow();
  expect(fs.readdirSync(dir)).toEqual([]);
});
