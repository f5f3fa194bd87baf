/**
 * The connector routes of sds-agent (`/v1/connector/…`, `/v1/connections/…`): the Connector of
 * this host (connectors/connector.ts) over HTTP, one route per call. Bodies arrive validated
 * (api.ts); what a connector throws is answered by agent/http-errors.ts.
 */
import type { Connector } from "../connectors/connector";
import { PROTOCOLS, type Protocol } from "./api";

/** Route handlers by operationId (api.ts `routes`): query and body as the route's schemas parsed them. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type RouteHandlers = Record<string, (query: any, body: any) => Promise<unknown>>;

/** The handlers of the connector routes over `connectorFor`. */
export function connectorRoutes(connectorFor: (protocol: Protocol) => Connector): RouteHandlers {
  return {
  getConnectorProperties: async (q) => connectorFor(q.protocol).getConnectorProperties(),
  connectVolume: async (_q, b) => connectorFor(b.connection.protocol).connectVolume(b.connection),
  disconnectVolume: async (_q, b) => {
    await connectorFor(b.connection.protocol).disconnectVolume(b.connection, b.force === undefined ? undefined : { force: b.force });
    return {};
  },
  getVolumePaths: async (_q, b) => ({ paths: await connectorFor(b.connection.protocol).getVolumePaths(b.connection) }),
  getAllVolumePaths: async (q) => {
    const protocols: Protocol[] = q.protocol ? [q.protocol] : [...PROTOCOLS];
    const paths = [];
    for (const p of protocols) paths.push(...(await connectorFor(p).getAllVolumePaths()));
    return { paths };
  },
  getSearchPath: async (q) => ({ path: connectorFor(q.protocol).getSearchPath() }),
  extendVolume: async (_q, b) => ({ sizeBytes: await connectorFor(b.connection.protocol).extendVolume(b.connection) }),
  checkVolume: async (_q, b) => connectorFor(b.connection.protocol).checkVolume(b.connection),
  fenceVolume: async (_q, b) => connectorFor(b.connection.protocol).fenceVolume(b.connection),
  };
}
