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
  /**
   * The call in flight; the next waits for it. Why: concurrent unary calls reach the engine in any
   * order, and a progress report at 30% shown after the one at 100% reads as going backwards.
   */
  private tail: Promise<void> = Promise.resolve();

  constructor(address: string | undefined) {
    if (address) this.client = new engineRpc.EngineClient(address, grpc.credentials.createInsecure());
  }

  /**
   * Fire and forget: a lost log line must never fail an operation. `ephemeral`: a status message
   * (the interactive display shows it on the resource's row, replacing the previous one; it is
   * not kept among the run's diagnostics).
   */
  log(severity: Severity, message: string, urn?: string, o: { ephemeral?: boolean } = {}): void {
    if (!this.client) {
      if (severity !== "debug" && !o.ephemeral) process.stderr.write(`[${severity}] ${message}\n`);
      return;
    }
    const req = new enginePb.LogRequest();
    req.setSeverity(severities[severity]);
    req.setMessage(message);
    if (urn) req.setUrn(urn);
    if (o.ephemeral) req.setEphemeral(true);
    const client = this.client;
    this.tail = this.tail.then(
      () =>
        new Promise<void>((done) => {
          try {
            client.log(req, () => done());
          } catch {
            done(); // closed meanwhile: the line is lost, never the operation
          }
        }),
    );
  }

  close(): void {
    this.client?.close();
  }
}
