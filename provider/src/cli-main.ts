/**
 * `sds`: operator commands next to the provider (provider/bin/sds).
 *
 *   sds replicate [--all] [--project DIR] [--stack NAME] [--backends FILE] [--state URL]
 *   sds state migrate --from URL [--to URL] [--project DIR]
 *   sds state check [--state URL] [--project DIR] [--stack NAME]
 *   sds recover [--export FILE] [--state URL] [--project DIR] [--stack NAME]
 *
 * `sds replicate` syncs every enabled replication pair on its primary whose last sync is older
 * than its rpoSeconds (every such pair with --all), as the embedded controller has no agent to do
 * it on a timer: run it from cron or a systemd timer, or by hand before a planned failover. It
 * runs the controller `pulumi up` runs (compose/), on the state and backends the stack's provider
 * config names (`sds:stateUrl`, `sds:backendsFile`, … in Pulumi.<stack>.yaml), then the
 * environment (SDS_STATE_URL, SDS_BACKENDS_FILE), then the defaults (.sds/…); flags win over all
 * of them. It never makes a state: a folder with none is an error that says what to pass.
 * Prints one line per pair; exits 1 when a sync failed, 2 when it cannot run.
 *
 * `sds state migrate` moves a stack's controller state to another store, typically from the
 * single-user `sqlite:.sds/state.db` to a `postgres://user:pw@host:port/db?sslmode=…` the team
 * shares (store/copy-state.ts: every row in one transaction, the state id kept, never into a
 * database that holds a state already). URLs are `sqlite:<path>` (relative to --project, default
 * the current folder; a source file must exist: none is ever made) or `postgres://…`. `--to`
 * defaults to SDS_STATE_URL: prefer that for a URL with a password, as a command line is visible
 * to every user of the machine in `ps`. A URL is printed with its password as `***`, a key file
 * by its path only. The source is left as it was. Prints one line per table, then what to
 * configure next; exits 2, with one line, when it cannot run (a usage or configuration error).
 *
 * `sds state check` says in one line whether a state is sound, changing nothing: for SQLite,
 * `PRAGMA integrity_check` and the migrations applied; for PostgreSQL, that it connects and holds
 * an sds state whose migrations this sds knows. The state is --state, else the stack's
 * sds:stateUrl (of --stack, or the one stack that sets sds: keys), else SDS_STATE_URL, else
 * sqlite:.sds/state.db in --project (default the current folder). Exits 0 when sound, 1 when
 * not (missing, damaged, unreachable), 2 on a usage error.
 *
 * `sds recover` is for after a crash (the CLI or the engine killed during `up`): it reads the
 * stack's pending creates and resources from `pulumi stack export` (stdin, or --export FILE),
 * finds by URN what sds made that the stack does not hold (controller/cut-short-creates.ts: a
 * pending create, or a create whose answer never reached the engine), and prints the commands
 * that bring the stack back in step: `pulumi refresh` (`--clear-pending-creates` when there are
 * some), a `pulumi import` of each finished volume or profile the stack holds nothing for (a
 * retried create would make it again under a new auto-name), one comment line per row the next
 * `up` takes up by itself or that nothing owns. It changes nothing. The state is
 * found as for `sds state check`. Exits 0, 2 on a usage error.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { Composition, sqliteDamage } from "./compose/composition";
import { isProjectDir, readStackConfig } from "./compose/stack-config";
import { resolveProviderConfig } from "./controller/config";
import { cutShortCreates, inRecoveryOrder, ownedRows, type PendingCreate, type StackResource, stackPrefix, unrecordedRows } from "./controller/cut-short-creates";
import { SecretBox } from "./controller/secret-box";
import { UserError, type UserErrorCode } from "./errors";
import { type Counts, copyState } from "./store/copy-state";
import { PostgresStore, redactUrl } from "./store/postgres-store";
import { postgresMigrations } from "./store/postgres-migrations";
import { type StateCheck, SqliteStore, checkSqliteState, sqlitePathFromUrl } from "./store/sqlite-store";
import type { Store } from "./store/store";

const USAGE =
  "usage: sds replicate [--all] [--project DIR] [--stack NAME] [--backends FILE] [--state URL]\n" +
  "       sds state migrate --from URL [--to URL] [--project DIR]\n" +
  "       sds state check [--state URL] [--project DIR] [--stack NAME]\n" +
  "       sds recover [--export FILE] [--state URL] [--project DIR] [--stack NAME]   (pulumi stack export | sds recover)\n" +
  "         URL: sqlite:<path> (relative to --project) or postgres://user:pw@host:port/db?sslmode=…;\n" +
  "         --to defaults to SDS_STATE_URL (prefer it for a password: a command line shows in ps)\n";

async function replicate(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      all: { type: "boolean", default: false },
      project: { type: "string" },
      stack: { type: "string" },
      backends: { type: "string" },
      state: { type: "string" },
    },
    strict: true,
  });
  const projectDir = path.resolve(values.project ?? process.cwd());
  if (!isProjectDir(projectDir) && !values.state && !process.env.SDS_STATE_URL) {
    throw new UserError("INVALID_INPUT", `--project: ${projectDir} is not a Pulumi project (no Pulumi.yaml); run sds in the project folder, or pass --project DIR (or --state URL)`, "project");
  }
  const stack = readStackConfig(projectDir, values.stack);
  const raw: Record<string, unknown> = { ...stack.raw };
  if (values.backends) {
    raw.backendsFile = values.backends;
    delete raw.backends;
  }
  if (values.state) raw.stateUrl = values.state;
  const flagFor: Record<string, string> = {
    stateUrl: "--state URL or SDS_STATE_URL",
    backendsFile: "--backends FILE or SDS_BACKENDS_FILE",
    backends: "--backends FILE",
    secretKey: "SDS_SECRET_KEY",
    agentToken: "SDS_AGENT_TOKEN",
  };
  for (const key of stack.secure) {
    const given =
      (key === "stateUrl" && (values.state || process.env.SDS_STATE_URL)) ||
      ((key === "backendsFile" || key === "backends") && values.backends) ||
      (key === "secretKey" && process.env.SDS_SECRET_KEY) ||
      (key === "agentToken" && process.env.SDS_AGENT_TOKEN);
    if (!given && flagFor[key]) throw new UserError("INVALID_INPUT", `${stack.file}: sds:${key} is a secret, which sds cannot decrypt; pass it as ${flagFor[key]}`, key);
  }
  if (raw.agentToken === undefined && process.env.SDS_AGENT_TOKEN) raw.agentToken = process.env.SDS_AGENT_TOKEN;
  const config = resolveProviderConfig(raw, projectDir);
  const parts = new Composition(config, (_severity, m) => process.stdout.write(`${m}\n`));
  const state = parts.state;
  const file = state.kind === "sqlite" ? state.file : undefined;
  if (file !== undefined && file !== ":memory:" && !fs.existsSync(file)) {
    const from = values.state ? "--state" : stack.raw.stateUrl ? `sds:stateUrl in ${stack.file}` : process.env.SDS_STATE_URL ? "SDS_STATE_URL" : "the default";
    throw new UserError("NOT_FOUND", `no sds state at ${file} (from ${from}); run sds in the folder of the Pulumi project that deployed the pairs, or pass --project DIR, --stack NAME or --state URL`, "stateUrl");
  }
  try {
    await parts.allowWrites();
    process.stdout.write(`sds replicate: state ${parts.stateShown}, backends from ${config.backendsSource}${stack.stack ? ` (stack ${stack.stack})` : ""}\n`);
    const done = await (await parts.replication()).syncDue({ all: values.all });
    for (const d of done) if (!d.ok) process.stdout.write(`replication ${d.id}: FAILED: ${d.error}\n`);
    process.stdout.write(`sds replicate: ${done.filter((d) => d.ok).length} pair(s) synced, ${done.filter((d) => !d.ok).length} failed\n`);
    return done.some((d) => !d.ok) ? 1 : 0;
  } finally {
    await parts.close();
  }
}

/** Where a state is, as `sds state migrate` was told; `shown` is what may be printed (no password). */
type StateLocation = { flag: "--from" | "--to" | "--state"; url: string; shown: string } & ({ kind: "sqlite"; file: string } | { kind: "postgres" });

