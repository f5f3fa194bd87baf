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
 * - Locks (`tryLock`) are rows, taken by one atomic upsert (postgres-tables.ts), not advisory
 *   locks: they must outlive the session and expire with their TTL, as SQLite's do.
 */
import { AsyncLocalStorage } from "node:async_hooks";
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

export class PostgresStore extends TableOps<PostgresTables> implements Store {
  private readonly tables: PostgresTables;
  /** The end of the in-process queue of transactions (see the locking rule). */
  private tail: Promise<unknown> = Promise.resolve();
  /** Set in the async context of a running transaction's `fn`, to catch the store used there. */
  private readonly insideTransaction = new AsyncLocalStorage<true>();

  private constructor(
    private readonly pool: pg.Pool,
    private readonly shownUrl: string,
  ) {
    super();
    this.tables = new PostgresTables(pool);
  }

  /**
   * Connect to `url` (`postgres://user:password@host:port/db?sslmode=…`) and apply the
   * migrations not applied yet. `maxConnections`: the pool's size (default 4: one transaction at
   * a time per store, the rest for reads). `migrateTo`: stop after that migration (tests).
   */
  static async open(url: string, options: { maxConnections?: number; connectTimeoutMs?: number; migrateTo?: number } = {}): Promise<PostgresStore> {
    if (!/^postgres(ql)?:\/\//.test(url)) throw new UserError("INVALID_INPUT", `stateUrl: "${redactUrl(url)}" is not postgres://…`, "stateUrl");
    const pool = new pg.Pool({ connectionString: url, max: options.maxConnections ?? 4, connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000, types });
    // Why: an idle pooled client whose server went away emits 'error'; unheard, it would end the
    // process. The pool drops that client, and the next query reports the fault.
    pool.on("error", () => undefined);
    const store = new PostgresStore(pool, redactUrl(url));
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

  tryLock(name: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.run((t) => t.tryLock(name, holder, ttlMs));
  }

  unlock(name: string, holder: string): Promise<void> {
    return this.run((t) => t.unlock(name, holder));
  }

  async close(): Promise<void> {
    this.assertOutsideTransaction();
    await this.tail;
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
      throw err;
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
    const client = await this.pool.connect();
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
    try {
      return await this.pool.connect();
    } catch (err) {
      throw this.fault("cannot connect to the PostgreSQL state", err);
    }
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
