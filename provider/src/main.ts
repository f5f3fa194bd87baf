/**
 * pulumi-resource-sds: start the gRPC server and print its port as the first stdout line,
 * nothing else on stdout (the engine reads the port from it).
 */
import { ProviderServer, loadSchema, serve } from "./server/provider-server";

/** The engine address is the first argument that is not a flag (`-v=9`, `--logtostderr`, `--tracing X`). */
export function engineAddress(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--tracing" || a === "-tracing") {
      i++;
      continue;
    }
    if (a.startsWith("-")) continue;
    return a;
  }
  return undefined;
}

async function main(): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const version: string = require("../../package.json").version;
  const server = new ProviderServer({ version, schema: loadSchema(), engineAddress: engineAddress(process.argv.slice(2)) });
  const { port, grpcServer } = await serve(server);
  process.stdout.write(`${port}\n`);
  const stop = () => {
    grpcServer.tryShutdown(() => {
      server.close();
      process.exit(0);
    });
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

main().catch((err) => {
  process.stderr.write(`pulumi-resource-sds: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
