/**
 * {@link Store} on SQLite (better-sqlite3): WAL journal, a busy timeout so concurrent provider
 * processes wait instead of failing, foreign keys on, migrations applied at open.
 *
 * Locking rule. better-sqlite3 is synchronous and this store has ONE connection, so an async
 * transaction (BEGIN IMMEDIATE … awaits … COMMIT) would let any other async flow of this
 * process run its statements on that connection in the middle of it: they would read the
 * transaction's uncommitted rows and their writes would commit or roll back with it. Hence:
 * - transactions of one store run one at a time, through an in-process queue;
 * - while a transaction is open or waiting, every other operation of the store waits in the same
 *   queue behind it, so nothing outside a transaction sees or rides a half-done one; when the
 *   queue is empty an operation runs at once (one synchronous statement is atomic anyway);
 * - inside a transaction, work goes through the `tx` handle, which bypasses the queue; using the
 *   store itself there would wait for itself forever, so it throws (a bug) instead;
 * - other processes are kept out by SQLite itself: BEGIN IMMEDIATE takes the write lock, and
 *   their writes wait up to the busy timeout. Reads never wait (WAL).
 * A second connection per transaction was the alternative; it fails for `:memory:` databases
 * and, as better-sqlite3 waits for a busy lock synchronously, a write outside the transaction
 * would block the very event loop the transaction needs to finish.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import Database from "better-sqlite3";
import * as fs from "node:fs";
import * as path from "node:path";
import { UserError } from "../errors";
import { migrations } from "./migrations";
import type { Row } from "./sqlite-rows";
import { SqliteTables } from "./sqlite-tables";
import type { Store, StoreOps } from "./store";
import { TableOps, TransactionHandle } from "./store-ops";

/** Parse `sqlite:<path>` (relative paths against `baseDir`). Other schemes are not built yet. */
export function sqlitePathFromUrl(url: string, baseDir: string): string {
  if (url.startsWith("sqlite:")) {
    const p = url.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
    if (!p) throw new UserError("INVALID_INPUT", `stateUrl: "${url}" names no file`, "stateUrl");
    return p === ":memory:" ? p : path.resolve(baseDir, p);
  }
  if (/^postgres(ql)?:\/\//.test(url)) {
    throw new UserError("NOT_AVAILABLE_YET", `stateUrl: postgres state is not available yet; use sqlite:<path>`, "stateUrl");
  }
  throw new UserError("INVALID_INPUT", `stateUrl: "${url}" is not sqlite:<path>`, "stateUrl");
}

export class SqliteStore extends TableOps<SqliteTables> implements Store {
  private readonly db: Database.Database;
  private readonly tables: SqliteTables;
  /** The end of the queue of transactions (see the locking rule); `waiting` counts what is in it. */
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;
  /** Set in the async context of a running transaction's `fn`, to catch the store used there. */
  private readonly insideTransaction = new AsyncLocalStorage<true>();

  /** `migrateTo`: stop after that migration (tests of one migration on an old state); default all. */
  constructor(file: string, options: { busyTimeoutMs?: number; migrateTo?: number } = {}) {
    super();
    if (file !== ":memory:") fs.mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file, { timeout: options.busyTimeoutMs ?? 15_000 });
    if (file !== ":memory:") this.db.pragma("journal_mode = WAL");
    this.db.pragma("foreign_keys = ON");
    this.db.pragma("synchronous = NORMAL");
    this.migrate(options.migrateTo);
    this.tables = new SqliteTables(this.db);
  }

  /**
   * Apply the migrations not applied yet, each in its own immediate transaction. One that
   * rebuilds tables runs with foreign keys off (SQLite ignores that pragma inside a transaction,
   * and dropping a parent table with them on would delete or refuse its children) and is checked
   * with `foreign_key_check` before it commits.
   */
  private migrate(upTo = Infinity): void {
    this.db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
    for (const m of migrations.filter((x) => x.version <= upTo)) {
      if (m.rebuildsTables) this.db.pragma("foreign_keys = OFF");
      try {
        this.db
          .transaction(() => {
            const done = this.db.prepare("SELECT 1 FROM schema_migrations WHERE version = ?").get(m.version);
            if (done) return;
            this.db.exec(m.sql);
            const broken = m.rebuildsTables ? (this.db.pragma("foreign_key_check") as Row[]) : [];
            if (broken.length > 0) throw new Error(`sds internal error: migration ${m.version} (${m.name}) breaks foreign keys: ${JSON.stringify(broken.slice(0, 3))}`);
            this.db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)").run(m.version, m.name, new Date().toISOString());
          })
          .immediate();
      } finally {
        if (m.rebuildsTables) this.db.pragma("foreign_keys = ON");
      }
    }
  }

  /** The migration versions applied, for tests and `sds status`. */
  appliedMigrations(): number[] {
    return (this.db.prepare("SELECT version FROM schema_migrations ORDER BY version").all() as Row[]).map((r) => r.version as number);
  }

  async transaction<T>(fn: (tx: StoreOps) => Promise<T>): Promise<T> {
    this.assertOutsideTransaction();
    return this.queued(async () => {
      const tx = new TransactionHandle(this.tables);
      this.db.exec("BEGIN IMMEDIATE");
      try {
        const out = await this.insideTransaction.run(true, () => fn(tx));
        this.db.exec("COMMIT");
        return out;
      } catch (err) {
        if (this.db.inTransaction) this.db.exec("ROLLBACK");
        this.tables.forgetCache();
        throw err;
      } finally {
        tx.end();
      }
    });
  }

  tryLock(name: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.run((t) => this.db.transaction(() => t.tryLock(name, holder, ttlMs)).immediate());
  }

  unlock(name: string, holder: string): Promise<void> {
    return this.run((t) => t.unlock(name, holder));
  }

  async close(): Promise<void> {
    this.assertOutsideTransaction();
    await this.queued(() => this.db.close());
  }

  /** One operation outside any transaction: at once when the queue is empty, else behind it. */
  protected async run<R>(op: (t: SqliteTables) => R | Promise<R>): Promise<R> {
    this.assertOutsideTransaction();
    if (this.waiting === 0) return op(this.tables);
    return this.queued(() => op(this.tables));
  }

  /** Run `fn` alone on the connection: after everything queued before it, before anything queued after. */
  private queued<R>(fn: () => R | Promise<R>): Promise<R> {
    this.waiting++;
    const result = this.tail.then(fn).finally(() => this.waiting--);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private assertOutsideTransaction(): void {
    if (this.insideTransaction.getStore()) {
      throw new Error("sds internal error: the store was used inside one of its own transactions (it would wait for itself); use the transaction's handle");
    }
  }
}
