/**
 * pulumi-resource-sds: start the gRPC server and print its port as the first stdout line,
 * nothing else on stdout (the engine reads the port from it).
 */
import { engineAddress } from "./main-args";
import { ProviderServer, loadSchema, serve } from "./server/provider-server";

/**
 * Why the plugin watches its parent: an engine that dies without stopping its plugins (SIGKILL
 * of the `pulumi` CLI, the OOM killer, a CI job cancelled hard) sends no signal, and the plugin
 * would run on forever, holding the state open. The engine starts the plugin itself (our
 * bin/pulumi-resource-sds execs node), so the parent's death is the engine's: once the original
 * parent is gone (we were re-parented to init or a subreaper, or its pid answers ESRCH),
 * `onGone` is called, once. Polled every `intervalMs`; the timer never keeps the process alive.
 * (The engine's gRPC address is not probed: the parent says the same without connecting to it,
 * and in attach mode, where the parent is not the engine, no address is given anyway.)
 */
function watchEngine(onGone: (why: string) => void, intervalMs = 1_000): void {
  const parent = process.ppid;
  if (parent <= 1) return; // started by init itself: there is no engine process to follow
  const timer = setInterval(() => {
    let why: string | undefined;
    if (process.ppid !== parent) why = `its parent process ${parent} is gone (now a child of ${process.ppid})`;
    else {
      try {
        process.kill(parent, 0);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ESRCH") why = `its parent process ${parent} is gone`;
      }
    }
    if (why === undefined) return;
    clearInterval(timer);
    onGone(why);
  }, intervalMs);
  timer.unref();
}

async function main(): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const version: string = require("../../package.json").version;
  const server = new ProviderServer({ version, schema: loadSchema(), engineAddress: engineAddress(process.argv.slice(2)) });
  const { port, grpcServer } = await serve(server);
  process.stdout.write(`${port}\n`);
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
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
  watchEngine((why) => {
    // The engine held our stdout and stderr: a write to them may now fail with EPIPE, which
    // must not crash the plugin before its state is closed.
    process.stdout.on("error", () => undefined);
    process.stderr.on("error", () => undefined);
    process.stderr.write(`pulumi-resource-sds: the engine is gone (${why}); closing\n`);
    stop();
  });
}

main().catch((err) => {
  process.stderr.write(`pulumi-resource-sds: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
