/**
 * {@link Store} on PostgreSQL (node-postgres): a small pool of connections to a `postgres://`
 * URL (its sslmode and other parameters are node-postgres's to honour), migrations applied at
 * open (`PostgresStore.open`).
 *
 * Locking rule.
 * - A transaction runs on a client of its own taken from the pool: BEGIN, then a
 *   transaction-scoped advisory lock on one fixed key ({@link WRITE_LOCK}), held until COMMIT or
 *   ROLLBACK. Every write transaction of every process on this database takes it first, so they
 *   run one at a time, as SQLite's BEGIN IMMEDIATE makes them: a placement's read-decide-write
 *   never interleaves with another's. The lock is scoped to the database (advisory locks are),
 *   and dies with the session, so a runner that died mid-transaction holds nothing.
 * - Transactions of one store also queue in process (first come, first served) before they take
 *   a client: they would wait for each other at the advisory lock anyway, and queuing here keeps
 *   the pool free for reads and their order the order they were asked for.
 * - Work outside a transaction runs on any pooled client at once and sees committed rows only
 *   (READ COMMITTED): no transaction half done.
 * - Inside a transaction, work goes through the `tx` handle (its client); using the store itself
 *   there is a bug and throws, as in SqliteStore (there it would wait for itself forever; here it
 *   would run outside the transaction and miss its writes). The handle is dead once it ended.
 * - Named locks (`tryLock`, the export and device locks of attachments) are session advisory
 *   locks (class {@link NAMED_LOCK_CLASS}, object hashtext(name)) on one connection of their
 *   own, the lock session, opened at the first `tryLock` and ended by `close()`. They live as long
 *   as that session, not a TTL (`ttlMs` is ignored): a runner killed while holding one (kill -9,
 *   OOM) frees it the moment its connection closes, instead of blocking every other runner until
 *   the TTL ran out. A machine that vanishes without closing its connection is noticed by the
 *   server's TCP keepalive, which the lock session sets to about a minute.
 * - PostgreSQL lets a session take an advisory lock it holds again (it counts levels), so the
 *   store keeps which holder of this process has each name: another holder here is refused as
 *   one in another process would be; the same holder taking it again gets true without a second
 *   level, and one unlock releases it. The name is reserved before the query is sent, so two
 *   holders here never both ask the server (both would win on one session).
 * - If the lock session is lost (the server restarted, the network failed), every lock it held
 *   is gone: the store forgets them, reports them (`onLockLost`), and the next `tryLock` opens a
 *   new session. A holder's `unlock` of a lock lost that way does nothing. An error of the lock
 *   session other than a plain statement error ends it (and so frees what it held) rather than
 *   leave a lock held that no holder knows of.
 * - Session locks need a real session: stateUrl must reach PostgreSQL directly or through a
 *   pooler in session mode (PgBouncer's transaction mode would hand the lock to strangers).
 *   The table `locks` of the first migrations is no longer used.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import * as os from "node:os";
import pg from "pg";
import { SdsError, UserError } from "../errors";
import { postgresMigrations } from "./postgres-migrations";
import { PostgresTables } from "./postgres-tables";
import type { Store, StoreOps } from "./store";
import { TableOps, TransactionHandle } from "./store-ops";

/** Advisory lock keys (two int4: class, object): "sds\0" and what it guards. */
const LOCK_CLASS = 0x73647300;
/** Held by every write transaction, till it ends. */
const WRITE_LOCK = 1;
/** Held while migrations are checked and applied, so two processes starting at once do not both migrate. */
const MIGRATE_LOCK = 2;
/** The lock session's application name (unless stateUrl sets one): who holds a lock, for another runner's messages. */
const LOCK_SESSION_NAME = `sds-locks pid ${process.pid} host ${os.hostname()}`.slice(0, 63);
/** The class of the named locks (`tryLock`): "sdsL"; the object is hashtext(name). */
const NAMED_LOCK_CLASS = 0x7364734c;
/**
 * Set on the lock session. The keepalives make the server notice within about a minute that a
 * runner's machine vanished without closing the connection (the default is hours), and free its
 * locks; an idle_session_timeout set on the database (PostgreSQL 14+) must not end a session
 * that waits, idle, holding locks.
 */
