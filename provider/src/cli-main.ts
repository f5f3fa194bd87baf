/**
 * `sds`: operator commands next to the provider (provider/bin/sds).
 *
 *   sds replicate [--all] [--project DIR] [--backends FILE] [--state URL]
 *
 * Syncs every enabled replication pair on its primary whose last sync is older than its
 * rpoSeconds (every such pair with --all), as the embedded controller has no agent to do it on a
 * timer: run it from cron or a systemd timer, or by hand before a planned failover. The project
 * folder, backends file and state are found as the provider finds them (SDS_BACKENDS_FILE,
 * SDS_STATE_URL, .sds/…); pass them when the program sets them in Pulumi config.
 * Prints one line per pair; exits 1 when a sync failed.
 */
import * as path from "node:path";
import { parseArgs } from "node:util";
import { resolveProviderConfig } from "./controller/config";
import { Controller } from "./controller/controller";
import { Replication, replicationDir } from "./controller/replication";
import { SqliteStore, sqlitePathFromUrl } from "./store/sqlite-store";

const USAGE = "usage: sds replicate [--all] [--project DIR] [--backends FILE] [--state URL]\n";

async function replicate(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { all: { type: "boolean", default: false }, project: { type: "string" }, backends: { type: "string" }, state: { type: "string" } },
    strict: true,
  });
  const projectDir = path.resolve(values.project ?? process.cwd());
  const config = resolveProviderConfig({ ...(values.backends ? { backendsFile: values.backends } : {}), ...(values.state ? { stateUrl: values.state } : {}) }, projectDir);
  const file = sqlitePathFromUrl(config.stateUrl, projectDir);
  const store = new SqliteStore(file);
  try {
    const controller = new Controller({ store, backends: config.backends });
    await controller.discover();
    const r = new Replication({ store, controller, stateDir: replicationDir(file), log: (m) => process.stdout.write(`${m}\n`) });
    const done = await r.syncDue({ all: values.all });
    for (const d of done) if (!d.ok) process.stdout.write(`replication ${d.id}: FAILED: ${d.error}\n`);
    process.stdout.write(`sds replicate: ${done.filter((d) => d.ok).length} pair(s) synced, ${done.filter((d) => !d.ok).length} failed\n`);
    return done.some((d) => !d.ok) ? 1 : 0;
  } finally {
    store.close();
  }
}

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  if (command === "replicate") return replicate(rest);
  process.stderr.write(USAGE);
  return command === "--help" || command === "-h" ? 0 : 2;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`sds: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