/** Parse a state URL given as `flag` (one line naming the flag when it is not one). */
function locateState(flag: StateLocation["flag"], url: string, projectDir: string): StateLocation {
  if (/^postgres(ql)?:\/\//.test(url)) return { flag, url, shown: redactUrl(url), kind: "postgres" };
  if (!url.startsWith("sqlite:")) throw new UserError("INVALID_INPUT", `${flag}: "${redactUrl(url)}" is neither sqlite:<path> nor postgres://…`, flag.slice(2));
  const file = namingFlag(flag, () => sqlitePathFromUrl(url, projectDir));
  if (file === ":memory:") throw new UserError("INVALID_INPUT", `${flag}: sqlite::memory: is no state to migrate from or to; name a file`, flag.slice(2));
  return { flag, url, shown: file, kind: "sqlite", file };
}

/** Why: the stores' errors name `stateUrl`; here the user typed --from or --to, so name that. */
function namingFlag<T>(flag: string, fn: () => T): T {
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
function sameState(a: StateLocation, b: StateLocation): boolean {
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
async function assertPostgresHoldsState(loc: StateLocation): Promise<void> {
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
async function openState(loc: StateLocation): Promise<Store> {
  try {
    return loc.kind === "postgres" ? await PostgresStore.open(loc.url) : new SqliteStore(loc.file);
  } catch (err) {
    if (err instanceof UserError) throw renamed(loc.flag, err);
    throw new UserError("INVALID_INPUT", `${loc.flag}: cannot open the state at ${loc.shown}: ${err instanceof Error ? err.message : String(err)}`, loc.flag.slice(2), { cause: err });
  }
}

/** This machine's folder for what a state does not share (run folder, replication maps), as compose/ places it. */
function localDir(loc: StateLocation, projectDir: string): string {
  return loc.kind === "postgres" ? path.join(projectDir, ".sds") : path.dirname(loc.file);
}

/** Why: paths in the printed commands are pasted into a shell; a space or quote must not break them. */
function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

/** Whether `box` opens the check value `check` (a wrong or unreadable key: false). */
function opens(box: SecretBox, check: string): boolean {
  try {
    box.verify(check);
    return true;
  } catch {
    return false;
  }
}

/** What to configure so the stack's runs open the migrated secrets: never a key itself, only where it is. */
function keyAdvice(from: StateLocation, keyCheck: string | undefined): string {
  const configured = process.env.SDS_SECRET_KEY ? new SecretBox({ key: process.env.SDS_SECRET_KEY }) : undefined;
  if (from.kind === "sqlite") {
    const keyFile = path.join(path.dirname(from.file), "secret.key");
    if (fs.existsSync(keyFile) && (keyCheck === undefined || opens(new SecretBox({ file: keyFile }), keyCheck))) {
      return `pulumi config set --secret sds:secretKey "$(cat ${shellQuote(keyFile)})"   (the key the source state sealed its secrets with; every runner needs it)`;
    }
  }
  if (keyCheck !== undefined && configured && opens(configured, keyCheck)) return "keep SDS_SECRET_KEY (and sds:secretKey) as they are: that key opens this state's secrets; every runner needs it";
  if (keyCheck !== undefined) return "keep sds:secretKey set to the key the source state was run with: its secrets stay sealed with it";
  return "no sealing key is recorded with this state: set one before the first run (pulumi config set --secret sds:secretKey \"$(openssl rand -base64 32)\")";
}

/** `sds state migrate`: copy the state at --from to --to (see the header), then say what to configure. */
async function migrateState(argv: string[]): Promise<number> {
  let values: { from?: string; to?: string; project?: string };
  try {
    ({ values } = parseArgs({ args: argv, options: { from: { type: "string" }, to: { type: "string" }, project: { type: "string" } }, strict: true }));
  } catch (err) {
    throw new UserError("INVALID_INPUT", `${(err as Error).message}; ${USAGE.split("\n")[1].trim()}`);
  }
  const projectDir = path.resolve(values.project ?? process.cwd());
  if (!values.from) throw new UserError("INVALID_INPUT", "--from: missing: pass --from URL, the state to move (e.g. --from sqlite:.sds/state.db)", "from");
  const toFromEnv = values.to === undefined && !!process.env.SDS_STATE_URL;
  const toUrl = values.to ?? (process.env.SDS_STATE_URL || undefined);
  if (!toUrl) throw new UserError("INVALID_INPUT", "--to: missing: pass --to URL or set SDS_STATE_URL (better for a URL with a password: a command line shows in ps)", "to");
  const from = locateState("--from", values.from, projectDir);
  const to = locateState("--to", toUrl, projectDir);
  if (sameState(from, to)) throw new UserError("INVALID_INPUT", `--to: ${to.shown} is the --from state itself`, "to");
  if (from.kind === "sqlite" && !fs.existsSync(from.file)) {
    throw new UserError("NOT_FOUND", `--from: no sds state at ${from.file}; name the state file the stack used (its sds:stateUrl, by default sqlite:.sds/state.db in the project)`, "from");
  }
  if (from.kind === "postgres") await assertPostgresHoldsState(from);
  const damage = from.kind === "sqlite" ? sqliteDamage(from.file) : undefined;
  if (damage !== undefined) throw new UserError("INVALID_STATE", `--from: the state database ${from.shown} is damaged: ${damage}; restore it from a backup before moving it`, "from");

  const madeFile = to.kind === "sqlite" && !fs.existsSync(to.file) ? to.file : undefined;
  const madeDir = madeFile && !fs.existsSync(path.dirname(madeFile)) ? path.dirname(madeFile) : undefined;
  let source: Store | undefined;
  let dest: Store | undefined;
  let counts: Counts;
  let stateId: string;
  let keyCheck: string | undefined;
  let ok = false;
  try {
    source = await openState(from);
    dest = await openState(to);
    counts = await copyState(source, dest);
    stateId = await dest.stateId();
    keyCheck = await dest.getInfo("key_check");
    ok = true;
  } finally {
    await source?.close().catch(() => undefined);
    await dest?.close().catch(() => undefined);
    // A refused or failed copy leaves no new, empty state file behind.
    if (!ok && madeFile) {
      for (const f of [madeFile, `${madeFile}-wal`, `${madeFile}-shm`]) fs.rmSync(f, { force: true });
      if (madeDir) fs.rmSync(madeDir, { recursive: true, force: true });
    }
  }

  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`sds state migrate: ${from.shown} -> ${to.shown}`);
  out(`  backends: ${counts.backends}`);
  out(`  profiles: ${counts.profiles}`);
  out(`  volumes: ${counts.volumes}`);
  out(`  targets: ${counts.targets}`);
  out(`  luns: ${counts.luns}`);
  out(`  attachments: ${counts.attachments}`);
  out(`  replication pairs: ${counts.pairs}`);
  out(`  state id: ${stateId} (kept: the targets, CHAP accounts and NBD servers of this state carry it)`);
  out("next:");
  if (to.kind === "postgres") {
    const value = toFromEnv ? '"$SDS_STATE_URL"' : `${shellQuote(to.shown)}${to.shown !== to.url ? "   (with the password in place of ***)" : ""}`;
    out(`  1. pulumi config set --secret sds:stateUrl ${value}`);
  } else {
    out(`  1. pulumi config set sds:stateUrl ${shellQuote(to.url)}`);
  }
  out(`  2. ${keyAdvice(from, keyCheck)}`);
  out(`  3. retire the source (${from.shown}): it still holds state id ${stateId}, and a run on it would take the new state's exports for its own`);
  const [oldDir, newDir] = [localDir(from, projectDir), localDir(to, projectDir)];
  const local = ["run", "replication"].filter((d) => fs.existsSync(path.join(oldDir, d)));
  if (path.resolve(oldDir) !== path.resolve(newDir) && local.length > 0) {
    out(`  4. move ${local.map((d) => path.join(oldDir, d)).join(" and ")} into ${newDir}: this machine's exports and replication maps are looked for there from now on`);
  }
  return 0;
}

/** Why: connect and look, never migrate: opening a PostgresStore would make or upgrade the tables of the state it checks. */
async function checkPostgresState(url: string): Promise<StateCheck> {
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

/** `sds state check`: one line on whether the state is sound (see the header); 0 sound, 1 not. */
async function checkState(argv: string[]): Promise<number> {
  let values: { state?: string; project?: string; stack?: string };
  try {
    ({ values } = parseArgs({ args: argv, options: { state: { type: "string" }, project: { type: "string" }, stack: { type: "string" } }, strict: true }));
  } catch (err) {
    throw new UserError("INVALID_INPUT", `${(err as Error).message}; ${USAGE.split("\n")[2].trim()}`);
  }
  const projectDir = path.resolve(values.project ?? process.cwd());
  const url = stateUrlFor(values, projectDir);
  let r: StateCheck;
  if (/^postgres(ql)?:\/\//.test(url)) {
    r = await checkPostgresState(url);
  } else {
    const given = url;
    const file = namingFlag("--state", () => sqlitePathFromUrl(given, projectDir));
    if (file === ":memory:") throw new UserError("INVALID_INPUT", "--state: sqlite::memory: is no state to check; name a file", "state");
    r = checkSqliteState(file);
  }
  process.stdout.write(`sds state check: ${r.line}\n`);
  return r.ok ? 0 : 1;
}

/** The state a command means: --state, else the stack's sds:stateUrl, else SDS_STATE_URL, else the project's default. */
function stateUrlFor(values: { state?: string; stack?: string }, projectDir: string): string {
  let url = values.state;
  if (url === undefined && isProjectDir(projectDir)) {
    const stack = readStackConfig(projectDir, values.stack);
    if (stack.secure.includes("stateUrl") && !process.env.SDS_STATE_URL) throw new UserError("INVALID_INPUT", `${stack.file}: sds:stateUrl is a secret, which sds cannot decrypt; pass it as --state URL or SDS_STATE_URL`, "stateUrl");
    if (typeof stack.raw.stateUrl === "string") url = stack.raw.stateUrl;
  }
  return url ?? (process.env.SDS_STATE_URL || "sqlite:.sds/state.db");
}

/** `sds recover`: the commands that bring a crashed stack back in step (see the header); changes nothing. */
async function recover(argv: string[]): Promise<number> {
  let values: { export?: string; state?: string; project?: string; stack?: string };
  try {
    ({ values } = parseArgs({ args: argv, options: { export: { type: "string" }, state: { type: "string" }, project: { type: "string" }, stack: { type: "string" } }, strict: true }));
  } catch (err) {
    throw new UserError("INVALID_INPUT", `${(err as Error).message}; ${USAGE.split("\n")[3].trim()}`);
  }
  const source = values.export ?? "-";
  const shown = source === "-" ? "stdin" : source;
  let exported: { deployment?: { resources?: Array<{ urn?: string; type?: string; id?: string }>; pending_operations?: Array<{ type?: string; resource?: { urn?: string; type?: string } }> } };
  try {
    exported = JSON.parse(fs.readFileSync(source === "-" ? 0 : source, "utf8"));
  } catch (err) {
    throw new UserError("INVALID_INPUT", `--export: ${shown} is not the JSON of \`pulumi stack export\`: ${(err as Error).message}`, "export");
  }
  const pending: PendingCreate[] = (exported.deployment?.pending_operations ?? [])
    .filter((o) => o.type === "creating" && typeof o.resource?.urn === "string" && o.resource?.type?.startsWith("sds:"))
    .map((o) => ({ urn: o.resource!.urn!, type: o.resource!.type! }));
  const resources: StackResource[] = (exported.deployment?.resources ?? [])
    .filter((r) => typeof r.urn === "string" && typeof r.type === "string")
    .map((r) => ({ urn: r.urn!, type: r.type!, id: r.id }));
  const prefix = stackPrefix([...resources.map((r) => r.urn), ...pending.map((p) => p.urn)]);
  if (!prefix) {
    process.stdout.write("sds recover: the export holds no resource and no pending create; nothing to recover\n");
    return 0;
  }
  const projectDir = path.resolve(values.project ?? process.cwd());
  const loc = locateState("--state", stateUrlFor(values, projectDir), projectDir);
  if (loc.kind === "sqlite" && !fs.existsSync(loc.file)) throw new UserError("NOT_FOUND", `--state: no sds state at ${loc.file}; run sds in the project folder, or pass --project DIR or --state URL`, "state");
  const store = await openState(loc);
  try {
    const rows = await ownedRows(store);
    const cut = cutShortCreates(rows, pending);
    const unrecorded = unrecordedRows(rows, prefix, resources, new Set(pending.map((p) => p.urn)));
    if (!pending.length && !unrecorded.length) {
      process.stdout.write("sds recover: the stack holds everything sds made for it; `pulumi refresh` then `pulumi up` is all sds needs\n");
      return 0;
    }
    process.stdout.write(`# sds recover: ${pending.length} pending create(s) of sds resources, ${unrecorded.length} row(s) the stack does not hold; state ${loc.shown}\n`);
    process.stdout.write(pending.length ? "pulumi refresh --yes --clear-pending-creates\n" : "pulumi refresh --yes\n");
    for (const c of inRecoveryOrder([...cut, ...unrecorded])) {
      if (c.action === "import") process.stdout.write(`pulumi import --yes --generate-code=false ${shellQuote(c.type)} ${shellQuote(c.name)} ${shellQuote(c.id!)}   # ${c.detail}\n`);
      else process.stdout.write(`# ${c.name} (${c.type}): ${c.detail}\n`);
    }
    process.stdout.write("pulumi up\n");
    return 0;
  } finally {
    await store.close();
  }
}

/** `sds state …`: operations on a whole state. */
async function state(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === "migrate") return migrateState(rest);
  if (sub === "check") return checkState(rest);
  process.stderr.write(USAGE);
  return sub === "--help" || sub === "-h" ? 0 : 2;
}

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  if (command === "replicate") return replicate(rest);
  if (command === "state") return state(rest);
  if (command === "recover") return recover(rest);
  process.stderr.write(USAGE);
  return command === "--help" || command === "-h" ? 0 : 2;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`sds: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(err instanceof UserError ? 2 : 1);
  },
);
