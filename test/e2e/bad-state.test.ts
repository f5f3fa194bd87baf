/**
 * A state or a pool the provider cannot use, through the real Pulumi CLI (issue 12, "Done when"):
 * a pool path or a stateUrl under /proc, a stateUrl on a read-only mount, a state file cut short,
 * a state another process holds locked. Each failing `preview` and `up` ends within 30 s (a bound
 * on a hang: /proc used to spin forever), non-zero, with exactly one error (the engine prints it
 * on the resource and again under Diagnostics) naming the property, no stack trace, and leaves
 * nothing: no state or pool folder made, no plugin process left, no stack lock (the next command
 * runs). A missing state stays fine: the first test's stack has none, and that is not an error.
 */
import Database from "better-sqlite3";
import { type ChildProcessByStdio, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Readable } from "node:stream";
import { PulumiProject, type RunResult } from "../helpers/pulumi";

jest.setTimeout(600_000);
const repoRoot = path.resolve(__dirname, "../..");
const asRoot = process.getuid?.() === 0 ? test : test.skip; // a read-only mount needs root
let p: PulumiProject;
let stateFile: string;
const timings: string[] = [];

beforeAll(async () => {
  p = await PulumiProject.create("bad-inputs", { name: "bad-state" });
  await p.config({ size: 1 });
  stateFile = path.join(p.dir, ".sds/state.db");
});
afterAll(() => {
  // The figures for the closing note: how long each refusal took through the real CLI.
  if (timings.length > 0) process.stdout.write(`bad-state timings: ${timings.join("; ")}\n`);
  p?.remove();
});

const said = (r: RunResult) => `${r.stdout}\n${r.stderr}`;
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

/** The distinct error messages of a run (the engine's own "update failed" aside). */
function errorsIn(r: RunResult): string[] {
  const found = said(r).split("\n").map((l) => /\berror: (.+)$/.exec(l)?.[1].trim()).filter((m): m is string => m !== undefined);
  return [...new Set(found)].filter((m) => !/^(update|preview|refresh) failed$/.test(m));
}

