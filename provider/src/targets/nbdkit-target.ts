/**
 * NBD through nbdkit: one `nbdkit file dir=DIR` per server. nbdkit serves every file of DIR as an
 * export named by the file name, follows symlinks and reads DIR again on each client's request,
 * so an export is a symlink `exportName → volume file` and adding or removing one needs no
 * restart (connected clients keep their open file).
 *
 * On disk, under `<runDir>/nbd/`, per server:
 * - `<server>/`      the symlinks nbdkit serves;
 * - `<server>.json`  `{port, readOnly}`, so `list` and a later provider process know the server;
 * - `<server>.pid`   nbdkit's pidfile. A server runs when that pid is alive and is the nbdkit
 *                    serving `<server>/` (pids get reused; nbdkit leaves the pidfile behind).
 *
 * Size changes: the file plugin opens the export's file when a client connects and reports its
 * size then, so a new connection sees a grown file with no restart and no command (checked by
 * test/contract/target.test.ts); `refreshExport` only checks the export is there.
 *
 * Server and export names become file names: letters, digits, `_ - . :`, no leading dot or dash.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { isRbdPath } from "../domain/rbd-path";
import { BackendError, invalidInput, UserError } from "../errors";
import { run as defaultRun, type Runner } from "../exec/run";
import type { NbdTarget } from "./target";
import { procProcesses, type ProcessTable, waitUntil } from "../exec/processes";
import { DaemonRecords, startDaemon } from "../exec/daemons";
import { checkName, daemonPid, EXPORT_NAME, PORT_TRIES, readIfPresent, SERVER_NAME, stopDaemon, tcpPortFree, writeStateFile } from "./nbd-servers";

const START_TIMEOUT_MS = 30_000;

/** Options of {@link NbdkitTarget}. */
export interface NbdkitTargetOptions {
  /** Address the servers listen on (`nbdkit -i`). */
  host: string;
  /** Folder for the per-server symlink folders, state files and pidfiles (e.g. /run/sds). */
  runDir: string;
  /** Command runner (tests pass a recorder). */
  run?: Runner;
  /** Process table (tests pass a fake). */
  processes?: ProcessTable;
}

/** What `<server>.json` holds. */
interface ServerState {
  port: number;
  readOnly: boolean;
}

/** The {@link NbdTarget} of nbdkit servers sharing one run folder. */
export class NbdkitTarget implements NbdTarget {
  readonly protocol = "nbd";
  readonly host: string;
  private readonly root: string;
  private readonly run: Runner;
  private readonly processes: ProcessTable;
  private readonly daemons: DaemonRecords;

  constructor(options: NbdkitTargetOptions) {
    this.host = options.host;
    this.root = path.join(options.runDir, "nbd");
    this.daemons = new DaemonRecords(path.join(options.runDir, "daemons"));
    this.run = options.run ?? defaultRun;
    this.processes = options.processes ?? procProcesses;
  }

  async ensureServer(server: string, port: number, readOnly: boolean): Promise<number> {
    checkName("server", server, SERVER_NAME);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalidInput("port", `must be 1-65535, got ${port}`);
    const pid = await this.runningPid(server);
    if (pid !== undefined) {
      const state = await this.readState(server);
      if (state?.readOnly === readOnly) return state.port;
      throw new UserError("CONFLICT", `nbd server ${server} already runs (pid ${pid}, port ${state?.port ?? "?"}, read-only ${state?.readOnly ?? "?"}); remove it to serve read-only ${readOnly}`, "readOnly");
    }
    await fs.mkdir(this.exportDir(server), { recursive: true, mode: 0o700 });
    // The wished port, or the next free one: another state's server (or any program) may hold it.
    for (let candidate = port, tries = 0; ; candidate++, tries++) {
      if (tries > 0 && !(await tcpPortFree(this.host, candidate))) continue;
      try {
        await this.startServer(server, candidate, readOnly);
        return candidate;
      } catch (err) {
        if (tries >= PORT_TRIES || !/in use/i.test((err as Error).message)) throw err;
      }
    }
  }

  /** State first: a server that fails to start is retried by the next ensureServer and cleaned by removeServer. */
  private async startServer(server: string, port: number, readOnly: boolean): Promise<void> {
    await this.writeState(server, { port, readOnly });
    await fs.rm(this.pidFile(server), { force: true });
    const args = [...(readOnly ? ["-r"] : []), "-p", String(port), "-i", this.host, "-P", this.pidFile(server), "file", `dir=${this.exportDir(server)}`];
    // A session of its own: the engine stops its plugin with a signal when `pulumi up` returns.
    await startDaemon(this.run, this.daemons, { kind: "nbdkit", name: server, file: "nbdkit", args, pidFile: this.pidFile(server) }, { timeoutMs: START_TIMEOUT_MS });
    // nbdkit listens before it forks, and writes the pidfile from the background process.
    await waitUntil(`nbdkit ${server} to write ${this.pidFile(server)}`, async () => (await this.runningPid(server)) !== undefined);
  }

