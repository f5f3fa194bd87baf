/**
 * The sds-agent wire API: one zod schema per request body, query and response, and the route
 * table the server dispatches on and the OpenAPI document is generated from (openapi.ts), so
 * validation, dispatch and documentation cannot drift apart.
 *
 * Every route is under `/v1`, JSON in and out. Every route but `GET /v1/health` and
 * `GET /v1/openapi.json` needs `Authorization: Bearer <token>`.
 * Errors are `{error: {code, message, field?, retryable?}}` (see {@link errorResponseSchema}).
 */
import { z } from "zod";
import type { Connection, ConnectorProperties, VolumePath } from "../connectors/connector";
import { ERROR_CODES } from "../errors";
import { VOLUME_ID_PATTERN, VOLUME_ID_RULE, volumeIdProblem } from "../domain/volume-id";

/** The wire API version (the path prefix). */
export const API_PREFIX = "/v1";

export const protocolSchema = z.enum(["iscsi", "nbd", "local"]).describe("The connector protocol.");
export type Protocol = z.infer<typeof protocolSchema>;
export const PROTOCOLS: readonly Protocol[] = protocolSchema.options;

/** A volume id (domain/volume-id.ts): ids become file names, so every route checks them. */
export const volumeIdSchema = z.string().regex(VOLUME_ID_PATTERN, { error: (iss) => volumeIdProblem(iss.input) }).describe(`A volume id: ${VOLUME_ID_RULE}.`);

/** A connection: the connection info an attachment returned, plus the volume id (connectors/connector.ts). */
export const connectionSchema = z
  .object({
    protocol: protocolSchema,
    portals: z.array(z.string().min(1)).describe("Target portals, `host:port`."),
    targetIqn: z.string().min(1).optional(),
    targetLun: z.number().int().min(0).optional(),
    exportName: z.string().min(1).optional(),
    authMethod: z.literal("CHAP").optional(),
    authUsername: z.string().optional(),
    authPassword: z.string().optional().describe("CHAP secret; never logged by the agent."),
    readOnly: z.boolean(),
    volumeId: volumeIdSchema,
  })
  .superRefine((c, ctx) => {
    // The union on protocol (domain/connection-info.ts): target, LUN and CHAP are iSCSI's alone.
    if (c.protocol === "iscsi") return;
    for (const key of ["targetIqn", "targetLun", "authMethod", "authUsername", "authPassword"] as const) {
      if (c[key] !== undefined) ctx.addIssue({ code: "custom", path: [key], message: `an ${c.protocol} connection has no ${key} (iSCSI only)` });
    }
  })
  .describe("Connection info plus the volume id.");

export const connectRequestSchema = z.object({ connection: connectionSchema });
export const disconnectRequestSchema = z.object({ connection: connectionSchema, force: z.boolean().optional() });
export const volumePathsRequestSchema = z.object({ connection: connectionSchema });
export const extendRequestSchema = z.object({ connection: connectionSchema });
export const checkRequestSchema = z.object({ connection: connectionSchema });

/** `?protocol=` required. */
export const protocolQuerySchema = z.object({ protocol: protocolSchema });
/** `?protocol=` optional (all protocols when absent). */
export const optionalProtocolQuerySchema = z.object({ protocol: protocolSchema.optional() });

