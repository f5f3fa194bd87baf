/**
 * The plugin's lifetime follows its engine's (issue 12): a `pulumi` CLI killed with SIGKILL sends
 * its plugin no signal, and the plugin used to run on forever, holding the state open. The real
 * plugin (provider/src/main.ts under ts-node) is started as the child of a short-lived `sh`
 * standing in for the engine; the sh is killed with SIGKILL and the plugin must be gone within a
 * few seconds.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

const repoRoot = path.resolve(__dirname, "../..");
const mainTs = path.join(repoRoot, "provider/src/main.ts");

/** Alive and not a zombie (a zombie's parent may be an init that does not reap promptly). */
function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return check();
}

/** `sh` starts the plugin in the background and prints its pid; the plugin then prints its port. */
async function startPluginUnderShell(): Promise<{ sh: ChildProcess; pluginPid: number; stderr: () => string }> {
  const node = process.execPath;
  // The engine address is a closed port: the plugin must start without ever reaching its engine.
  const script = `"${node}" -r ts-node/register/transpile-only "${mainTs}" 127.0.0.1:1 & echo "pid $!"; wait`;
  const sh = spawn("sh", ["-c", script], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, TS_NODE_PROJECT: path.join(repoRoot, "tsconfig.json") } });
  let out = "";
  let err = "";
  sh.stderr!.on("data", (d) => (err += String(d)));
  const pluginPid = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the plugin did not print its port in 30 s; stdout: ${out}; stderr: ${err}`)), 30_000);
    sh.stdout!.on("data", (d) => {
      out += String(d);
      const pid = /^pid (\d+)$/m.exec(out);
      if (pid && /^\d+$/m.test(out)) {
        clearTimeout(timer);
        resolve(Number(pid[1]));
      }
    });
    sh.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`sh exited (${code}) before the plugin started; stdout: ${out}; stderr: ${err}`));
    });
  });
  return { sh, pluginPid, stderr: () => err };
}

jest.setTimeout(60_000);

test("the plugin exits within a few seconds of its engine being killed with SIGKILL", async () => {
  const { sh, pluginPid, stderr } = await startPluginUnderShell();
  try {
    expect(running(pluginPid)).toBe(true);
    // Still running while the engine lives: the watch must not fire on its own.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(running(pluginPid)).toBe(true);
    const killedAt = Date.now();
    sh.kill("SIGKILL");
    const exited = await waitFor(() => !running(pluginPid), 6_000);
    if (!exited) throw new Error(`the plugin (pid ${pluginPid}) still runs ${Date.now() - killedAt} ms after its engine was killed; stderr: ${stderr()}`);
    expect(Date.now() - killedAt).toBeLessThan(6_000);
    // It says why, in one line, on the way out.
    expect(stderr()).toMatch(/^pulumi-resource-sds: the engine is gone \(its parent process \d+ is gone.*\); closing$/m);
  } finally {
    if (running(pluginPid)) process.kill(pluginPid, "SIGKILL");
    if (sh.exitCode === null && sh.signalCode === null) sh.kill("SIGKILL");
  }
});
