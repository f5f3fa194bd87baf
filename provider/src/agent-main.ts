/**
 * sds-agent: the host agent command (provider/bin/sds-agent). Flags: see AGENT_USAGE in
 * agent/server.ts. Logs go to stderr only; prints "sds-agent … listening on …" once started.
 * The connectors are those of connectors/factory.ts, one per protocol, sharing `--state-dir`.
 * (To run the agent with other connectors, call `runAgent(argv, {factory, version})` from
 * agent/server.ts with your own factory; that is what the tests do.)
 */
import { AGENT_USAGE, runAgent } from "./agent/server";
import { connectorFor } from "./connectors/factory";

async function main(): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const version: string = require("../../package.json").version;
  const argv = process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(AGENT_USAGE);
    return;
  }
  await runAgent(argv, { factory: (protocol, options) => connectorFor(protocol, options), version });
}

main().catch((err) => {
  process.stderr.write(`sds-agent: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
