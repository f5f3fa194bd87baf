/**
 * The provider config a stack sets in `Pulumi.<stack>.yaml` (`sds:stateUrl`, `sds:backendsFile`,
 * …), for operator commands that run beside a Pulumi project without the engine: they must find
 * the same state and backends `pulumi up` does, or say exactly what to pass.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { yamlError } from "../controller/backends";
import { UserError } from "../errors";

/** Keys of the provider config an operator command can take from a stack file. */
const KEYS = ["stateUrl", "backendsFile", "backends", "hosts", "agentToken", "secretKey"] as const;

export interface StackConfig {
  /** The stack whose file was read, or undefined when the project has no stack file setting sds. */
  stack?: string;
  file?: string;
  /** The plain `sds:*` values (JSON-able). */
  raw: Record<string, unknown>;
  /** `sds:*` keys the file holds encrypted: the command cannot read them (pass them another way). */
  secure: string[];
}

/**
 * Read `sds:*` from `Pulumi.<stack>.yaml` in `projectDir`. Without `stack`, the one stack file
 * that sets any `sds:` key is used; several are an error naming them (pass --stack).
 */
export function readStackConfig(projectDir: string, stack?: string): StackConfig {
  const files = listStackFiles(projectDir);
  let chosen: { stack: string; file: string } | undefined;
  if (stack !== undefined) {
    chosen = files.find((f) => f.stack === stack);
    if (!chosen) throw new UserError("NOT_FOUND", `--stack: no Pulumi.${stack}.yaml in ${projectDir} (stacks here: ${files.map((f) => f.stack).join(", ") || "none"})`, "stack");
  } else {
    const setting = files.filter((f) => Object.keys(sdsValues(f.file)).length > 0);
    if (setting.length > 1) {
      throw new UserError("INVALID_INPUT", `--stack: several stacks in ${projectDir} configure sds (${setting.map((f) => f.stack).join(", ")}); pass --stack NAME`, "stack");
    }
    chosen = setting[0];
  }
  // Project-level values (Pulumi.yaml `config:`) first, the stack file's over them, as the engine does.
  const values = { ...projectValues(projectDir), ...(chosen ? sdsValues(chosen.file) : {}) };
  const raw: Record<string, unknown> = {};
  const secure: string[] = [];
  for (const [k, v] of Object.entries(values)) {
    if (!(KEYS as readonly string[]).includes(k)) continue;
    if (containsSecure(v)) secure.push(k);
    else raw[k] = jsonText(k, v);
  }
  return chosen ? { stack: chosen.stack, file: chosen.file, raw, secure } : { raw, secure };
}

/**
 * `pulumi config set sds:hosts '{…}'` (without --path) stores the object as a JSON string, and the
 * engine hands the provider that string: read it the same way.
 */
export function jsonText(key: string, v: unknown): unknown {
  if ((key !== "hosts" && key !== "backends") || typeof v !== "string" || !/^\s*[[{]/.test(v)) return v;
  try {
    return JSON.parse(v) as unknown;
  } catch {
    return v; // the config check names what is wrong with it
  }
}

/** `sds:*` of the project file (`config: {"sds:key": value | {value: v} | {default: v}}`). */
function projectValues(projectDir: string): Record<string, unknown> {
  const file = ["Pulumi.yaml", "Pulumi.yml"].map((n) => path.join(projectDir, n)).find((f) => fs.existsSync(f));
  if (!file) return {};
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(sdsValues(file))) {
    const entry = v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
    if (entry && "value" in entry) out[k] = entry.value;
    else if (entry && "default" in entry) out[k] = entry.default;
    else out[k] = v;
  }
  return out;
}

function listStackFiles(projectDir: string): Array<{ stack: string; file: string }> {
  let names: string[];
  try {
    names = fs.readdirSync(projectDir);
  } catch (err) {
    throw new UserError("NOT_FOUND", `--project: cannot read ${projectDir}: ${(err as Error).message}`, "project");
  }
  return names
    .map((n) => /^Pulumi\.(.+)\.ya?ml$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ stack: m[1]!, file: path.join(projectDir, m[0]) }))
    .sort((a, b) => a.stack.localeCompare(b.stack));
}

/** `config: {"sds:key": value}` → `{key: value}`. */
function sdsValues(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new UserError("INVALID_INPUT", `${file}: not a readable stack file: ${(err as Error).message}`, "stack");
  }
  const lineCounter = new LineCounter();
  const parsed = parseDocument(text, { lineCounter, prettyErrors: false });
  if (parsed.errors.length > 0) throw new UserError("INVALID_INPUT", yamlError(file, text, parsed.errors, lineCounter), "stack");
  const doc: unknown = parsed.toJS();
  const config = (doc as { config?: Record<string, unknown> } | null)?.config ?? {};
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) if (k.startsWith("sds:")) out[k.slice(4)] = v;
  return out;
}

/** Pulumi writes a secret as `{secure: "<ciphertext>"}`, anywhere inside a value. */
function containsSecure(v: unknown): boolean {
  if (v === null || typeof v !== "object") return false;
  if (!Array.isArray(v) && Object.keys(v).length === 1 && "secure" in v) return true;
  return Object.values(v).some(containsSecure);
}

/** The nearest folder at or above `dir` holding Pulumi.yaml, else `dir`. */
export function findProjectDir(dir: string): string {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if (isProjectDir(d)) return d;
    if (path.dirname(d) === d) return path.resolve(dir);
  }
}

export function isProjectDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, "Pulumi.yaml")) || fs.existsSync(path.join(dir, "Pulumi.yml"));
}
