/**
 * Table-driven check and diff over a resource's input properties: each property has a zod
 * schema, a default (so an absent value equals its default in diffs) and whether a change
 * replaces the resource. Unknown values (preview) are never validated and always count as changes.
 */
import { createHash } from "node:crypto";
import type { z } from "zod";
import { propertyPath } from "../domain/property-path";
import { UserError } from "../errors";
import { type Props, containsUnknown, deepEqual, reveal } from "./values";
import type { CheckFailure, CheckRequest, DiffKind, DiffResult } from "./resource";

export interface PropertySpec {
  schema: z.ZodType;
  required?: boolean;
  /** The value an absent property takes; diffs treat absent and default as equal. */
  default?: unknown;
  /** A change replaces the resource instead of updating it. */
  replaces?: boolean;
}

export type PropertySpecs = Record<string, PropertySpec>;

/** Validate `news` against the specs. Unknown properties are failures; unknown values are skipped. */
export function checkProperties(specs: PropertySpecs, news: Props): CheckFailure[] {
  const failures: CheckFailure[] = [];
  for (const key of Object.keys(news)) {
    if (!(key in specs) && news[key] !== undefined) failures.push({ property: key, reason: `unknown property "${key}"; expected one of ${Object.keys(specs).join(", ")}` });
  }
  for (const [key, spec] of Object.entries(specs)) {
    const value = news[key];
    if (value === undefined || value === null) {
      if (spec.required) failures.push({ property: key, reason: `${key} is required` });
      continue;
    }
    if (containsUnknown(value)) continue;
    const r = spec.schema.safeParse(reveal(value));
    if (!r.success) {
      for (const issue of r.error.issues) {
        failures.push({ property: propertyPath(issue.path, key), reason: issue.message });
      }
    }
  }
  return failures;
}

/**
 * Check the inputs again where they are used (Create, Update): the engine sends checked inputs,
 * but a caller that skipped Check must meet an error naming the input, not a failure deep in the
 * scheduler or the store.
 */
export function assertValidInputs(specs: PropertySpecs, inputs: Props, options: { settled?: readonly string[] } = {}): void {
  const failures = checkProperties(specs, inputs);
  // What Check settles (the name) is there by Create: without it, Check was skipped.
  for (const key of options.settled ?? []) if (inputs[key] === undefined || inputs[key] === null) failures.push({ property: key, reason: `${key} is required (Check gives one when the program does not)` });
  if (failures.length > 0) throw new UserError("INVALID_INPUT", failures.map((f) => `${f.property}: ${f.reason}`).join("; "), failures[0].property);
}

function normalized(spec: PropertySpec | undefined, v: unknown): unknown {
  return v === undefined || v === null ? spec?.default : reveal(v);
}

/** Compare old and new inputs property by property. */
export function diffProperties(specs: PropertySpecs, olds: Props, news: Props, ignoreChanges: readonly string[] = []): DiffResult {
  const detailed: Record<string, DiffKind> = {};
  const replaces: string[] = [];
  const keys = new Set([...Object.keys(specs), ...Object.keys(olds), ...Object.keys(news)]);
  for (const key of keys) {
    if (ignoreChanges.includes(key)) continue;
    const spec = specs[key];
    const o = olds[key];
    const n = news[key];
    if (!containsUnknown(n) && deepEqual(normalized(spec, o), normalized(spec, n))) continue;
    const replace = spec?.replaces === true;
    const absentOld = o === undefined || o === null;
    const absentNew = n === undefined || n === null;
    const kind: DiffKind = absentOld ? (replace ? "add-replace" : "add") : absentNew ? (replace ? "delete-replace" : "delete") : replace ? "update-replace" : "update";
    detailed[key] = kind;
    if (replace) replaces.push(key);
  }
  return { changed: Object.keys(detailed).length > 0, replaces, deleteBeforeReplace: false, detailed };
}

/** Apply defaults to known values, for outputs. */
export function withDefaults(specs: PropertySpecs, inputs: Props): Props {
  const out: Props = {};
  for (const [key, spec] of Object.entries(specs)) {
    const v = inputs[key];
    out[key] = v === undefined || v === null ? spec.default : v;
  }
  return out;
}

/** `<resource name>-<7 hex of the engine's random seed>`: stable between preview and update. */
export function autoName(req: Pick<CheckRequest, "name" | "randomSeed">): string {
  const hex = createHash("sha256").update(req.randomSeed).digest("hex").slice(0, 7);
  return `${req.name}-${hex}`;
}

/** True when `name` has the shape {@link autoName} gives for this resource. */
export function isAutoName(resourceName: string, name: unknown): boolean {
  return typeof name === "string" && name.length === resourceName.length + 8 && name.startsWith(`${resourceName}-`) && /^[0-9a-f]{7}$/.test(name.slice(-7));
}

/**
 * Settle the `name` input: the user's, else the old one (stable across updates and imports),
 * else the engine's proposal, else {@link autoName}.
 */
export function settleName(req: CheckRequest, failures: CheckFailure[]): unknown {
  const given = req.news.name;
  const mode = req.autonaming?.mode;
  if (given !== undefined && given !== null) {
    if (mode === "enforce" && given !== req.autonaming?.proposedName && !containsUnknown(given)) {
      failures.push({ property: "name", reason: `autonaming is enforced for this stack; expected "${req.autonaming?.proposedName}"` });
    }
    return given;
  }
  if (typeof req.olds.name === "string") return req.olds.name;
  if (mode === "disable") {
    failures.push({ property: "name", reason: "name is required: autonaming is disabled for this stack" });
    return undefined;
  }
  if (req.autonaming && req.autonaming.proposedName) return req.autonaming.proposedName;
  return autoName(req);
}

/** The resource name at the end of a URN (`urn:pulumi:stack::project::type::name`). */
export function nameFromUrn(urn: string): string {
  const i = urn.lastIndexOf("::");
  return i >= 0 ? urn.slice(i + 2) : urn;
}
