/**
 * Store locks know whether their holder lives (issue 12: after a SIGKILLed provider, follow-up
 * `up`s waited 99–107 s on the dead provider's lock row). A real child process (node) takes a
 * lock through withStoreLock on a real state (a SQLite file; PostgreSQL when the machine has it)
 * and is SIGKILLed holding it: another process takes the lock in well under a second. While the
 * holder lives, the waiter's log line and its time-out error name the holder's pid. On SQLite,
 * a holder text whose pid was reused (another start time) or whose boot is over is dead at once;
 * one from another host is judged by its TTL, which a live holder renews.
 */
import type { ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { LockTimeoutError } from "../../provider/src/errors";
import { withStoreLock } from "../../provider/src/store/lock";
import { holderText } from "../../provider/src/store/lock-holder";
import { PostgresStore } from "../../provider/src/store/postgres-store";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import type { Store } from "../../provider/src/store/store";
import { type PostgresCluster, postgresSkipReason, startPostgres } from "../helpers/postgres";
import { startScriptChild } from "../helpers/script-child";

/**
 * The child: opens the state SDS_TEST_STATE (a file, or a postgres:// URL only in the
 * environment), takes SDS_TEST_LOCK through withStoreLock as a provider would (ten minutes to
 * wait, the default TTL), says "held", and works until it is killed.
 */
const childScript = `
const { withStoreLock } = require("./provider/src/store/lock");
const url = process.env.SDS_TEST_STATE;
(async () => {
  const store = url.startsWith("postgres")
    ? await require("./provider/src/store/postgres-store").PostgresStore.open(url)
    : await require("./provider/src/store/sqlite-store").SqliteStore.open(url);
  await withStoreLock(store, process.env.SDS_TEST_LOCK, { timeoutMs: 600000, holderPrefix: "child", timedOut: () => new Error("the child could not take the lock") }, async () => {
    process.stdout.write("held\\n");
    await new Promise(() => setInterval(() => undefined, 1 << 30)); // works (and lives) until killed
  });
})().catch((err) => { process.stderr.write(String((err && err.stack) || err) + "\\n"); process.exit(1); });
`;

const children: ChildProcess[] = [];

/** Start the child holding `lock` on `state`; resolves once it holds it. */
async function holdInChild(state: string, lock: string): Promise<ChildProcess> {
  const child = await startScriptChild(childScript, { SDS_TEST_STATE: state, SDS_TEST_LOCK: lock }, "held");
  children.push(child);
  return child;
}

async function kill(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
}

/** withStoreLock as the controller calls it (LockTimeoutError naming the holder), collecting its log. */
function take(store: Store, lock: string, timeoutMs: number, log: string[] = []): Promise<number> {
  const start = Date.now();
  const timedOut = (heldBy?: string) => new LockTimeoutError(lock, timeoutMs, { holder: heldBy });
  return withStoreLock(store, lock, { timeoutMs, holderPrefix: "parent", timedOut, log: (m) => log.push(m) }, async () => Date.now() - start);
}

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) await kill(c);
});

/** The same two tests on each store: `state()` is a fresh state the child can open too. */
function livenessSuite(name: string, state: () => Promise<string>, open: (s: string) => Promise<Store>) {
  let opened: Store[] = [];
  afterEach(async () => {
    for (const s of opened) await s.close();
    opened = [];
  });
  const openState = async (s: string) => {
    const store = await open(s);
    opened.push(store);
    return store;
  };

  test(`${name}: a holder SIGKILLed while it holds the lock loses it at once`, async () => {
    const s = await state();
    const child = await holdInChild(s, "export:killed");
    const store = await openState(s);
    expect(await store.tryLock("export:killed", "probe", 1_000)).toBe(false);
    await kill(child);
    const tookMs = await take(store, "export:killed", 10_000);
    console.log(`${name}: lock of a SIGKILLed holder taken over in ${tookMs} ms`);
    expect(tookMs).toBeLessThan(1_000);
  }, 60_000);

  test(`${name}: a live holder is waited for, and the waiter names its pid (log line, then the time-out error)`, async () => {
    const s = await state();
    const child = await holdInChild(s, "export:live");
    const store = await openState(s);
    const log: string[] = [];
    const err = await take(store, "export:live", 4_000, log).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as Error).message).toContain(`lock export:live (held by pid ${child.pid}`);
    expect(log).toHaveLength(1);
    expect(log[0]).toMatch(new RegExp(`^waiting for lock export:live \\(3 s so far\\), held by pid ${child.pid} `));
    if (name === "SQLite") expect(log[0]).toMatch(new RegExp(`pid ${child.pid} \\(node[^)]*\\) on host ${os.hostname()} since \\d\\d:\\d\\d:\\d\\d UTC`));
    console.log(`${name}: ${(err as Error).message}`);
    expect(child.exitCode).toBeNull(); // still holding, still alive: never taken from it
  }, 60_000);
}

