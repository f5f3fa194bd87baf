/**
 * `sds`: operator commands next to the provider (provider/bin/sds, and the packaged tarball's
 * `sds` launcher). The commands live in cli/ (cli/program.ts lists them; `sds --help` shows them
 * with the exit codes); this file only runs them and exits with their code.
 */
import { runCli } from "./cli/program";

// `sds volumes | head`: the reader went away; that is the end of the answer, not an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

runCli(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`sds: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
