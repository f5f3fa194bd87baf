/**
 * Processes of this machine: what targets (tgtd, nbdkit) and connectors (qemu-nbd, nbdfuse) need
 * to find, check and stop daemons that are not our children, and to wait for them to answer.
 * `exec/run.ts` runs commands to completion; this file is about processes that outlive them.
 */
import { spawn } from "node:child_process";
import * as fsSync from "node:fs";
import * as fs from "node:fs/promises";
import { BackendError } from "../errors";

/**
 * The processes of this machine, as targets and connectors need them (daemons that fork into the
 * background are not our children). Injected so unit tests need no real daemon.
 */
export interface ProcessTable {
  /** argv of a live process; undefined when there is none, or only a zombie. */
  argv(pid: number): Promise<string[] | undefined>;
  /** Every live process and its argv. */
  list(): Promise<Array<{ pid: number; argv: string[] }>>;
  /** Send `signal`; a process already gone is not an error. */
  kill(pid: number, signal: NodeJS.Signals): void;
}

/** {@link ProcessTable} over /proc (a zombie has an empty cmdline, so it counts as gone). */
export const procProcesses: ProcessTable = {
  async argv(pid) {
    let raw: string;
    try {
      raw = await fs.readFile(`/proc/${pid}/cmdline`, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ESRCH") return undefined;
      throw err;
    }
    return raw ? raw.replace(/\0$/, "").split("\0") : undefined;
  },
  async list() {
    const out: Array<{ pid: number; argv: string[] }> = [];
    for (const name of await fs.readdir("/proc")) {
      if (!/^\d+$/.test(name)) continue;
      const argv = await procProcesses.argv(Number(name)).catch(() => undefined);
      if (argv) out.push({ pid: Number(name), argv });
    }
    return out;
  },
  kill(pid, signal) {
    try {
      process.kill(pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    }
  },
};

/**
 * The start time of process `pid` (field 22 of /proc/<pid>/stat, clock ticks since boot): with
 * the pid it names one process for good, where a pid alone may have been reused since. null
 * when there is no such process, "" when it cannot be told (no /proc).
 */
export function processStart(pid: number): string | null {
  let stat: string;
  try {
    stat = fsSync.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === "ENOENT" || code === "ESRCH" ? null : "";
  }
  // The command (field 2) is in parentheses and may hold spaces or ")": fields resume after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[19] ?? ""; // field 22 is the 20th after the command and the state
}

/** Why: daemons report readiness only by starting to answer; poll instead of sleeping blindly. */
export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new BackendError("TIMEOUT", `timed out after ${timeoutMs} ms waiting for ${what}`, true);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts a long-running process detached from us (nbdfuse stays in the foreground until its
 * mount goes away); stdout/stderr go to `logFile`. Returns its pid. Injected so unit tests record
 * the argv. (exec/run's Runner waits for a process to end; this one does not.)
 */
export type Spawner = (file: string, args: readonly string[], options: { logFile: string }) => Promise<number>;

export const spawnDetached: Spawner = async (file, args, options) => {
  const fd = fsSync.openSync(options.logFile, "a", 0o600);
  try {
    const child = spawn(file, [...args], { detached: true, stdio: ["ignore", fd, fd] });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once("error", (err) => reject(new BackendError("COMMAND_FAILED", `could not start ${file}: ${err.message}`, false, { cause: err })));
      child.once("spawn", () => resolve(child.pid as number));
    });
    child.unref();
    return pid;
  } finally {
    fsSync.closeSync(fd);
  }
};
