/**
 * What a create costs the engine (issue 14): the plugin, given a real engine Log service, creates
 * volumes without a log call each (a debug line per create was a gRPC round trip on both sides,
 * for a line nobody sees unless `--debug`); what a user should read still arrives.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as engineRpc from "@pulumi/pulumi/proto/engine_grpc_pb";
import type * as enginePb from "@pulumi/pulumi/proto/engine_pb";
import * as pb from "@pulumi/pulumi/proto/provider_pb";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { type ProviderProcess, call, startProvider, struct } from "../helpers/provider-process";

const VOL = "sds:index:Volume";
let dir: string;
let p: ProviderProcess;
let engine: grpc.Server;
const logged: Array<{ severity: number; message: string }> = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-engine-log-"));
  engine = new grpc.Server();
  engine.addService(engineRpc.EngineService, {
    log: (c: grpc.ServerUnaryCall<enginePb.LogRequest, Empty>, cb: grpc.sendUnaryData<Empty>) => {
      logged.push({ severity: c.request.getSeverity(), message: c.request.getMessage() });
      cb(null, new Empty());
    },
  });
  const port = await new Promise<number>((resolve, reject) => engine.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, n) => (e ? reject(e) : resolve(n))));
  p = await startProvider(dir, { SDS_STATE_URL: "", SDS_BACKENDS_FILE: "" }, `127.0.0.1:${port}`);
  await call(p.client, "configure", new pb.ConfigureRequest().setArgs(struct({})));
  await new Promise((r) => setTimeout(r, 300)); // Configure's own line (where the state is) lands first
}, 30_000);

afterAll(async () => {
  await p?.stop();
  engine?.forceShutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

test("10 creates send the engine no log call", async () => {
  const before = logged.length;
  await Promise.all(
    Array.from({ length: 10 }, (_, i) => {
      const r = new pb.CreateRequest();
      r.setUrn(`urn:pulumi:test::proj::${VOL}::v${i}`);
      r.setType(VOL);
      r.setName(`v${i}`);
      r.setProperties(struct({ name: `v${i}`, sizeGib: 1 }));
      return call<pb.CreateRequest, pb.CreateResponse>(p.client, "create", r);
    }),
  );
  await new Promise((r) => setTimeout(r, 300)); // a log call is fire and forget: give it time to land
  expect(logged.slice(before)).toEqual([]);
}, 30_000);
