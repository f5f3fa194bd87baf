/**
 * Provider configuration (CONTRACT.md "Provider configuration"), validated with zod.
 * Secrets (agent tokens) are held as plain strings only in memory; they are never logged.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { UserError } from "../errors";
import type { BackendConfig } from "../domain/backend";
import { propertyPath } from "../domain/property-path";
import { specialPathReason } from "../domain/user-paths";
import { sqlitePathFromUrl } from "../store/sqlite-store";
import { defaultBackends, loadBackendsFile, parseInlineBackends } from "./backends";

export const hostAgentSchema = z.strictObject({
  url: z.string().url(),
  token: z.string().min(1).optional(),
  caCert: z.string().min(1).optional(),
});

export const providerConfigSchema = z.object({
  stateUrl: z.string().min(1).optional(),
  backendsFile: z.string().min(1).optional(),
  backends: z.array(z.unknown()).optional(),
  hosts: z.record(z.string(), hostAgentSchema).optional(),
  agentToken: z.string().min(1).optional(),
  secretKey: z
    .string()
    .refine((k) => Buffer.from(k, "base64").length === 32, "must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)")
    .optional(),
});

export type RawProviderConfig = z.output<typeof providerConfigSchema>;

/** The configuration the controller runs with, every default applied. */
export interface ProviderConfig {
  /** Folder of the Pulumi project: relative paths are resolved against it. */
  projectDir: string;
  stateUrl: string;
  /** Where the backends came from: a file, `inline`, or `built-in`. */
  backendsSource: string;
  backends: BackendConfig[];
  hosts: Record<string, z.output<typeof hostAgentSchema>>;
  agentToken?: string;
  /**
   * The team's sealing key for secrets at rest (base64, 32 bytes): `secretKey`, else
   * `SDS_SECRET_KEY`. Without it, a SQLite state keeps its own key file beside the database; a
   * PostgreSQL state has no file to keep one in and needs it.
   */
  secretKey?: string;
}

/** Validate the shape only (CheckConfig): returns failures as [property, reason]. */
export function checkProviderConfig(raw: Record<string, unknown>): Array<[string, string]> {
  const r = providerConfigSchema.safeParse(raw);
  if (!r.success) return r.error.issues.map((i) => [propertyPath(i.path), i.message]);
  return [];
}

/**
 * Refuse a SQLite state on one of the kernel's file systems (domain/user-paths.ts), or in a folder
 * this process cannot write (a read-only mount, or no permission: SQLite writes its `-wal` and
 * `-shm` beside the file), before anything is made there. Why at config time: a preview on such
 * a state passed and only the first write of `up` failed; now every command says it at once.
 * `origin` ends the message: where a stateUrl the stack did not set came from.
 */
function checkStatePath(stateUrl: string, projectDir: string, origin: string): void {
  if (!stateUrl.startsWith("sqlite:")) return;
  const file = sqlitePathFromUrl(stateUrl, projectDir);
  if (file === ":memory:") return;
  const why = specialPathReason(path.dirname(file));
  if (why) throw new UserError("INVALID_INPUT", `stateUrl: the state ${file}: its folder ${why}${origin}`, "stateUrl");
  let folder = path.dirname(file);
  while (!fs.existsSync(folder) && path.dirname(folder) !== folder) folder = path.dirname(folder);
  try {
    fs.accessSync(folder, fs.constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    const reason = { EROFS: "is on a read-only file system", EACCES: "is not writable by this user", EPERM: "is not writable by this user" }[code];
    if (!reason) return; // Anything else is for the open to name.
    throw new UserError("INVALID_INPUT", `stateUrl: the state ${file}: ${folder} ${reason} (${code}); set sds:stateUrl (or SDS_STATE_URL) to a folder this user can write${origin}`, "stateUrl", { cause: err });
  }
}

/**
 * Resolve the full configuration: provider config first, then env fallbacks
 * (`SDS_STATE_URL`, `SDS_BACKENDS_FILE`, `SDS_SECRET_KEY`, `SDS_AGENT_TOKEN`), then defaults.
 * Reads the backends file.
 */
export function resolveProviderConfig(raw: Record<string, unknown>, projectDir: string, env: NodeJS.ProcessEnv = process.env): ProviderConfig {
  const r = providerConfigSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    const p = propertyPath(i.path);
    throw new UserError("INVALID_INPUT", `${p}: ${i.message}`, p);
  }
  const c = r.data;
  const stateUrl = c.stateUrl ?? (env.SDS_STATE_URL || undefined) ?? "sqlite:.sds/state.db";
  checkStatePath(stateUrl, projectDir, c.stateUrl === undefined && env.SDS_STATE_URL ? " (stateUrl from SDS_STATE_URL)" : "");
  const secretKey = c.secretKey ?? (env.SDS_SECRET_KEY || undefined);
  const agentToken = c.agentToken ?? (env.SDS_AGENT_TOKEN || undefined);
  if (c.secretKey === undefined && secretKey !== undefined && Buffer.from(secretKey, "base64").length !== 32) {
    throw new UserError("INVALID_INPUT", "SDS_SECRET_KEY: must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)", "secretKey");
  }
  let backends: BackendConfig[];
  let backendsSource: string;
  if (c.backends !== undefined) {
    if (c.backendsFile !== undefined) throw new UserError("INVALID_INPUT", "backends: set either backends or backendsFile, not both", "backends");
    backends = parseInlineBackends(c.backends, projectDir);
    backendsSource = "inline";
  } else {
    const explicit = c.backendsFile ?? (env.SDS_BACKENDS_FILE || undefined);
    const file = path.resolve(projectDir, explicit ?? ".sds/backends.yaml");
    if (explicit !== undefined || fs.existsSync(file)) {
      backends = loadBackendsFile(file);
      backendsSource = file;
    } else {
      backends = defaultBackends(projectDir);
      backendsSource = "built-in";
    }
  }
  const hosts = c.hosts ?? {};
  backends.forEach((b, i) => {
    if (b.node === "local") return;
    const where = backendsSource === "inline" ? "" : `${backendsSource}: `;
    if (!hosts[b.node]) {
      throw new UserError("INVALID_INPUT", `${where}backends[${i}].node: backend ${b.name} runs on node "${b.node}", which is not in the provider's hosts (known: ${Object.keys(hosts).join(", ") || "none"})`, "hosts");
    }
    if (!hosts[b.node].token && !agentToken) throw new UserError("INVALID_INPUT", `hosts.${b.node}.token: backend ${b.name}'s node has no token and the provider has no agentToken`, "hosts");
    if (!b.export.portal) throw new UserError("INVALID_INPUT", `${where}backends[${i}].export.portal: backend ${b.name} is on node "${b.node}": name the portal hosts reach it on (e.g. 10.0.0.5:3260)`, "backends");
    if (b.export.protocol === "local") throw new UserError("INVALID_INPUT", `${where}backends[${i}].export.protocol: backend ${b.name} is on node "${b.node}": "local" serves only the machine running the provider; use iscsi or nbd`, "backends");
  });
  return { projectDir, stateUrl, backendsSource, backends, hosts, agentToken, secretKey };
}
