/**
 * Volume ids: the one pattern every layer checks them against.
 *
 * Why it matters: a volume id becomes part of file names (the file driver's `volume-<id>.img`,
 * the connectors' records), so an id like `../../x` or `/etc/passwd` would name a file elsewhere.
 * The controller makes ids with randomUUID (`0b6c…-…`); tests and older stores use short names
 * (`vol-1`, `v1`). The pattern admits both and nothing with a slash, a leading dot or `..`.
 *
 * Bottom layer: imports only the error taxonomy.
 */
import { invalidInput } from "../errors";

/** Letters, digits, `_ . : -`; starts with a letter or digit; no `..`; at most 201 characters. */
export const VOLUME_ID_PATTERN = /^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.:-]{0,200}$/;

/** What a valid id looks like, for messages and API documentation. */
export const VOLUME_ID_RULE = "letters, digits, '_', '.', ':' or '-', starting with a letter or digit, without '..', at most 201 characters";

/** Whether `id` is a valid volume id. */
export function isVolumeId(id: unknown): id is string {
  return typeof id === "string" && VOLUME_ID_PATTERN.test(id);
}

/** The one-line complaint about a bad id (the caller prefixes the field). */
export function volumeIdProblem(id: unknown): string {
  return `volume id ${JSON.stringify(id)} is not valid: ${VOLUME_ID_RULE}`;
}

/** Throws INVALID_INPUT naming `property` unless `id` is a valid volume id; returns it. */
export function checkVolumeId(property: string, id: unknown): string {
  if (!isVolumeId(id)) throw invalidInput(property, volumeIdProblem(id));
  return id;
}