export const healthResponseSchema = z.object({ ok: z.boolean(), version: z.string() });
export const connectorPropertiesSchema = z.object({
  initiator: z.string().optional(),
  nqn: z.string().optional(),
  ip: z.string().optional(),
  hostname: z.string(),
  multipath: z.boolean(),
  capabilities: z.object({ iscsiKernel: z.boolean(), nbdKernel: z.boolean(), userspace: z.boolean() }),
});
export const volumePathSchema = z.object({
  volumeId: z.string().optional(),
  path: z.string(),
  protocol: protocolSchema,
  via: z.enum(["kernel", "userspace", "loop"]),
});
export const connectResponseSchema = z.object({ path: z.string() });
export const emptyResponseSchema = z.object({});
export const pathsResponseSchema = z.object({ paths: z.array(volumePathSchema) });
export const searchPathResponseSchema = z.object({ path: z.string() });
export const extendResponseSchema = z.object({ sizeBytes: z.number().int().min(0) });
export const checkResponseSchema = z.object({
  path: z.string().nullable().describe("The device, or null when the volume is not connected here."),
  healthy: z.boolean().describe("Every layer of the device answers, down to the target."),
  reason: z.string().optional().describe("Why not, in one line."),
});
/** Codes only the agent answers with, besides errors.ts's ERROR_CODES: auth, routing, its own bugs. */
export const AGENT_ERROR_CODES = ["UNAUTHORIZED", "METHOD_NOT_ALLOWED", "INTERNAL"] as const;
export const errorResponseSchema = z.object({
  error: z.object({
    code: z.string().describe(`Stable code: ${[...ERROR_CODES, ...AGENT_ERROR_CODES].join(", ")}.`),
    message: z.string().optional(),
    field: z.string().optional().describe("The request field at fault, e.g. `connection.portals[0]`."),
    retryable: z.boolean().optional(),
    device: z.string().optional().describe("INVALID_STATE of a device in use (DeviceBusyError): the device."),
    holder: z.string().optional().describe("What holds `device`, when known."),
  }),
});
export type ErrorBody = z.infer<typeof errorResponseSchema>;

// ------------------------------------------------------------------ storage node routes
// A backend whose `node` is a host in the provider's `hosts` is driven through that host's agent:
// the driver calls (VolumeDriver) and the target calls (IscsiTarget, NbdTarget) travel as
// `{call: {op, args}}`, one route per interface, each op's arguments validated by position.

const poolWireSchema = z
  .object({ name: z.string().min(1), path: z.string().min(1).describe("Absolute path on the storage node.") })
  .loose()
  .describe("A pool as the backends file declares it (PoolConfig).");
const bytes = z.number().int().min(0);
const id = z.string().min(1);
const vid = volumeIdSchema;
const op = <N extends string, T extends z.ZodTuple>(name: N, args: T) => z.object({ op: z.literal(name), args });

export const driverCallSchema = z.discriminatedUnion("op", [
  op("getPoolStats", z.tuple([poolWireSchema])),
  op("createVolume", z.tuple([poolWireSchema, vid, bytes])),
  op("cloneVolume", z.tuple([z.object({ pool: poolWireSchema, volumeId: vid }), poolWireSchema, vid, bytes])),
  op("extendVolume", z.tuple([poolWireSchema, vid, bytes])),
  op("deleteVolume", z.tuple([poolWireSchema, vid])),
  op("getVolumeSizeBytes", z.tuple([poolWireSchema, vid])),
]);
export const driverRequestSchema = z.object({ driver: z.enum(["file"]), call: driverCallSchema });

const tid = z.number().int().min(1);
const lun = z.number().int().min(0);
export const iscsiCallSchema = z.discriminatedUnion("op", [
  op("start", z.tuple([])),
  op("stop", z.tuple([])),
  op("ensureTarget", z.tuple([id, tid.optional()])),
  op("ensureLun", z.tuple([tid, lun, id, z.boolean()])),
  op("refreshLun", z.tuple([tid, lun, id, z.boolean()])),
  op("ensureInitiator", z.tuple([tid, id])),
  op("ensureChap", z.tuple([tid, z.object({ username: id, password: id.describe("CHAP secret; never logged by the agent.") })])),
  op("removeInitiator", z.tuple([tid, id])),
  op("removeLun", z.tuple([tid, lun])),
  op("removeTarget", z.tuple([tid])),
  op("removeChapAccount", z.tuple([id])),
  op("list", z.tuple([])),
]);
export const iscsiRequestSchema = z.object({ portal: id.describe("The portal of the tgtd to drive, `ip:port`."), call: iscsiCallSchema });

