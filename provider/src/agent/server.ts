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
import type { Connector } from "../connectors/connector";
import type { TargetFactory } from "../controller/attachments";
import type { VolumeDriver } from "../drivers/volume-driver";
import { BackendError, UserError } from "../errors";
import { fieldPath, PROTOCOLS, routes, type DriverCall, type ErrorBody, type IscsiCall, type NbdCall, type Protocol, type RouteSpec } from "./api";
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

/** What a storage node serves: every path a client names must be under `root`. */
export interface StorageNode {
  /** Absolute folder the pools of this node live in (`--storage-root`). */
  root: string;
  driverFor(kind: string): VolumeDriver;
  targets: TargetFactory;
  /** Replication syncs run by this node (agent/node-replication.ts). */
  replication?: NodeReplication;
}

/**
 * Why: the storage routes create, serve and delete files at paths the client names; a token
 * holder must not reach outside the node's storage root (e.g. export /etc/shadow as a LUN).
 */
function underRoot(root: string, p: string, field: string): string {
  const abs = path.resolve(p);
  if (abs !== p || !(abs + path.sep).startsWith(path.resolve(root) + path.sep) || abs === path.resolve(root)) {
    throw invalid(field, `${JSON.stringify(p)} is not an absolute, normalized path under this node's storage root ${root}`);
  }
  return abs;
}

function storageOf(o: AgentServerOptions): StorageNode {
  if (!o.storage) throw new HttpError(404, { error: { code: "NOT_FOUND", message: "this agent is not a storage node (start it with --storage-root)" } });
  return o.storage;
}

/** The node's replication, with the paths of a sync spec checked against the storage root. */
function replicationOf(o: AgentServerOptions, spec?: { source: string; sink: string; peer?: unknown }): NodeReplication {
  const node = storageOf(o);
  if (!node.replication) throw new HttpError(404, { error: { code: "NOT_FOUND", message: "this storage node does not run replication" } });
  if (spec) {
    underRoot(node.root, spec.source, "source");
    if (!spec.peer) underRoot(node.root, spec.sink, "sink");
  }
  return node.replication;
}

async function driverCall(node: StorageNode, kind: string, c: DriverCall): Promise<unknown> {
  const d = node.driverFor(kind);
  const pool = (i: number) => underRoot(node.root, (c.args[i] as { path: string }).path, `call.args[${i}].path`);
  switch (c.op) {
    case "getPoolStats":
      pool(0);
      return d.getPoolStats(c.args[0] as never);
    case "cloneVolume":
      underRoot(node.root, c.args[0].pool.path, "call.args[0].pool.path");
      pool(1);
      return d.cloneVolume(c.args[0] as never, c.args[1] as never, c.args[2], c.args[3]);
    case "createVolume":
    case "extendVolume":
      pool(0);
      return d[c.op](c.args[0] as never, c.args[1], c.args[2]);
    case "deleteVolume":
    case "getVolumeSizeBytes":
      pool(0);
      return d[c.op](c.args[0] as never, c.args[1]);
  }
}

async function iscsiCall(node: StorageNode, portal: string, c: IscsiCall): Promise<unknown> {
  if (c.op === "ensureLun" || c.op === "refreshLun") underRoot(node.root, c.args[2], "call.args[2]");
  const t = node.targets.iscsi(portal) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  if (typeof t[c.op] !== "function") throw invalid("call.op", `the iSCSI target of this agent has no ${c.op}`);
  return t[c.op](...c.args);
}

async function nbdCall(node: StorageNode, host: string, c: NbdCall): Promise<unknown> {
  if (c.op === "ensureExport" || c.op === "refreshExport") underRoot(node.root, c.args[2], "call.args[2]");
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
  throw invalid(fieldPath([...prefix, ...issue.path]), issue.message);
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
    storageDriver: async (_q, b) => ({ result: await driverCall(storageOf(o), b.driver, b.call) }),
    storageIscsi: async (_q, b) => ({ result: await iscsiCall(storageOf(o), b.portal, b.call) }),
    storageNbd: async (_q, b) => ({ result: await nbdCall(storageOf(o), b.host, b.call) }),
    storageSync: async (_q, b) => {
      const repl = replicationOf(o, b);
      const r = await repl.sync(b);
      repl.noteSync(b.pairId, r);
      return { result: { bytesTransferred: r.bytesTransferred, full: r.full, lastSyncAt: r.lastSyncAt, durationMs: r.durationMs } };
    },
    storageSchedule: async (_q, b) => {
      replicationOf(o, b.spec).schedule(b.spec, b.rpoSeconds);
      return {};
    },
    storageUnschedule: async (_q, b) => {
      await replicationOf(o).unschedule(b.pairId);
      return {};
    },
    storagePairs: async () => ({ pairs: replicationOf(o).pairs() }),
    storageSink: async (_q, b) => ({ result: await replicationOf(o).sinkCall(underRoot(storageOf(o).root, b.path, "path"), b.call) }),
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

/**
 * Read the token file: refused when group/other have any permission on it (it is a password) or
 * when it is empty. Trailing whitespace (a final newline) is not part of the token.
 */
export function readTokenFile(file: string): string {
  const st = fs.statSync(file);
  if ((st.mode & 0o077) !== 0) {
    throw new Error(`token file ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
  }
  const token = fs.readFileSync(file, "utf8").trim();
  if (token === "") throw new Error(`token file ${file} is empty`);
  return token;
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
  help: boolean;
}

export const AGENT_USAGE = `usage: sds-agent --token-file FILE [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE] [--state-dir DIR]

  --listen HOST:PORT   address to listen on (default 127.0.0.1:7700; loopback unless told otherwise)
  --token-file FILE    bearer token clients must send; mode 600 or stricter, not empty (required)
  --tls-cert FILE      PEM certificate: serve https (needs --tls-key)
  --tls-key FILE       PEM private key of --tls-cert
  --state-dir DIR      where connectors keep their connection records (default /run/sds)
  --storage-root DIR   storage node: serve the driver and target routes for pools under DIR
                       (target daemons keep their pidfiles in <state-dir>/targets)
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
    help: values.help ?? false,
  };
  if (args.help) return args;
  if (!args.tokenFile) throw new Error("--token-file is required");
  if (!!args.tlsCert !== !!args.tlsKey) throw new Error("--tls-cert and --tls-key go together");
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
  deps: { factory: ConnectorFactory; version: string; log?: (line: string) => void; storage?: (args: { root: string; stateDir: string }) => StorageNode },
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
  const storage = args.storageRoot ? deps.storage!({ root: args.storageRoot, stateDir: args.stateDir }) : undefined;
  const agent = await startAgent({ ...parseListen(args.listen), token, tls, connectorFor, version: deps.version, log, storage });
  log(`sds-agent ${deps.version} listening on ${agent.url}${storage ? ` (storage node, pools under ${storage.root})` : ""}`);
  let closing = false;
  const stop = (signal: string) => {
    if (closing) return;
    closing = true;
    log(`sds-agent: ${signal}, closing`);
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
      await agent.close();
    },
  };
}
