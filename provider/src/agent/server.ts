/**
 * The sds-agent HTTP server: the connector API of this host over HTTP+JSON (seed 001's "small HTTP
 * service"), on node:http or node:https (no framework: eight routes do not need one).
 *
 * - Routes, bodies and responses: api.ts (the route table is what this file dispatches on).
 * - Auth: `Authorization: Bearer <token>` on every route but health and openapi; checked *before*
 *   routing, so a client without the token learns nothing (every other path answers 401).
 * - Errors: malformed request → 400 INVALID_INPUT naming the field; UserError → 400/404/409 by
 *   code; BackendError → 502 with `retryable`; anything else → 500 with a generic message, the
 *   stack only in the agent's own log.
 * - Storage routes keep callers inside the node: volume ids match domain/volume-id.ts, paths stay
 *   under --storage-root with symlinks followed (drivers/confine.ts), and replication sends only
 *   to the nodes of the agent's own --peers file, named by the request, never to a request's url.
 * - Logging: one line per request (method, route, status, duration). Headers and bodies are never
 *   logged, so neither the token nor a CHAP password can reach the log.
 */
import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import type { z } from "zod";
import * as path from "node:path";
import { parse as parseYaml } from "yaml";
import type { Connector } from "../connectors/connector";
import { startHealthLoop } from "./health-loop";
import type { TargetFactory } from "../targets/target";
import type { PoolConfig } from "../domain/backend";
import { propertyPath } from "../domain/property-path";
import { checkVolumeId } from "../domain/volume-id";
import { confinedFile, confinedFolder, refuseSymlink } from "../drivers/confine";
import type { VolumeDriver } from "../drivers/volume-driver";
import { BackendError, UserError } from "../errors";
import { peersFileSchema, PROTOCOLS, routes, type DriverCall, type ErrorBody, type IscsiCall, type NbdCall, type Peers, type Protocol, type RouteSpec, type SyncSpec } from "./api";
import type { NodeReplication } from "./node-replication";
import { openApiDocument } from "./openapi";

/** What the server needs; everything with side effects is injected. */
export interface AgentServerOptions {
  /** The bearer token clients must present. */
  token: string;
  /** The connector of a protocol on this host (connectors/factory.ts in production, a fake in tests). */
  connectorFor: (protocol: Protocol) => Connector;
  version: string;
  /** One line per request, and stacks of unexpected errors. Default: stderr. */
  log?: (line: string) => void;
  /** PEM text of a certificate and key: serve https. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Largest request body accepted (default 1 MiB). */
  maxBodyBytes?: number;
  /** Storage nodes only: the drivers and targets of this node; without it the storage routes answer 404. */
  storage?: StorageNode;
}

/**
 * What a storage node serves: every path a client names must stay under `root` with symlinks
 * followed (drivers/confine.ts), and every volume id must be one (domain/volume-id.ts).
 */
export interface StorageNode {
  /** Absolute folder the pools of this node live in (`--storage-root`). */
  root: string;
  driverFor(kind: string): VolumeDriver;
  targets: TargetFactory;
  /** Replication syncs run by this node (agent/node-replication.ts). */
  replication?: NodeReplication;
}

function storageOf(o: AgentServerOptions): StorageNode {
  if (!o.storage) throw new HttpError(404, { error: { code: "NOT_FOUND", message: "this agent is not a storage node (start it with --storage-root)" } });
  return o.storage;
}

function replicationOf(o: AgentServerOptions): NodeReplication {
  const node = storageOf(o);
  if (!node.replication) throw new HttpError(404, { error: { code: "NOT_FOUND", message: "this storage node does not run replication" } });
  return node.replication;
}

/**
 * A sync spec checked against this node: the peer is one of its `--peers`, the source (and a
 * local sink) are files under its storage root, not symlinks. Returns the spec with the
 * resolved paths. `prefix` is where the spec sits in the request (`spec` for schedule).
 */
async function checkedSpec(o: AgentServerOptions, spec: SyncSpec, prefix = ""): Promise<SyncSpec> {
  const root = storageOf(o).root;
  const field = (name: string) => (prefix ? `${prefix}.${name}` : name);
  if (spec.peer !== undefined) replicationOf(o).peer(spec.peer, field("peer"));
  const source = await confinedFile(root, spec.source, field("source"));
  // A sink on a peer is that node's to check (its sink route confines it to its own root).
  const sink = spec.peer === undefined ? await confinedFile(root, spec.sink, field("sink")) : spec.sink;
  return { ...spec, source, sink };
}

