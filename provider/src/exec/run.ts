/**
 * The only place that starts processes. Every command is an argv (never a shell line), has a
 * timeout, and has its secrets masked before it appears in an error or a log.
 */
import execa from "execa";
import { CommandFailedError, CommandTimeoutError, maskSecrets } from "../errors";

export { maskSecrets };

export interface RunOptions {
  /** Milliseconds before the command is killed. Default 60 s. */
  timeoutMs?: number;
  /** Values to mask in error messages (passwords passed as arguments or stdin). */
  secrets?: string[];
  /** Written to the command's stdin. */
  input?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /**
   * Start the command in a session of its own (setsid). Daemons that fork into the background
   * (tgtd, nbdkit, qemu-nbd --fork) must: otherwise they stay in the caller's process group and
   * session, and the signal the Pulumi engine sends its plugin when it stops it (or a Ctrl-C of
   * the CLI, or systemd stopping the agent's group) reaches them too. Exports outlive the provider.
   */
  detached?: boolean;
  /**
   * Exit codes other than 0 that are answers, not failures (their stdout and stderr come back):
   * `stat -f` of many paths exits 1 when one is missing and still measures the others.
   */
  okExitCodes?: readonly number[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** A function that runs a command; injected so unit tests can record the exact argv. */
export type Runner = (file: string, args: readonly string[], options?: RunOptions) => Promise<RunResult>;

/**
 * With reject: false, a command that could not start (neither exit nor signal) comes back as
 * execa's own error (code ENOENT, EACCES, …). Its text holds the argv unmasked, so the cause kept
 * is a copy with the secrets masked.
 */
function spawnFailure(r: Record<string, unknown>, secrets?: string[]): Error {
  const text = String(r.originalMessage ?? r.message ?? "could not start");
  return Object.assign(new Error(maskSecrets(text, secrets)), typeof r.code === "string" ? { code: r.code } : {});
}

/**
 * Run `file args…`; resolves on exit 0. Rejects with a {@link CommandTimeoutError} (argv,
 * timeoutMs) after `timeoutMs`, else a {@link CommandFailedError} (argv, exitCode, signal, stderr;
 * secrets masked), whose `cause` is the error of a command that could not start.
 */
export const run: Runner = async (file, args, options = {}) => {
  const timeout = options.timeoutMs ?? 60_000;
  const argv = [file, ...args];
  const secrets = options.secrets;
  try {
    const r = await execa(file, [...args], {
      timeout,
      input: options.input,
      env: options.env,
      detached: options.detached,
      reject: false,
      stripFinalNewline: true,
    });
    if (r.timedOut) throw new CommandTimeoutError(argv, timeout, { secrets, stdout: String(r.stdout ?? ""), stderr: String(r.stderr ?? "") });
    if (r.exitCode !== 0 && !(typeof r.exitCode === "number" && options.okExitCodes?.includes(r.exitCode))) {
      const exited = r.exitCode !== undefined && r.exitCode !== null;
      throw new CommandFailedError({
        argv,
        exitCode: exited ? r.exitCode : undefined,
        signal: exited ? undefined : r.signal,
        stderr: String(r.stderr ?? ""),
        secrets,
        cause: exited || r.signal ? undefined : spawnFailure(r as unknown as Record<string, unknown>, secrets),
      });
    }
    return { stdout: String(r.stdout ?? ""), stderr: String(r.stderr ?? ""), exitCode: r.exitCode ?? 0 };
  } catch (err) {
    if (err instanceof CommandFailedError || err instanceof CommandTimeoutError) throw err;
    const masked = maskSecrets(argv.join(" "), secrets);
    throw new CommandFailedError({ argv, secrets, message: `command could not run: ${masked}: ${maskSecrets(String((err as Error).message), secrets)}`, cause: spawnFailure(err as Record<string, unknown>, secrets) });
  }
};
