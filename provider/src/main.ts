/**
 * pulumi-resource-sds: start the gRPC server and print its port as the first stdout line,
 * nothing else on stdout (the engine reads the port from it).
 */
import { engineAddress } from "./main-args";
import { ProviderServer, loadSchema, serve } from "./server/provider-server";

async function main(): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const version: string = require("../../package.json").version;
  const server = new ProviderServer({ version, schema: loadSchema(), engineAddress: engineAddress(process.argv.slice(2)) });
  const { port, grpcServer } = await serve(server);
  process.stdout.write(`${port}\n`);
  const stop = () => {
    // The engine waits 5 s for a plugin it asked to stop, then kills it. Closing the state (a
    // PostgreSQL pool ends once its clients are back) gets 3 s; a store transaction cut short
    // is rolled back by the database either way.
    setTimeout(() => process.exit(0), 3_000);
    grpcServer.tryShutdown(() => {
      void server.close().finally(() => process.exit(0));
    });
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

main().catch((err) => {
  process.stderr.write(`pulumi-resource-sds: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
