/**
 * Backends and pools: the YAML file (`backendsFile`) or the inline `backends` provider config,
 * validated with zod. Errors name the file, line and key (`backends.yaml:12: backends[0].pools[1].name: ...`).
 * Shape: shared/CONTRACT.md, "Backends and pools".
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { LineCounter, type YAMLError, parseDocument } from "yaml";
import { type BackendConfig, backendsSchema } from "../domain/backend";
import { propertyPath } from "../domain/property-path";
import { specialPathReason } from "../domain/user-paths";
import { UserError } from "../errors";

/** The built-in backend used when none is configured (CONTRACT.md). */
export function defaultBackends(projectDir: string): BackendConfig[] {
  return backendsSchema.parse([
    {
      name: "local",
      driver: "file",
      pools: [
        {
          name: "default",
          path: path.join(projectDir, ".sds", "pools", "default"),
          multiAttach: true,
          extras: { dataStorage: { provisioningPolicy: "Thin" } },
        },
      ],
    },
  ]);
}

/** Resolve relative pool paths (and an rbd backend's conf and keyring files) against `baseDir`. */
function resolvePaths(backends: BackendConfig[], baseDir: string): BackendConfig[] {
  // Pools on remote nodes are paths on those nodes: already absolute (checked), never resolved here.
  // An rbd pool's path is a Ceph pool's name, not a path.
  return backends.map((b) => {
    if (b.driver === "rbd") {
      const rbd = b.rbd && { ...b.rbd };
      if (rbd?.conf !== undefined) rbd.conf = path.resolve(baseDir, rbd.conf);
      if (rbd?.keyringFile !== undefined) rbd.keyringFile = path.resolve(baseDir, rbd.keyringFile);
      return { ...b, rbd };
    }
    return b.node !== "local" ? b : { ...b, pools: b.pools.map((p) => ({ ...p, path: path.resolve(baseDir, p.path) })) };
  });
}

/**
 * The first local pool whose folder is on one of the kernel's file systems (domain/user-paths.ts),
 * as [backend index, pool index, path, why]. Pools on other nodes are paths there: their agent checks them.
 */
function specialPool(backends: BackendConfig[]): [number, number, string, string] | undefined {
  for (const [i, b] of backends.entries()) {
    if (b.node !== "local" || b.driver === "rbd") continue;
    for (const [j, p] of b.pools.entries()) {
      const why = specialPathReason(p.path);
      if (why) return [i, j, p.path, why];
    }
  }
  return undefined;
}

/** Validate inline `backends` provider config. Relative pool paths are relative to the project folder. */
export function parseInlineBackends(value: unknown, projectDir: string): BackendConfig[] {
  const r = backendsSchema.safeParse(value);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new UserError("INVALID_INPUT", `${propertyPath(i.path, "backends")}: ${i.message}`, propertyPath(i.path, "backends"));
  }
  const backends = resolvePaths(r.data, projectDir);
  const bad = specialPool(backends);
  if (bad) {
    const prop = propertyPath([bad[0], "pools", bad[1], "path"], "backends");
    throw new UserError("INVALID_INPUT", `${prop}: ${JSON.stringify(bad[2])} ${bad[3]}`, prop);
  }
  return backends;
}

/** The line of the node at `where` in a backends file, or of its nearest ancestor that has one (a missing key points at its parent). */
function lineOf(doc: ReturnType<typeof parseDocument>, lineCounter: LineCounter, where: (string | number)[]): number {
  for (let n = where.length; n > 0; n--) {
    const node = doc.getIn(where.slice(0, n), true) as { range?: number[] } | undefined;
    if (node && typeof node === "object" && node.range) return lineCounter.linePos(node.range[0]).line;
  }
  return 1;
}

/**
 * `file:line: invalid YAML: …` for the first error, on the line at fault. A key indented deeper
 * than its siblings is read by YAML as the rest of the value above it (`name: p0` + `path` makes a
 * two-line key), and the error's start is on that value's line, one line early: the faulty line is
 * the one where that key ends.
 */
