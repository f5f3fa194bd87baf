/**
 * Run the `sds` operator CLI as operators do, without the environment's state settings
 * (SDS_STATE_URL, SDS_SECRET_KEY, SDS_BACKENDS_FILE, SDS_AGENT_TOKEN) unless `env` gives them;
 * `stdin` is piped in. From source (ts-node) by default; `built: true` runs provider/bin/sds on
 * the compiled dist (`npm run build` first), several times faster to start, for suites that run
 * the CLI dozens of times.
 */
import { spawn } from "node:child_process";
import * as path from "node:path";
import { repoRoot } from "./provider-process";

export interface SdsRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function sdsCli(args: string[], o: { env?: NodeJS.ProcessEnv; stdin?: string; cwd?: string; built?: boolean } = {}): Promise<SdsRun> {
  return new Promise((resolve, reject) => {
    const [file, argv] = o.built
      ? [path.join(repoRoot, "provider/bin/sds"), args]
      : [process.execPath, ["-r", "ts-node/register/transpile-only", path.join(repoRoot, "provider/src/cli-main.ts"), ...args]];
    const child = spawn(file, argv, {
      cwd: o.cwd ?? repoRoot,
      env: { ...process.env, SDS_STATE_URL: "", SDS_SECRET_KEY: "", SDS_BACKENDS_FILE: "", SDS_AGENT_TOKEN: "", TS_NODE_PROJECT: path.join(repoRoot, "tsconfig.json"), ...o.env },
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