const port = z.number().int().min(1).max(65535);
export const nbdCallSchema = z.discriminatedUnion("op", [
  op("ensureServer", z.tuple([id, port, z.boolean()])),
  op("ensureExport", z.tuple([id, id, id])),
  op("refreshExport", z.tuple([id, id, id])),
  op("removeExport", z.tuple([id, id])),
  op("removeServer", z.tuple([id])),
  op("list", z.tuple([])),
]);
export const nbdRequestSchema = z.object({ host: id.describe("The address the nbdkit servers listen on."), call: nbdCallSchema });

// Replication between storage nodes: the primary's node runs the sync (its own timer every
// rpoSeconds, or now when asked) and writes through the secondary node's sink route.
// Where a node may send data is its own configuration (`--peers`), never the request's: a
// request names a peer, and a token holder cannot make the node send a volume to any url.

/** How this node reaches another node's agent: an entry of the agent's `--peers` file. */
export const peerEndpointSchema = z.strictObject({
  url: z.url({ protocol: /^https?$/ }).describe("The peer agent's URL, e.g. https://10.0.0.6:7700."),
  token: z.string().min(1).describe("The peer agent's bearer token. Secret; never logged."),
  caCert: z.string().min(1).optional().describe("PEM (or a path to it) of the CA that signed the peer agent's certificate."),
});
export type PeerEndpoint = z.infer<typeof peerEndpointSchema>;
/** The `--peers` file: peer name (the node's key in the provider's `hosts`) → endpoint. */
export const peersFileSchema = z.record(z.string().min(1), peerEndpointSchema);
export type Peers = z.infer<typeof peersFileSchema>;

export const peerNameSchema = z
  .string({ error: (iss) => (iss.input === undefined ? undefined : "name a peer from this agent's --peers file; a url or token in the request is not accepted") })
  .min(1)
  .describe("The node that holds the destination, when it is another node: a name from this agent's --peers file.");
export const syncSpecSchema = z.object({
  pairId: z.string().regex(/^[A-Za-z0-9._-]+$/),
  direction: z.enum(["forward", "reverse"]),
  source: z.string().min(1).describe("The volume file read, on this node (under its storage root)."),
  sink: z.string().min(1).describe("The volume file written: on this node (under its storage root), or on `peer`'s."),
  peer: peerNameSchema.optional(),
  fresh: z.boolean().optional().describe("Forget this direction's chunk map first (a full, digest-compared sync): after the destination was written by others."),
});
export const syncRequestSchema = syncSpecSchema;
export const syncResultSchema = z.object({
  bytesTransferred: z.number().int().min(0),
  full: z.boolean(),
  lastSyncAt: z.string(),
  durationMs: z.number(),
});
export const syncResponseSchema = z.object({ result: syncResultSchema });
export const scheduleRequestSchema = z.object({ spec: syncSpecSchema, rpoSeconds: z.number().int().min(1) });
export const unscheduleRequestSchema = z.object({ pairId: z.string().min(1) });
export const pairStatusSchema = z.object({
  pairId: z.string(),
  rpoSeconds: z.number(),
  lastSyncAt: z.string().nullable(),
  bytesTransferred: z.number().int().min(0).describe("Sent by this node's scheduled syncs since the pair was scheduled."),
  lastError: z.string().nullable(),
});
export const pairsResponseSchema = z.object({ pairs: z.array(pairStatusSchema) });
export const progressRequestSchema = z.object({ pairId: z.string().min(1) });
export const progressResponseSchema = z.object({
  progress: z
    .object({ doneBytes: z.number().min(0), totalBytes: z.number().min(0) })
    .nullable()
    .describe("How far the pair's sync in flight got (bytes of the source scanned); null when none runs."),
});

