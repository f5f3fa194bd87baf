/**
 * Faults of the SQLite state file (issue 12), each one line naming `stateUrl` and the file,
 * never a raw SqliteError or errno: a folder this user cannot write; another process holding the
 * write lock (bounded retries with backoff that leave the event loop free, then the holder named);
 * a damaged file (the operation fails; `sds state check` exits 1); and the modes of what sds makes.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Composition } from "../../provider/src/compose/composition";
import { resolveProviderConfig } from "../../provider/src/controller/config";
import { SqliteStore } from "../../provider/src/store/sqlite-store";

const repoRoot = path.resolve(__dirname, "../..");
/** Children run the TypeScript sources, even where a build left .js files beside them. */
const tsEnv = { ...process.env, TS_NODE_PREFER_TS_EXTS: "true" };
let dir: string;
let file: string;
const closers: Array<() => unknown> = [];
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-faults-"));
  file = path.join(dir, "state.db");
});
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  fs.rmSync(dir, { recursive: true, force: true });
});

const ts = (code: string, o: { uid?: number } = {}) =>
  spawnSync(process.execPath, ["-r", "ts-node/register/transpile-only", "-e", code], { cwd: repoRoot, timeout: 60_000, encoding: "utf8", env: tsEnv, ...(o.uid !== undefined ? { uid: o.uid, gid: o.uid } : {}) });

/** A fresh state at `file`, closed. */
async function makeState(): Promise<void> {
  await new SqliteStore(file).close();
}

/** A sqlite3 shell that took the write lock (BEGIN EXCLUSIVE and a write) and holds it until killed. */
async function holdWriteLock(write = "INSERT INTO state_info (key, value) VALUES ('held', 'yes');"): Promise<ChildProcess> {
  const child = spawn("sqlite3", [file], { stdio: ["pipe", "pipe", "inherit"] });
  closers.push(() => child.kill("SIGKILL"));
  child.stdin!.write(`BEGIN EXCLUSIVE;\n${write}\nSELECT 'locked';\n`);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => d.toString().includes("locked") && resolve());
    child.on("error", reject);
  });
  return child;
}

const hasSqlite3 = spawnSync("sqlite3", ["-version"]).status === 0;
const withSqlite3 = hasSqlite3 ? test : test.skip;

test("a stateUrl in a folder this user cannot write: one line naming stateUrl and the path (was a raw EACCES/EPERM … mkdir)", () => {
  const ro = path.join(dir, "ro");
  fs.mkdirSync(ro);
  fs.chmodSync(dir, 0o755);
  fs.chmodSync(ro, 0o555);
  const target = path.join(ro, "sub/state.db");
  // Root writes anywhere: then the store is opened by a child running as nobody.
  const asRoot = process.getuid?.() === 0;
  const code = `const { SqliteStore } = require("./provider/src/store/sqlite-store");
    try { new SqliteStore(${JSON.stringify(target)}); console.log("OPENED"); }
    catch (e) { console.log(JSON.stringify({ message: e.message, property: e.property })); }`;
  const r = ts(code, asRoot ? { uid: 65534 } : {});
  expect(r.stdout).not.toContain("OPENED");
  const { message, property } = JSON.parse(r.stdout.trim().split("\n").pop()!) as { message: string; property?: string };
  expect(property).toBe("stateUrl");
  expect(message).toMatch(new RegExp(`^stateUrl: cannot make the folder of the state ${target.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: EACCES: permission denied, mkdir '${path.join(ro, "sub")}'; give this user write access`));
  expect(message).not.toContain("\n");
});

withSqlite3("another process holding the write lock: bounded retries, then one line naming stateUrl and the holder (was SqliteError: database is locked, with a stack)", async () => {
  await makeState();
  const holder = await holdWriteLock();
  const t0 = Date.now();
  let message = "";
  try {
    const store = new SqliteStore(file, { busyTimeoutMs: 1000 }); // reads never wait (WAL): an up-to-date state opens
    closers.push(() => store.close());
    await store.setInfo("k", "v");
  } catch (err) {
    message = (err as Error).message;
  }
  expect(Date.now() - t0).toBeLessThan(5000);
  expect(message).toMatch(new RegExp(`^stateUrl: the state database ${file.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} stayed locked by pid ${holder.pid} \\(sqlite3\\) for 1\\.0 s; let it finish`));
  expect(message).not.toContain("\n");
});

withSqlite3("a write that finds the state locked waits with backoff without freezing the process, then fails in one line", async () => {
  await makeState();
  const store = await SqliteStore.open(file, { busyTimeoutMs: 1500 });
  closers.push(() => store.close());
  const holder = await holdWriteLock();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 50);
  const t0 = Date.now();
  const failed = await store.setInfo("k", "v").then(
    () => undefined,
    (err: Error & { code?: string; property?: string }) => err,
  );
  clearInterval(timer);
  const waited = Date.now() - t0;
  expect(failed?.message).toMatch(new RegExp(`^stateUrl: the state database .* stayed locked by pid ${holder.pid} \\(sqlite3\\) for 1\\.5 s`));
  expect(failed?.code).toBe("TIMEOUT");
  expect(waited).toBeGreaterThanOrEqual(1400);
  expect(waited).toBeLessThan(4000);
  expect(ticks).toBeGreaterThan(10); // the event loop kept running (SQLite's own wait would block it)
  // A transaction waits the same way; once the holder lets go, the store works again.
  const tx = store.transaction(async (t) => t.setInfo("k", "tx"));
  setTimeout(() => holder.kill("SIGKILL"), 300);
  await tx;
  expect(await store.getInfo("k")).toBe("tx");
});

