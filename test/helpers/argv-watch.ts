/**
 * Proving that a secret never appears in any process's argv (what `ps` shows every local user):
 * - {@link watchArgv}: a child process reads /proc/<pid>/cmdline of every process, over and
 *   over, and keeps each distinct argv: it sees daemons and anything that lives a while, but a
 *   command that lives a millisecond (tgtadm) slips between two passes;
 * - {@link commandShims}: a folder of wrappers, put first on the PATH of the program under test,
 *   that log the argv of every run of the named commands before exec'ing the real one: every
 *   command sds runs by name is seen, however short it lives.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const WATCHER = `
const fs = require("node:fs");
const out = process.argv[1];
const seen = new Set();
let stop = false;
process.on("SIGTERM", () => { stop = true; });
function pass() {
  for (const pid of fs.readdirSync("/proc")) {
    if (pid.charCodeAt(0) > 57) continue;
    try {
      const cmd = fs.readFileSync("/proc/" + pid + "/cmdline", "latin1");
      if (cmd && !seen.has(cmd)) { seen.add(cmd); fs.appendFileSync(out, JSON.stringify(cmd.split("\\0").join(" ")) + "\\n"); }
    } catch {}
  }
  if (stop) { fs.appendFileSync(out, "\\"--end--\\"\\n"); process.exit(0); }
  setImmediate(pass);
}
pass();
`;

export interface ArgvWatch {
  /** Stop watching; every distinct argv seen, joined by spaces. */
  stop(): Promise<string[]>;
}

export function watchArgv(): ArgvWatch {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "sds-argv-")), "seen.jsonl");
  fs.writeFileSync(file, "");
  const child: ChildProcess = spawn(process.execPath, ["-e", WATCHER, file], { stdio: "ignore" });
  return {
    async stop() {
      await new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      });
      const lines = fs.readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as string);
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
      return lines.filter((l) => l !== "--end--");
    },
  };
}

export interface CommandShims {
  /** The folder to put first on PATH. */
  dir: string;
  /** Every argv the wrapped commands were run with so far, joined by spaces. */
  seen(): string[];
  remove(): void;
}

/** Wrappers for `commands` (each must be installed) that log their argv, then exec the real one. */
export function commandShims(commands: string[]): CommandShims {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-shims-"));
  const log = path.join(dir, "argv.log");
  fs.writeFileSync(log, "");
  const searchPath = (process.env.PATH ?? "").split(path.delimiter).concat(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
  for (const c of commands) {
    const real = searchPath.map((d) => path.join(d, c)).find((f) => {
      try {
        fs.accessSync(f, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
    if (!real) continue;
    fs.writeFileSync(path.join(dir, c), `#!/bin/sh\n{ printf '%s ' "$0" "$@"; printf '\\n'; } >> '${log}'\nexec '${real}' "$@"\n`, { mode: 0o755 });
  }
  return {
    dir,
    seen: () => fs.readFileSync(log, "utf8").split("\n").filter(Boolean),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