const b64 = z.string().describe("base64");
export const sinkCallSchema = z.discriminatedUnion("op", [
  op("sizeBytes", z.tuple([])),
  op("resize", z.tuple([bytes])),
  op("writeChunks", z.tuple([z.array(z.object({ offset: bytes, data: b64 }))])),
  op("zeroRanges", z.tuple([z.array(z.object({ offset: bytes, length: bytes }))])),
  op("flush", z.tuple([])),
  op("readDigests", z.tuple([z.number().int().min(4096), z.enum(["sha256", "sha1", "md5"])])),
]);
export const sinkRequestSchema = z.object({ path: z.string().min(1), call: sinkCallSchema });
export type SinkCall = z.infer<typeof sinkCallSchema>;
export type SyncSpec = z.infer<typeof syncSpecSchema>;
export type PairStatus = z.infer<typeof pairStatusSchema>;

export type DriverCall = z.infer<typeof driverCallSchema>;
export type IscsiCall = z.infer<typeof iscsiCallSchema>;
export type NbdCall = z.infer<typeof nbdCallSchema>;
/** What a storage call returns (undefined for the calls that return nothing). */
export const storageResponseSchema = z.object({ result: z.unknown().optional() });

// Compile-time checks: the wire schemas and the connector interface describe the same data.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
// A Connection is a union on protocol; the wire shape is flat, and its refinement above keeps the
// iSCSI-only fields to iSCSI, so a request that passes is one of the union's members.
const sameConnection: Connection extends z.infer<typeof connectionSchema> ? true : false = true;
const sameProperties: Same<z.infer<typeof connectorPropertiesSchema>, ConnectorProperties> = true;
const samePath: Same<z.infer<typeof volumePathSchema>, VolumePath> = true;
void sameConnection;
void sameProperties;
void samePath;

/** One route of the agent: what the server dispatches and what openapi.ts documents. */
export interface RouteSpec {
  operationId: string;
  method: "GET" | "POST";
  path: string;
  summary: string;
  /** false only for health and the OpenAPI document. */
  auth: boolean;
  query?: z.ZodObject;
  body?: z.ZodObject;
  response: z.ZodType;
}

