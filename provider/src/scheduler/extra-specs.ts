/**
 * Profile extra specs, with the operators users know from Cinder and OpenSDS:
 *
 * | spec value            | passes when the pool's value …                                   |
 * | --------------------- | ---------------------------------------------------------------- |
 * | `<is> true`           | is that boolean (`true`/`True`/`TRUE` alike)                     |
 * | `<in> iscsi`          | contains the word/substring                                      |
 * | `<or> SSD <or> NVMe`  | equals one of the alternatives                                   |
 * | `<all-in> a b`        | contains every one of the words (a list or a space-separated string) |
 * | `== 5` `!= 5` `>= 5` `<= 5` `> 5` `< 5` | compares as a number (units like `3ms` must match or convert) |
 * | `s== a` `s!= a` `s< a` `s<= a` `s> a` `s>= a` | compares as a string                   |
 * | `SSD` (no operator)   | equals it literally (booleans case-insensitively)                |
 *
 * Keys: `capabilities:<name>` (multiAttach, replication, storageType, availabilityZone,
 * provisioning, backendName, poolName, or any extra), a bare extra name (`diskType`, `maxIOPS`),
 * or a dotted one (`ioConnectivity.maxIOPS`).
 * Pure: parse once (`parseExtraSpecs`), then `evaluate` against each pool.
 */
import type { Operator, PoolState, Requirement } from "./types";

// Operator and Requirement live in types.ts (PlacementRequest carries requirements, and types.ts
// importing them from here made a type cycle); re-exported so callers keep one import.
export type { Operator, Requirement } from "./types";

export interface SpecError {
  key: string;
  reason: string;
}

/** Capabilities every pool reports. */
export const capabilityNames = ["multiAttach", "replication", "storageType", "availabilityZone", "provisioning", "backendName", "poolName"] as const;

/** The well-known OpenSDS/Cinder extras; a profile may ask for them even if no pool reports them yet. */
export const wellKnownExtras: Record<string, readonly string[]> = {
  dataStorage: ["provisioningPolicy", "isSpaceEfficient", "compression", "deduplication", "recoveryTimeObjective", "storageAccessCapability"],
  ioConnectivity: ["accessProtocol", "maxIOPS", "minIOPS", "maxBWS", "minBWS", "latency"],
  advanced: ["diskType", "latency"],
};

const numericOps = new Set<Operator>(["==", "!=", ">=", "<=", ">", "<"]);
const allOps: Operator[] = ["<is>", "<in>", "<or>", "<all-in>", "s==", "s!=", "s<=", "s>=", "s<", "s>", "==", "!=", ">=", "<=", ">", "<"];

/** `3ms` → {value: 3, unit: "ms"}; `5000` → {value: 5000, unit: ""}; undefined when not a number. */
export function parseQuantity(text: string): { value: number; unit: string } | undefined {
  // Why: placement parses every pool's value on every create (10,000 pools: the regex was a tenth
  // of a create); pools repeat few distinct values, so each is parsed once. Results are frozen, shared.
  const known = quantities.get(text);
  if (known !== undefined || quantities.has(text)) return known;
  const m = /^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z%/]*)\s*$/.exec(text);
  const q = m ? Object.freeze({ value: Number(m[1]), unit: m[2] }) : undefined;
  if (quantities.size >= QUANTITY_CACHE_SIZE) quantities.clear();
  quantities.set(text, q);
  return q;
}
/** Parsed quantities by text; cleared when full (a bound, not an LRU: the values pools report are few). */
const quantities = new Map<string, { value: number; unit: string } | undefined>();
const QUANTITY_CACHE_SIZE = 10_000;

// Unit families that convert; anything else compares only with the very same unit.
const unitScale: Record<string, { family: string; factor: number }> = {
  ns: { family: "time", factor: 1e-9 },
  us: { family: "time", factor: 1e-6 },
  ms: { family: "time", factor: 1e-3 },
  s: { family: "time", factor: 1 },
  KB: { family: "bytes", factor: 1e3 },
  MB: { family: "bytes", factor: 1e6 },
  GB: { family: "bytes", factor: 1e9 },
  TB: { family: "bytes", factor: 1e12 },
  KiB: { family: "bytes", factor: 1024 },
  MiB: { family: "bytes", factor: 1024 ** 2 },
  GiB: { family: "bytes", factor: 1024 ** 3 },
  TiB: { family: "bytes", factor: 1024 ** 4 },
};

/** Compare two quantities: a number (a - b in common units), or a reason they cannot be compared. */
export function compareQuantities(a: { value: number; unit: string }, b: { value: number; unit: string }): number | string {
  if (a.unit === b.unit) return a.value - b.value;
  const sa = unitScale[a.unit];
  const sb = unitScale[b.unit];
  if (sa && sb && sa.family === sb.family) return a.value * sa.factor - b.value * sb.factor;
  return `units differ (${a.unit || "none"} vs ${b.unit || "none"})`;
}

function parseBool(text: string): boolean | undefined {
  const t = text.trim().toLowerCase();
  return t === "true" ? true : t === "false" ? false : undefined;
}

