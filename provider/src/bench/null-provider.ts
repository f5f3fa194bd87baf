/**
 * pulumi-resource-sdsnull: the same gRPC server as sds with one resource that does nothing
 * (`sdsnull:index:Thing`). bench/provider-overhead runs it beside sds to measure the engine's floor.
 */
import { randomUUID } from "node:crypto";
import type { ResourceHandler } from "../resources/resource";
import type { Props } from "../resources/values";
import { ProviderServer, serve } from "../server/provider-server";
import { engineAddress } from "../main-args";

/**
 * As many output properties as an sds Volume has, of the same kinds. Why: the engine stores and
 * diffs every output of every resource; with fewer, the do-nothing run would be cheaper for the
 * engine, not only for the provider, and the ratio would charge sds for the engine's work.
 */
function volumeLikeOutputs(name: string, inputs: Props): Props {
  return {
    ...inputs,
    name,
    availabilityZone: "nova",
    multiAttach: false,
    description: "",
    metadata: {},
    poolId: "default#default#default",
    backendName: "default",
    backendId: "default",
    sharedTargets: true,
    status: "available",
    attachmentIds: [],
    replicationStatus: "disabled",
    createdAt: new Date().toISOString(),
  };
}

const thing: ResourceHandler = {
  token: "sdsnull:index:Thing",
  check: async (req) => ({ inputs: req.news, failures: [] }),
  diff: async () => ({ changed: false, replaces: [], deleteBeforeReplace: false, detailed: {} }),
  create: async (req) => ({ id: req.preview ? "" : randomUUID(), outs: volumeLikeOutputs(req.name, req.inputs) }),
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