export const routes = {
  health: { operationId: "health", method: "GET", path: `${API_PREFIX}/health`, summary: "Liveness and version.", auth: false, response: healthResponseSchema },
  openapi: { operationId: "openapi", method: "GET", path: `${API_PREFIX}/openapi.json`, summary: "This document.", auth: false, response: z.object({}).loose() },
  connectorProperties: {
    operationId: "getConnectorProperties",
    method: "GET",
    path: `${API_PREFIX}/connector/properties`,
    summary: "What identifies this host to a target (os-brick get_connector_properties).",
    auth: true,
    query: protocolQuerySchema,
    response: connectorPropertiesSchema,
  },
  connect: {
    operationId: "connectVolume",
    method: "POST",
    path: `${API_PREFIX}/connections/connect`,
    summary: "Make the block device of a connection on this host (idempotent).",
    auth: true,
    body: connectRequestSchema,
    response: connectResponseSchema,
  },
  disconnect: {
    operationId: "disconnectVolume",
    method: "POST",
    path: `${API_PREFIX}/connections/disconnect`,
    summary: "Take the block device of a connection away (what is not connected is success).",
    auth: true,
    body: disconnectRequestSchema,
    response: emptyResponseSchema,
  },
  volumePaths: {
    operationId: "getVolumePaths",
    method: "POST",
    path: `${API_PREFIX}/connections/paths`,
    summary: "The paths of this volume on this host (path discovery).",
    auth: true,
    body: volumePathsRequestSchema,
    response: pathsResponseSchema,
  },
  allPaths: {
    operationId: "getAllVolumePaths",
    method: "GET",
    path: `${API_PREFIX}/paths`,
    summary: "Every path of a protocol on this host, orphans included; every protocol when none is given (path discovery).",
    auth: true,
    query: optionalProtocolQuerySchema,
    response: pathsResponseSchema,
  },
  searchPath: {
    operationId: "getSearchPath",
    method: "GET",
    path: `${API_PREFIX}/search-path`,
    summary: "Where the devices of a protocol appear on this host (path discovery).",
    auth: true,
    query: protocolQuerySchema,
    response: searchPathResponseSchema,
  },
  extend: {
    operationId: "extendVolume",
    method: "POST",
    path: `${API_PREFIX}/connections/extend`,
    summary: "The volume grew on the target: make the device show the new size.",
    auth: true,
    body: extendRequestSchema,
    response: extendResponseSchema,
  },
  check: {
    operationId: "checkVolume",
    method: "POST",
    path: `${API_PREFIX}/connections/check`,
    summary: "Whether the device of a connection works end to end (a bounded probe: it never hangs).",
    auth: true,
    body: checkRequestSchema,
    response: checkResponseSchema,
  },
  fence: {
    operationId: "fenceVolume",
    method: "POST",
    path: `${API_PREFIX}/connections/fence`,
    summary: "When the device of a connection is broken, make its I/O fail now instead of hanging (the device stays, for a repair on the same path).",
    auth: true,
    body: checkRequestSchema,
    response: checkResponseSchema,
  },
  storageDriver: {
    operationId: "storageDriver",
    method: "POST",
    path: `${API_PREFIX}/storage/driver`,
    summary: "Storage nodes: a volume driver call (pool stats, create, clone, extend, delete, size). Paths must be under the agent's --storage-root.",
    auth: true,
    body: driverRequestSchema,
    response: storageResponseSchema,
  },
  storageIscsi: {
    operationId: "storageIscsi",
    method: "POST",
    path: `${API_PREFIX}/storage/iscsi`,
    summary: "Storage nodes: an iSCSI target call on the tgtd of a portal (targets, LUNs, ACLs, CHAP).",
    auth: true,
    body: iscsiRequestSchema,
    response: storageResponseSchema,
  },
  storageNbd: {
    operationId: "storageNbd",
    method: "POST",
    path: `${API_PREFIX}/storage/nbd`,
    summary: "Storage nodes: an NBD target call on the nbdkit servers of an address.",
    auth: true,
    body: nbdRequestSchema,
    response: storageResponseSchema,
  },
  storageSync: {
    operationId: "storageSync",
    method: "POST",
    path: `${API_PREFIX}/storage/replication/sync`,
    summary: "Storage nodes: sync a replication pair now (incremental), from a volume on this node to one here or on the peer's node.",
    auth: true,
    body: syncRequestSchema,
    response: syncResponseSchema,
  },
  storageSchedule: {
    operationId: "storageSchedule",
    method: "POST",
    path: `${API_PREFIX}/storage/replication/schedule`,
    summary: "Storage nodes: sync a pair every rpoSeconds from now on (kept across agent restarts).",
    auth: true,
    body: scheduleRequestSchema,
    response: emptyResponseSchema,
  },
  storageUnschedule: {
    operationId: "storageUnschedule",
    method: "POST",
    path: `${API_PREFIX}/storage/replication/unschedule`,
    summary: "Storage nodes: stop syncing a pair on a timer (what is not scheduled is success).",
    auth: true,
    body: unscheduleRequestSchema,
    response: emptyResponseSchema,
  },
  storagePairs: {
    operationId: "storagePairs",
    method: "GET",
    path: `${API_PREFIX}/storage/replication/pairs`,
    summary: "Storage nodes: the scheduled pairs and their last sync.",
    auth: true,
    response: pairsResponseSchema,
  },
  storageSyncProgress: {
    operationId: "storageSyncProgress",
    method: "POST",
    path: `${API_PREFIX}/storage/replication/progress`,
    summary: "Storage nodes: how far a pair's sync in flight got, so the provider can show it while it waits for the sync call.",
    auth: true,
    body: progressRequestSchema,
    response: progressResponseSchema,
  },
  storageSink: {
    operationId: "storageSink",
    method: "POST",
    path: `${API_PREFIX}/storage/replication/sink`,
    summary: "Storage nodes: the destination side of a sync from another node (size, resize, chunks, zero ranges, flush, digests).",
    auth: true,
    body: sinkRequestSchema,
    response: storageResponseSchema,
  },
} as const satisfies Record<string, RouteSpec>;

export type RouteName = keyof typeof routes;