function parseKey(key: string): Requirement["lookup"] | SpecError {
  if (key.startsWith("capabilities:")) {
    const name = key.slice("capabilities:".length);
    if (!name) return { key, reason: "capabilities: names no capability" };
    return { kind: "capability", name };
  }
  if (key.includes(":")) return { key, reason: `unknown scope "${key.split(":")[0]}" (use capabilities:<name> or an extra's name)` };
  const dot = key.indexOf(".");
  if (dot > 0) return { kind: "extra", group: key.slice(0, dot), name: key.slice(dot + 1) };
  return { kind: "any", name: key };
}

/** Parse one spec value into an operator and operands; malformed values are errors, never silent mismatches. */
export function parseRequirement(key: string, text: string): Requirement | SpecError {
  const lookup = parseKey(key);
  if ("reason" in lookup) return lookup;
  const trimmed = text.trim();
  if (trimmed === "") return { key, reason: "empty requirement" };

  if (trimmed.startsWith("<or>")) {
    const values = trimmed.split("<or>").map((s) => s.trim()).filter((s) => s !== "");
    if (values.length === 0) return { key, reason: `"${text}": <or> needs at least one alternative` };
    if (trimmed.split("<or>").slice(1).some((s) => s.trim() === "")) return { key, reason: `"${text}": an empty <or> alternative` };
    return { key, lookup, op: "<or>", values, text };
  }
  const tagged = /^<([A-Za-z-]+)>\s*(.*)$/.exec(trimmed);
  if (tagged) {
    const op = `<${tagged[1]}>` as Operator;
    const rest = tagged[2].trim();
    if (op === "<is>") {
      const bool = parseBool(rest);
      if (bool === undefined) return { key, reason: `"${text}": <is> takes true or false` };
      return { key, lookup, op, values: [rest], text, bool };
    }
    if (op === "<in>") {
      if (!rest) return { key, reason: `"${text}": <in> needs a value` };
      return { key, lookup, op, values: [rest], text };
    }
    if (op === "<all-in>") {
      const values = rest.split(/\s+/).filter((s) => s !== "");
      if (values.length === 0) return { key, reason: `"${text}": <all-in> needs at least one value` };
      return { key, lookup, op, values, text };
    }
    return { key, reason: `"${text}": unknown operator <${tagged[1]}> (known: ${allOps.join(" ")})` };
  }
  const symbolic = /^(s?[=!<>]+)\s*(.*)$/.exec(trimmed);
  if (symbolic) {
    const op = symbolic[1] as Operator;
    const rest = symbolic[2].trim();
    if (!allOps.includes(op)) return { key, reason: `"${text}": unknown operator ${op} (known: ${allOps.join(" ")})` };
    if (!rest) return { key, reason: `"${text}": ${op} needs a value` };
    const quantity = numericOps.has(op) ? parseQuantity(rest) : undefined;
    if (numericOps.has(op) && !quantity) return { key, reason: `"${text}": ${op} compares numbers; "${rest}" is not a number (use s${op} for strings)` };
    return { key, lookup, op, values: [rest], text, quantity };
  }
  // "s" followed by an operator is a string operator; anything else is a literal.
  return { key, lookup, op: "literal", values: [trimmed], text, bool: parseBool(trimmed) };
}

export function parseExtraSpecs(specs: Record<string, string>): { requirements: Requirement[]; errors: SpecError[] } {
  const requirements: Requirement[] = [];
  const errors: SpecError[] = [];
  for (const key of Object.keys(specs).sort()) {
    const r = parseRequirement(key, specs[key]);
    if ("reason" in r) errors.push(r);
    else requirements.push(r);
  }
  return { requirements, errors };
}

type Scalar = string | number | boolean;

/** The pool's value for a requirement's key, or undefined when the pool does not have it. */
export function poolValue(pool: PoolState, lookup: Requirement["lookup"]): Scalar | readonly Scalar[] | undefined {
  const capability = (name: string): Scalar | undefined => {
    switch (name) {
      case "multiAttach":
        return pool.multiAttach;
      case "replication":
        return pool.replication ?? false;
      case "storageType":
        return pool.storageType;
      case "availabilityZone":
        return pool.availabilityZone;
      case "provisioning":
        return pool.provisioning;
      case "backendName":
        return pool.backendName;
      case "poolName":
        return pool.poolName;
      default:
        return undefined;
    }
  };
  const extra = (group: string | undefined, name: string): Scalar | undefined => {
    if (group !== undefined) return pool.extras[group]?.[name];
    for (const g in pool.extras) {
      const v = pool.extras[g][name];
      if (v !== undefined) return v;
    }
    return undefined;
  };
  if (lookup.kind === "capability") return capability(lookup.name) ?? extra(undefined, lookup.name);
  if (lookup.kind === "extra") return extra(lookup.group, lookup.name);
  return capability(lookup.name) ?? extra(undefined, lookup.name);
}

const show = (v: Scalar | readonly Scalar[]) => (Array.isArray(v) ? `[${v.join(", ")}]` : String(v));

