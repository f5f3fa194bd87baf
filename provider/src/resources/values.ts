/**
 * Pulumi's wire encoding of property values, as a provider that accepts secrets sees them
 * after `Struct.toJavaScript()`:
 * - an unknown value (preview) is the string {@link UNKNOWN};
 * - a secret is `{ [SIG_KEY]: SECRET_SIG, value }`.
 * Secrets must leave the provider wrapped, or the engine stores them in plain text.
 */
import { Struct } from "google-protobuf/google/protobuf/struct_pb";

export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
export const SIG_KEY = "4dabf18193072939515e22adb298388d";
export const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

export type Props = Record<string, unknown>;

export function isUnknown(v: unknown): boolean {
  return v === UNKNOWN;
}

export function isSecret(v: unknown): v is { value: unknown } {
  return typeof v === "object" && v !== null && (v as Props)[SIG_KEY] === SECRET_SIG;
}

export function secret<T>(value: T): { [SIG_KEY]: string; value: T } {
  return { [SIG_KEY]: SECRET_SIG, value };
}

/** True when `v` is, or contains, an unknown. */
export function containsUnknown(v: unknown): boolean {
  if (isUnknown(v)) return true;
  if (isSecret(v)) return containsUnknown(v.value);
  if (Array.isArray(v)) return v.some(containsUnknown);
  if (v && typeof v === "object") return Object.values(v).some(containsUnknown);
  return false;
}

/** Deeply remove secret wrappers (for validation and use; never for returning to the engine). */
export function reveal(v: unknown): unknown {
  if (isSecret(v)) return reveal(v.value);
  if (Array.isArray(v)) return v.map(reveal);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, reveal(x)]));
  return v;
}

/** Secret wrappers anywhere inside `v`? */
export function containsSecret(v: unknown): boolean {
  if (isSecret(v)) return true;
  if (Array.isArray(v)) return v.some(containsSecret);
  if (v && typeof v === "object") return Object.values(v).some(containsSecret);
  return false;
}

/** Why: Struct cannot hold `undefined`; drop such keys so optional properties stay absent. */
function dropUndefined(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(dropUndefined);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) => [k, dropUndefined(x)]));
  return v;
}

export function toStruct(props: Props): Struct {
  return Struct.fromJavaScript(dropUndefined(props) as Record<string, never>);
}

export function fromStruct(s: Struct | undefined): Props {
  return s ? (s.toJavaScript() as Props) : {};
}

/** Deep equality of two decoded values (maps compare by keys, not order). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === (b as unknown[]).length && a.every((x, i) => deepEqual(x, (b as unknown[])[i]));
  const ka = Object.keys(a as Props).filter((k) => (a as Props)[k] !== undefined);
  const kb = Object.keys(b as Props).filter((k) => (b as Props)[k] !== undefined);
  return ka.length === kb.length && ka.every((k) => deepEqual((a as Props)[k], (b as Props)[k]));
}
