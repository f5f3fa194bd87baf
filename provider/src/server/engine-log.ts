/**
 * The engine's Log service: the only way a resource plugin's messages reach the user
 * (stdout/stderr after the port line are hidden by the engine).
 */
import * as grpc from "@grpc/grpc-js";
import * as engineRpc from "@pulumi/pulumi/proto/engine_grpc_pb";
import * as enginePb from "@pulumi/pulumi/proto/engine_pb";
import type { Severity } from "../resources/context";

const severities: Record<Severity, enginePb.LogSeverity> = {
  debug: enginePb.LogSeverity.DEBUG,
  info: enginePb.LogSeverity.INFO,
  warning: enginePb.LogSeverity.WARNING,
  error: enginePb.LogSeverity.ERROR,
};

export class EngineLog {
  private readonly client?: engineRpc.EngineClient;

  constructor(address: string | undefined) {
    if (address) this.client = new engineRpc.EngineClient(address, grpc.credentials.createInsecure());
  }

  /** Fire and forget: a lost log line must never fail an operation. */
  log(severity: Severity, message: string, urn?: string): void {
    if (!this.client) {
      if (severity !== "debug") process.stderr.write(`[${severity}] ${message}\n`);
      return;
    }
    const req = new enginePb.LogRequest();
    req.setSeverity(severities[severity]);
    req.setMessage(message);
    if (urn) req.setUrn(urn);
    this.client.log(req, () => undefined);
  }

  close(): void {
    this.client?.close();
  }
}
