/**
 * Commands whose stdin or stdout is a stream, not a string: `rbd export-diff … -` feeding
 * `rbd import-diff - …` through us, or a diff we encode ourselves written into `rbd import-diff`.
 * {@link run} buffers a command's whole output, which for a volume's data is not an option.
 *
 * Same rules as run.ts: an argv (never a shell line), a timeout, secrets masked in every error,
 * failures as {@link CommandFailedError} / {@link CommandTimeoutError} with the argv and stderr.
 */
import { spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { CommandFailedError, CommandTimeoutError } from "../errors";

/** Options of {@link spawnStream}. */
export interface StreamOptions {
  /** Milliseconds before the command is killed (SIGKILL). Default 1 hour: it moves a volume's data. */
  timeoutMs?: number;
  /** Values to mask in error messages. */
  secrets?: string[];
  /** Give the command a stdin to write to (else /dev/null). */
  stdin?: boolean;
  /** Give the command a stdout to read from (else /dev/null). */
  stdout?: boolean;
}

/** A running command with its streams. */
export interface StreamedCommand {
  readonly argv: readonly string[];
  /** Its stdin, when asked for. Errors on it (EPIPE after the command died) are swallowed: `done` says why. */
  readonly stdin: Writable | null;
  /** Its stdout, when asked for. */
  readonly stdout: Readable | null;
  /** Resolves when it exits 0; rejects with a CommandFailedError or CommandTimeoutError otherwise. */
  readonly done: Promise<void>;
  /** Kill it (SIGKILL); `done` then rejects. Safe after it exited. */
  kill(): void;
}

/** Starts a command with streams; injected so unit tests can record the argv and feed the output. */
export type StreamSpawner = (file: string, args: readonly string[], options?: StreamOptions) => StreamedCommand;

const STDERR_KEEP_BYTES = 64 << 10;

/** Start `file args…` with a stdin and/or stdout stream. */
export const spawnStream: StreamSpawner = (file, args, options = {}) => {
  const argv = [file, ...args];
  const secrets = options.secrets;
  const timeoutMs = options.timeoutMs ?? 3_600_000;
  const child = spawn(file, [...args], { stdio: [options.stdin ? "pipe" : "ignore", options.stdout ? "pipe" : "ignore", "pipe"] });
  // A command that died leaves its stdin closed: our next write fails with EPIPE, and the exit
  // status (through `done`) is the error worth reporting.
  child.stdin?.on("error", () => undefined);
  let stderr = "";
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => {
    if (stderr.length < STDERR_KEEP_BYTES) stderr += s.slice(0, STDERR_KEEP_BYTES - stderr.length);
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  timer.unref();
  const done = new Promise<void>((resolve, reject) => {
    let settled = false;
    child.on("error", (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new CommandFailedError({ argv, secrets, message: `command could not run: ${argv.join(" ")}: ${err.message}`, cause: err }));
    });
    child.on("close", (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (timedOut) reject(new CommandTimeoutError(argv, timeoutMs, { secrets }));
      else if (code === 0) resolve();
      else reject(new CommandFailedError({ argv, exitCode: code ?? undefined, signal: code === null ? (signal ?? undefined) : undefined, stderr, secrets }));
    });
  });
  done.catch(() => undefined); // the caller awaits it; an early failure must not be "unhandled"
  return {
    argv,
    stdin: child.stdin,
    stdout: child.stdout,
    done,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
  };
};

/**
 * Write `b` into a command's stdin, waiting while its pipe is full. The command exiting ends the
 * wait: with its own error when it failed, else with one saying it stopped reading.
 */
export async function writeInput(cmd: StreamedCommand, b: Buffer): Promise<void> {
  const stdin = cmd.stdin;
  if (!stdin) throw new Error(`writeInput: ${cmd.argv[0]} was started without a stdin`);
  const stopped = () => new CommandFailedError({ argv: cmd.argv, message: `${cmd.argv.join(" ")} stopped reading its input before it ended`, retryable: true });
  if (stdin.destroyed || stdin.writableEnded) {
    await cmd.done;
    throw stopped();
  }
  if (stdin.write(b)) return;
  let onDrain = () => undefined as void;
  const drained = new Promise<"drained">((resolve) => {
    onDrain = () => resolve("drained");
    stdin.once("drain", onDrain);
  });
  const exited = cmd.done.then(
    () => "exited" as const,
    (err: unknown) => ({ err }),
  );
  const winner = await Promise.race([drained, exited]);
  stdin.off("drain", onDrain);
  if (winner === "drained") return;
  if (winner === "exited") throw stopped();
  throw winner.err;
}
