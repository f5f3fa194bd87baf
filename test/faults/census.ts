/**
 * The census of what a fault stack left after its final `destroy`: one list per kind of
 * leftover, read from the real things (pool folders, the state database read directly, the
 * portal's tgtd, `losetup`, /proc/mounts, /proc, the run folder's daemon records, the stack's
 * pending operations). "0 leftovers" means every list is empty.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import type { PulumiProject } from "../helpers/pulumi";

export interface Census {
  poolFiles: string[];
  /** "table: n rows" for every state table holding rows (config-derived tables aside). */
  stateRows: string[];
  tgtTargets: string[];
  tgtAccounts: string[];
  loopDevices: string[];
  mounts: string[];
  /** Live processes whose argv mentions the stack's folder (the harness's own agent aside). */
  daemons: string[];
  /** Files under the run folder's daemons/ (records of daemons the provider started). */
  daemonRecords: string[];
  pendingOperations: string[];
}

/** Tables that describe configuration or the schema, not things made: rows there are not leftovers. */
const NOT_LEFTOVERS = new Set(["backends", "state_info", "schema_migrations"]);

export interface CensusInput {
  dir: string;
  runDir: string;
  /** PostgreSQL state URL; SQLite (`<dir>/.sds/state.db`) when undefined. */
  stateUrl?: string;
  iscsiControlPort: number;
  /** Processes that may mention the folder and are the harness's own (the agent, this process). */
  ownPids: number[];
  stack: PulumiProject;
  /** Stop the portal's tgtd: called once its targets and accounts are counted. */
  stopPortal: () => Promise<void>;
}

function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : [p];
  });
}

/** Rows of `sql` (placeholders $1, $2…, in order) on the state: SQLite at `<dir>/.sds/state.db` or PostgreSQL at `stateUrl`. */
export async function queryState(dir: string, stateUrl: string | undefined, sql: string, params: unknown[]): Promise<Array<Record<string, unknown>>> {
  if (!stateUrl) {
    const file = path.join(dir, ".sds/state.db");
    if (!fs.existsSync(file)) return [];
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      return db.prepare(sql.replace(/\$\d+/g, "?")).all(...params) as Array<Record<string, unknown>>;
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: stateUrl });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows;
  } finally {
    await client.end();
  }
}

async function stateRows(dir: string, stateUrl: string | undefined): Promise<string[]> {
  if (!stateUrl) {
    const file = path.join(dir, ".sds/state.db");
    if (!fs.existsSync(file)) return [];
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as Array<{ name: string }>).map((t) => t.name);
      return tables
        .filter((t) => !NOT_LEFTOVERS.has(t))
        .map((t) => [t, (db.prepare(`SELECT count(*) AS n FROM "${t}"`).get() as { n: number }).n] as const)
        .filter(([, n]) => n > 0)
        .map(([t, n]) => `${t}: ${n} rows`);
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: stateUrl });
  await client.connect();
  try {
    const tables = (await client.query("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")).rows.map((r) => String(r.table_name));
    const out: string[] = [];
    for (const t of tables.filter((x) => !NOT_LEFTOVERS.has(x))) {
      const n = Number((await client.query(`SELECT count(*) AS n FROM "${t}"`)).rows[0].n);
      if (n > 0) out.push(`${t}: ${n} rows`);
    }
    return out;
  } finally {
    await client.end();
  }
}

function tgtadm(controlPort: number, mode: "target" | "account"): string {
  try {
    return execFileSync("tgtadm", ["-C", String(controlPort), "--lld", "iscsi", "--op", "show", "--mode", mode], { encoding: "utf8", timeout: 10_000, stdio: ["ignore", "pipe", "pipe"] });
  } catch {
    return ""; // no tgtd on that port: nothing it could hold
  }
}

export async function takeCensus(c: CensusInput): Promise<Census> {
  const targets = tgtadm(c.iscsiControlPort, "target");
  const accounts = tgtadm(c.iscsiControlPort, "account");
  await c.stopPortal();
  const own = new Set(c.ownPids);
  const daemons: string[] = [];
  for (const e of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(e) || own.has(Number(e))) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0").filter(Boolean);
      if (argv.join(" ").includes(c.dir)) daemons.push(`${e} ${argv.join(" ").slice(0, 200)}`);
    } catch {
      // gone
    }
  }
  const loops = JSON.parse(execFileSync("losetup", ["-J", "--list"], { encoding: "utf8" }) || "{}") as { loopdevices?: Array<{ name: string; "back-file": string | null }> };
  const exported = JSON.parse((await c.stack.ok(["stack", "export"])).stdout) as { deployment: { pending_operations?: Array<{ type: string; resource: { urn: string } }> } };
  return {
    poolFiles: filesUnder(path.join(c.dir, "pools")).map((f) => path.relative(c.dir, f)),
    stateRows: await stateRows(c.dir, c.stateUrl),
    tgtTargets: targets
      .split("\n")
      .filter((l) => /^Target \d+:|^\s+LUN: [1-9]/.test(l))
      .map((l) => l.trim()),
    tgtAccounts: accounts
      .split("\n")
      .slice(1)
      .map((l) => l.trim())
      .filter(Boolean),
    loopDevices: (loops.loopdevices ?? []).filter((l) => (l["back-file"] ?? "").includes(c.dir)).map((l) => `${l.name} ${l["back-file"]}`),
    mounts: fs.readFileSync("/proc/mounts", "utf8").split("\n").filter((l) => l.includes(c.dir)),
    daemons,
    daemonRecords: filesUnder(path.join(c.runDir, "daemons")).map((f) => path.relative(c.dir, f)),
    pendingOperations: (exported.deployment.pending_operations ?? []).map((o) => `${o.type} ${o.resource.urn}`),
  };
}

/** Every leftover, "kind: item", or [] when the census is clean. */
export function leftovers(c: Census): string[] {
  return Object.entries(c).flatMap(([k, v]) => (v as string[]).map((x) => `${k}: ${x}`));
}

/** The census as a table: one row per kind, its count and its first items. */
export function censusTable(c: Census): string {
  const rows = Object.entries(c).map(([k, v]) => [k, String((v as string[]).length), (v as string[]).slice(0, 3).join(" | ").slice(0, 120)]);
  const w = [Math.max(...rows.map((r) => r[0].length)), 5];
  return rows.map((r) => `${r[0].padEnd(w[0])}  ${r[1].padStart(w[1])}  ${r[2]}`).join("\n");
}
