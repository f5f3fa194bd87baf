/**
 * pulumi-resource-sdsnull: the same gRPC server as sds with one resource that does nothing
 * (`sdsnull:index:Thing`). bench/provider-overhead runs it beside sds to measure the engine's floor.
 */
import { randomUUID } from "node:crypto";
import type { ResourceHandler } from "../resources/resource";
import { ProviderServer, serve } from "../server/provider-server";
import { engineAddress } from "../main-args";

const thing: ResourceHandler = {
  token: "sdsnull:index:Thing",
  check: async (req) => ({ inputs: req.news, failures: [] }),
  diff: async () => ({ changed: false, replaces: [], deleteBeforeReplace: false, detailed: {} }),
  create: async (req) => ({ id: req.preview ? "" : randomUUID(), outs: req.inputs }),
  read: async (req) => ({ id: req.id, outs: req.state, inputs: req.inputs }),
  update: async (req) => req.news,
  delete: async () => undefined,
};

async function main(): Promise<void> {
  const schema = JSON.stringify({ name: "sdsnull", version: "0.1.0", resources: { "sdsnull:index:Thing": { properties: {}, inputProperties: {} } } });
  const server = new ProviderServer({ version: "0.1.0", schema, engineAddress: engineAddress(process.argv.slice(2)), handlers: () => ({ resources: [thing], functions: [] }) });
  const { port } = await serve(server);
  process.stdout.write(`${port}\n`);
}

void main();