const LOCK_SESSION_SETUP = [
  "SET tcp_keepalives_idle = 30",
  "SET tcp_keepalives_interval = 10",
  "SET tcp_keepalives_count = 3",
  "SELECT set_config('idle_session_timeout', '0', false) WHERE current_setting('server_version_num')::int >= 140000",
].join("; ");

/** PostgreSQL's type OID of int8 (BIGINT, and SUM of integers). */
const INT8_OID = 20;

// Why: node-postgres returns int8 as a string (it may exceed 2^53); our int8 values (byte
// counts, sums of GiB, epoch milliseconds) are far below that, and the rows want numbers.
const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === INT8_OID && format !== "binary" ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** `url` with its password (if any) replaced by `***`: what error messages may print. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, "//$1:***@");
  }
}

/** Options of {@link PostgresStore.open}. */
export interface PostgresStoreOptions {
  /** The pool's size (default 4: one transaction at a time per store, the rest for reads); the lock session is one more connection. */
  maxConnections?: number;
  /** How long a new connection (pooled, or the lock session) may take; default 10 s. */
  connectTimeoutMs?: number;
  /** Stop after that migration (tests). */
  migrateTo?: number;
  /**
   * Told, in one line naming stateUrl (password hidden) and the locks, when the lock session was
   * lost while holding locks: their holders no longer exclude anyone. Default: a line on stderr.
   */
  onLockLost?: (message: string) => void;
}

export class PostgresStore extends TableOps<PostgresTables> implements Store {
  private readonly tables: PostgresTables;
  /** The named locks, on the lock session (see the locking rule). */
  private readonly locks: SessionLocks;
  /** The end of the in-process queue of transactions (see the locking rule). */
  private tail: Promise<unknown> = Promise.resolve();
  /** Set in the async context of a running transaction's `fn`, to catch the store used there. */
  private readonly insideTransaction = new AsyncLocalStorage<true>();

  private constructor(
    private readonly pool: pg.Pool,
    private readonly shownUrl: string,
    lockSession: pg.ClientConfig,
    onLockLost: (message: string) => void,
  ) {
    super();
    this.tables = new PostgresTables(pool);
    this.locks = new SessionLocks(lockSession, (what, err) => this.fault(what, err), onLockLost);
  }

  /**
   * Connect to `url` (`postgres://user:password@host:port/db?sslmode=…`) and apply the
   * migrations not applied yet (see {@link PostgresStoreOptions}).
   */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    if (!/^postgres(ql)?:\/\//.test(url)) throw new UserError("INVALID_INPUT", `stateUrl: "${redactUrl(url)}" is not postgres://…`, "stateUrl");
    const connectionTimeoutMillis = options.connectTimeoutMs ?? 10_000;
    const pool = new pg.Pool({ connectionString: url, max: options.maxConnections ?? 4, connectionTimeoutMillis, types });
    // Why: an idle pooled client whose server went away emits 'error'; unheard, it would end the
    // process. The pool drops that client, and the next query reports the fault.
    pool.on("error", () => undefined);
    const lockSession: pg.ClientConfig = { connectionString: url, connectionTimeoutMillis, keepAlive: true, fallback_application_name: LOCK_SESSION_NAME };
    const onLockLost = options.onLockLost ?? ((line: string) => void process.stderr.write(`sds: ${line}\n`));
    const store = new PostgresStore(pool, redactUrl(url), lockSession, onLockLost);
    try {
      await store.migrate(options.migrateTo);
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw store.fault("cannot open the PostgreSQL state", err);
    }
    return store;
  }