/**
 * Why each driver call resolves its pools here: the driver follows what it is given, so the
 * folders it gets are the real ones inside the root (drivers/confine.ts), and a volume file
 * that is a symlink is refused naming the id that led to it.
 */
async function driverCall(node: StorageNode, kind: string, c: DriverCall): Promise<unknown> {
  const d = node.driverFor(kind);
  const pool = async (p: PoolConfig, field: string, create: boolean): Promise<PoolConfig | undefined> => {
    const real = await confinedFolder(node.root, p.path, field, { create });
    return real === undefined ? undefined : { ...p, path: real };
  };
  const existingPool = async (p: PoolConfig, field: string): Promise<PoolConfig> => {
    const found = await pool(p, field, false);
    if (!found) throw new UserError("NOT_FOUND", `${field}: pool folder ${p.path} does not exist on this node`, field);
    return found;
  };
  const volumeFile = (p: PoolConfig, volumeId: string, field: string) => refuseSymlink(d.volumePath(p, checkVolumeId(field, volumeId)), field);
  switch (c.op) {
    case "getPoolStats":
      return d.getPoolStats((await pool(c.args[0] as PoolConfig, "call.args[0].path", true))!);
    case "createVolume": {
      const p = (await pool(c.args[0] as PoolConfig, "call.args[0].path", true))!;
      await volumeFile(p, c.args[1], "call.args[1]");
      return d.createVolume(p, c.args[1], c.args[2]);
    }
    case "cloneVolume": {
      const [source, target, volumeId, sizeBytes] = c.args;
      // The target's pool first, as the driver does: it is made even when the source is missing.
      const to = (await pool(target as PoolConfig, "call.args[1].path", true))!;
      await volumeFile(to, volumeId, "call.args[2]");
      const from = await existingPool(source.pool as PoolConfig, "call.args[0].pool.path");
      await volumeFile(from, source.volumeId, "call.args[0].volumeId");
      return d.cloneVolume({ pool: from, volumeId: source.volumeId }, to, volumeId, sizeBytes);
    }
    case "extendVolume": {
      const p = await existingPool(c.args[0] as PoolConfig, "call.args[0].path");
      await volumeFile(p, c.args[1], "call.args[1]");
      return d.extendVolume(p, c.args[1], c.args[2]);
    }
    case "deleteVolume":
    case "getVolumeSizeBytes": {
      // A pool folder that is not there holds no volume: deleted already, size unknown.
      const p = await pool(c.args[0] as PoolConfig, "call.args[0].path", false);
      if (!p) return undefined;
      await volumeFile(p, c.args[1], "call.args[1]");
      return d[c.op](p, c.args[1]);
    }
  }
}

/**
 * Why only the backing file is checked: it is the one argument naming a path, and tgtd and
 * nbdkit would open whatever it names. The target still gets the path as sent (it lists LUNs
 * by it); the check refuses every path whose folders leave the root or that is a symlink.
 */
async function iscsiCall(node: StorageNode, portal: string, c: IscsiCall): Promise<unknown> {
  if (c.op === "ensureLun" || c.op === "refreshLun") await confinedFile(node.root, c.args[2], "call.args[2]");
  const t = node.targets.iscsi(portal) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  if (typeof t[c.op] !== "function") throw invalid("call.op", `the iSCSI target of this agent has no ${c.op}`);
  return t[c.op](...c.args);
}

async function nbdCall(node: StorageNode, host: string, c: NbdCall): Promise<unknown> {
  if (c.op === "ensureExport" || c.op === "refreshExport") await confinedFile(node.root, c.args[2], "call.args[2]");
  const t = node.targets.nbd(host) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  if (typeof t[c.op] !== "function") throw invalid("call.op", `the NBD target of this agent has no ${c.op}`);
  return t[c.op](...c.args);
}

/** An error answered as is (status, code, field). */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
    readonly headers: Record<string, string> = {},
  ) {
    super(body.error.message ?? body.error.code);
  }
}

const userStatus: Record<ConstructorParameters<typeof UserError>[0], number> = {
  INVALID_INPUT: 400,
  NOT_AVAILABLE_YET: 400,
  NOT_FOUND: 404,
  CONFLICT: 409,
  INVALID_STATE: 409,
  NO_VALID_POOL: 409,
};

/** Why: hashing both sides first gives timingSafeEqual equal lengths, so the token length never leaks. */
function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  const given = createHash("sha256").update(m?.[1] ?? "").digest();
  const want = createHash("sha256").update(token).digest();
  return timingSafeEqual(given, want) && m !== null;
}