withSqlite3("opening a state that needs its migrations waits for the lock with backoff too: one line when it stays, opened once it is let go", async () => {
  const held = await holdWriteLock("CREATE TABLE other (x);");
  await expect(SqliteStore.open(file, { busyTimeoutMs: 600 })).rejects.toThrow(new RegExp(`^stateUrl: the state database .* stayed locked by pid ${held.pid} \\(sqlite3\\) for 0\\.6 s`));
  setTimeout(() => held.kill("SIGKILL"), 400);
  const store = await SqliteStore.open(file, { busyTimeoutMs: 5000 });
  closers.push(() => store.close());
  expect((await store.stateId()).length).toBeGreaterThan(0);
});

describe("a damaged state file", () => {
  async function damaged(how: "truncate" | "garbage"): Promise<{ project: string; file: string }> {
    const project = path.join(dir, "project");
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, "Pulumi.yaml"), "name: p\nruntime: nodejs\n");
    const parts = new Composition(resolveProviderConfig({}, project), () => undefined);
    await parts.allowWrites();
    await parts.close();
    const f = path.join(project, ".sds/state.db");
    const size = fs.statSync(f).size;
    if (how === "truncate") fs.truncateSync(f, Math.floor(size / 2));
    else fs.writeFileSync(f, Buffer.alloc(size, 0x41));
    return { project, file: f };
  }

  test.each(["truncate", "garbage"] as const)("%s: opening it is one line naming stateUrl and the file (was a raw 'database disk image is malformed')", async (how) => {
    const s = await damaged(how);
    let err: (Error & { property?: string }) | undefined;
    try {
      new SqliteStore(s.file);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.property).toBe("stateUrl");
    expect(err?.message).toMatch(new RegExp(`^stateUrl: the state database ${s.file.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} is damaged: (database disk image is malformed \\(SQLITE_CORRUPT\\)|file is not a database \\(SQLITE_NOTADB\\)); restore it from a backup`));
    expect(err?.message).not.toContain("\n");
  });

  test("the run's operations fail with that line (the controller, allowWrites), and `sds state check` exits 1 with one line", async () => {
    const s = await damaged("truncate");
    const warnings: string[] = [];
    const parts = new Composition(resolveProviderConfig({}, s.project), (severity, m) => severity === "warning" && warnings.push(m));
    await expect(parts.controller()).rejects.toThrow(/^stateUrl: the state database .* is damaged: database disk image is malformed/);
    await expect(parts.allowWrites()).rejects.toThrow(/^stateUrl: the state database .* is damaged/);
    await expect(parts.attachmentsReconciled(false)).rejects.toThrow(/^stateUrl: the state database .* is damaged/);
    const r = spawnSync(process.execPath, ["-r", "ts-node/register/transpile-only", path.join(repoRoot, "provider/src/cli-main.ts"), "state", "check", "--project", s.project], { cwd: repoRoot, encoding: "utf8", timeout: 60_000, env: tsEnv });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe(`sds state check: ${s.file}: damaged: database disk image is malformed (SQLITE_CORRUPT); restore it from a backup\n`);
  });

  test("`sds state check` on a sound state exits 0 with one line", () => {
    new SqliteStore(path.join(dir, "ok/state.db")).close().catch(() => undefined);
    const r = spawnSync(process.execPath, ["-r", "ts-node/register/transpile-only", path.join(repoRoot, "provider/src/cli-main.ts"), "state", "check", "--state", `sqlite:${path.join(dir, "ok/state.db")}`], { cwd: repoRoot, encoding: "utf8", timeout: 60_000, env: tsEnv });
    expect(r.stdout).toMatch(/^sds state check: .*ok\/state\.db: ok \(integrity_check ok; \d+ migration\(s\) applied; state id [0-9a-f]+\)\n$/);
    expect(r.status).toBe(0);
  });
});

test("what sds makes is private: .sds and its run folder 0700; state.db, its -wal and -shm, and secret.key 0600", async () => {
  fs.chmodSync(dir, 0o755);
  fs.writeFileSync(path.join(dir, "Pulumi.yaml"), "name: p\nruntime: nodejs\n");
  const parts = new Composition(resolveProviderConfig({}, dir), () => undefined);
  closers.push(() => parts.close());
  await parts.allowWrites();
  const mode = (rel: string) => fs.statSync(path.join(dir, rel)).mode & 0o777;
  expect(mode(".sds")).toBe(0o700);
  expect(mode(".sds/run")).toBe(0o700);
  expect(mode(".sds/state.db")).toBe(0o600);
  expect(mode(".sds/state.db-wal")).toBe(0o600);
  expect(mode(".sds/state.db-shm")).toBe(0o600);
  expect(mode(".sds/secret.key")).toBe(0o600);
  expect(mode(".")).toBe(0o755); // the project folder was there: left as it was
});
