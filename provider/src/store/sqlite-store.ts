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
 *
 * Faults of the file (issue 12). better-sqlite3 waits for a busy lock synchronously, freezing the
 * process; so SQLite's own wait is kept short ({@link BUSY_SLICE_MS}) and a write that finds the
 * database locked is retried with backoff, asynchronously, up to `busyTimeoutMs` in all; then one
 * line names `stateUrl`, the file and, when /proc/locks tells, the process holding it. A damaged
 * file (SQLITE_CORRUPT, SQLITE_NOTADB), a folder this user cannot write and the like are one line
 * naming `stateUrl` and the file ({@link sqliteStateFault}), never a raw SqliteError. The folder
 * is made 0700 one level at a time (never a recursive mkdir: under /proc that spins forever), and
 * the database file 0600 before SQLite opens it (its -wal and -shm take the file's mode).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import Database from "better-sqlite3";
import * as fs from "node:fs";
import * as path from "node:path";
import { makeFolder, makeFolderSync } from "../domain/user-paths";
import { LockTimeoutError, SdsError, UserError } from "../errors";
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

/** SQLite's own (synchronous, event-loop-blocking) wait for a lock, per try; the rest of the wait is async backoff. */
export const BUSY_SLICE_MS = 100;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Whether `err` comes from SQLite. By name and code, not `instanceof`: better-sqlite3's native
 * part keeps the first SqliteError class it was given, so where modules are loaded twice (jest
 * test files in one worker) its errors are instances of another copy.
 */
function isSqliteError(err: unknown): err is Error & { code: string } {
  if (typeof err !== "object" || err === null) return false;
  // Not `instanceof Error` either: an error made in another realm (jest runs each test file in a
  // vm context of its own, and the native part keeps the first class it was given) is no
  // instance of this realm's Error.
  const { code, name } = err as { code?: unknown; name?: unknown };
  return (err instanceof Database.SqliteError || name === "SqliteError") && typeof code === "string" && code.startsWith("SQLITE_");
}

/** Whether `err` is SQLite saying another connection holds the lock it needs. */
function isBusy(err: unknown): boolean {
  return isSqliteError(err) && /^SQLITE_BUSY/.test(err.code);
}

/**
 * Who holds a lock on `file` (or its -wal/-shm), from /proc/locks and /proc/<pid>/comm: e.g.
 * `pid 4242 (sqlite3)`; undefined when unknown (not Linux, an OFD lock, no match).
 */
export function lockHolders(file: string): string | undefined {
  try {
    const inodes = new Set<string>();
    for (const f of [file, `${file}-shm`, `${file}-wal`]) {
      try {
        inodes.add(String(fs.statSync(f).ino));
      } catch {
        // Not there: nothing locks it.
      }
    }
    const pids = new Set<number>();
    for (const line of fs.readFileSync("/proc/locks", "utf8").split("\n")) {
      const f = line.trim().split(/\s+/);
      if (f.includes("->") || f.length < 6) continue;
      const pid = Number(f[4]);
      const ino = f[5].split(":")[2];
      if (pid > 0 && pid !== process.pid && ino !== undefined && inodes.has(ino)) pids.add(pid);
    }
    if (pids.size === 0) return undefined;
    return [...pids]
      .map((pid) => {
        let comm = "";
        try {
          comm = ` (${fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim()})`;
        } catch {
          // Gone, or not ours to read.
        }
        return `pid ${pid}${comm}`;
      })
      .join(", ");
  } catch {
    return undefined;
  }
}

/**
 * The one-line error, naming `stateUrl` and the file, for a fault of the database file; any other
 * error is returned as it is. `action` says what was being done ("open", "make the folder of");
 * errno codes (EACCES, EROFS, …) count only then: in a transaction's `fn` they belong to its own
 * work, not to the state.
 */
export function sqliteStateFault(err: unknown, file: string, action = "use"): unknown {
  if (err instanceof SdsError) return err;
  const sqlite = isSqliteError(err);
  if (!sqlite && !(err instanceof Error)) return err;
  const code = String((err as { code?: unknown }).code ?? "");
  const detail = `${err.message.split("\n")[0]}${code && !err.message.includes(code) ? ` (${code})` : ""}`;
  const errno = !sqlite && action !== "use" ? code : "";
  if (sqlite && /^SQLITE_(CORRUPT|NOTADB)/.test(code)) {
    return new UserError(
      "INVALID_STATE",
      `stateUrl: the state database ${file} is damaged: ${detail}; restore it from a backup (README, "State database: check and backup"); \`sds state check\` tells a sound file from a damaged one`,
      "stateUrl",
      { cause: err },
    );
  }
  if ((sqlite && /^SQLITE_(CANTOPEN|READONLY|PERM|AUTH)/.test(code)) || ["EACCES", "EPERM", "EROFS", "ENOTDIR", "ENOENT", "ELOOP"].includes(errno)) {
    return new UserError("INVALID_INPUT", `stateUrl: cannot ${action} the state ${file}: ${detail}; give this user write access to that folder, or set sds:stateUrl (or SDS_STATE_URL) to a folder it can write`, "stateUrl", { cause: err });
  }
  if ((sqlite && /^SQLITE_(FULL|IOERR)/.test(code)) || ["ENOSPC", "EIO", "ETIMEDOUT"].includes(errno)) {
    return new UserError("INVALID_STATE", `stateUrl: cannot ${action} the state ${file}: ${detail}`, "stateUrl", { cause: err });
  }
  return err;
}

export class SqliteStore extends TableOps<SqliteTables> implements Store {
  private readonly db: Database.Database;
  private readonly tables: SqliteTables;
  /** The end of the queue of transactions (see the locking rule); `waiting` counts what is in it. */
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;
  /** Set in the async context of a running transaction's `fn`, to catch the store used there. */
  private readonly insideTransaction = new AsyncLocalStorage<true>();

  /** How long, in all, an operation waits for another process's lock before it fails. */
  private readonly busyTimeoutMs: number;

  /**
   * Open (and make) the state synchronously: at open, SQLite itself waits up to `openWaitMs`
   * (default `busyTimeoutMs`) for a lock, blocking the process; {@link SqliteStore.open} waits
   * asynchronously instead. `migrateTo`: stop after that migration (tests of one migration on an
   * old state); default all.
   */
  constructor(
    private readonly file: string,
    options: { busyTimeoutMs?: number; migrateTo?: number; openWaitMs?: number } = {},
  ) {
    super();
    this.busyTimeoutMs = options.busyTimeoutMs ?? 10_000;
    const openWaitMs = options.openWaitMs ?? this.busyTimeoutMs;
    let db: Database.Database | undefined;
    try {
      if (file !== ":memory:") {
        try {
          makeFolderSync(path.dirname(file), 0o700);
        } catch (err) {
          throw sqliteStateFault(err, file, "make the folder of");
        }
        createPrivate(file);
      }
      db = new Database(file, { timeout: openWaitMs });
      if (file !== ":memory:") db.pragma("journal_mode = WAL");
      db.pragma("foreign_keys = ON");
      db.pragma("synchronous = NORMAL");
      cacheStatements(db);
      this.db = db;
      this.migrate(options.migrateTo);
      db.pragma(`busy_timeout = ${Math.min(BUSY_SLICE_MS, this.busyTimeoutMs)}`);
    } catch (err) {
      db?.close();
      throw isBusy(err) ? this.busyError(openWaitMs) : sqliteStateFault(err, file, "open");
    }
    this.tables = new SqliteTables(this.db);
  }

  /**
   * Open (and make) the state without blocking the process for long: the folder is made within
   * `folderTimeoutMs` (a hung mount), and a lock held by another process is waited for with
   * backoff, up to `busyTimeoutMs` in all; every fault is one line naming `stateUrl`.
   */
  static async open(file: string, options: { busyTimeoutMs?: number; folderTimeoutMs?: number; migrateTo?: number } = {}): Promise<SqliteStore> {
    const total = options.busyTimeoutMs ?? 10_000;
    if (file !== ":memory:") {
      try {
        await makeFolder(path.dirname(file), { mode: 0o700, timeoutMs: options.folderTimeoutMs ?? 10_000 });
      } catch (err) {
        throw sqliteStateFault(err, file, "make the folder of");
      }
    }
    const deadline = Date.now() + total;
    for (let attempt = 0; ; attempt++) {
      const slice = Math.max(1, Math.min(BUSY_SLICE_MS, deadline - Date.now()));
      try {
        return new SqliteStore(file, { busyTimeoutMs: total, openWaitMs: slice, migrateTo: options.migrateTo });
      } catch (err) {
        if (!(err instanceof LockTimeoutError) || Date.now() >= deadline) throw err instanceof LockTimeoutError ? SqliteStore.busy(file, total) : err;
        await sleep(Math.min(backoffMs(attempt), Math.max(0, deadline - Date.now())));
      }
    }
  }

  /**
   * Apply the migrations not applied yet, each in its own immediate transaction. One that
   * rebuilds tables runs with foreign keys off (SQLite ignores that pragma inside a transaction,
   * and dropping a parent table with them on would delete or refuse its children) and is checked
   * with `foreign_key_check` before it commits.
   */
  private migrate(upTo = Infinity): void {
    this.db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
    // Read first (WAL: no lock): a state already up to date is opened without waiting for another process's write.
    const applied = new Set((this.db.prepare("SELECT version FROM schema_migrations").all() as Row[]).map((r) => Number(r.version)));
    for (const m of migrations.filter((x) => x.version <= upTo && !applied.has(x.version))) {
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
      await this.retryingBusy(() => this.db.exec("BEGIN IMMEDIATE"));
      const tx = new TransactionHandle(this.tables);
      try {
        const out = await this.insideTransaction.run(true, () => fn(tx));
        this.db.exec("COMMIT");
        return out;
      } catch (err) {
        if (this.db.inTransaction) this.db.exec("ROLLBACK");
        this.tables.forgetCache();
        throw sqliteStateFault(err, this.file);
      } finally {
        tx.end();
      }
    });
  }

  /**
   * Run `op` (one statement or one immediate transaction: a busy answer means nothing was done),
   * again with backoff while another process holds the lock, up to `busyTimeoutMs` in all.
   */
  private async retryingBusy<R>(op: () => R | Promise<R>): Promise<R> {
    const deadline = Date.now() + this.busyTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (!isBusy(err)) throw sqliteStateFault(err, this.file);
        if (Date.now() >= deadline) throw this.busyError(this.busyTimeoutMs);
        await sleep(Math.min(backoffMs(attempt), Math.max(0, deadline - Date.now())));
      }
    }
  }

  private busyError(waitedMs: number): LockTimeoutError {
    return SqliteStore.busy(this.file, waitedMs);
  }

  private static busy(file: string, waitedMs: number): LockTimeoutError {
    const holder = file === ":memory:" ? undefined : lockHolders(file);
    return new LockTimeoutError("stateUrl", waitedMs, {
      holder,
      message: `stateUrl: the state database ${file} stayed locked by ${holder ?? "another process"} for ${(waitedMs / 1000).toFixed(1)} s; let it finish (another pulumi up or sds command, or a sqlite3 shell left in a transaction) and run again`,
    });
  }

  tryLock(name: string, holder: string, ttlMs: number): Promise<boolean> {
    return this.run((t) => this.db.transaction(() => t.tryLock(name, holder, ttlMs)).immediate());
  }

  unlock(name: string, holder: string): Promise<void> {
    return this.run((t) => t.unlock(name, holder));
  }

  lockHolder(name: string): Promise<string | undefined> {
    return this.run((t) => t.lockHolder(name));
  }

  async close(): Promise<void> {
    this.assertOutsideTransaction();
    await this.queued(() => this.db.close());
  }

  /** One operation outside any transaction: at once when the queue is empty, else behind it. */
  protected async run<R>(op: (t: SqliteTables) => R | Promise<R>): Promise<R> {
    this.assertOutsideTransaction();
    if (this.waiting === 0) return this.retryingBusy(() => op(this.tables));
    return this.queued(() => this.retryingBusy(() => op(this.tables)));
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

/** Why: 25 ms doubling to 1 s: a short lock is caught at once, a long one costs few tries. */
function backoffMs(attempt: number): number {
  return Math.min(1000, 25 * 2 ** attempt);
}

/** Make the database file 0600 when it does not exist yet: SQLite gives its -wal and -shm the same mode. */
function createPrivate(file: string): void {
  try {
    fs.closeSync(fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw sqliteStateFault(err, file, "make");
  }
}

/** What `sds state check` found: `ok` false when the file is missing, damaged or cannot be read; `line` says it. */
export interface StateCheck {
  ok: boolean;
  line: string;
}

/**
 * Check a SQLite state without changing it: it exists, SQLite can read every page
 * (`PRAGMA integrity_check`), and its migrations are ones this sds knows. Opened read-only; a
 * damaged file is reported, never repaired.
 */
export function checkSqliteState(file: string): StateCheck {
  if (!fs.existsSync(file)) return { ok: false, line: `${file}: no state there (a state is made by the first pulumi up that creates something)` };
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true, timeout: 5_000 });
    const problems = (db.pragma("integrity_check") as Row[]).map((r) => String(Object.values(r)[0]));
    if (problems.length !== 1 || problems[0] !== "ok") {
      return { ok: false, line: `${file}: damaged: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more problem(s))` : ""}; restore it from a backup` };
    }
    const hasTable = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get();
    if (!hasTable) return { ok: false, line: `${file}: a sound SQLite file, but no sds state in it (no schema_migrations table)` };
    const applied = (db.prepare("SELECT version FROM schema_migrations ORDER BY version").all() as Row[]).map((r) => Number(r.version));
    const known = migrations.map((m) => m.version);
    const unknown = applied.filter((v) => !known.includes(v));
    if (unknown.length > 0) return { ok: false, line: `${file}: sound, but made by a newer sds (migration(s) ${unknown.join(", ")} unknown to this one); upgrade sds` };
    const pending = known.filter((v) => !applied.includes(v)).length;
    const stateId = db.prepare("SELECT value FROM state_info WHERE key = 'state_id'").get() as Row | undefined;
    return { ok: true, line: `${file}: ok (integrity_check ok; ${applied.length} migration(s) applied${pending ? `, ${pending} to apply at the next run` : ""}; state id ${stateId ? String(stateId.value) : "none yet"})` };
  } catch (err) {
    const code = String((err as { code?: unknown }).code ?? "");
    if (/^SQLITE_(CORRUPT|NOTADB)/.test(code)) return { ok: false, line: `${file}: damaged: ${(err as Error).message} (${code}); restore it from a backup` };
    const fault = sqliteStateFault(err, file, "read");
    return { ok: false, line: fault instanceof Error ? fault.message.replace(/^stateUrl: /, "") : String(fault) };
  } finally {
    db?.close();
  }
}

/** How many distinct SQL texts a state keeps compiled (the store's own are a few dozen). */
const STATEMENT_CACHE_SIZE = 256;

/**
 * Each SQL text compiled once per connection. Why: better-sqlite3 compiles on every `prepare()`,
 * and the store prepares its few fixed queries on every call: compiling was about 15 % of the
 * provider's CPU in a 100-volume `pulumi up` (issue 14). Only `prepare(sql)` is cached:
 * better-sqlite3's own calls with more arguments (`pragma()`, which turns a statement to pluck
 * mode) pass through. SQLite re-compiles a cached statement itself after a schema change.
 */
function cacheStatements(db: Database.Database): void {
  const prepare = db.prepare.bind(db) as (sql: string, ...more: unknown[]) => Database.Statement;
  const compiled = new Map<string, Database.Statement>();
  db.prepare = ((sql: string, ...more: unknown[]) => {
    if (more.length > 0) return prepare(sql, ...more);
    let s = compiled.get(sql);
    if (!s) {
      if (compiled.size >= STATEMENT_CACHE_SIZE) compiled.clear();
      s = prepare(sql);
      compiled.set(sql, s);
    }
    return s;
  }) as Database.Database["prepare"];
}