function invalid(field: string, message: string): HttpError {
  return new HttpError(400, { error: { code: "INVALID_INPUT", message: field ? `${field}: ${message}` : message, field } });
}

function validate<S extends z.ZodType>(schema: S, value: unknown, prefix: string[] = []): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw invalid(propertyPath([...prefix, ...issue.path]), issue.message);
}

async function readJson(req: http.IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpError(413, { error: { code: "INVALID_INPUT", message: `request body larger than ${limit} bytes` } });
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") throw invalid("", "request body must be a JSON object");
  try {
    return JSON.parse(text);
  } catch {
    throw invalid("", "request body is not valid JSON");
  }
}

/** The request handler (exported for tests that want to mount it themselves). */
export function createAgentHandler(o: AgentServerOptions): http.RequestListener {
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const maxBody = o.maxBodyBytes ?? 1 << 20;
  const table = Object.values(routes) as RouteSpec[];
  const byPath = new Map<string, RouteSpec[]>();
  for (const r of table) byPath.set(r.path, [...(byPath.get(r.path) ?? []), r]);

  const handlers: Record<string, (query: any, body: any) => Promise<unknown>> = {
    health: async () => ({ ok: true, version: o.version }),
    openapi: async () => openApiDocument(o.version),
    getConnectorProperties: async (q) => o.connectorFor(q.protocol).getConnectorProperties(),
    connectVolume: async (_q, b) => o.connectorFor(b.connection.protocol).connectVolume(b.connection),
    disconnectVolume: async (_q, b) => {
      await o.connectorFor(b.connection.protocol).disconnectVolume(b.connection, b.force === undefined ? undefined : { force: b.force });
      return {};
    },
    getVolumePaths: async (_q, b) => ({ paths: await o.connectorFor(b.connection.protocol).getVolumePaths(b.connection) }),
    getAllVolumePaths: async (q) => {
      const protocols: Protocol[] = q.protocol ? [q.protocol] : [...PROTOCOLS];
      const paths = [];
      for (const p of protocols) paths.push(...(await o.connectorFor(p).getAllVolumePaths()));
      return { paths };
    },
    getSearchPath: async (q) => ({ path: o.connectorFor(q.protocol).getSearchPath() }),
    extendVolume: async (_q, b) => ({ sizeBytes: await o.connectorFor(b.connection.protocol).extendVolume(b.connection) }),
    checkVolume: async (_q, b) => o.connectorFor(b.connection.protocol).checkVolume(b.connection),
    fenceVolume: async (_q, b) => o.connectorFor(b.connection.protocol).fenceVolume(b.connection),
    storageDriver: async (_q, b) => ({ result: await driverCall(storageOf(o), b.driver, b.call) }),
    storageIscsi: async (_q, b) => ({ result: await iscsiCall(storageOf(o), b.portal, b.call) }),
    storageNbd: async (_q, b) => ({ result: await nbdCall(storageOf(o), b.host, b.call) }),
    storageSync: async (_q, b) => {
      const repl = replicationOf(o);
      const r = await repl.sync(await checkedSpec(o, b));
      repl.noteSync(b.pairId, r);
      return { result: { bytesTransferred: r.bytesTransferred, full: r.full, lastSyncAt: r.lastSyncAt, durationMs: r.durationMs } };
    },
    storageSchedule: async (_q, b) => {
      const repl = replicationOf(o);
      // Checked now, saved as sent: the timer's syncs open the files with O_NOFOLLOW.
      await checkedSpec(o, b.spec, "spec");
      repl.schedule(b.spec, b.rpoSeconds);
      return {};
    },
    storageUnschedule: async (_q, b) => {
      await replicationOf(o).unschedule(b.pairId);
      return {};
    },
    storagePairs: async () => ({ pairs: replicationOf(o).pairs() }),
    storageSink: async (_q, b) => {
      const repl = replicationOf(o);
      return { result: await repl.sinkCall(await confinedFile(storageOf(o).root, b.path, "path"), b.call) };
    },
  };

  const send = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)), ...headers });
    res.end(text);
  };

  return (req, res) => {
    const started = process.hrtime.bigint();
    const method = req.method ?? "GET";
    let routeName = "unknown";
    const finish = (status: number, body: unknown, headers?: Record<string, string>) => {
      send(res, status, body, headers);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log(`${method} ${routeName} ${status} ${ms.toFixed(1)}ms`);
    };
    void (async () => {
      const url = new URL(req.url ?? "/", "http://agent.invalid");
      const candidates = byPath.get(url.pathname) ?? [];
      const publicRoute = candidates.find((r) => !r.auth && r.method === method);
      if (!publicRoute && !tokenMatches(req.headers.authorization, o.token)) {
        throw new HttpError(401, { error: { code: "UNAUTHORIZED", message: "missing or wrong bearer token" } }, { "www-authenticate": 'Bearer realm="sds-agent"' });
      }
      if (candidates.length === 0) throw new HttpError(404, { error: { code: "NOT_FOUND", message: `no route ${url.pathname}` } });
      const route = candidates.find((r) => r.method === method);
      if (!route) {
        routeName = url.pathname;
        throw new HttpError(405, { error: { code: "METHOD_NOT_ALLOWED", message: `${method} is not allowed on ${url.pathname}` } }, { allow: candidates.map((r) => r.method).join(", ") });
      }
      routeName = route.path;
      const query = route.query ? validate(route.query, Object.fromEntries(url.searchParams)) : {};
      // Sync batches from another node carry up to 4 MiB of data (base64): that route takes more.
      const limit = route.operationId === "storageSink" ? Math.max(maxBody, 16 << 20) : maxBody;
      const body = route.body ? validate(route.body, await readJson(req, limit)) : undefined;
      const result = await handlers[route.operationId](query, body);
      finish(200, result);
    })().catch((err: unknown) => {
      if (err instanceof HttpError) return finish(err.status, err.body, err.headers);
      if (err instanceof UserError) {
        return finish(userStatus[err.code as ConstructorParameters<typeof UserError>[0]] ?? 400, { error: { code: err.code, message: err.message, ...(err.property ? { field: err.property } : {}) } });
      }
      if (err instanceof BackendError) return finish(502, { error: { code: err.code, message: err.message, retryable: err.retryable } });
      const id = randomUUID();
      log(`error ${id} in ${method} ${routeName}: ${err instanceof Error ? err.stack : String(err)}`);
      finish(500, { error: { code: "INTERNAL", message: `internal error in sds-agent (see its log, error ${id})` } });
    });
  };
}

