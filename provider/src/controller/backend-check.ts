/**
 * Backends that cannot silently differ between runners sharing one state.
 *
 * Each runner (a teammate's checkout, a CI job) loads its own backends: a file, inline config,
 * or the built-in `local` backend when it finds neither. The state keeps, per backend, the
 * configuration it was last written with (canonical JSON, see {@link backendConfigJson}); at
 * start, the loaded backends are compared with it:
 * - a backend the state has volumes on that this runner does not load is an error naming it
 *   and where the runner looked (the classic case: no `.sds/backends.yaml` in a fresh checkout,
 *   so only the built-in backend loaded): its volumes could be neither shown nor managed;
 * - a backend configured differently is a warning naming each difference: it may be a change
 *   the run is about to make; the next write records the runner's configuration.
 * Backends the state knows without volumes on them, and new ones, are fine.
 */
import type { BackendConfig } from "../domain/backend";
import { UserError } from "../errors";
import type { BackendRow } from "../store/store";

/** The configuration as the state keeps it: JSON with keys sorted at every level. */
export function backendConfigJson(b: BackendConfig): string {
  return JSON.stringify(sortKeys(b));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v === null || typeof v !== "object") return v;
  return Object.fromEntries(
    Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
  );
}

/** Where a runner's backends came from, in words (`source`: a file, `inline`, or `built-in`). */
function describeSource(source: string): string {
  if (source === "built-in") return "this runner loaded only the built-in `local` backend (it found no backends file: commit the one the state was built with, or set sds:backendsFile)";
  if (source === "inline") return "the provider's inline `backends` do not configure it";
  return `${source} does not configure it`;
}

/**
 * Compares the loaded backends with what the state remembers. Throws the error described above;
 * returns the warnings.
 */
export function checkBackends(loaded: BackendConfig[], stored: BackendRow[], volumesByBackend: ReadonlyMap<string, number>, source: string): string[] {
  const names = new Set(loaded.map((b) => b.name));
  const missing = stored.filter((r) => !names.has(r.name) && (volumesByBackend.get(r.name) ?? 0) > 0);
  if (missing.length > 0) {
    const what = missing.map((r) => `"${r.name}" (${volumesByBackend.get(r.name)} volume(s))`).join(", ");
    throw new UserError("INVALID_INPUT", `backends: this state has volumes on backend ${what}, but ${describeSource(source)}`, "backends");
  }
  const warnings: string[] = [];
  for (const b of loaded) {
    const row = stored.find((r) => r.name === b.name);
    if (!row?.config) continue;
    const diffs = differences(JSON.parse(row.config), JSON.parse(backendConfigJson(b)));
    if (diffs.length === 0) continue;
    const shown = diffs.slice(0, 5).join("; ") + (diffs.length > 5 ? `; and ${diffs.length - 5} more` : "");
    warnings.push(`backend ${b.name}: ${source === "built-in" ? "the built-in backend" : source} differs from the configuration this state was last written with: ${shown}; the next up records this runner's`);
  }
  return warnings;
}

/** `path: old → new` for every leaf that differs. */
function differences(a: unknown, b: unknown, at = ""): string[] {
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  const isObj = (x: unknown) => x !== null && typeof x === "object";
  if (!isObj(a) || !isObj(b) || Array.isArray(a) !== Array.isArray(b)) return [`${at || "(all)"}: ${JSON.stringify(a)} → ${JSON.stringify(b)}`];
  const keys = new Set([...Object.keys(a as object), ...Object.keys(b as object)]);
  const out: string[] = [];
  for (const k of keys) {
    const p = Array.isArray(a) ? `${at}[${k}]` : at ? `${at}.${k}` : k;
    out.push(...differences((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], p));
  }
  return out;
}
