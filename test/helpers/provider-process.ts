/**
 * Start the real plugin executable (provider/bin/pulumi-resource-sds) and talk to it over gRPC,
 * the way the engine does: read the port from the first stdout line, then call the service.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as providerRpc from "@pulumi/pulumi/proto/provider_grpc_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";

export const repoRoot = path.resolve(__dirname, "../..");

/**
 * Whether a process's argv is this checkout's provider plugin: its launcher execs node on
 * dist/start-bundle.js with the bundle (since issue 14), or on dist/main.js when tsc ran after the
 * bundle. Tests that wait for the plugin to exit, or kill it, find it by this.
 */
export function isPluginArgv(argv: readonly string[]): boolean {
  const dist = path.join(repoRoot, "provider/dist");
  return argv.some((a) => {
    const at = path.resolve(a);
    return at === path.join(dist, "main.js") || at === path.join(dist, "start-bundle.js") || at === path.join(repoRoot, "provider/bin/pulumi-resource-sds");
  });
}
export const pluginPath = path.join(repoRoot, "provider/bin/pulumi-resource-sds");

export interface ProviderProcess {
  client: providerRpc.ResourceProviderClient;
  child: ChildProcess;
  /** Every stdout line after the port (must stay empty). */
  extraStdout: string[];
  stderr: string[];
  stop(): Promise<void>;
}

/** `engine`: the engine address the plugin is given (its Log service); default one where nothing listens. */
export async function startProvider(cwd: string, env: NodeJS.ProcessEnv = {}, engine = "127.0.0.1:1"): Promise<ProviderProcess> {
  const child = spawn(pluginPath, [engine], { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const extraStdout: string[] = [];
  const stderr: string[] = [];
  child.stderr!.on("data", (d) => stderr.push(String(d)));
  const port = await new Promise<number>((resolve, reject) => {
    let buf = "";
    let gotPort = false;
    child.stdout!.on("data", (d) => {
      buf += String(d);
      const lines = buf.split("\n");
      buf = lines.pop() ?? "";
      for (const line of lines) {
        if (!gotPort) {
          gotPort = true;
          const n = Number(line.trim());
          if (Number.isInteger(n) && n > 0) resolve(n);
          else reject(new Error(`first stdout line is not a port: ${JSON.stringify(line)}`));
        } else {
          extraStdout.push(line);
        }
      }
    });
    child.on("exit", (code) => reject(new Error(`provider exited with ${code} before printing a port: ${stderr.join("")}`)));
  });
  const client = new providerRpc.ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return {
    client,
    child,
    extraStdout,
    stderr,
    async stop() {
      client.close();
      if (child.exitCode === null) {
        const done = new Promise((r) => child.on("exit", r));
        child.kill("SIGTERM");
        await done;
      }
    },
  };
}

/** Promisify one unary call on the client. */
export function call<Req, Res>(client: providerRpc.ResourceProviderClient, method: string, req: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    (client as unknown as Record<string, (r: Req, cb: (e: grpc.ServiceError | null, r: Res) => void) => void>)[method](req, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

export const struct = (o: Record<string, unknown>) => Struct.fromJavaScript(o as never);
