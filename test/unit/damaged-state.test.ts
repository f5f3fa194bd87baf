/**
 * A damaged SQLite state is refused before a run uses it (issue 12): the provider reads every page
 * at Configure, because a run that changes nothing reads only a few rows and a damaged file
 * passed (`pulumi up` exited 0 on it). A missing state is no damage. `sds state migrate` refuses
 * to move a damaged state. Through the real CLI: test/e2e/bad-state.test.ts.
 */
import Database from "better-sqlite3";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Composition } from "../../provider/src/compose/composition";
import { resolveProviderConfig } from "../../provider/src/controller/config";
import { SqliteStore } from "../../provider/src/store/sqlite-store";

const repoRoot = path.resolve(__dirname, "../..");
let dir: string;
let file: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-damaged-"));
  fs.writeFileSync(path.join(dir, "Pulumi.yaml"), "name: p\nruntime: nodejs\n");
  file = path.join(dir, ".sds/state.db");
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const parts = () => new Composition(resolveProviderConfig({}, dir), () => undefined);

/** A state of many pages, every row in the main file, then one page in the middle overwritten. */
async function damagedInTheMiddle(): Promise<void> {
  const store = await SqliteStore.open(file);
  for (let i = 0; i < 400; i++) await store.setInfo(`filler-${i}`, "x".repeat(500));
  await store.close();
  const db = new Database(file);
  db.pragma("wal_checkpoint(TRUNCATE)");
  const pageSize = Number(db.pragma("page_size", { simple: true }));
  db.close();
  const pages = fs.statSync(file).size / pageSize;
  expect(pages).toBeGreaterThan(20);
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, Buffer.alloc(pageSize, 0x5a), 0, pageSize, Math.floor(pages / 2) * pageSize);
  fs.closeSync(fd);
}

test("a page damaged where opening does not look: the open passes, the check at Configure names stateUrl and the file", async () => {
  await damagedInTheMiddle();
  // What a no-change run did before: open the state and read a few rows. It sees nothing wrong.
  const store = new SqliteStore(file);
  expect((await store.stateId()).length).toBeGreaterThan(0);
  await store.close();

  const err = (() => {
    try {
      parts().refuseDamagedState();
    } catch (e) {
      return e as Error & { property?: string };
    }
  })();
  expect(err?.property).toBe("stateUrl");
  expect(err?.message).toMatch(new RegExp(`^stateUrl: the state database ${file.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} is damaged: .+; restore it from a backup \\(README, "When the state is damaged"\\)`));
  expect(err?.message).not.toContain("\n");
  // The controller, which every handler goes through, refuses it too.
  await expect(parts().controller()).rejects.toThrow(/^stateUrl: the state database .* is damaged/);
});

test("a missing state is no damage: nothing is refused and nothing is made", async () => {
  expect(() => parts().refuseDamagedState()).not.toThrow();
  expect(fs.existsSync(path.dirname(file))).toBe(false);
});

test("a sound state passes", async () => {
  await (await SqliteStore.open(file)).close();
  expect(() => parts().refuseDamagedState()).not.toThrow();
});

test("sds state migrate refuses a damaged --from in one line, exit 2, and makes no destination", async () => {
  await damagedInTheMiddle();
  const to = path.join(dir, "copy/state.db");
  const r = spawnSync(process.execPath, ["-r", "ts-node/register/transpile-only", path.join(repoRoot, "provider/src/cli-main.ts"), "state", "migrate", "--from", `sqlite:${file}`, "--to", `sqlite:${to}`], {
    cwd: repoRoot,
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, TS_NODE_PREFER_TS_EXTS: "true", SDS_STATE_URL: "" },
  });
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(new RegExp(`^sds: --from: the state database ${file.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} is damaged: .+; restore it from a backup before moving it\n$`));
  expect(fs.existsSync(path.dirname(to))).toBe(false);
});