  async ensureExport(server: string, exportName: string, volumePath: string): Promise<void> {
    checkName("server", server, SERVER_NAME);
    checkName("exportName", exportName, EXPORT_NAME);
    refuseRbd(volumePath);
    if (!(await this.readState(server))) throw new UserError("NOT_FOUND", `nbd server ${server} does not exist (ensureServer first)`, "server");
    const file = path.resolve(volumePath);
    const link = path.join(this.exportDir(server), exportName);
    const have = await readLink(link);
    if (have === undefined) {
      try {
        await fs.access(file);
      } catch {
        throw new UserError("NOT_FOUND", `volume file ${file} does not exist`, "path");
      }
      try {
        await fs.symlink(file, link); // atomic: either our link appears or EEXIST
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
    }
    const now = have ?? (await readLink(link));
    if (now !== file) throw new UserError("CONFLICT", `export ${exportName} of nbd server ${server} already serves ${now ?? "something else"}, not ${file}`, "exportName");
  }

  /**
   * Nothing to do: nbdkit's file plugin opens the file and reads its size per connection, so
   * every new connection sees the current size. Checks that the export serves `volumePath`.
   */
  async refreshExport(server: string, exportName: string, volumePath: string): Promise<void> {
    checkName("server", server, SERVER_NAME);
    checkName("exportName", exportName, EXPORT_NAME);
    if (!(await this.readState(server))) throw new UserError("NOT_FOUND", `nbd server ${server} does not exist`, "server");
    const file = path.resolve(volumePath);
    const have = await readLink(path.join(this.exportDir(server), exportName));
    if (have === undefined) throw new UserError("NOT_FOUND", `nbd server ${server} has no export ${exportName}`, "exportName");
    if (have !== file) throw new UserError("CONFLICT", `export ${exportName} of nbd server ${server} serves ${have}, not ${file}`, "path");
  }

  async removeExport(server: string, exportName: string): Promise<void> {
    checkName("server", server, SERVER_NAME);
    checkName("exportName", exportName, EXPORT_NAME);
    await fs.rm(path.join(this.exportDir(server), exportName), { force: true });
  }

  async removeServer(server: string): Promise<void> {
    checkName("server", server, SERVER_NAME);
    const pid = await this.runningPid(server);
    if (pid !== undefined) await stopDaemon(this.processes, pid, `nbdkit ${server}`, async () => (await this.runningPid(server)) === undefined);
    // Only symlinks inside: rm does not follow them, the volumes stay.
    await fs.rm(this.exportDir(server), { recursive: true, force: true });
    await fs.rm(this.stateFile(server), { force: true });
    await fs.rm(this.pidFile(server), { force: true });
    this.daemons.remove("nbdkit", server);
  }

  async list(): Promise<Array<{ server: string; port: number; readOnly: boolean; pid: number; exports: Array<{ name: string; path: string }> }>> {
    let names: string[];
    try {
      names = await fs.readdir(this.root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const out = [];
    for (const name of names.filter((n) => n.endsWith(".json")).sort()) {
      const server = name.slice(0, -".json".length);
      const state = await this.readState(server);
      const pid = await this.runningPid(server);
      if (!state || pid === undefined) continue;
      // The folder is what nbdkit serves: it reads it again for every client.
      const exports = [];
      const entries = await fs.readdir(this.exportDir(server)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return [];
        throw err;
      });
      for (const entry of entries.sort()) {
        const target = await readLink(path.join(this.exportDir(server), entry));
        if (target !== undefined) exports.push({ name: entry, path: target });
      }
      out.push({ server, port: state.port, readOnly: state.readOnly, pid, exports });
    }
    return out;
  }

  /** The folder of symlinks nbdkit serves for `server`. */
  exportDir(server: string): string {
    return path.join(this.root, server);
  }

  /** nbdkit's pidfile for `server`. */
  pidFile(server: string): string {
    return path.join(this.root, `${server}.pid`);
  }

  private stateFile(server: string): string {
    return path.join(this.root, `${server}.json`);
  }

  /** The pid of the live nbdkit serving `server`'s folder, if any. */
  private runningPid(server: string): Promise<number | undefined> {
    return daemonPid(this.processes, this.pidFile(server), "nbdkit", `dir=${this.exportDir(server)}`);
  }

  private async readState(server: string): Promise<ServerState | undefined> {
    const text = await readIfPresent(this.stateFile(server));
    if (text === undefined) return undefined;
    const state = JSON.parse(text) as Partial<ServerState>;
    if (typeof state.port !== "number" || typeof state.readOnly !== "boolean") {
      throw new BackendError("COMMAND_FAILED", `${this.stateFile(server)} is not a server state ({port, readOnly}): ${text}`, false);
    }
    return { port: state.port, readOnly: state.readOnly };
  }

  private writeState(server: string, state: ServerState): Promise<void> {
    return writeStateFile(this.stateFile(server), state);
  }
}

/** Why: a missing link and a link elsewhere are different answers; anything else is a fault. */
async function readLink(link: string): Promise<string | undefined> {
  try {
    return await fs.readlink(link);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    if (code === "EINVAL") return `${link} (not a symlink)`;
    throw err;
  }
}

/** Why: nbdkit's file plugin serves files (Debian 12's nbdkit has no rbd plugin); RBD volumes go to qemu-nbd (qemu-nbd-target.ts). */
function refuseRbd(volumePath: string): void {
  if (isRbdPath(volumePath)) throw invalidInput("path", `nbdkit serves volume files, not RBD volume paths (${volumePath}): NBD exports of a driver: rbd backend are qemu-nbd's (QemuNbdTarget)`);
}
