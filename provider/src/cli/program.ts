/**
 * The `sds` operator command line, on commander: every command and subcommand answers `--help`
 * (exit 0); a usage or configuration error is one line on stderr and exit 2; a problem found
 * (a failed sync, a doctor finding) exit 1. Each command is a thin layer over the controller
 * the provider runs (compose/), like the Pulumi layer.
 */
import { Command, CommanderError } from "commander";
import { UserError } from "../errors";
import { doctor } from "./doctor-command";
import { forceDetach } from "./force-detach";
import { attachments, paths, pools, targets, targetsStop, volumes } from "./inventory-commands";
import { recover } from "./recover";
import { replicationStatus, replicationSync, type SyncFlags } from "./replication-commands";
import { checkState, migrateState } from "./state";

const EXIT_CODES = `
Exit codes:
  0  done (for doctor: nothing wrong)
  1  a problem was found: a sync failed, doctor found something broken, state check found the state unsound
  2  usage or configuration error (one line on stderr): unknown flag, no Pulumi project, no state
     (sds never creates one, except as the target of state migrate), no backends configured,
     nothing to sync, unknown host, attachment or pair`;

const WHERE = `
Which state and backends: the flags, else the stack's provider config (sds:stateUrl,
sds:backendsFile in Pulumi.<stack>.yaml of --project, default the current folder, over the
project's own config: in Pulumi.yaml; --stack when several stacks configure sds), else
SDS_STATE_URL / SDS_BACKENDS_FILE, else .sds/state.db and .sds/backends.yaml. Secrets the stack
file holds encrypted are decrypted by the Pulumi CLI (pulumi config --show-secrets, with your
passphrase or backend login), or passed as flags or environment (SDS_STATE_URL, SDS_SECRET_KEY,
SDS_AGENT_TOKEN).`;

/** The flags of every command that runs on a stack. */
function stackOptions(cmd: Command): Command {
  return cmd
    .option("--project <dir>", "the Pulumi project folder (default: the current folder)")
    .option("--stack <name>", "the stack whose Pulumi.<stack>.yaml configures sds")
    .option("--state <url>", "the state: sqlite:<path> or postgres://… (prefer SDS_STATE_URL for a password)")
    .option("--backends <file>", "the backends file");
}

function jsonOption(cmd: Command, fields: string): Command {
  return cmd.option("--json", "print JSON for scripts instead of a table").addHelpText("after", `\n--json fields (stable): ${fields}`);
}

