/**
 * A node child process running a script of the repo's TypeScript (ts-node, transpile only), for
 * tests that need a second, real process (one to hold a lock, then be SIGKILLed): started, and
 * resolved once it wrote `ready` on stdout.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { repoRoot } from "./provider-process";

/** Run `script` (node -e, in the repo root) with `env` added; resolves once its stdout says `ready`, rejects if it exits first or stays silent 30 s. */
export async function startScriptChild(script: string, env: NodeJS.ProcessEnv, ready: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", "-e", script], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the child never said "${ready}"; stderr: ${stderr}`)), 30_000);
      child.stdout!.on("data", (d: Buffer) => {
        if (d.toString().includes(ready)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on("exit", (code) => reject(new Error(`the child exited (${code}) before "${ready}"; stderr: ${stderr}`)));
    });
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  return child;
}