  /** The migration versions applied, for tests and `sds status`. */
  async appliedMigrations(): Promise<number[]> {
    const { rows } = await this.pool.query("SELECT version FROM schema_migrations ORDER BY version");
    return rows.map((r: { version: number }) => r.version);
  }

  async transaction<T>(fn: (tx: StoreOps) => Promise<T>): Promise<T> {
    this.assertOutsideTransaction();
    const result = this.tail.then(() => this.runTransaction(fn));
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Take lock `name` for `holder` on the lock session; `ttlMs` is ignored: the session is the lifetime (see the locking rule). */
  async tryLock(name: string, holder: string, _ttlMs: number): Promise<boolean> {
    this.assertOutsideTransaction();
    return this.locks.tryLock(name, holder);
  }

  async unlock(name: string, holder: string): Promise<void> {
    this.assertOutsideTransaction();
    return this.locks.unlock(name, holder);
  }

  /**
   * Who holds lock `name`: this process's holder text when one of its holders has it, else the
   * session that holds the advisory lock, as the server knows it (its application name says the
   * pid and host of the sds process that opened it; see LOCK_SESSION_NAME).
   */
  async lockHolder(name: string): Promise<string | undefined> {
    this.assertOutsideTransaction();
    const mine = this.locks.holderOf(name);
    if (mine !== undefined) return mine;
    const { rows } = await this.pool.query(
      `SELECT a.application_name AS app, a.pid, a.backend_start AS since FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = $1::bigint::oid AND l.objid = (hashtext($2)::bigint & 4294967295)::oid AND l.objsubid = 2`,
      [NAMED_LOCK_CLASS, name],
    );
    const r = rows[0] as { app: string; pid: number; since: Date | string | null } | undefined;
    if (!r) return undefined;
    const since = r.since ? /T(\d\d:\d\d:\d\d)/.exec(new Date(r.since).toISOString())?.[1] : undefined;
    const session = `PostgreSQL session ${r.pid}${since ? ` connected since ${since} UTC` : ""}`;
    const ours = /^sds-locks pid (\d+) host (\S+)$/.exec(r.app);
    return ours ? `pid ${ours[1]} on host ${ours[2]} (its ${session})` : `${session}${r.app ? ` (${r.app})` : ""}`;
  }

  /** Wait for queued transactions, end the lock session (its locks go with it) and the pool. */
  async close(): Promise<void> {
    this.assertOutsideTransaction();
    await this.tail;
    await this.locks.close();
    await this.pool.end();
  }

  protected async run<R>(op: (t: PostgresTables) => R | Promise<R>): Promise<R> {
    this.assertOutsideTransaction();
    try {
      return await op(this.tables);
    } catch (err) {
      // What the database refused (a constraint, a missing row) is the caller's to see as it is;
      // anything else is the connection failing, which names stateUrl.
      if (err instanceof pg.DatabaseError || err instanceof SdsError) throw err;
      throw this.fault("lost the PostgreSQL state", err);
    }
  }

  private async runTransaction<T>(fn: (tx: StoreOps) => Promise<T>): Promise<T> {
    const client = await this.connect();
    const tx = new TransactionHandle(new PostgresTables(client));
    let broken: unknown;
    try {
      await client.query("BEGIN");
      await client.query("SELECT pg_advisory_xact_lock($1, $2)", [LOCK_CLASS, WRITE_LOCK]);
      const out = await this.insideTransaction.run(true, () => fn(tx));
      await client.query("COMMIT");
      return out;
    } catch (err) {
      // A failed ROLLBACK means the connection is gone or confused: drop it rather than pool it.
      await client.query("ROLLBACK").catch((e: unknown) => (broken = e));
      if (err instanceof pg.DatabaseError || err instanceof SdsError || !(err instanceof Error)) throw err;
      // Not the database's refusal and not ours: the connection failed under the transaction.
      throw broken !== undefined ? this.fault("lost the PostgreSQL state", err) : err;
    } finally {
      tx.end();
      client.release(broken instanceof Error ? broken : undefined);
    }
  }

  /**
   * Apply the migrations not applied yet, each in its own transaction, holding a session
   * advisory lock meanwhile: a second process starting at once waits, then finds them applied.
   */
  private async migrate(upTo = Infinity): Promise<void> {
    const client = await this.connect();
    let broken: unknown;
    try {
      await client.query("SELECT pg_advisory_lock($1, $2)", [LOCK_CLASS, MIGRATE_LOCK]);
      try {
        await client.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
        const { rows } = await client.query("SELECT version FROM schema_migrations");
        const done = new Set(rows.map((r: { version: number }) => r.version));
        for (const m of postgresMigrations.filter((x) => x.version <= upTo && !done.has(x.version))) {
          await client.query("BEGIN");
          try {
            await client.query(m.sql);
            await client.query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)", [m.version, m.name, new Date().toISOString()]);
            await client.query("COMMIT");
          } catch (err) {
            await client.query("ROLLBACK").catch(() => undefined);
            throw new Error(`migration ${m.version} (${m.name}) failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
          }
        }
      } finally {
        await client.query("SELECT pg_advisory_unlock($1, $2)", [LOCK_CLASS, MIGRATE_LOCK]).catch((e: unknown) => (broken = e));
      }
    } finally {
      client.release(broken instanceof Error ? broken : undefined);
    }
  }

  /** A pooled client; a failure to get one (server down, bad password, TLS) names `stateUrl`. */
  private async connect(): Promise<pg.PoolClient> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw this.fault("cannot connect to the PostgreSQL state", err);
    }
    // Why: the pool stops listening for a client's 'error' while it is checked out; a server
    // that dies under a transaction then emits one nobody hears, which ends the process (the
    // engine reports "exited prematurely" instead of an error naming stateUrl). The query in
    // flight fails on its own, with the error the transaction reports.
    const ignore = () => undefined;
    client.on("error", ignore);
    const release = client.release.bind(client);
    client.release = (err?: Error | boolean) => {
      client.off("error", ignore);
      release(err);
    };
    return client;
  }

  /** An error that names `stateUrl` and its URL without the password; the driver's error is the cause. */
  private fault(what: string, err: unknown): UserError {
    const detail = err instanceof Error ? err.message : String(err);
    return new UserError("INVALID_INPUT", `stateUrl: ${what} at ${this.shownUrl}: ${detail}`, "stateUrl", { cause: err });
  }

  private assertOutsideTransaction(): void {
    if (this.insideTransaction.getStore()) {
      throw new Error("sds internal error: the store was used inside one of its own transactions (it would miss the transaction's writes); use the transaction's handle");
    }
  }
}

/** A lock this process's holders have, or one being asked for (`taken` false). */
interface HeldLock {
  holder: string;
  /** The lock session it was asked on. */
  session?: pg.Client;
  taken: boolean;
}

/**
 * The named locks of one store: session advisory locks on a connection of their own, and which
 * holder of this process has each name (see the locking rule of {@link PostgresStore}).
 */
class SessionLocks {
  private session?: pg.Client;
  private opening?: Promise<pg.Client>;
  private readonly held = new Map<string, HeldLock>();
  private closed = false;

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly fault: (what: string, err: unknown) => UserError,
    private readonly onLost: (message: string) => void,
  ) {}

  /** The holder of this process that has lock `name` (taken), if any. */
  holderOf(name: string): string | undefined {
    const e = this.held.get(name);
    return e?.taken ? e.holder : undefined;
  }

  async tryLock(name: string, holder: string): Promise<boolean> {
    if (this.closed) throw new Error("sds internal error: a PostgreSQL store was used after close()");
    const had = this.held.get(name);
    if (had) return had.holder === holder;
    const entry: HeldLock = { holder, taken: false };
    this.held.set(name, entry);
    let taken: boolean;
    let session: pg.Client;
    try {
      session = entry.session = await this.connect();
      taken = await new PostgresTables(session).trySessionLock(NAMED_LOCK_CLASS, name);
    } catch (err) {
      if (this.held.get(name) === entry) this.held.delete(name);
      throw this.failed(entry.session, err);
    }
    if (this.held.get(name) !== entry) {
      // The session was lost meanwhile (the lock with it), or the holder let go before it knew it
      // had the lock: give back what the server granted, if the session still lives.
      if (taken && session === this.session) await this.release(session, name);
      return false;
    }
    if (taken) entry.taken = true;
    else this.held.delete(name);
    return taken;
  }

  async unlock(name: string, holder: string): Promise<void> {
    const h = this.held.get(name);
    if (!h || h.holder !== holder) return;
    this.held.delete(name);
    // Not taken yet: its tryLock sees the entry gone and gives the lock back. On a session since
    // lost: the lock went with it.
    if (h.taken && h.session && h.session === this.session) await this.release(h.session, name);
  }

  /** End the lock session: the server frees every lock it held. */
  async close(): Promise<void> {
    this.closed = true;
    this.held.clear();
    const session = this.session ?? (await this.opening?.catch(() => undefined));
    this.session = undefined;
    await session?.end().catch(() => undefined);
  }

  /** Why: a release that fails leaves the lock's state unknown; ending the session is the one sure way to free it. */
  private async release(session: pg.Client, name: string): Promise<void> {
    try {
      await new PostgresTables(session).releaseSessionLock(NAMED_LOCK_CLASS, name);
    } catch (err) {
      this.drop(session, err);
    }
  }

  /** The lock session, opened (and set up) when there is none. */
  private connect(): Promise<pg.Client> {
    if (this.session) return Promise.resolve(this.session);
    this.opening ??= (async () => {
      const c = new pg.Client(this.config);
      // Why: a session that fails while idle emits 'error' (unheard, it would end the process); both it and 'end' mean its locks are gone.
      c.on("error", (err) => this.drop(c, err));
      c.on("end", () => this.drop(c, new Error("the connection was closed")));
      try {
        await c.connect();
        await c.query(LOCK_SESSION_SETUP);
      } catch (err) {
        await c.end().catch(() => undefined);
        throw this.fault("cannot connect to the PostgreSQL state", err);
      }
      if (this.closed) {
        await c.end().catch(() => undefined);
        throw new Error("sds internal error: a PostgreSQL store was used after close()");
      }
      this.session = c;
      return c;
    })().finally(() => (this.opening = undefined));
    return this.opening;
  }

  /**
   * What a failed lock query throws. A statement's own error (severity ERROR) leaves the session
   * as it was and is the caller's to see; anything else (the connection failed, the server ended
   * the session) ends the session, so no lock stays held that no holder knows of.
   */
  private failed(session: pg.Client | undefined, err: unknown): unknown {
    if (err instanceof UserError) return err;
    if (err instanceof pg.DatabaseError && err.severity === "ERROR") return err;
    if (session) this.drop(session, err);
    return this.fault("lost the PostgreSQL lock session", err);
  }

  /** Forget session `c` and every lock it held, end it, and report the locks lost (once per session). */
  private drop(c: pg.Client, err: unknown): void {
    if (this.session !== c) return;
    this.session = undefined;
    const lost: string[] = [];
    for (const [name, h] of this.held) {
      if (h.session !== c) continue;
      this.held.delete(name);
      if (h.taken) lost.push(name);
    }
    c.end().catch(() => undefined);
    if (lost.length > 0 && !this.closed) {
      this.onLost(`${this.fault("lost the PostgreSQL lock session", err).message}; the locks it held are free for others now, though their work may still run: ${lost.join(", ")}`);
    }
  }
}