/** Build the program; `done(code)` receives each action's exit code. */
export function buildProgram(done: (code: number) => void): Command {
  const program = new Command("sds")
    .description("Operator commands for sds: what a stack's storage holds, its health, replication, and repairs.")
    .configureOutput({ outputError: (str, write) => write(`sds: ${str.replace(/^error: /, "")}`) })
    .exitOverride()
    .showSuggestionAfterError()
    .addHelpText("after", `${WHERE}\n${EXIT_CODES}`);
  const act =
    <A extends unknown[]>(fn: (...args: A) => Promise<number>) =>
    async (...args: A) =>
      done(await fn(...args));

  jsonOption(stackOptions(program.command("pools").description("pools with their capabilities and total/free/provisioned capacity (GiB)")), "id, backend, pool, availabilityZone, storageType, multiAttach, replication, provisioning, totalGib, freeGib, provisionedGib, maxOverSubscriptionRatio, volumes").action(act(pools));
  jsonOption(stackOptions(program.command("volumes").description("the state's volumes")), "id, name, sizeGib, status, pool, backend, profile, multiAttach, replicationStatus, attachments, owner, createdAt").action(act(volumes));
  jsonOption(stackOptions(program.command("attachments").description("the state's attachments (volume, host, mode, protocol, device)")), "id, volumeId, volume, host, mode, protocol, status, target, devicePath, brokenReason, owner, createdAt").action(act(attachments));
  jsonOption(
    stackOptions(
      program
        .command("paths")
        .description("the block devices of the state's volumes on a host: this machine (localhost), or another through its agent")
        .argument("[volume]", "a volume's name or id (default: every volume)")
        .requiredOption("--host <host>", "localhost, or a host of the provider's hosts"),
    ),
    "host, volumeId, volume, path, protocol, via",
  ).action(act(paths));

  const replication = program.command("replication").description("replication pairs: status, sync");
  jsonOption(stackOptions(replication.command("status").description("every pair: sides, status, last sync and lag, whether a sync is due")), "id, primaryVolumeId, primaryVolume, secondaryVolumeId, targetBackend, activeSide, enabled, status, rpoSeconds, lastSyncAt, lagSeconds, due, bytesTransferred, lastError").action(act(replicationStatus));
  const syncCommand = (cmd: Command) =>
    jsonOption(
      stackOptions(
        cmd
          .option("--all", "sync every enabled pair on its primary, not only those past their RPO")
          .option("--pair <id>", "sync this pair only")
          .option("--progress", "percent and rate of each sync on stderr (default when stderr is a terminal)"),
      ),
      "synced [{id, ok, bytes}], failed [{id, ok, error}]",
    )
      .addHelpText("after", "\nA state with no replication pairs is an error (exit 2): a timer pointed at the wrong stack must fail.")
      .action(act((o: SyncFlags) => replicationSync(o)));
  syncCommand(replication.command("sync").description("sync the pairs whose last sync is older than their RPO (exit 1 when one fails)"));
  syncCommand(program.command("replicate").description("the same as `replication sync` (systemd timers call it: deploy/sds-replicate.timer)"));

  const targetsCmd = jsonOption(stackOptions(program.command("targets").description("the exports this state knows, and the daemons sds started on this machine")), "targets [{name, protocol, backend, mode, portal, tid, port, chap, luns, attachments}], daemons [{kind, name, pid, running, detail, startedAt, startedBy, starterRuns}]").action(
    act(targets),
  );
  jsonOption(stackOptions(targetsCmd.command("stop").description("stop the daemons sds started that nothing uses any more (tgtd serving no target, NBD servers and helpers no export or device uses); nothing in use is touched")), "stopped, removed, kept (strings)").action(
    act((_o: object, cmd: Command) => targetsStop(cmd.optsWithGlobals())),
  );

  jsonOption(stackOptions(program.command("doctor").description("daemons, agents, state, stale locks, orphans: each finding with the fix to run (exit 1 when something is wrong); changes nothing")), "[{check, severity (ok|warn|fail), message, fix}]").action(act(doctor));

  stackOptions(
    program
      .command("force-detach")
      .description("detach an attachment whose host is gone, as the provider's forced detach does (SDS_FORCE_DETACH), and say what was done")
      .argument("<attachment>", "the attachment's id (or a unique prefix of it: sds attachments)"),
  ).action(act(forceDetach));

  const state = program.command("state").description("operations on a whole state: migrate, check");
  state
    .command("migrate")
    .description("copy the state to another store (sqlite: → postgres://…); the source is left as it was")
    .requiredOption("--from <url>", "the state to move: sqlite:<path> or postgres://…")
    .option("--to <url>", "where to: sqlite:<path> or postgres://… (default SDS_STATE_URL, better for a password: a command line shows in ps)")
    .option("--project <dir>", "sqlite paths are relative to it (default: the current folder)")
    .action(act(migrateState));
  state
    .command("check")
    .description("one line: is the state sound (exit 0), or not (missing, damaged, unreachable: exit 1); changes nothing")
    .option("--state <url>", "the state (default: the stack's sds:stateUrl, SDS_STATE_URL, .sds/state.db)")
    .option("--project <dir>", "the Pulumi project folder (default: the current folder)")
    .option("--stack <name>", "the stack whose Pulumi.<stack>.yaml configures sds")
    .action(act(checkState));

  program
    .command("recover")
    .description("after a crash: the commands that bring the stack back in step (pulumi stack export | sds recover); changes nothing")
    .option("--export <file>", "the output of pulumi stack export (default: stdin)")
    .option("--state <url>", "the state (default: as for state check)")
    .option("--project <dir>", "the Pulumi project folder (default: the current folder)")
    .option("--stack <name>", "the stack whose Pulumi.<stack>.yaml configures sds")
    .action(act(recover));

  return program;
}

/** Run `sds argv…`; resolves to the exit code (see {@link EXIT_CODES}). */
export async function runCli(argv: string[]): Promise<number> {
  let code = 0;
  const program = buildProgram((c) => (code = c));
  try {
    if (argv.length === 0) {
      program.outputHelp({ error: true });
      return 2;
    }
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (err) {
    // Help asked for (--help, `sds help X`) exits 0; help shown for a missing subcommand, and every parse error, 2.
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    process.stderr.write(`sds: ${err instanceof Error ? err.message : String(err)}\n`);
    return err instanceof UserError ? 2 : 1;
  }
}
