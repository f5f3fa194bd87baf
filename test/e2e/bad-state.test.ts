/**
 * A state the provider cannot use, through the real CLI (issue 12): a stateUrl under /proc fails
 * at once in one line naming stateUrl (it used to spin at full CPU forever); a damaged state.db
 * fails the operation in one line naming stateUrl and the file, with no SqliteError or stack, and
 * `sds state check` says so (exit 1).
 */
import Database from "better-sqlite3";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { PulumiProject } from "../helpers/pulumi";

jest.setTimeout(600_000);
const repoRoot = path.resolve(__dirname, "../..");
let p: PulumiProject;

beforeAll(async () => {
  p = await PulumiProject.create("bad-inputs", { name: "bad-state" });
  await p.config({ size: 1 });
});
afterAll(() => p?.remove());

const said = (r: { stdout: string; stderr: string }) => `${r.stdout}\n${r.stderr}`;

test("a stateUrl under /proc: preview and up fail within a minute, in one line naming stateUrl", async () => {
  await p.config({ "sds:stateUrl": "sqlite:/proc/sds-e2e/state.db" });
  for (const cmd of [["preview"], ["up", "--yes"]]) {
    const t0 = Date.now();
    const r = await p.run(cmd, 120_000);
    expect(Date.now() - t0).toBeLessThan(60_000);
    expect(r.code).not.toBe(0);
    expect(said(r)).toMatch(/stateUrl: the state \/proc\/sds-e2e\/state\.db: its folder is on \/proc, a proc file system/);
  }
  await p.ok(["config", "rm", "sds:stateUrl"]);
});

test("a damaged state.db: the run fails in one line naming stateUrl and the file; sds state check exits 1", async () => {
  await p.ok(["up", "--yes"]);
  const file = path.join(p.dir, ".sds/state.db");
  // Every row into state.db first (a checkpoint empties the WAL), then cut it in half.
  const db = new Database(file);
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
  expect(fs.existsSync(`${file}-wal`) ? fs.statSync(`${file}-wal`).size : 0).toBe(0);
  fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));

  await p.config({ size: 2 }); // an update: the provider must open the state to write
  const up = await p.run(["up", "--yes"]);
  expect(up.code).not.toBe(0);
  expect(said(up)).toMatch(new RegExp(`stateUrl: the state database ${file.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} is damaged: database disk image is malformed`));
  expect(said(up)).not.toMatch(/SqliteError|\n\s+at /);

  const refresh = await p.run(["refresh", "--yes"]);
  expect(refresh.code).not.toBe(0);
  expect(said(refresh)).toMatch(/stateUrl: the state database .* is damaged/);

  const check = spawnSync(path.join(repoRoot, "provider/bin/sds"), ["state", "check", "--project", p.dir], { encoding: "utf8" });
  expect(check.status).toBe(1);
  expect(check.stdout).toBe(`sds state check: ${file}: damaged: database disk image is malformed (SQLITE_CORRUPT); restore it from a backup\n`);
});
