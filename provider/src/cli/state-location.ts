/**
 * Where a state is, as the operator commands are told (--state, --from, --to, the stack's
 * sds:stateUrl, SDS_STATE_URL, the project's default), and how they look at one without making
 * it: a command that reads never creates an empty state (a SQLite file must exist; a PostgreSQL
 * database must hold sds's tables), `state migrate`'s destination excepted.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import pg from "pg";
import { isProjectDir, readStackConfig } from "../compose/stack-config";
import { UserError, type UserErrorCode } from "../errors";
import { PostgresStore, redactUrl } from "../store/postgres-store";
import { postgresMigrations } from "../store/postgres-migrations";
import { type StateCheck, SqliteStore, sqlitePathFromUrl } from "../store/sqlite-store";
import type { Store } from "../store/store";
import { openStackSecrets } from "./stack-secrets";

/** Where a state is, as `sds state migrate` was told; `shown` is what may be printed (no password). */
export type StateLocation = { flag: "--from" | "--to" | "--state"; url: string; shown: string } & ({ kind: "sqlite"; file: string } | { kind: "postgres" });

/** Parse a state URL given as `flag` (one line naming the flag when it is not one). */
export function locateState(flag: StateLocation["flag"], url: string, projectDir: string): StateLocation {
  if (/^postgres(ql)?:\/\//.test(url)) return { flag, url, shown: redactUrl(url), kind: "postgres" };
  if (!url.startsWith("sqlite:")) throw new UserError("INVALID_INPUT", `${flag}: "${redactUrl(url)}" is neither sqlite:<path> nor postgres://…`, flag.slice(2));
  const file = namingFlag(flag, () => sqlitePathFromUrl(url, projectDir));
  if (file === ":memory:") throw new UserError("INVALID_INPUT", `${flag}: sqlite::memory: is no state to migrate from or to; name a file`, flag.slice(2));
  return { flag, url, shown: file, kind: "sqlite", file };
}

/** Why: the stores' errors name `stateUrl`; here the user typed --from or --to, so name that. */
export function namingFlag<T>(flag: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw renamed(flag, err);
  }
}

function renamed(flag: string, err: unknown): unknown {
  if (err instanceof UserError) return new UserError(err.code as UserErrorCode, err.message.replace(/^stateUrl:/, `${flag}:`), flag.slice(2), { cause: err });
  return err;
}

/** Whether two locations are one state (the same file, or the same database on the same server). */
export function sameState(a: StateLocation, b: StateLocation): boolean {
  if (a.kind === "sqlite" && b.kind === "sqlite") {
    const real = (f: string) => (fs.existsSync(f) ? fs.realpathSync(f) : f);
    return real(a.file) === real(b.file);
  }
  if (a.kind === "postgres" && b.kind === "postgres") {
    const key = (u: string) => {
      const x = new URL(u);
      return `${x.hostname}:${x.port || "5432"}${x.pathname}`;
    };
    try {
      return key(a.url) === key(b.url);
    } catch {
      return a.url === b.url;
    }
  }
  return false;
}

/** Why: opening a PostgresStore makes its tables; a source database without them is a wrong URL, never an empty state to copy. */
export async function assertPostgresHoldsState(loc: StateLocation): Promise<void> {
  const client = new pg.Client({ connectionString: loc.url, connectionTimeoutMillis: 10_000 });
  client.on("error", () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query("SELECT to_regclass('state_info') IS NOT NULL AS present");
    if (!rows[0]?.present) throw new UserError("NOT_FOUND", `${loc.flag}: no sds state in the database at ${loc.shown}; name the database the stack used (its sds:stateUrl)`, loc.flag.slice(2));
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError("INVALID_INPUT", `${loc.flag}: cannot connect to the PostgreSQL state at ${loc.shown}: ${err instanceof Error ? err.message : String(err)}`, loc.flag.slice(2), { cause: err });
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Open the store at `loc`; any failure is one line naming its flag. */
export async function openState(loc: StateLocation): Promise<Store> {
  try {
    return loc.kind === "postgres" ? await PostgresStore.open(loc.url) : new SqliteStore(loc.file);
  } catch (err) {
    if (err instanceof UserError) throw renamed(loc.flag, err);
    throw new UserError("INVALID_INPUT", `${loc.flag}: cannot open the state at ${loc.shown}: ${err instanceof Error ? err.message : String(err)}`, loc.flag.slice(2), { cause: err });
  }
}

/** This machine's folder for what a state does not share (run folder, replication maps), as compose/ places it. */
export function localDir(loc: StateLocation, projectDir: string): string {
  return loc.kind === "postgres" ? path.join(projectDir, ".sds") : path.dirname(loc.file);
}

/** Why: paths in the printed commands are pasted into a shell; a space or quote must not break them. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

/** Why: connect and look, never migrate: opening a PostgresStore would make or upgrade the tables of the state it checks. */
export async function checkPostgresState(url: string): Promise<StateCheck> {
  const shown = redactUrl(url);
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000, query_timeout: 10_000 });
  client.on("error", () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query("SELECT to_regclass('state_info') IS NOT NULL AND to_regclass('schema_migrations') IS NOT NULL AS present");
    if (!rows[0]?.present) return { ok: false, line: `${shown}: connects, but holds no sds state (no state_info or schema_migrations table)` };
    const applied = (await client.query("SELECT version FROM schema_migrations ORDER BY version")).rows.map((r: { version: number }) => Number(r.version));
    const known = postgresMigrations.map((m) => m.version);
    const unknown = applied.filter((v) => !known.includes(v));
    if (unknown.length > 0) return { ok: false, line: `${shown}: made by a newer sds (migration(s) ${unknown.join(", ")} unknown to this one); upgrade sds` };
    const pending = known.filter((v) => !applied.includes(v)).length;
    const id = (await client.query("SELECT value FROM state_info WHERE key = 'state_id'")).rows[0] as { value: string } | undefined;
    return { ok: true, line: `${shown}: ok (connects; ${applied.length} migration(s) applied${pending ? `, ${pending} to apply at the next run` : ""}; state id ${id?.value ?? "none yet"})` };
  } catch (err) {
    return { ok: false, line: `${shown}: cannot check: ${maskUrl(err instanceof Error ? err.message : String(err), url)}` };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Why: a driver's message may quote the URL it was given; never print its password. */
function maskUrl(text: string, url: string): string {
  return text.split(url).join(redactUrl(url));
}

/** The state a command means: --state, else the stack's sds:stateUrl, else SDS_STATE_URL, else the project's default. */
export async function stateUrlFor(values: { state?: string; stack?: string }, projectDir: string): Promise<string> {
  let url = values.state;
  if (url === undefined && isProjectDir(projectDir)) {
    const stack = readStackConfig(projectDir, values.stack);
    // A secret stateUrl is decrypted as every sds command does it (cli/stack-secrets.ts).
    const locked = stack.secure.includes("stateUrl") && !process.env.SDS_STATE_URL ? ["stateUrl"] : [];
    const raw = { ...stack.raw, ...(await openStackSecrets(projectDir, stack, locked, () => "--state URL or SDS_STATE_URL")) };
    if (typeof raw.stateUrl === "string") url = raw.stateUrl;
  }
  return url ?? (process.env.SDS_STATE_URL || "sqlite:.sds/state.db");
}
