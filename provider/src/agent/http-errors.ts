/**
 * How the agent answers a failure: the error body of api.ts with an HTTP status. The mapping is
 * the wire half of errors.ts; agent/client.ts turns these bodies back into the same classes.
 *
 * - {@link HttpError}: answered as is (auth, routing, malformed requests).
 * - UserError → 400/404/409 by code, with `field`; a {@link DeviceBusyError} also sends `device`
 *   and `holder`, so a client can tell a busy device from other INVALID_STATEs.
 * - BackendError (CommandFailedError, CommandTimeoutError, …) → 502 with `retryable`.
 * - Anything else is a bug: 500 with a generic message and an id; the stack goes to the log only.
 */
import { randomUUID } from "node:crypto";
import type { z } from "zod";
import { propertyPath } from "../domain/property-path";
import { BackendError, DeviceBusyError, UserError, type UserErrorCode } from "../errors";
import type { ErrorBody } from "./api";

/** An error answered as is (status, code, field). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
    readonly headers: Record<string, string> = {},
  ) {
    super(body.error.message ?? body.error.code);
  }
}

/** The HTTP status of each user error code (a Record, so a new code cannot be forgotten). */
const USER_STATUS: Record<UserErrorCode, number> = {
  INVALID_INPUT: 400,
  NOT_AVAILABLE_YET: 400,
  NOT_FOUND: 404,
  CONFLICT: 409,
  INVALID_STATE: 409,
  NO_VALID_POOL: 409,
};

/** 400 INVALID_INPUT naming `field` (a property path; "" for the whole body). */
export function invalid(field: string, message: string): HttpError {
  return new HttpError(400, { error: { code: "INVALID_INPUT", message: field ? `${field}: ${message}` : message, field } });
}

/** Parse `value` with `schema`, or throw 400 naming the first issue's field. */
export function validate<S extends z.ZodType>(schema: S, value: unknown, prefix: string[] = []): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw invalid(propertyPath([...prefix, ...issue.path]), issue.message);
}

/**
 * The answer to `err`. `logBug` gets the id and stack of an unexpected error (never sent: it may
 * hold paths or internals a client has no business seeing).
 */
export function errorAnswer(err: unknown, logBug: (id: string, err: unknown) => void): { status: number; body: ErrorBody; headers?: Record<string, string> } {
  if (err instanceof HttpError) return { status: err.status, body: err.body, headers: err.headers };
  if (err instanceof UserError) {
    const busy = err instanceof DeviceBusyError ? { device: err.device, ...(err.holder ? { holder: err.holder } : {}) } : {};
    return { status: USER_STATUS[err.code as UserErrorCode] ?? 400, body: { error: { code: err.code, message: err.message, ...(err.property ? { field: err.property } : {}), ...busy } } };
  }
  if (err instanceof BackendError) return { status: 502, body: { error: { code: err.code, message: err.message, retryable: err.retryable } } };
  const id = randomUUID();
  logBug(id, err);
  return { status: 500, body: { error: { code: "INTERNAL", message: `internal error in sds-agent (see its log, error ${id})` } } };
}
