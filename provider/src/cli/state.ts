/**
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
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { sqliteDamage } from "../compose/composition";
import { SecretBox } from "../controller/secret-box";
import { UserError } from "../errors";
import { type Counts, copyState } from "../store/copy-state";
import { type StateCheck, checkSqliteState, sqlitePathFromUrl } from "../store/sqlite-store";
import type { Store } from "../store/store";
import { assertPostgresHoldsState, checkPostgresState, localDir, locateState, namingFlag, openState, sameState, shellQuote, type StateLocation, stateUrlFor } from "./state-location";

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
export async function migrateState(values: { from?: string; to?: string; project?: string }): Promise<number> {
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

/** `sds state check`: one line on whether the state is sound (see the header); 0 sound, 1 not. */
export async function checkState(values: { state?: string; project?: string; stack?: string }): Promise<number> {
  const projectDir = path.resolve(values.project ?? process.cwd());
  const url = await stateUrlFor(values, projectDir);
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
