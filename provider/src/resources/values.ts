/**
 * Pulumi's wire encoding of property values, as a provider that accepts secrets sees them
 * after `Struct.toJavaScript()`:
 * - an unknown value (preview) is the string {@link UNKNOWN};
 * - a secret is `{ [SIG_KEY]: SECRET_SIG, value }`.
 * Secrets must leave the provider wrapped, or the engine stores them in plain text.
 */
import { Struct, Value } from "google-protobuf/google/protobuf/struct_pb";

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

/** Where a secret wrapper sat in a decoded value: the keys (or array indexes) from the top down. */
export type SecretPath = ReadonlyArray<string | number>;

/**
 * Split decoded properties into the plain values handlers work on and the paths where secret
 * wrappers were. Why: a handler that sees `{ [SIG_KEY]: …, value }` where it expects a string
 * sends an object to SQL or a command; the codec unwraps once, and {@link rewrapSecrets} puts
 * the wrappers back on what leaves the provider. `secretTexts`: the strings that were secret, to
 * mask in messages ({@link maskSecretTexts}).
 */
export function unwrapSecrets(props: Props): { plain: Props; secretPaths: SecretPath[]; secretTexts: string[] } {
  const secretPaths: SecretPath[] = [];
  const secretTexts: string[] = [];
  const texts = (v: unknown): void => {
    if (typeof v === "string") secretTexts.push(v);
    else if (v && typeof v === "object") Object.values(v).forEach(texts);
  };
  const walk = (v: unknown, at: Array<string | number>): unknown => {
    if (isSecret(v)) {
      secretPaths.push(at);
      const plain = reveal(v.value);
      texts(plain);
      return plain;
    }
    if (Array.isArray(v)) return v.map((x, i) => walk(x, [...at, i]));
    if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, [...at, k])]));
    return v;
  };
  return { plain: walk(props, []) as Props, secretPaths, secretTexts };
}

/**
 * Wrap as secrets the values of `outs` found at `paths` (where the request had secrets), so an
 * output that echoes a secret input stays secret. Absent, unknown and already secret values are
 * left alone. Returns a copy; `outs` is not changed.
 */
export function rewrapSecrets(outs: Props, paths: readonly SecretPath[]): Props {
  const wrapAt = (v: unknown, path: SecretPath): unknown => {
    if (v === undefined || v === null || isUnknown(v) || isSecret(v)) return v;
    if (path.length === 0) return secret(reveal(v));
    const [head, ...rest] = path;
    if (Array.isArray(v) && typeof head === "number" && head < v.length) return v.map((x, i) => (i === head ? wrapAt(x, rest) : x));
    if (typeof v === "object" && !Array.isArray(v) && typeof head === "string" && Object.prototype.hasOwnProperty.call(v, head)) {
      return { ...(v as Props), [head]: wrapAt((v as Props)[head], rest) };
    }
    return v;
  };
  let out: unknown = outs;
  for (const p of paths) if (p.length > 0) out = wrapAt(out, p);
  return out as Props;
}

/**
 * `text` with every secret string of 3 characters or more replaced by `***`, longest first (a
 * secret inside another is not left half shown), where it stands as a word of its own: a secret
 * "primary" leaves the property name `primaryVolumeId` readable. Why: a check failure or an error
 * that quotes a secret input ("no profile named …") would print it in the CLI's output and logs.
 * Shorter secrets are left alone: masking every "a" would make the message unreadable.
 */
export function maskSecretTexts(text: string, secrets: Iterable<string>): string {
  let out = text;
  for (const s of [...new Set(secrets)].filter((x) => x.length >= 3).sort((a, b) => b.length - a.length)) {
    if (!out.includes(s)) continue;
    const escaped = s.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&");
    const word = /^[\p{L}\p{N}_]$/u;
    const before = word.test([...s][0]) ? "(?<![\\p{L}\\p{N}_])" : "";
    const after = word.test([...s].pop()!) ? "(?![\\p{L}\\p{N}_])" : "";
    out = out.replace(new RegExp(`${before}${escaped}${after}`, "gu"), "***");
  }
  return out;
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

/**
 * Decode a request's Struct. Not `Struct.toJavaScript()`: a Value with no kind set (no engine
 * sends one, any client can) makes it throw, a bug's error for a bad request. Here such a value
 * is null (absent), and every key is an own property (defined, never assigned).
 */
export function fromStruct(s: Struct | undefined): Props {
  return s ? decodeFields(s) : {};
}

function decodeFields(s: Struct): Props {
  const out: Props = {};
  for (const [k, v] of s.getFieldsMap().entries()) Object.defineProperty(out, k, { value: decodeValue(v), enumerable: true, writable: true, configurable: true });
  return out;
}

function decodeValue(v: Value): unknown {
  switch (v.getKindCase()) {
    case Value.KindCase.NUMBER_VALUE:
      return v.getNumberValue();
    case Value.KindCase.STRING_VALUE:
      return v.getStringValue();
    case Value.KindCase.BOOL_VALUE:
      return v.getBoolValue();
    case Value.KindCase.STRUCT_VALUE:
      return decodeFields(v.getStructValue()!);
    case Value.KindCase.LIST_VALUE:
      return v.getListValue()!.getValuesList().map(decodeValue);
    default:
      return null;
  }
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
