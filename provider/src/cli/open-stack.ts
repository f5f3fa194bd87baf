/**
 * The parts an operator command runs on: the controller `pulumi up` runs (compose/), on the state
 * and backends the stack's provider config names (`sds:stateUrl`, `sds:backendsFile`, … in
 * Pulumi.<stack>.yaml), then the environment (SDS_STATE_URL, SDS_BACKENDS_FILE), then the
 * defaults (.sds/…); flags win over all of them.
 *
 * It never makes a state: a SQLite file that does not exist, or a PostgreSQL database without
 * sds's tables, is an error saying what to pass (a timer run in the wrong folder must fail, not
 * report success on an empty state). No backends configured is an error too, and so is a state
 * whose volumes sit on backends this runner does not load (controller/backend-check.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Composition, type Log } from "../compose/composition";
import { isProjectDir, readStackConfig, type StackConfig } from "../compose/stack-config";
import { type ProviderConfig, resolveProviderConfig } from "../controller/config";
import { UserError } from "../errors";
import { assertPostgresHoldsState, locateState } from "./state-location";
import { openStackSecrets } from "./stack-secrets";

/** The flags every command on a stack takes. */
export interface StackFlags {
  project?: string;
  stack?: string;
  state?: string;
  backends?: string;
}

export interface OpenStack {
  parts: Composition;
  config: ProviderConfig;
  stack: StackConfig;
}

/** Warnings and errors on stderr (stdout is the command's answer, JSON with --json). */
export const stderrLog: Log = (severity, message) => {
  if (severity === "warning" || severity === "error") process.stderr.write(`${message}\n`);
};

/** The provider config this folder's stack runs with, the flags applied (see the file comment). */
export async function stackConfig(flags: StackFlags): Promise<{ config: ProviderConfig; stack: StackConfig }> {
  const projectDir = path.resolve(flags.project ?? process.cwd());
  if (!isProjectDir(projectDir) && !flags.state && !process.env.SDS_STATE_URL) {
    throw new UserError("INVALID_INPUT", `--project: ${projectDir} is not a Pulumi project (no Pulumi.yaml); run sds in the project folder, or pass --project DIR (or --state URL)`, "project");
  }
  const stack = readStackConfig(projectDir, flags.stack);
  const raw: Record<string, unknown> = { ...stack.raw };
  if (flags.backends) {
    raw.backendsFile = flags.backends;
    delete raw.backends;
  }
  if (flags.state) raw.stateUrl = flags.state;
  const flagFor: Record<string, string> = {
    stateUrl: "--state URL or SDS_STATE_URL",
    backendsFile: "--backends FILE or SDS_BACKENDS_FILE",
    backends: "--backends FILE",
    secretKey: "SDS_SECRET_KEY",
    agentToken: "SDS_AGENT_TOKEN",
  };
  const locked = stack.secure.filter(
    (key) =>
      !(
        (key === "stateUrl" && (flags.state || process.env.SDS_STATE_URL)) ||
        ((key === "backendsFile" || key === "backends") && flags.backends) ||
        (key === "secretKey" && process.env.SDS_SECRET_KEY) ||
        (key === "agentToken" && process.env.SDS_AGENT_TOKEN)
      ),
  );
  // Ask the Pulumi CLI, which holds the key; say what to pass instead when it cannot.
  Object.assign(raw, await openStackSecrets(projectDir, stack, locked, (key) => flagFor[key] ?? "a flag"));
  if (raw.agentToken === undefined && process.env.SDS_AGENT_TOKEN) raw.agentToken = process.env.SDS_AGENT_TOKEN;
  const config = resolveProviderConfig(raw, projectDir);
  if (config.backends.length === 0) {
    throw new UserError("INVALID_INPUT", `backends: no backends configured (${config.backendsSource} lists none); name the stack's backends file with sds:backendsFile, SDS_BACKENDS_FILE or --backends FILE`, "backends");
  }
  return { config, stack };
}

/**
 * Open the stack's state (existing only) and its controller, pools discovered. `hosts` narrows
 * the config's hosts (force-detach leaves out a host that is gone). The caller closes `parts`.
 */
export async function openStack(flags: StackFlags, o: { log?: Log; dropHost?: string } = {}): Promise<OpenStack> {
  const { config, stack } = await stackConfig(flags);
  const hosts = { ...config.hosts };
  if (o.dropHost) delete hosts[o.dropHost];
  const parts = new Composition({ ...config, hosts }, o.log ?? stderrLog);
  const state = parts.state;
  const from = flags.state ? "--state" : stack.raw.stateUrl ? `sds:stateUrl in ${stack.file}` : process.env.SDS_STATE_URL ? "SDS_STATE_URL" : "the default";
  const missing = `run sds in the folder of the Pulumi project that deployed it, or pass --project DIR, --stack NAME or --state URL`;
  if (state.kind === "sqlite" && state.file !== ":memory:" && !fs.existsSync(state.file)) {
    throw new UserError("NOT_FOUND", `no sds state at ${state.file} (from ${from}); ${missing}`, "stateUrl");
  }
  if (state.kind === "postgres") {
    await assertPostgresHoldsState(locateState("--state", state.url, config.projectDir)).catch((err: Error) => {
      throw new UserError("NOT_FOUND", `${err.message.replace(/^--state: /, "")} (from ${from}); ${missing}`, "stateUrl", { cause: err });
    });
  }
  try {
    await parts.controller();
  } catch (err) {
    await parts.close().catch(() => undefined);
    throw err;
  }
  return { parts, config, stack };
}

/** Run `fn` on the stack's parts, closing them after (also when `fn` throws). */
export async function withStack<T>(flags: StackFlags, fn: (s: OpenStack) => Promise<T>, o: { log?: Log; dropHost?: string } = {}): Promise<T> {
  const s = await openStack(flags, o);
  try {
    return await fn(s);
  } finally {
    await s.parts.close();
  }
}

/** How long an agent gets to answer its health call before it counts as unreachable. */
const PROBE_MS = 5_000;

/** Resolves when the agent of `host` answers its health call within a few seconds; rejects with why not. */
export async function probeAgent(parts: Composition, host: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${PROBE_MS / 1000} s`)), PROBE_MS)));
  try {
    await Promise.race([parts.agent(host).health(), late]);
  } finally {
    clearTimeout(timer);
  }
}
