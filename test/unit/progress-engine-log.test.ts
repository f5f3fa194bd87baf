// Progress lines must reach the engine in the order they were sent: a real gRPC Engine service
// that handles each call after a random delay (as the engine's goroutines do) records what it
// finished, in order; the plugin's EngineLog sends one call at a time, so 30% never lands after 100%.
import * as grpc from "@grpc/grpc-js";
import * as engineRpc from "@pulumi/pulumi/proto/engine_grpc_pb";
import type * as enginePb from "@pulumi/pulumi/proto/engine_pb";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { EngineLog } from "../../provider/src/server/engine-log";

test("log lines and status messages reach the engine in the order they were sent, ephemeral ones marked", async () => {
  const handled: Array<{ message: string; ephemeral: boolean }> = [];
  const engine = new grpc.Server();
  engine.addService(engineRpc.EngineService, {
    log: (c: grpc.ServerUnaryCall<enginePb.LogRequest, Empty>, cb: grpc.sendUnaryData<Empty>) => {
      setTimeout(() => {
        handled.push({ message: c.request.getMessage(), ephemeral: c.request.getEphemeral() });
        cb(null, new Empty());
      }, Math.random() * 20);
    },
  });
  const port = await new Promise<number>((resolve, reject) => engine.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const log = new EngineLog(`127.0.0.1:${port}`);
  try {
    const sent = Array.from({ length: 40 }, (_, i) => `sync: ${i * 2.5}%`);
    sent.forEach((m, i) => log.log("info", m, "urn:pulumi:s::p::sds:index:ReplicationPair::dr", { ephemeral: i % 2 === 1 }));
    const deadline = Date.now() + 10_000;
    while (handled.length < sent.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(handled.map((h) => h.message)).toEqual(sent);
    expect(handled.map((h) => h.ephemeral)).toEqual(sent.map((_, i) => i % 2 === 1));
  } finally {
    log.close();
    engine.forceShutdown();
  }
});

test("a closed log loses lines, never throws", () => {
  const log = new EngineLog("127.0.0.1:1");
  log.close();
  expect(() => log.log("info", "after close")).not.toThrow();
});