/** Does `pool` satisfy `r`? undefined when it does, else the reason it does not. */
/**
 * Why `pool` fails `r`: undefined when it holds, "" when it fails plainly, else a detail
 * (units differ, not a number). Builds no string on the common paths: placement runs this
 * for every pool.
 */
function judge(pool: PoolState, r: Requirement, actual: Scalar | readonly Scalar[] | undefined): string | undefined {
  if (actual === undefined) return "";
  const text = Array.isArray(actual) ? actual.join(" ") : String(actual);
  const v = r.values[0];
  switch (r.op) {
    case "<is>": {
      // A capability reported as a mode (replication: async) is "true": the pool has it.
      const have = typeof actual === "boolean" ? actual : (parseBool(text) ?? text !== "");
      return have === r.bool ? undefined : "";
    }
    case "<in>":
      return text.includes(v) ? undefined : "";
    case "<or>":
      return r.values.some((x) => x === text || (parseBool(x) !== undefined && parseBool(x) === parseBool(text))) ? undefined : "";
    case "<all-in>": {
      const words = Array.isArray(actual) ? actual.map(String) : text.split(/[\s,]+/);
      return r.values.every((x) => words.includes(x)) ? undefined : "";
    }
    case "literal": {
      const have = typeof actual === "boolean" ? actual : parseBool(text);
      if (r.bool !== undefined && have !== undefined) return have === r.bool ? undefined : "";
      return text === v ? undefined : "";
    }
    case "s==":
      return text === v ? undefined : "";
    case "s!=":
      return text !== v ? undefined : "";
    case "s<":
      return text < v ? undefined : "";
    case "s<=":
      return text <= v ? undefined : "";
    case "s>":
      return text > v ? undefined : "";
    case "s>=":
      return text >= v ? undefined : "";
    default:
      break;
  }
  const have = typeof actual === "number" ? { value: actual, unit: "" } : parseQuantity(text);
  if (!have) return `${show(actual)} is not a number`;
  const d = compareQuantities(have, r.quantity!);
  if (typeof d === "string") return d;
  switch (r.op) {
    case "==":
      return d === 0 ? undefined : "";
    case "!=":
      return d !== 0 ? undefined : "";
    case ">=":
      return d >= 0 ? undefined : "";
    case "<=":
      return d <= 0 ? undefined : "";
    case ">":
      return d > 0 ? undefined : "";
    default:
      return d < 0 ? undefined : "";
  }
}

/** Does `pool` satisfy `r`? The fast path of placement. */
export function holds(pool: PoolState, r: Requirement): boolean {
  return judge(pool, r, poolValue(pool, r.lookup)) === undefined;
}

/** undefined when `pool` satisfies `r`, else the reason it does not (names the key, the pool's value and the requirement). */
export function evaluate(pool: PoolState, r: Requirement): string | undefined {
  const actual = poolValue(pool, r.lookup);
  const why = judge(pool, r, actual);
  if (why === undefined) return undefined;
  const key = r.lookup.kind === "extra" ? `${r.lookup.group}.${r.lookup.name}` : r.lookup.name;
  return `${key} is ${actual === undefined ? "not reported" : show(actual)}, profile asks ${r.text}${why ? ` (${why})` : ""}`;
}

/** Keys a pool could ever have: capabilities, well-known extras, and every extra a configured pool reports. */
export function knownKeys(pools: readonly PoolState[]): { names: Set<string>; dotted: Set<string> } {
  const names = new Set<string>(capabilityNames);
  const dotted = new Set<string>();
  const add = (group: string, name: string) => {
    names.add(name);
    dotted.add(`${group}.${name}`);
  };
  for (const [g, ns] of Object.entries(wellKnownExtras)) for (const n of ns) add(g, n);
  for (const p of pools) for (const [g, kv] of Object.entries(p.extras)) for (const n of Object.keys(kv)) add(g, n);
  return { names, dotted };
}

/** Errors for keys no pool could ever have (typos), so they fail at check instead of never matching. */
export function unknownKeyErrors(requirements: readonly Requirement[], pools: readonly PoolState[]): SpecError[] {
  const { names, dotted } = knownKeys(pools);
  const errors: SpecError[] = [];
  for (const r of requirements) {
    const known = r.lookup.kind === "extra" ? dotted.has(`${r.lookup.group}.${r.lookup.name}`) : names.has(r.lookup.name);
    if (!known) {
      const all = [...names].sort();
      const near = all.filter((n) => n.toLowerCase() === r.lookup.name.toLowerCase() || levenshtein(n.toLowerCase(), r.lookup.name.toLowerCase()) <= 2);
      errors.push({ key: r.key, reason: `no pool has or could have "${r.key}"${near.length ? `; did you mean ${near.map((n) => `"${n}"`).join(" or ")}?` : ""} (known: ${all.join(", ")})` });
    }
  }
  return errors;
}

// Why: a typo hint ("diskTyp" → "diskType") makes the check failure actionable.
function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) for (let j = 1; j <= b.length; j++) d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}
