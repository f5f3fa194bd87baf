/**
 * One error taxonomy for the whole provider.
 *
 * - {@link UserError}: the request is wrong (bad input, not found, conflict, no valid pool).
 *   Reported to the user as is; retrying the same request cannot help.
 * - {@link BackendError}: something below us failed (a command, a timeout, an agent).
 *   `retryable` says whether the same request might succeed later.
 * - Anything else is a bug and is reported with its stack.
 */
export type ErrorCode =
  | "INVALID_INPUT"
  | "NOT_FOUND"
  | "CONFLICT"
  | "NO_VALID_POOL"
  | "NOT_AVAILABLE_YET"
  | "INVALID_STATE"
  | "COMMAND_FAILED"
  | "TIMEOUT"
  | "AGENT_UNAVAILABLE"
  | "CANCELLED";

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
    code: Extract<ErrorCode, "INVALID_INPUT" | "NOT_FOUND" | "CONFLICT" | "NO_VALID_POOL" | "NOT_AVAILABLE_YET" | "INVALID_STATE">,
    message: string,
    readonly property?: string,
  ) {
    super(code, message);
  }
}

/** A failure of a part below the controller (driver command, target, agent). */
export class BackendError extends SdsError {
  constructor(
    code: Extract<ErrorCode, "COMMAND_FAILED" | "TIMEOUT" | "AGENT_UNAVAILABLE" | "CANCELLED">,
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
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
