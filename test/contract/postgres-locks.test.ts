/**
 * PostgresStore's named locks (`tryLock`/`unlock`) are session advisory locks: they hold across
 * runners (two stores, as two provider processes would have), between holders of one process,
 * and they die with the session that holds them, not after a TTL: a holder in a child process
 * killed with SIGKILL frees its lock as soon as its connection closes, though it asked for ten
 * minutes. A lock session the server ends is reported, its holders' unlocks do not throw, and
 * the next tryLock opens a new one. Real PostgreSQL (test/helpers/postgres.ts), one database
 * per test.
 */
import type { ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import pg from "pg";
import { PostgresStore } from "../../provider/src/store/postgres-store";
import { type PostgresCluster, postgresSkipReason, startPostgres } from "../helpers/postgres";
import { startScriptChild } from "../helpers/script-child";

const TEN_MINUTES = 600_000;
const skip = postgresSkipReason();
const suite = skip ? describe.skip : describe;
if (skip) test.skip(`PostgreSQL locks skipped: ${skip}`, () => undefined);

/**
 * The child: opens the store on SDS_TEST_STATE_URL (the URL, with its password, only in the
 * environment), takes SDS_TEST_LOCK for ten minutes, says "held", and waits to be killed.
 */
const childScript = `
const { PostgresStore } = require("./provider/src/store/postgres-store");
(async () => {
  const store = await PostgresStore.open(process.env.SDS_TEST_STATE_URL);
  if (!(await store.tryLock(process.env.SDS_TEST_LOCK, "child", ${TEN_MINUTES}))) throw new Error("the child could not take the lock");
  process.stdout.write("held\\n");
  setInterval(() => undefined, 1 << 30);
})().catch((err) => { process.stderr.write(String(err && err.stack || err) + "\\n"); process.exit(1); });
`;

/** Poll `fn` every 25 ms until it is true or `ms` passed; how long it took, or undefined. */
async function within(ms: number, fn: () => Promise<boolean>): Promise<number | undefined> {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (await fn()) return Date.now() - start;
    await new Promise((r) => setTimeout(r, 25));
  }
  return undefined;
}

