/**
 * The `sds-agent` command line: its flags (AGENT_USAGE), the token and peers files it reads, and
 * runAgent, which wires them to the HTTP server (agent/server.ts). provider/src/agent-main.ts
 * calls runAgent with the production connectors, drivers and targets; tests pass fakes.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { parse as parseYaml } from "yaml";
import type { Connector } from "../connectors/connector";
import { Host } from "../connectors/host";
import { reapHelpers } from "../connectors/reap";
import { propertyPath } from "../domain/property-path";
import { peersFileSchema, type Peers, type Protocol } from "./api";
import { startHealthLoop } from "./health-loop";
import { startAgent, type RunningAgent } from "./server";
import type { StorageNode } from "./storage-routes";

/** Why: token and peers files hold passwords; one readable by group or others is refused. */
function readPrivateFile(file: string, what: string): string {
  const st = fs.statSync(file);
  if ((st.mode & 0o077) !== 0) {
    throw new Error(`${what} ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
  }
  return fs.readFileSync(file, "utf8");
}

/**
 * Read the token file: refused when group/other have any permission on it (it is a password) or
 * when it is empty. Trailing whitespace (a final newline) is not part of the token.
 */
export function readTokenFile(file: string): string {
  const token = readPrivateFile(file, "token file").trim();
  if (token === "") throw new Error(`token file ${file} is empty`);
  return token;
}

/**
 * Read the peers file (`--peers`): YAML or JSON, a map of peer name → {url, token, caCert?}, the
 * name being the node's key in the provider's `hosts`. Mode 600 or stricter (it holds tokens).
 * Example:
 * ```yaml
 * storage2: {url: "https://10.0.0.6:7700", token: "…", caCert: /etc/sds/storage2-ca.pem}
 * ```
 */
export function readPeersFile(file: string): Peers {
  const text = readPrivateFile(file, "peers file");
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new Error(`peers file ${file} is not YAML or JSON: ${(err as Error).message.split("\n")[0]}`, { cause: err });
  }
  const r = peersFileSchema.safeParse(raw ?? {});
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new Error(`peers file ${file}: ${propertyPath(issue.path) || "(top)"}: ${issue.message}`);
  }
  return r.data;
}

/**
 * A mistake on the agent's command line: sds-agent exits with code 2 (usage), and systemd's
 * Restart=on-failure should not retry it (RestartPreventExitStatus=2).
 */
export class AgentUsageError extends Error {
  readonly exitCode = 2;
}

/** `127.0.0.1:7700`, `[::1]:7700`, `0.0.0.0:7700` → host and port. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new AgentUsageError(`--listen ${listen}: expected host:port, e.g. 127.0.0.1:7700`);
  return { host: m[1] ?? m[2], port };
}

const loopback = new net.BlockList();
loopback.addSubnet("127.0.0.0", 8, "ipv4");
loopback.addAddress("::1", "ipv6");

/**
 * Whether `host` (as `--listen` names it) is a loopback address: 127.0.0.0/8, ::1 (also written
 * long or IPv4-mapped, ::ffff:127.x.y.z) or `localhost`. Any other name is not: what it resolves
 * to is not ours to trust, and `0.0.0.0` / `::` listen on every interface.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === "localhost" || h === "localhost.") return true;
  if (net.isIPv4(h)) return loopback.check(h, "ipv4");
  if (net.isIPv6(h)) return loopback.check(h, "ipv6");
  return false;
}

export interface AgentArgs {
  listen: string;
  tokenFile: string;
  tlsCert?: string;
  tlsKey?: string;
  stateDir: string;
  /** Storage nodes: the folder pools live under; enables the storage routes. */
  storageRoot?: string;
  /** Storage nodes: the file naming the nodes this one may replicate to. */
  peersFile?: string;
  /** Seconds between passes of the health loop (0: off). */
  healthIntervalS: number;
  /** Accept a non-loopback `listen` without TLS (the token then crosses the network in clear). */
  insecure: boolean;
  help: boolean;
}

export const AGENT_USAGE = `usage: sds-agent --token-file FILE [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE | --insecure]
                 [--state-dir DIR] [--storage-root DIR [--peers FILE]] [--health-interval SECONDS]

  --listen HOST:PORT   address to listen on (default 127.0.0.1:7700; loopback unless told otherwise).
                       An address that is not loopback (127.0.0.0/8, ::1, localhost) needs TLS
                       (--tls-cert/--tls-key) or --insecure
  --token-file FILE    bearer token clients must send; mode 600 or stricter, not empty (required)
  --tls-cert FILE      PEM certificate: serve https (needs --tls-key)
  --tls-key FILE       PEM private key of --tls-cert
  --insecure           serve plain http on a non-loopback --listen: the token, CHAP secrets and
                       replication keys then cross the network in clear (a lab, a private link)
  --state-dir DIR      where connectors keep their connection records (default /run/sds)
  --storage-root DIR   storage node: serve the driver and target routes for pools under DIR
                       (target daemons keep their pidfiles in <state-dir>/targets); every path and
                       volume id a call names must stay under DIR, symlinks followed
  --peers FILE         storage node: the nodes this one replicates to, YAML or JSON, mode 600:
                         <name>: {url: https://HOST:PORT, token: TOKEN, caCert: PEM-or-FILE}
                       <name> is the node's key in the provider's hosts; a sync request names a
                       peer, never a url (default: no peers, local replication only)
  --health-interval S  probe this host's userspace iSCSI devices every S seconds and fence one
                       that stays broken (its I/O fails instead of hanging until the target
                       returns; the provider's next up repairs it on the same path); 0: off
                       (default 10)
  --help               this text
`;

/**
 * Parse the agent's flags; throws an {@link AgentUsageError} (one line, with a hint) on anything
 * wrong, among which a non-loopback `--listen` with neither TLS nor `--insecure`.
 */
export function parseAgentArgs(argv: readonly string[]): AgentArgs {
  try {
    return parseAgentFlags(argv);
  } catch (err) {
    if (err instanceof AgentUsageError) throw err;
    throw new AgentUsageError((err as Error).message.split("\n")[0], { cause: err });
  }
}

function parseAgentFlags(argv: readonly string[]): AgentArgs {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      listen: { type: "string", default: "127.0.0.1:7700" },
      "token-file": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "state-dir": { type: "string", default: "/run/sds" },
      "storage-root": { type: "string" },
      peers: { type: "string" },
      "health-interval": { type: "string", default: "10" },
      insecure: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const args: AgentArgs = {
    listen: values.listen!,
    tokenFile: values["token-file"] ?? "",
    tlsCert: values["tls-cert"],
    tlsKey: values["tls-key"],
    stateDir: values["state-dir"]!,
    storageRoot: values["storage-root"] ? path.resolve(values["storage-root"]) : undefined,
    peersFile: values.peers,
    healthIntervalS: Number(values["health-interval"]),
    insecure: values.insecure ?? false,
    help: values.help ?? false,
  };
  if (args.help) return args;
  if (!args.tokenFile) throw new Error("--token-file is required");
  if (!!args.tlsCert !== !!args.tlsKey) throw new Error("--tls-cert and --tls-key go together");
  if (args.peersFile && !args.storageRoot) throw new Error("--peers is for storage nodes: give --storage-root too");
  if (!Number.isFinite(args.healthIntervalS) || args.healthIntervalS < 0) throw new Error(`--health-interval: seconds ≥ 0 (0: off), got "${values["health-interval"]}"`);
  const { host } = parseListen(args.listen);
  if (!args.tlsCert && !args.insecure && !isLoopbackHost(host)) {
    throw new AgentUsageError(
      `--listen ${args.listen} is not a loopback address and TLS is off: the token and secrets would cross the network in clear; give --tls-cert and --tls-key, or --insecure to accept that`,
    );
  }
  return args;
}

/** A connector factory as connectors/factory.ts provides it. */
export type ConnectorFactory = (protocol: Protocol, options: { stateDir: string }) => Connector;

/**
 * Run the agent as the `sds-agent` command does: parse flags, read the token, start, print
 * "sds-agent listening on …" to stderr, close gracefully on SIGTERM/SIGINT. Returns the running
 * agent (or undefined after --help).
 */
export async function runAgent(
  argv: readonly string[],
  deps: { factory: ConnectorFactory; version: string; log?: (line: string) => void; storage?: (args: { root: string; stateDir: string; peers: Peers }) => StorageNode },
): Promise<RunningAgent | undefined> {
  const log = deps.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const args = parseAgentArgs(argv);
  if (args.help) {
    process.stdout.write(AGENT_USAGE);
    return undefined;
  }
  const token = readTokenFile(args.tokenFile);
  const tls = args.tlsCert && args.tlsKey ? { cert: fs.readFileSync(args.tlsCert), key: fs.readFileSync(args.tlsKey) } : undefined;
  const connectors = new Map<Protocol, Connector>();
  const connectorFor = (p: Protocol): Connector => {
    let c = connectors.get(p);
    if (!c) connectors.set(p, (c = deps.factory(p, { stateDir: args.stateDir })));
    return c;
  };
  if (args.storageRoot && !deps.storage) throw new Error("--storage-root: this build of the agent has no storage support");
  const peers = args.peersFile ? readPeersFile(args.peersFile) : undefined;
  const storage = args.storageRoot ? deps.storage!({ root: args.storageRoot, stateDir: args.stateDir, peers: peers ?? {} }) : undefined;
  if (peers) {
    if (!storage?.replication) throw new Error("--peers: this storage node does not run replication");
    storage.replication.setPeers(peers);
  }
  // Helpers (qemu-nbd, nbdfuse) a killed predecessor left that no device uses: stopped once, at start (issue 12).
  const reaped = await reapHelpers(new Host({ stateDir: args.stateDir })).catch((err: Error) => void log(`sds-agent: could not clean up helpers left by a crash: ${err.message}`));
  for (const d of reaped?.stopped ?? []) log(`sds-agent: stopped ${d}, which no device used (left by a crash)`);
  const agent = await startAgent({ ...parseListen(args.listen), token, tls, connectorFor, version: deps.version, log, storage });
  const health = startHealthLoop({ intervalMs: args.healthIntervalS * 1000, connectors: () => [connectorFor("iscsi")], log });
  const peerNote = peers ? `, peers ${Object.keys(peers).join(", ") || "none"}` : "";
  log(`sds-agent ${deps.version} listening on ${agent.url}${storage ? ` (storage node, pools under ${storage.root}${peerNote})` : ""}`);
  let closing = false;
  const stop = (signal: string) => {
    if (closing) return;
    closing = true;
    log(`sds-agent: ${signal}, closing`);
    health.stop();
    void agent.close().then(() => process.exit(0));
  };
  const onTerm = () => stop("SIGTERM");
  const onInt = () => stop("SIGINT");
  process.once("SIGTERM", onTerm);
  process.once("SIGINT", onInt);
  return {
    ...agent,
    close: async () => {
      process.off("SIGTERM", onTerm);
      process.off("SIGINT", onInt);
      health.stop();
      await agent.close();
    },
  };
}