/** Processes still running in the project folder (the plugin, the language host, the program). */
function processesIn(dir: string): number[] {
  const real = fs.realpathSync(dir);
  return fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/cwd`) === real;
    } catch {
      return false; // gone, or not ours to read
    }
  });
}

/** Files under the file backend's locks folder: a stack lock left by a run that did not end well. */
function stackLocks(): string[] {
  const locks = path.join(p.dir, ".pulumi-backend/.pulumi/locks");
  return fs.existsSync(locks) ? fs.readdirSync(locks, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name) : [];
}

/** Run `cmd`; it must fail within 30 s in one error matching `pattern`, with no stack, leaving no process and no stack lock. */
async function failsCleanly(label: string, cmd: string[], pattern: RegExp): Promise<RunResult> {
  const t0 = Date.now();
  const r = await p.run(cmd, 120_000);
  const ms = Date.now() - t0;
  timings.push(`${label} ${cmd[0]} ${(ms / 1000).toFixed(1)} s`);
  expect(errorsIn(r)).toEqual([expect.stringMatching(pattern)]);
  expect(r.code).not.toBe(0);
  expect(ms).toBeLessThan(30_000);
  expect(said(r)).not.toMatch(/^\s+at .+:\d+:\d+\)?$/m); // no stack trace
  expect(said(r)).not.toMatch(/SqliteError|Error: /);
  for (let i = 0; i < 50 && processesIn(p.dir).length > 0; i++) await new Promise((res) => setTimeout(res, 100));
  expect(processesIn(p.dir)).toEqual([]);
  expect(stackLocks()).toEqual([]);
  return r;
}

const noStateMade = () => expect(fs.existsSync(path.join(p.dir, ".sds"))).toBe(false);

test("a pool path under /proc: preview and up fail at once, one line naming backends[0].pools[0].path; nothing made", async () => {
  await p.ok(["config", "set", "sds:backends", JSON.stringify([{ name: "b", driver: "file", pools: [{ name: "p0", path: "/proc/sds-e2e/pool" }] }])]);
  for (const cmd of [["preview"], ["up", "--yes"]]) {
    await failsCleanly("pool under /proc", cmd, /backends\[0\]\.pools\[0\]\.path: "\/proc\/sds-e2e\/pool" is on \/proc, a proc file system/);
  }
  noStateMade();
  await p.ok(["config", "rm", "sds:backends"]);
});

test("a stateUrl under /proc: preview and up fail at once, one line naming stateUrl; nothing made", async () => {
  await p.config({ "sds:stateUrl": "sqlite:/proc/sds-e2e/state.db" });
  for (const cmd of [["preview"], ["up", "--yes"]]) {
    await failsCleanly("stateUrl under /proc", cmd, /^pulumi:providers:sds resource '.*': property stateUrl value \{sqlite:\/proc\/sds-e2e\/state\.db\} has a problem: stateUrl: the state \/proc\/sds-e2e\/state\.db: its folder is on \/proc, a proc file system/);
  }
  noStateMade();
  await p.ok(["config", "rm", "sds:stateUrl"]);
  // The same from SDS_STATE_URL: no input holds it, so the engine's `value {<nil>}` would be all it showed.
  p.env.SDS_STATE_URL = "sqlite:/proc/sds-e2e/state.db";
  try {
    const r = await failsCleanly("SDS_STATE_URL under /proc", ["preview"], /^pulumi:providers:sds resource '.*' has a problem: stateUrl: the state \/proc\/sds-e2e\/state\.db: its folder is on \/proc, .* \(stateUrl from SDS_STATE_URL\)$/);
    expect(said(r)).not.toContain("<nil>");
  } finally {
    p.env.SDS_STATE_URL = "";
  }
  noStateMade();
});

asRoot("a stateUrl on a read-only mount: preview and up fail at once, one line naming stateUrl; nothing made", async () => {
  // Root ignores file modes: only a read-only mount refuses it. Made and removed here.
  const mnt = fs.mkdtempSync("/tmp/sds-e2e-ro-");
  expect(spawnSync("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", mnt]).status).toBe(0);
  try {
    await p.config({ "sds:stateUrl": `sqlite:${mnt}/sds/state.db` });
    for (const cmd of [["preview"], ["up", "--yes"]]) {
      await failsCleanly("read-only stateUrl", cmd, new RegExp(`property stateUrl value .* has a problem: stateUrl: the state ${escape(mnt)}/sds/state\\.db: ${escape(mnt)} is on a read-only file system \\(EROFS\\)`));
    }
    expect(fs.readdirSync(mnt)).toEqual([]);
    noStateMade();
    await p.ok(["config", "rm", "sds:stateUrl"]);
  } finally {
    spawnSync("umount", [mnt]);
    fs.rmdirSync(mnt);
  }
});

test("a state.db cut short: every command fails in one line naming stateUrl and the file, a no-change up too; a backup restores it", async () => {
  await p.ok(["up", "--yes"]);
  const pool = path.join(p.dir, ".sds/pools/default");
  const volumes = fs.readdirSync(pool).sort();
  expect(volumes).toHaveLength(2);
  // Every row into state.db first (a checkpoint empties the WAL); a copy now, with nothing
  // running, is a sound backup (README, "When the state is damaged"); then cut the file in half.
  const db = new Database(stateFile);
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
  expect(fs.existsSync(`${stateFile}-wal`) ? fs.statSync(`${stateFile}-wal`).size : 0).toBe(0);
  const backup = path.join(p.dir, "state-backup.db");
  fs.copyFileSync(stateFile, backup);
  fs.truncateSync(stateFile, Math.floor(fs.statSync(stateFile).size / 2));

  const damaged = new RegExp(`stateUrl: the state database ${escape(stateFile)} is damaged: database disk image is malformed`);
  // Nothing to change: the plugin reads no damaged page, and this used to exit 0.
  for (const cmd of [["preview"], ["up", "--yes"], ["refresh", "--yes"]]) await failsCleanly("damaged state", cmd, damaged);
  await p.config({ size: 2 }); // an update: the provider must write
  await failsCleanly("damaged state (an update)", ["up", "--yes"], damaged);
  expect(fs.readdirSync(pool).sort()).toEqual(volumes);

  const sds = (args: string[]) => spawnSync(path.join(repoRoot, "provider/bin/sds"), args, { encoding: "utf8" });
  const check = sds(["state", "check", "--project", p.dir]);
  expect(check.status).toBe(1);
  expect(check.stdout).toBe(`sds state check: ${stateFile}: damaged: database disk image is malformed (SQLITE_CORRUPT); restore it from a backup\n`);

  // The README's restore: the damaged file (and its -wal, -shm) aside, the backup in its place.
  for (const f of [stateFile, `${stateFile}-wal`, `${stateFile}-shm`]) if (fs.existsSync(f)) fs.renameSync(f, `${f}.damaged`);
  fs.copyFileSync(backup, stateFile);
  expect(sds(["state", "check", "--project", p.dir]).status).toBe(0);
  await p.config({ size: 1 });
  await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  await p.ok(["preview", "--expect-no-changes"]);
});

test("a state another process holds locked: a reading preview passes, an up that must write fails within 30 s naming stateUrl and the holder", async () => {
  // A real holder of SQLite's write lock, for longer than sds waits (10 s).
  const holder: ChildProcessByStdio<null, Readable, null> = spawn(
    process.execPath,
    ["-e", 'const db = new (require("better-sqlite3"))(process.argv[1]); db.exec("BEGIN IMMEDIATE"); console.log("held"); setTimeout(() => {}, 120000);', stateFile],
    { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"] },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      holder.stdout.on("data", (d: Buffer) => d.toString().includes("held") && resolve());
      holder.on("exit", (code) => reject(new Error(`the lock holder exited ${code}`)));
    });
    // WAL: a reader does not wait for a writer, so a preview reads the state as it is.
    await p.ok(["preview", "--expect-no-changes"]);
    await p.config({ size: 2 });
    await failsCleanly("locked state", ["up", "--yes"], new RegExp(`stateUrl: the state database ${escape(stateFile)} stayed locked by pid ${holder.pid}`));
  } finally {
    holder.kill("SIGKILL");
  }
  // The holder gone, the same up goes through: nothing was left half done.
  await p.ok(["up", "--yes"]);
  await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  await p.ok(["destroy", "--yes"]);
  expect(fs.readdirSync(path.join(p.dir, ".sds/pools/default"))).toEqual([]);
});