suite("PostgresStore locks: session advisory locks that die with their session", () => {
  let cluster: PostgresCluster;
  let url: string;
  const opened: PostgresStore[] = [];
  const children: ChildProcess[] = [];
  const lost: string[] = [];
  const open = async () => {
    const s = await PostgresStore.open(url, { onLockLost: (m) => lost.push(m) });
    opened.push(s);
    return s;
  };
  /** A superuser session on the test's database (or `on`), to look at and end other sessions. */
  const admin = async <T>(fn: (c: pg.Client) => Promise<T>, on = url): Promise<T> => {
    const c = new pg.Client({ connectionString: on });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };

  beforeAll(async () => {
    cluster = await startPostgres();
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });
  beforeEach(async () => {
    url = await cluster.createDatabase();
    lost.length = 0;
  });
  afterEach(async () => {
    for (const c of children.splice(0)) c.kill("SIGKILL");
    for (const s of opened.splice(0)) await s.close();
  });

  test("two runners: one holds, the other is refused; once released, the other takes it", async () => {
    const [a, b] = [await open(), await open()];
    expect(await a.tryLock("export:t1", "runner-a", TEN_MINUTES)).toBe(true);
    expect(await b.tryLock("export:t1", "runner-b", TEN_MINUTES)).toBe(false);
    expect(await b.tryLock("export:t2", "runner-b", TEN_MINUTES)).toBe(true);
    await a.unlock("export:t1", "runner-a");
    expect(await b.tryLock("export:t1", "runner-b", TEN_MINUTES)).toBe(true);
    expect(await a.tryLock("export:t1", "runner-a", TEN_MINUTES)).toBe(false);
  });

  test("one process: a second holder is refused; the holder takes it again without a second level; one unlock frees it", async () => {
    const [a, b] = [await open(), await open()];
    expect(await a.tryLock("l", "h1", TEN_MINUTES)).toBe(true);
    expect(await a.tryLock("l", "h2", TEN_MINUTES)).toBe(false);
    expect(await a.tryLock("l", "h1", TEN_MINUTES)).toBe(true);
    expect(await a.tryLock("l", "h1", TEN_MINUTES)).toBe(true);
    await a.unlock("l", "h2"); // not h2's: nothing happens
    expect(await b.tryLock("l", "other", TEN_MINUTES)).toBe(false);
    await a.unlock("l", "h1"); // once, after three takes: free for everyone
    expect(await b.tryLock("l", "other", TEN_MINUTES)).toBe(true);
    expect(await a.tryLock("l", "h2", TEN_MINUTES)).toBe(false);
    await a.unlock("l", "h1"); // released already: nothing happens
  });

  test("holders of one process racing for one name: exactly one wins", async () => {
    const a = await open();
    const wins = await Promise.all(Array.from({ length: 20 }, (_, i) => a.tryLock("race", `h${i}`, TEN_MINUTES)));
    expect(wins.filter(Boolean)).toHaveLength(1);
  });

  test("a holder in a child process killed with SIGKILL frees the lock within seconds, not after its ten-minute ttl", async () => {
    const parent = await open();
    const child = await startScriptChild(childScript, { SDS_TEST_STATE_URL: url, SDS_TEST_LOCK: "export:killed" }, "held");
    children.push(child);
    // The password is nowhere in the child's command line (only in its environment).
    expect(fs.readFileSync(`/proc/${child.pid}/cmdline`, "utf8")).not.toContain(cluster.password);
    expect(await parent.tryLock("export:killed", "parent", TEN_MINUTES)).toBe(false);

    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    const tookMs = await within(5_000, () => parent.tryLock("export:killed", "parent", TEN_MINUTES));
    expect(tookMs).toBeDefined();
    expect(tookMs!).toBeLessThan(5_000);
  }, 60_000);

  test("close() ends the lock session: the other runner takes the lock at once", async () => {
    const [a, b] = [await open(), await open()];
    expect(await a.tryLock("l", "h1", TEN_MINUTES)).toBe(true);
    opened.splice(opened.indexOf(a), 1);
    await a.close();
    expect(await b.tryLock("l", "h2", TEN_MINUTES)).toBe(true);
  });

  test("a lock session the server ends: its locks are free, reported once; the holder's unlock does not throw; the next tryLock reconnects", async () => {
    const [a, b] = [await open(), await open()];
    expect(await a.tryLock("export:x", "h1", TEN_MINUTES)).toBe(true);
    expect(await a.tryLock("export:y", "h2", TEN_MINUTES)).toBe(true);
    // End a's lock session: the backend holding export:x.
    const ended = await admin(async (c) => {
      const { rows } = await c.query(
        "SELECT pg_terminate_backend(pid) AS ok FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = hashtext('export:x')::oid",
        [0x7364734c],
      );
      return rows.map((r: { ok: boolean }) => r.ok);
    });
    expect(ended).toEqual([true]);
    expect(await within(5_000, async () => lost.length > 0)).toBeDefined();
    expect(lost).toHaveLength(1);
    expect(lost[0]).toContain("stateUrl");
    expect(lost[0]).toContain("export:x");
    expect(lost[0]).toContain("export:y");
    expect(lost[0]).not.toContain(cluster.password);

    expect(await b.tryLock("export:x", "other", TEN_MINUTES)).toBe(true);
    await expect(a.unlock("export:x", "h1")).resolves.toBeUndefined();
    await expect(a.unlock("export:y", "h2")).resolves.toBeUndefined();
    // A new session: refused while b holds x, and y is a's again.
    expect(await a.tryLock("export:x", "h1", TEN_MINUTES)).toBe(false);
    expect(await a.tryLock("export:y", "h2", TEN_MINUTES)).toBe(true);
    expect(await b.tryLock("export:y", "other", TEN_MINUTES)).toBe(false);
  });

  test("a lock session that cannot connect fails naming stateUrl, the password hidden; a later tryLock connects", async () => {
    const a = await open();
    const db = new URL(url).pathname.slice(1);
    // Superusers pass CONNECTION LIMIT; ALLOW_CONNECTIONS false stops everyone (the store's pool connected already).
    const allow = (yes: boolean) => admin((c) => c.query(`ALTER DATABASE ${db} ALLOW_CONNECTIONS ${yes}`), cluster.url("postgres"));
    await allow(false);
    try {
      const err: unknown = await a.tryLock("l", "h1", TEN_MINUTES).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "INVALID_INPUT", property: "stateUrl", message: expect.stringContaining("stateUrl") });
      expect((err as Error).message).not.toContain(cluster.password);
      expect((err as Error).message).toContain("***");
    } finally {
      await allow(true);
    }
    expect(await a.tryLock("l", "h1", TEN_MINUTES)).toBe(true);
    expect(lost).toEqual([]);
  });
});
