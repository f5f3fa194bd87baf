/**
 * The OpenAPI 3.1 document of sds-agent, generated from the route table and zod schemas of api.ts
 * with `z.toJSONSchema`, so the document is what the server validates.
 */
import { z } from "zod";
import { errorResponseSchema, routes, type RouteSpec } from "./api";

type Json = Record<string, unknown>;

/** Why: each nested schema would otherwise repeat the `$schema` dialect OpenAPI 3.1 already fixes. */
function schemaOf(schema: z.ZodType, io: "input" | "output"): Json {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: "any" }) as Json;
  return rest;
}

function errorResponse(description: string): Json {
  return { description, content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } };
}

function operation(route: RouteSpec): Json {
  const op: Json = { operationId: route.operationId, summary: route.summary };
  if (!route.auth) op.security = [];
  if (route.query) {
    const shape = route.query.shape as Record<string, z.ZodType>;
    op.parameters = Object.entries(shape).map(([name, schema]) => ({
      name,
      in: "query",
      required: !schema.safeParse(undefined).success,
      schema: schemaOf(schema, "input"),
    }));
  }
  if (route.body) {
    op.requestBody = { required: true, content: { "application/json": { schema: schemaOf(route.body, "input") } } };
  }
  const responses: Json = {
    "200": { description: "Success.", content: { "application/json": { schema: schemaOf(route.response, "output") } } },
  };
  if (route.body || route.query) responses["400"] = errorResponse("Malformed request (`field` names the culprit) or a user error of the connector.");
  if (route.auth) {
    responses["401"] = errorResponse("Missing or wrong bearer token.");
    responses["404"] = errorResponse("Not found.");
    responses["409"] = errorResponse("Conflict (e.g. the device is in use).");
    responses["502"] = errorResponse("A command on the host failed; `retryable` says whether a retry can help.");
  }
  responses["500"] = errorResponse("A bug in the agent; details are in its log only.");
  op.responses = responses;
  return op;
}

/** The OpenAPI 3.1 document for this agent version. */
export function openApiDocument(version: string): Json {
  const paths: Record<string, Json> = {};
  for (const route of Object.values(routes) as RouteSpec[]) {
    paths[route.path] = { ...(paths[route.path] ?? {}), [route.method.toLowerCase()]: operation(route) };
  }
  return {
    openapi: "3.1.0",
    info: { title: "sds-agent", version, description: "The API of an sds agent: the connector API of a host (attach volumes on this host) and, on storage nodes started with --storage-root, the driver and target calls of its backends." },
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: { Error: schemaOf(errorResponseSchema, "output") },
    },
  };
}