describe("SQLite locks carry their holder's liveness", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-lock-liveness-"));
  let n = 0;
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  livenessSuite("SQLite", async () => path.join(dir, `state-${++n}.db`), (f) => SqliteStore.open(f));

  /** A holder text of this process with some fields changed (as another process, boot or host would write it). */
  const forged = (change: Record<string, unknown>) => {
    const text = holderText("forged");
    const h = JSON.parse(text.slice(text.indexOf("{"))) as Record<string, unknown>;
    return `sds-lock ${JSON.stringify({ ...h, ...change })}`;
  };

  test("a pid reused by another process (another start time), a boot that is over, a pid gone: dead; another host or pid namespace: the TTL", async () => {
    const store = await SqliteStore.open(path.join(dir, `state-${++n}.db`));
    try {
      const tenMinutes = 600_000;
      // this very process's pid, but another start time: the holder that had this pid is gone
      expect(await store.tryLock("reused", forged({ start: "1" }), tenMinutes)).toBe(true);
      expect(await store.tryLock("reused", "next", tenMinutes)).toBe(true);
      expect(await store.tryLock("rebooted", forged({ boot: "00000000-0000-0000-0000-000000000000" }), tenMinutes)).toBe(true);
      expect(await store.tryLock("rebooted", "next", tenMinutes)).toBe(true);
      // alive (this process, as it is): kept
      expect(await store.tryLock("alive", forged({}), tenMinutes)).toBe(true);
      expect(await store.tryLock("alive", "next", tenMinutes)).toBe(false);
      // another host, pid gone here: cannot be judged, kept until its TTL
      expect(await store.tryLock("elsewhere", forged({ host: "another-host", pid: 2 ** 22 + 1 }), 100)).toBe(true);
      expect(await store.tryLock("elsewhere", "next", tenMinutes)).toBe(false);
      await new Promise((r) => setTimeout(r, 150));
      expect(await store.tryLock("elsewhere", "next", tenMinutes)).toBe(true);
      // this host and boot, but another pid namespace (another container): its pids are not ours to look up
      expect(await store.tryLock("container", forged({ ns: "pid:[1]", pid: 2 ** 22 + 1 }), tenMinutes)).toBe(true);
      expect(await store.tryLock("container", "next", tenMinutes)).toBe(false);
      // this namespace, pid gone: dead
      expect(await store.tryLock("gone", forged({ pid: 2 ** 22 + 1 }), tenMinutes)).toBe(true);
      expect(await store.tryLock("gone", "next", tenMinutes)).toBe(true);
    } finally {
      await store.close();
    }
  });

  test("a wait that outlasts the notice says so twice: who holds the lock, then how long it took", async () => {
    const file = path.join(dir, `state-${++n}.db`);
    const [a, b] = [await SqliteStore.open(file), await SqliteStore.open(file)];
    try {
      let held!: () => void;
      const holding = new Promise<void>((r) => (held = r));
      const first = withStoreLock(a, "export:slow", { timeoutMs: 10_000, timedOut: () => new Error("timed out") }, async () => {
        held();
        await new Promise((r) => setTimeout(r, 3_300));
      });
      await holding;
      const log: string[] = [];
      await take(b, "export:slow", 10_000, log);
      await first;
      expect(log).toHaveLength(2);
      expect(log[0]).toMatch(new RegExp(`^waiting for lock export:slow \\(3 s so far\\), held by pid ${process.pid} `));
      expect(log[1]).toMatch(/^lock export:slow taken after waiting 3\.\d s$/);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("a live holder renews its lock while it works: a short TTL does not lose a long operation's lock", async () => {
    const file = path.join(dir, `state-${++n}.db`);
    const [a, b] = [await SqliteStore.open(file), await SqliteStore.open(file)];
    try {
      let stolen = false;
      await withStoreLock(a, "long", { timeoutMs: 1_000, ttlMs: 150, timedOut: () => new Error("timed out") }, async () => {
        for (const end = Date.now() + 1_000; Date.now() < end; ) {
          if (await b.tryLock("long", "thief", 60_000)) stolen = true;
          await new Promise((r) => setTimeout(r, 40));
        }
      });
      expect(stolen).toBe(false);
      expect(await b.tryLock("long", "thief", 60_000)).toBe(true); // released at the end
    } finally {
      await a.close();
      await b.close();
    }
  });
});

const pgSkip = postgresSkipReason();
(pgSkip ? describe.skip : describe)("PostgreSQL locks: a SIGKILLed holder's session lock is free at once", () => {
  let cluster: PostgresCluster;
  beforeAll(async () => {
    cluster = await startPostgres();
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });
  livenessSuite("PostgreSQL", () => cluster.createDatabase(), (url) => PostgresStore.open(url));
});
if (pgSkip) test.skip(`PostgreSQL lock liveness skipped: ${pgSkip}`, () => undefined);
