/**
 * AgentClient: the provider's side of sds-agent, over undici. The same calls as a Connector, for
 * a remote host (so `getSearchPath` is async here, and calls that are not about one connection
 * take the protocol).
 *
 * - Every request has a timeout (`timeoutMs`, default 120 s): a timeout is a retryable
 *   BackendError("TIMEOUT") but is not retried here, since the agent may still be doing the work.
 * - Retries (`retries`, default 3, exponential backoff) happen ONLY when no response came back
 *   (refused, reset before a response, connect timeout): every agent call is idempotent, so
 *   repeating a request that never reached a handler, or died before answering, is safe.
 *   An HTTP error is never retried. A host that stays unreachable → AgentUnavailableError
 *   (AGENT_UNAVAILABLE, retryable true, the network error as `cause`).
 * - HTTP error bodies become UserError (4xx with a user code; DeviceBusyError when the body names
 *   a busy device) or BackendError (502, with the agent's `retryable`) with the agent's message;
 *   responses are validated with the schemas of api.ts.
 */
import * as fs from "node:fs";
import { Agent, request, type Dispatcher } from "undici";
import type { z } from "zod";
import type { Connection, ConnectorProperties, PathHealth, VolumePath } from "../connectors/connector";
import { AgentUnavailableError, BackendError, DeviceBusyError, isBackendErrorCode, isUserErrorCode, UserError } from "../errors";
import {
  connectorPropertiesSchema,
  connectResponseSchema,
  emptyResponseSchema,
  errorResponseSchema,
  extendResponseSchema,
  checkResponseSchema,
  healthResponseSchema,
  pathsResponseSchema,
  routes,
  searchPathResponseSchema,
  storageResponseSchema,
  syncResponseSchema,
  pairsResponseSchema,
  progressResponseSchema,
  type PairStatus,
  type SinkCall,
  type SyncSpec,
  type DriverCall,
  type IscsiCall,
  type NbdCall,
  type Protocol,
} from "./api";

export interface AgentClientOptions {
  /** `http://host:7700` or `https://host:7700`. */
  url: string;
  token: string;
  /** PEM text, or the path of a PEM file, of the CA that signed the agent's certificate. */
  caCert?: string;
  /** Per request, headers and body (default 120 000). */
  timeoutMs?: number;
  /** Retries after a connection error (default 3). */
  retries?: number;
  /** First backoff (default 200 ms; doubles each retry). */
  retryBaseMs?: number;
}

/** Error codes that mean no response came back: safe to retry. */
const CONNECTION_ERRORS = new Set(["ECONNREFUSED", "ECONNRESET", "UND_ERR_CONNECT_TIMEOUT", "UND_ERR_SOCKET", "EHOSTUNREACH", "ENETUNREACH", "EPIPE"]);

