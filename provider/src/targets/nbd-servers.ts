/**
 * What the NBD targets (nbdkit-target.ts, qemu-nbd-target.ts) share: their name rules, the
 * pidfile check of a server's daemon, its stop, its state file, and the port test. Why one file:
 * both keep a server as `<root>/<server>.json` + `<server>.pid` and must judge a live daemon, a
 * free port and a name the same way.
 */
import * as fs from "node:fs/promises";
import * as net from "node:net";
import * as path from "node:path";
import { invalidInput } from "../errors";
import { type ProcessTable, waitUntil } from "../exec/processes";

/** Ports tried after the wished one is taken. */
export const PORT_TRIES = 64;
/** Server names become file names. */
export const SERVER_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
/** Export names become file names (nbdkit) or qemu-nbd's `--export-name`. */
export const EXPORT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$/;

/** An INVALID_INPUT on `property` when `name` does not match `pattern`. */
export function checkName(property: string, name: string, pattern: RegExp): void {
  if (!pattern.test(name)) throw invalidInput(property, `"${name}" must match ${pattern.source}`);
}

/** A file's text, or undefined when it does not exist. */
export async function readIfPresent(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Write a server's state file atomically (a reader never sees half of it). */
export async function writeStateFile(file: string, state: object): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, JSON.stringify(state), { mode: 0o600 });
  await fs.rename(tmp, file);
}

/**
 * The pid in `pidFile` when it is alive and is `command` with `marker` in its argv (pids get
 * reused; a killed daemon leaves its pidfile behind); undefined otherwise.
 */
export async function daemonPid(processes: ProcessTable, pidFile: string, command: string, marker: string): Promise<number | undefined> {
  const text = await readIfPresent(pidFile);
  if (text === undefined) return undefined;
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined; // being written, or garbage
  const argv = await processes.argv(pid);
  if (!argv || path.basename(argv[0] ?? "") !== command || !argv.includes(marker)) return undefined;
  return pid;
}

/** SIGTERM, then SIGKILL when `gone` is not true within `graceMs` (waitUntil's default when not given). */
export async function stopDaemon(processes: ProcessTable, pid: number, what: string, gone: () => Promise<boolean>, graceMs?: number): Promise<void> {
  processes.kill(pid, "SIGTERM");
  try {
    await waitUntil(`${what} (pid ${pid}) to exit`, gone, graceMs);
  } catch {
    processes.kill(pid, "SIGKILL");
    await waitUntil(`${what} (pid ${pid}) to exit after SIGKILL`, gone, graceMs);
  }
}

/** Why: a daemon's own "address in use" costs a process start; a bind test is cheap. */
export function tcpPortFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (port > 65535) return resolve(false);
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}
