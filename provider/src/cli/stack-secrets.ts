/**
 * Secret provider config (`pulumi config set --secret sds:hosts …`) is stored encrypted in
 * Pulumi.<stack>.yaml; only the Pulumi CLI holds the key (passphrase, cloud KMS, the service). So
 * sds asks it, as `pulumi up` would: `pulumi config --show-secrets --json`, in the project folder,
 * with this process's environment (PULUMI_CONFIG_PASSPHRASE, the backend login). The values pass
 * through a pipe, never argv or a file.
 */
import { execFile } from "node:child_process";
import { jsonText, type StackConfig } from "../compose/stack-config";
import { UserError } from "../errors";

/** How long `pulumi config` may take (it may log in to a backend). */
const PULUMI_MS = 60_000;

/**
 * The decrypted values of `keys` (`sds:<key>`) of `stack`; rejects with the Pulumi CLI's own first
 * line when it cannot (not installed, not logged in, no passphrase).
 */
export function decryptStackSecrets(projectDir: string, stack: string, keys: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(
      "pulumi",
      ["config", "--show-secrets", "--json", "--stack", stack, "--non-interactive"],
      { cwd: projectDir, timeout: PULUMI_MS, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, PULUMI_SKIP_UPDATE_CHECK: "true" } },
      (err, stdout, stderr) => {
        if (err) {
          const why = (stderr || err.message).split("\n").map((l) => l.trim()).find((l) => l !== "") ?? "failed";
          reject(new Error((err as NodeJS.ErrnoException).code === "ENOENT" ? "the pulumi CLI is not on PATH" : `pulumi config: ${why.replace(/^error: /, "")}`));
          return;
        }
        try {
          const all = JSON.parse(stdout) as Record<string, { value?: unknown; objectValue?: unknown }>;
          const out: Record<string, unknown> = {};
          for (const key of keys) {
            const entry = all[`sds:${key}`];
            if (entry) out[key] = jsonText(key, entry.objectValue ?? entry.value);
          }
          resolve(out);
        } catch (e) {
          reject(new Error(`pulumi config: unreadable answer (${(e as Error).message})`));
        }
      },
    );
  });
}

/**
 * The values of the stack's secret keys `keys`, decrypted by the Pulumi CLI; when it cannot, one
 * line naming the first key and how to pass it instead (`passAs`).
 */
export async function openStackSecrets(projectDir: string, stack: StackConfig, keys: string[], passAs: (key: string) => string): Promise<Record<string, unknown>> {
  if (keys.length === 0 || !stack.stack) return {};
  return decryptStackSecrets(projectDir, stack.stack, keys).catch((err: Error) => {
    const key = keys[0]!;
    throw new UserError("INVALID_INPUT", `${stack.file}: sds:${key} is a secret and ${err.message}; pass it as ${passAs(key)}`, key);
  });
}