/** An error and its causes, outermost first (undici wraps the socket's error). */
function causes(err: unknown): Array<{ message?: unknown; code?: unknown; cause?: unknown }> {
  const out: Array<{ message?: unknown; code?: unknown; cause?: unknown }> = [];
  for (let e = err as { cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) out.push(e);
  return out;
}

function errorCode(err: unknown): string | undefined {
  for (const e of causes(err)) if (typeof e.code === "string") return e.code;
  return undefined;
}

function describe(err: unknown): string {
  const parts: string[] = [];
  for (const e of causes(err)) {
    const code = typeof e.code === "string" ? e.code : undefined;
    const text = e instanceof Error ? `${e.message}${code && !e.message.includes(code) ? ` (${code})` : ""}` : String(e);
    if (text && !parts.includes(text)) parts.push(text);
  }
  return parts.join(": ") || "unknown error";
}

/** Why: a caCert option may be the PEM itself (from a secret) or where it lives on disk. */
function loadPem(value: string): string {
  return value.includes("-----BEGIN") ? value : fs.readFileSync(value, "utf8");
}

export class AgentClient {
  readonly url: string;
  private readonly token: string;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly retryBaseMs: number;
  private readonly dispatcher: Dispatcher;

  constructor(o: AgentClientOptions) {
    this.url = o.url.replace(/\/+$/, "");
    this.token = o.token;
    this.timeoutMs = o.timeoutMs ?? 120_000;
    this.retries = o.retries ?? 3;
    this.retryBaseMs = o.retryBaseMs ?? 200;
    this.dispatcher = new Agent({
      connect: { timeout: Math.min(this.timeoutMs, 10_000), ...(o.caCert ? { ca: loadPem(o.caCert) } : {}) },
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
    });
  }

  /** Close the connection pool. */
  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  async health(): Promise<{ ok: boolean; version: string }> {
    return this.call(routes.health, healthResponseSchema);
  }

  async getConnectorProperties(protocol: Protocol): Promise<ConnectorProperties> {
    return this.call(routes.connectorProperties, connectorPropertiesSchema, { query: { protocol } });
  }

  async connectVolume(connection: Connection): Promise<{ path: string }> {
    return this.call(routes.connect, connectResponseSchema, { body: { connection } });
  }

  async disconnectVolume(connection: Connection, options?: { force?: boolean }): Promise<void> {
    await this.call(routes.disconnect, emptyResponseSchema, { body: { connection, ...(options?.force !== undefined ? { force: options.force } : {}) } });
  }

  async getVolumePaths(connection: Connection): Promise<VolumePath[]> {
    return (await this.call(routes.volumePaths, pathsResponseSchema, { body: { connection } })).paths;
  }

  /** Every path of `protocol` on the host; of every protocol when none is given. */
  async getAllVolumePaths(protocol?: Protocol): Promise<VolumePath[]> {
    return (await this.call(routes.allPaths, pathsResponseSchema, { query: protocol ? { protocol } : {} })).paths;
  }

  async getSearchPath(protocol: Protocol): Promise<string> {
    return (await this.call(routes.searchPath, searchPathResponseSchema, { query: { protocol } })).path;
  }

  async extendVolume(connection: Connection): Promise<number> {
    return (await this.call(routes.extend, extendResponseSchema, { body: { connection } })).sizeBytes;
  }

  async checkVolume(connection: Connection): Promise<PathHealth> {
    const r = await this.call(routes.check, checkResponseSchema, { body: { connection } });
    return { path: r.path, healthy: r.healthy, ...(r.reason !== undefined ? { reason: r.reason } : {}) };
  }

  async fenceVolume(connection: Connection): Promise<PathHealth> {
    const r = await this.call(routes.fence, checkResponseSchema, { body: { connection } });
    return { path: r.path, healthy: r.healthy, ...(r.reason !== undefined ? { reason: r.reason } : {}) };
  }

  /** Storage nodes: a driver call (agent/remote-node.ts wraps these as a VolumeDriver). */
  async driverCall(driver: string, call: DriverCall): Promise<unknown> {
    return (await this.call(routes.storageDriver, storageResponseSchema, { body: { driver, call } })).result;
  }

  /** Storage nodes: a call on the tgtd of `portal`. */
  async iscsiCall(portal: string, call: IscsiCall): Promise<unknown> {
    return (await this.call(routes.storageIscsi, storageResponseSchema, { body: { portal, call } })).result;
  }

  /** Storage nodes: a call on the nbdkit servers of `host`. */
  async nbdCall(host: string, call: NbdCall): Promise<unknown> {
    return (await this.call(routes.storageNbd, storageResponseSchema, { body: { host, call } })).result;
  }

  /** Storage nodes: sync a replication pair now. */
  async syncPair(spec: SyncSpec): Promise<{ bytesTransferred: number; full: boolean; lastSyncAt: string; durationMs: number }> {
    return (await this.call(routes.storageSync, syncResponseSchema, { body: spec })).result;
  }

  /** Storage nodes: sync a pair every rpoSeconds on the node's own timer. */
  async schedulePair(spec: SyncSpec, rpoSeconds: number): Promise<void> {
    await this.call(routes.storageSchedule, emptyResponseSchema, { body: { spec, rpoSeconds } });
  }

  async unschedulePair(pairId: string): Promise<void> {
    await this.call(routes.storageUnschedule, emptyResponseSchema, { body: { pairId } });
  }

  /** Storage nodes: how far the pair's sync in flight got; null when none runs. */
  async syncProgress(pairId: string): Promise<{ doneBytes: number; totalBytes: number } | null> {
    return (await this.call(routes.storageSyncProgress, progressResponseSchema, { body: { pairId } })).progress;
  }

  async pairs(): Promise<PairStatus[]> {
    return (await this.call(routes.storagePairs, pairsResponseSchema)).pairs;
  }

  /** Storage nodes: the destination side of a sync from another node. */
  async sinkCall(file: string, call: SinkCall): Promise<unknown> {
    return (await this.call(routes.storageSink, storageResponseSchema, { body: { path: file, call } })).result;
  }

  private async call<S extends z.ZodType>(
    route: { method: "GET" | "POST"; path: string },
    schema: S,
    o: { query?: Record<string, string>; body?: unknown } = {},
  ): Promise<z.infer<S>> {
    const qs = new URLSearchParams(o.query ?? {}).toString();
    const target = `${this.url}${route.path}${qs ? `?${qs}` : ""}`;
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}`, accept: "application/json" };
    if (o.body !== undefined) headers["content-type"] = "application/json";
    const body = o.body === undefined ? undefined : JSON.stringify(o.body);

    let res: Dispatcher.ResponseData;
    for (let attempt = 0; ; attempt++) {
      try {
        res = await request(target, { method: route.method, headers, body, dispatcher: this.dispatcher });
        break;
      } catch (err) {
        const code = errorCode(err);
        if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
          throw new BackendError("TIMEOUT", `sds-agent at ${this.url} did not answer ${route.method} ${route.path} within ${this.timeoutMs} ms`, true, { cause: err });
        }
        const retry = code !== undefined && CONNECTION_ERRORS.has(code);
        if (retry && attempt < this.retries) {
          await new Promise((r) => setTimeout(r, this.retryBaseMs * 2 ** attempt));
          continue;
        }
        const tries = retry ? ` (${attempt + 1} attempts)` : "";
        throw new AgentUnavailableError(this.url, `${describe(err)}${tries}`, retry, { cause: err });
      }
    }

    let parsed: unknown;
    const text = await res.body.text();
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new BackendError("COMMAND_FAILED", `sds-agent at ${this.url} answered ${route.method} ${route.path} with HTTP ${res.statusCode} and a body that is not JSON`, false);
    }
    if (res.statusCode >= 200 && res.statusCode < 300) {
      const ok = schema.safeParse(parsed);
      if (!ok.success) {
        throw new BackendError("COMMAND_FAILED", `sds-agent at ${this.url} answered ${route.path} with an unexpected body (agent version mismatch?): ${ok.error.issues[0]?.message}`, false);
      }
      return ok.data;
    }
    throw this.httpError(res.statusCode, parsed, route);
  }

  private httpError(status: number, parsed: unknown, route: { method: string; path: string }): Error {
    const e = errorResponseSchema.safeParse(parsed);
    const code = e.success ? e.data.error.code : "";
    const message = (e.success && e.data.error.message) || `HTTP ${status}`;
    if (status === 401) {
      return new UserError("INVALID_INPUT", `sds-agent at ${this.url} refused the token (401): check the agent token configured for this host`);
    }
    if (e.success && e.data.error.code === "INVALID_STATE" && e.data.error.device !== undefined) {
      return new DeviceBusyError(e.data.error.device, message, e.data.error.holder);
    }
    if (isUserErrorCode(code)) return new UserError(code, message, e.success ? e.data.error.field : undefined);
    if (isBackendErrorCode(code)) return new BackendError(code, `sds-agent at ${this.url}: ${message}`, e.success ? (e.data.error.retryable ?? false) : false);
    return new BackendError("COMMAND_FAILED", `sds-agent at ${this.url} failed ${route.method} ${route.path} (HTTP ${status} ${code}): ${message}`, false);
  }
}
