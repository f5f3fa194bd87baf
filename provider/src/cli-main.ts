/**
 * `sds`: operator commands next to the provider (provider/bin/sds).
 *
 *   sds replicate [--all] [--project DIR] [--stack NAME] [--backends FILE] [--state URL]
 *
 * Syncs every enabled replication pair on its primary whose last sync is older than its
 * rpoSeconds (every such pair with --all), as the embedded controller has no agent to do it on a
 * timer: run it from cron or a systemd timer, or by hand before a planned failover. It runs the
 * controller `pulumi up` runs (compose/), on the state and backends the stack's provider config
 * names (`sds:stateUrl`, `sds:backendsFile`, … in Pulumi.<stack>.yaml), then the environment
 * (SDS_STATE_URL, SDS_BACKENDS_FILE), then the defaults (.sds/…); flags win over all of them.
 * It never makes a state: a folder with none is an error that says what to pass.
 * Prints one line per pair; exits 1 when a sync failed, 2 when it cannot run.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { Composition } from "./compose/composition";
import { isProjectDir, readStackConfig } from "./compose/stack-config";
import { resolveProviderConfig } from "./controller/config";
import { UserError } from "./errors";

const USAGE = "usage: sds replicate [--all] [--project DIR] [--stack NAME] [--backends FILE] [--state URL]\n";

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
    process.exit(err instanceof UserError ? 2 : 1);
  },
);