/** A running agent. */
export interface RunningAgent {
  server: http.Server;
  /** `http://127.0.0.1:7700` or `https://…`. */
  url: string;
  /** Stop accepting, let requests in flight finish, then resolve. */
  close(): Promise<void>;
}

/** Start the agent on `host:port` (port 0 picks a free one). */
export async function startAgent(o: AgentServerOptions & { host: string; port: number }): Promise<RunningAgent> {
  const handler = createAgentHandler(o);
  const server: http.Server = o.tls ? https.createServer({ cert: o.tls.cert, key: o.tls.key }, handler) : http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `${o.tls ? "https" : "http"}://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

// ------------------------------------------------------------------ command line

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
    throw new Error(`peers file ${file} is not YAML or JSON: ${(err as Error).message.split("\n")[0]}`);
  }
  const r = peersFileSchema.safeParse(raw ?? {});
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new Error(`peers file ${file}: ${propertyPath(issue.path) || "(top)"}: ${issue.message}`);
  }
  return r.data;
}

/** `127.0.0.1:7700`, `[::1]:7700`, `0.0.0.0:7700` → host and port. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`--listen ${listen}: expected host:port, e.g. 127.0.0.1:7700`);
  return { host: m[1] ?? m[2], port };
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
  help: boolean;
}

export const AGENT_USAGE = `usage: sds-agent --token-file FILE [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE] [--state-dir DIR]
                 [--storage-root DIR [--peers FILE]] [--health-interval SECONDS]

  --listen HOST:PORT   address to listen on (default 127.0.0.1:7700; loopback unless told otherwise)
  --token-file FILE    bearer token clients must send; mode 600 or stricter, not empty (required)
  --tls-cert FILE      PEM certificate: serve https (needs --tls-key)
  --tls-key FILE       PEM private key of --tls-cert
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

/** Parse the agent's flags; throws with a usage hint on anything wrong. */
export function parseAgentArgs(argv: readonly string[]): AgentArgs {
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
    help: values.help ?? false,
  };
  if (args.help) return args;
  if (!args.tokenFile) throw new Error("--token-file is required");
  if (!!args.tlsCert !== !!args.tlsKey) throw new Error("--tls-cert and --tls-key go together");
  if (args.peersFile && !args.storageRoot) throw new Error("--peers is for storage nodes: give --storage-root too");
  if (!Number.isFinite(args.healthIntervalS) || args.healthIntervalS < 0) throw new Error(`--health-interval: seconds ≥ 0 (0: off), got "${values["health-interval"]}"`);
  parseListen(args.listen);
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