export function yamlError(file: string, text: string, errors: readonly YAMLError[], lineCounter: LineCounter): string {
  const first = errors[0];
  const multiLineKey = first.code === "BLOCK_AS_IMPLICIT_KEY" || first.code === "MULTILINE_IMPLICIT_KEY" ? errors.find((e) => e.code === "MULTILINE_IMPLICIT_KEY") : undefined;
  if (multiLineKey) {
    const lines = text.slice(multiLineKey.pos[0], multiLineKey.pos[1]).split("\n");
    const key = lines[lines.length - 1].trim();
    const above = lineCounter.linePos(multiLineKey.pos[0]).line;
    return `${file}:${lineCounter.linePos(multiLineKey.pos[1]).line}: invalid YAML: "${key}" is indented deeper than the keys beside it, so it reads as part of the value on line ${above}`;
  }
  return `${file}:${lineCounter.linePos(first.pos[0]).line}: invalid YAML: ${first.message.split("\n")[0]}`;
}

/**
 * Read and validate a backends YAML file (top-level key `backends`). Relative pool paths are
 * relative to the file's folder. Errors carry `file:line`.
 */
export function loadBackendsFile(file: string): BackendConfig[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new UserError("INVALID_INPUT", `backendsFile: cannot read ${file}: ${(err as Error).message}`, "backendsFile");
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) throw new UserError("INVALID_INPUT", yamlError(file, text, doc.errors, lineCounter), "backendsFile");
  const data = doc.toJS() as unknown;
  if (data === null || typeof data !== "object" || Array.isArray(data) || !("backends" in data)) {
    throw new UserError("INVALID_INPUT", `${file}:1: expected a mapping with a top-level key "backends"`, "backendsFile");
  }
  const extra = Object.keys(data).filter((k) => k !== "backends");
  if (extra.length > 0) {
    const node = doc.contents && "items" in doc.contents ? (doc.contents.items as { key: { range?: number[] } }[]).find((it) => String((it.key as unknown as { value: unknown }).value) === extra[0]) : undefined;
    const line = node?.key.range ? lineCounter.linePos(node.key.range[0]).line : 1;
    throw new UserError("INVALID_INPUT", `${file}:${line}: ${extra[0]}: unknown key (expected only "backends")`, "backendsFile");
  }
  const r = backendsSchema.safeParse((data as { backends: unknown }).backends);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = ["backends", ...issue.path] as (string | number)[];
    // An unknown key: point at the key itself, and name it.
    const unknownKey = issue.code === "unrecognized_keys" ? String(issue.keys[0]) : undefined;
    if (unknownKey !== undefined) where.push(unknownKey);
    const line = lineOf(doc, lineCounter, where);
    const prop = propertyPath(unknownKey !== undefined ? [...issue.path, unknownKey] : issue.path, "backends");
    const message = unknownKey !== undefined ? "unknown key" : issue.message;
    throw new UserError("INVALID_INPUT", `${file}:${line}: ${prop}: ${message}`, "backendsFile");
  }
  // A cephx key belongs in a secret (inline backends set with --secret) or a keyring file, not in a file sds reads in plain text.
  const keyAt = r.data.findIndex((b) => b.rbd?.key !== undefined);
  if (keyAt >= 0) {
    const line = lineOf(doc, lineCounter, ["backends", keyAt, "rbd", "key"]);
    throw new UserError("INVALID_INPUT", `${file}:${line}: ${propertyPath([keyAt, "rbd", "key"], "backends")}: a cephx key does not belong in a backends file: name a keyring file (rbd.keyringFile, mode 0600), or give the backends inline as a Pulumi secret (pulumi config set --secret --path sds:backends…)`, "backendsFile");
  }
  const backends = resolvePaths(r.data, path.dirname(path.resolve(file)));
  const bad = specialPool(backends);
  if (bad) {
    const line = lineOf(doc, lineCounter, ["backends", bad[0], "pools", bad[1], "path"]);
    throw new UserError("INVALID_INPUT", `${file}:${line}: ${propertyPath([bad[0], "pools", bad[1], "path"], "backends")}: ${JSON.stringify(bad[2])} ${bad[3]}`, "backendsFile");
  }
  return backends;
}
