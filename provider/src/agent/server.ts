/**
 * The sds-agent HTTP server: the connector API of this host over HTTP+JSON (the "small HTTP
 * service"), on node:http or node:https (no framework: eight routes do not need one).
 *
 * - Routes, bodies and responses: api.ts (the route table is what this file dispatches on).
 * - Auth: `Authorization: Bearer <token>` on every route but health and openapi; checked *before*
 *   routing, so a client without the token learns nothing (every other path answers 401).
 * - Handlers: agent/connector-routes.ts (this host's connectors) and agent/storage-routes.ts
 *   (storage nodes: drivers, targets, replication, each confined to --storage-root and --peers).
 * - Errors: malformed request → 400 INVALID_INPUT naming the field; UserError → 400/404/409 by
 *   code; BackendError → 502 with `retryable`; anything else → 500 with a generic message, the
 *   stack only in the agent's own log (agent/http-errors.ts).
 * - Flags and the `sds-agent` command: agent/run-agent.ts.
 * - Logging: one line per request (method, route, status, duration). Headers and bodies are never
 *   logged, so neither the token nor a CHAP password can reach the log.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import type { Connector } from "../connectors/connector";
import { routes, type Protocol, type RouteSpec } from "./api";
import { connectorRoutes, type RouteHandlers } from "./connector-routes";
import { errorAnswer, HttpError, invalid, validate } from "./http-errors";
import { openApiDocument } from "./openapi";
import { storageRoutes, type StorageNode } from "./storage-routes";

export type { StorageNode } from "./storage-routes";

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

/** Why: hashing both sides first gives timingSafeEqual equal lengths, so the token length never leaks. */
function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  const given = createHash("sha256").update(m?.[1] ?? "").digest();
  const want = createHash("sha256").update(token).digest();
  return timingSafeEqual(given, want) && m !== null;
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

  const handlers: RouteHandlers = {
    health: async () => ({ ok: true, version: o.version }),
    openapi: async () => openApiDocument(o.version),
    ...connectorRoutes(o.connectorFor),
    ...storageRoutes(o.storage),
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
      const a = errorAnswer(err, (id, bug) => log(`error ${id} in ${method} ${routeName}: ${bug instanceof Error ? bug.stack : String(bug)}`));
      finish(a.status, a.body, a.headers);
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
