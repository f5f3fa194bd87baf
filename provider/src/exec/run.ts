/**
 * The only place that starts processes. Every command is an argv (never a shell line), has a
 * timeout, and has its secrets masked before it appears in an error or a log.
 */
import execa from "execa";
import { BackendError } from "../errors";

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
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** A function that runs a command; injected so unit tests can record the exact argv. */
export type Runner = (file: string, args: readonly string[], options?: RunOptions) => Promise<RunResult>;

/** Replace every secret in `text` with `***`. */
export function maskSecrets(text: string, secrets: readonly string[] = []): string {
  let out = text;
  for (const s of secrets) if (s) out = out.split(s).join("***");
  return out;
}

/** Run `file args…`; resolves on exit 0, rejects with a {@link BackendError} naming argv, exit code and stderr. */
export const run: Runner = async (file, args, options = {}) => {
  const timeout = options.timeoutMs ?? 60_000;
  const argv = maskSecrets([file, ...args].join(" "), options.secrets);
  try {
    const r = await execa(file, [...args], {
      timeout,
      input: options.input,
      env: options.env,
      detached: options.detached,
      reject: false,
      stripFinalNewline: true,
    });
    if (r.timedOut) {
      throw new BackendError("TIMEOUT", `command timed out after ${timeout} ms: ${argv}`, true);
    }
    if (r.exitCode !== 0) {
      const stderr = maskSecrets(String(r.stderr ?? "").trim(), options.secrets);
      const why = r.exitCode === undefined || r.exitCode === null ? (r.killed ? "killed" : "failed to start") : `exit ${r.exitCode}`;
      throw new BackendError("COMMAND_FAILED", `command failed (${why}): ${argv}${stderr ? `: ${stderr}` : ""}`, false);
    }
    return { stdout: String(r.stdout ?? ""), stderr: String(r.stderr ?? ""), exitCode: 0 };
  } catch (err) {
    if (err instanceof BackendError) throw err;
    throw new BackendError("COMMAND_FAILED", `command could not run: ${argv}: ${maskSecrets(String((err as Error).message), options.secrets)}`, false, { cause: err });
  }
};
