/**
 * sds-agent: the host agent command (provider/bin/sds-agent). Flags: see AGENT_USAGE in
 * agent/run-agent.ts. Logs go to stderr only; prints "sds-agent … listening on …" once started.
 * The connectors are those of connectors/factory.ts, one per protocol, sharing `--state-dir`.
 * (To run the agent with other connectors, call `runAgent(argv, {factory, version})` from
 * agent/run-agent.ts with your own factory; that is what the tests do.)
 */
import { AGENT_USAGE, AgentUsageError, runAgent } from "./agent/run-agent";
import * as path from "node:path";
import { connectorFor } from "./connectors/factory";
import { FileDriver } from "./drivers/file-driver";
import { localTargets } from "./targets/local-targets";
import { NodeReplication } from "./agent/node-replication";

/** This node's replication: schedules resumed from the state folder, a timer every second. */
function startReplication(stateDir: string): NodeReplication {
  const r = new NodeReplication(stateDir, (line) => process.stderr.write(`${line}\n`));
  r.start();
  return r;
}

async function main(): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const version: string = require("../../package.json").version;
  const argv = process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(AGENT_USAGE);
    return;
  }
  const drivers = { file: new FileDriver() };
  await runAgent(argv, {
    factory: (protocol, options) => connectorFor(protocol, options),
    version,
    storage: ({ root, stateDir }) => ({
      root,
      driverFor: (kind) => {
        if (kind !== "file") throw new Error(`no driver "${kind}" on this node`);
        return drivers.file;
      },
      targets: localTargets(path.join(stateDir, "targets")),
      replication: startReplication(stateDir),
    }),
  });
}

// A mistake on the command line exits 2 (usage), anything else 1.
main().catch((err) => {
  process.stderr.write(`sds-agent: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(err instanceof AgentUsageError ? err.exitCode : 1);
});
