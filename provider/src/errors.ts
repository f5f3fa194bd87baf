/**
 * One error taxonomy for the whole provider.
 *
 * - {@link UserError}: the request is wrong (bad input, not found, conflict, no valid pool).
 *   Reported to the user as is; retrying the same request cannot help.
 * - {@link BackendError}: something below us failed (a command, a timeout, an agent).
 *   `retryable` says whether the same request might succeed later.
 * - Anything else is a bug and is reported with its stack.
 */
/** Codes of user errors ({@link UserError}): the request is wrong; a retry cannot help. */
export const USER_ERROR_CODES = ["INVALID_INPUT", "NOT_FOUND", "CONFLICT", "NO_VALID_POOL", "NOT_AVAILABLE_YET", "INVALID_STATE"] as const;
/** Codes of backend faults ({@link BackendError}): `retryable` says whether a retry can help. */
export const BACKEND_ERROR_CODES = ["COMMAND_FAILED", "TIMEOUT", "AGENT_UNAVAILABLE", "CANCELLED"] as const;
/**
 * Every code an error of ours can carry: the one list (the agent's wire API, its HTTP statuses
 * and the client's mapping back all derive from it, so a new code cannot be half-known).
 */
export const ERROR_CODES = [...USER_ERROR_CODES, ...BACKEND_ERROR_CODES] as const;

export type UserErrorCode = (typeof USER_ERROR_CODES)[number];
export type BackendErrorCode = (typeof BACKEND_ERROR_CODES)[number];
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Whether `code` (e.g. from the wire) is a {@link UserErrorCode}. */
export function isUserErrorCode(code: unknown): code is UserErrorCode {
  return (USER_ERROR_CODES as readonly unknown[]).includes(code);
}

/** Whether `code` (e.g. from the wire) is a {@link BackendErrorCode}. */
export function isBackendErrorCode(code: unknown): code is BackendErrorCode {
  return (BACKEND_ERROR_CODES as readonly unknown[]).includes(code);
}

/** Base class: every error of ours has a stable `code`. */
export class SdsError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A user error. `property` names the input at fault (a Pulumi property path) when there is one. */
export class UserError extends SdsError {
  constructor(
    code: UserErrorCode,
    message: string,
    readonly property?: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** A failure of a part below the controller (driver command, target, agent). */
export class BackendError extends SdsError {
  constructor(
    code: BackendErrorCode,
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** Replace every secret in `text` with `***` (empty secrets are ignored). */
export function maskSecrets(text: string, secrets: readonly string[] = []): string {
  let out = text;
  for (const s of secrets) if (s) out = out.split(s).join("***");
  return out;
}

/**
 * A command ran and failed (non-zero exit, killed by a signal, or could not start). `argv` and
 * `stderr` have the secrets the caller named masked; `exitCode` is undefined when the command
 * did not exit on its own. Branch on these fields, never on the message: the message mixes argv
 * and stderr, and either may contain any words.
 */
export class CommandFailedError extends BackendError {
  /** The command and its arguments, secrets masked. */
  readonly argv: readonly string[];
  readonly exitCode: number | undefined;
  /** The signal that ended it (`SIGKILL`, …), when one did. */
  readonly signal: string | undefined;
  /** What it wrote to stderr, trimmed, secrets masked. */
  readonly stderr: string;

  constructor(o: {
    argv: readonly string[];
    exitCode?: number;
    signal?: string;
    stderr?: string;
    secrets?: readonly string[];
    retryable?: boolean;
    /** The whole message, when the default (`command failed (exit N): argv: stderr`) does not fit. */
    message?: string;
    cause?: unknown;
  }) {
    const argv = o.argv.map((a) => maskSecrets(a, o.secrets));
    const stderr = maskSecrets((o.stderr ?? "").trim(), o.secrets);
    const why = o.exitCode !== undefined ? `exit ${o.exitCode}` : o.signal ? "killed" : "failed to start";
    super("COMMAND_FAILED", o.message ?? `command failed (${why}): ${argv.join(" ")}${stderr ? `: ${stderr}` : ""}`, o.retryable ?? false, { cause: o.cause });
    this.argv = argv;
    this.exitCode = o.exitCode;
    this.signal = o.signal;
    this.stderr = stderr;
  }
}

/** A command was killed after running longer than `timeoutMs`; a retry may succeed. */
export class CommandTimeoutError extends BackendError {
  /** The command and its arguments, secrets masked. */
  readonly argv: readonly string[];

  /** What the command wrote before it was killed (secrets masked). */
  readonly stdout: string;
  readonly stderr: string;

  constructor(
    argv: readonly string[],
    readonly timeoutMs: number,
    options: { secrets?: readonly string[]; cause?: unknown; stdout?: string; stderr?: string } = {},
  ) {
    const masked = argv.map((a) => maskSecrets(a, options.secrets));
    super("TIMEOUT", `command timed out after ${timeoutMs} ms: ${masked.join(" ")}`, true, { cause: options.cause });
    this.argv = masked;
    this.stdout = maskSecrets(options.stdout ?? "", options.secrets);
    this.stderr = maskSecrets(options.stderr ?? "", options.secrets);
  }
}

/**
 * A device cannot be taken away or changed now because something holds it (a mount, a kernel
 * holder such as dm or md, an open file). INVALID_STATE: the same request succeeds once the
 * holder lets go, so it is the user's to resolve, not a fault to retry. Callers that treat a
 * busy device differently (report it as pending) branch on this class, never on the code, which
 * also means "not connected".
 */
export class DeviceBusyError extends UserError {
  constructor(
    /** The device, e.g. `/dev/loop7`. */
    readonly device: string,
    message: string,
    /** What holds it, e.g. `/dev/loop7 is mounted on /mnt/x`, when known. */
    readonly holder?: string,
    options?: { cause?: unknown },
  ) {
    super("INVALID_STATE", message, undefined, options);
  }
}

/**
 * Waiting for a named lock took longer than `timeoutMs`: another operation holds it (its holder,
 * when known). Retryable: the holder finishes, or its lock expires should it have died.
 */
export class LockTimeoutError extends BackendError {
  /** Who holds the lock, when known. */
  readonly holder: string | undefined;

  constructor(
    readonly lock: string,
    readonly timeoutMs: number,
    options: { holder?: string; message?: string; cause?: unknown } = {},
  ) {
    super("TIMEOUT", options.message ?? `timed out after ${timeoutMs} ms waiting for lock ${lock}${options.holder ? ` (held by ${options.holder})` : ""}`, true, { cause: options.cause });
    this.holder = options.holder;
  }
}

/**
 * No answer came from an sds-agent (refused, reset, unreachable). `retryable` is true when the
 * failure was a connection error, so the same request may succeed once the agent is back;
 * `cause` is the network error.
 */
export class AgentUnavailableError extends BackendError {
  constructor(
    readonly url: string,
    detail: string,
    retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super("AGENT_UNAVAILABLE", `sds-agent at ${url} is unreachable: ${detail}`, retryable, options);
  }
}

/** Shorthand for a bad-input error on one property. */
export function invalidInput(property: string, message: string): UserError {
  return new UserError("INVALID_INPUT", `${property}: ${message}`, property);
}

/** A resource or function whose issue has not landed yet. */
export function notAvailableYet(what: string): UserError {
  return new UserError("NOT_AVAILABLE_YET", `${what} is not available yet in this version of sds`);
}

/** Why: assertions mark bugs; they are never caught and turned into user messages. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`sds internal error: ${message}`);
}
