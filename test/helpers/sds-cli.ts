/**
 * Run the `sds` operator CLI as operators do, from source (ts-node), without the environment's
 * state settings (SDS_STATE_URL, SDS_SECRET_KEY) unless `env` gives them; `stdin` is piped in.
 */
import { spawn } from "node:child_process";
import * as path from "node:path";
import { repoRoot } from "./provider-process";

export function sdsCli(args: string[], o: { env?: NodeJS.ProcessEnv; stdin?: string } = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", path.join(repoRoot, "provider/src/cli-main.ts"), ...args], {
      cwd: repoRoot,
      env: { ...process.env, SDS_STATE_URL: "", SDS_SECRET_KEY: "", ...o.env },
      stdio: [o.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
    if (o.stdin !== undefined) child.stdin!.end(o.stdin);
  });
}
