/**
 * NBD exports of RBD volumes through qemu-nbd: one `qemu-nbd` per server, serving the server's
 * one export from librbd (`rbd:pool/image:id=…:conf=…`, the volume path as qemu takes it: the
 * conf names the monitors and the keyring file, so no key is in argv).
 *
 * Why qemu-nbd and one export per server: Debian 12's nbdkit has no rbd plugin, and qemu-nbd
 * serves one export per process. So a server here is a wish (`ensureServer`: its port and mode,
 * remembered) that `ensureExport` makes real by starting qemu-nbd on that port; a second,
 * different export on the same server is a CONFLICT. An `rbd` backend with `export.protocol: nbd`
 * therefore needs a server per volume and mode (`sharedTargets: false`, which domain/backend.ts
 * requires): several attachments of one volume in one mode share its server (`--shared=16`).
 *
 * On disk, under `<runDir>/qemu-nbd/`, per server:
 * - `<server>.json`  `{port, readOnly, export?: {name, path}}`, so `list` and a later provider
 *                    process know the server and what it serves;
 * - `<server>.pid`   qemu-nbd's pidfile. A server runs when that pid is alive and is the qemu-nbd
 *                    given that pidfile (pids get reused; a killed qemu-nbd leaves it behind).
 * qemu-nbd runs in a session of its own (exec/daemons.ts, kind `qemu-nbd-export`, not the
 * connectors' `qemu-nbd` helpers their reaper stops), so the export outlives `pulumi up`.
 *
 * Caching: `--cache=none` turns librbd's cache off, so what the `rw` server was told is written
 * is in the cluster when the client's flush returns, and a `ro` server of the same image (another
 * qemu-nbd, another librbd client) reads it at once.
 *
 * Size changes: qemu-nbd reads the image size at start and NBD has no resize notice, so
 * `refreshExport` restarts it on the same port (connected clients lose their connection and
 * reconnect: the connector's `extendVolume`).
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { isRbdPath, parseRbdPath } from "../domain/rbd-path";
import { BackendError, invalidInput, UserError } from "../errors";
import { DaemonRecords, startDaemon } from "../exec/daemons";
import { procProcesses, type ProcessTable, waitUntil } from "../exec/processes";
import { run as defaultRun, type Runner } from "../exec/run";
import { checkName, daemonPid, EXPORT_NAME, PORT_TRIES, readIfPresent, SERVER_NAME, stopDaemon, tcpPortFree, writeStateFile } from "./nbd-servers";
import type { NbdTarget } from "./target";

const START_TIMEOUT_MS = 60_000;
/** How long qemu-nbd gets after SIGTERM, then after SIGKILL. */
const STOP_GRACE_MS = 10_000;
/** Clients one server takes at once: every host attached in the server's mode. */
const MAX_CLIENTS = 16;
/** The kind of the daemon records (exec/daemons.ts). */
export const QEMU_NBD_EXPORT_KIND = "qemu-nbd-export";

/** Options of {@link QemuNbdTarget}. */
export interface QemuNbdTargetOptions {
  /** Address the servers listen on (`qemu-nbd -b`). */
  host: string;
  /** Folder for the per-server state files and pidfiles (e.g. /run/sds). */
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
  export?: { name: string; path: string };
}

/** The {@link NbdTarget} of qemu-nbd servers of RBD volumes sharing one run folder. */
export class QemuNbdTarget implements NbdTarget {
  readonly protocol = "nbd";
  readonly host: string;
  private readonly root: string;
  private readonly run: Runner;
  private readonly processes: ProcessTable;
  private readonly daemons: DaemonRecords;

  constructor(options: QemuNbdTargetOptions) {
    this.host = options.host;
    this.root = path.join(options.runDir, "qemu-nbd");
    this.daemons = new DaemonRecords(path.join(options.runDir, "daemons"));
    this.run = options.run ?? defaultRun;
    this.processes = options.processes ?? procProcesses;
  }

  /**
   * Remember the server (port, mode); qemu-nbd starts with its export. A server whose qemu-nbd
   * runs keeps its port; one that does not gets the wished (or recorded) port if it is free, else
   * the next free one.
   */
  async ensureServer(server: string, port: number, readOnly: boolean): Promise<number> {
    checkName("server", server, SERVER_NAME);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalidInput("port", `must be 1-65535, got ${port}`);
    const state = await this.readState(server);
    const pid = await this.runningPid(server);
    if (state && pid !== undefined) {
      if (state.readOnly === readOnly) return state.port;
      throw new UserError("CONFLICT", `nbd server ${server} already runs (qemu-nbd pid ${pid}, port ${state.port}, read-only ${state.readOnly}); remove it to serve read-only ${readOnly}`, "readOnly");
    }
    await fs.mkdir(this.root, { recursive: true, mode: 0o700 });
    const free = await this.freePort(state?.port ?? port);
    await this.writeState(server, { ...state, port: free, readOnly });
    return free;
  }

  async ensureExport(server: string, exportName: string, volumePath: string): Promise<void> {
    checkName("server", server, SERVER_NAME);
    checkName("exportName", exportName, EXPORT_NAME);
    checkRbd(volumePath);
    const state = await this.readState(server);
    if (!state) throw new UserError("NOT_FOUND", `nbd server ${server} does not exist (ensureServer first)`, "server");
    if (state.export && (state.export.name !== exportName || state.export.path !== volumePath)) {
      throw new UserError("CONFLICT", `nbd server ${server} already serves export ${state.export.name} (${state.export.path}); a qemu-nbd server serves one export, not also ${exportName} (${volumePath})`, "exportName");
    }
    if ((await this.runningPid(server)) !== undefined) return;
    await this.writeState(server, { ...state, export: { name: exportName, path: volumePath } });
    await this.startServer(server);
  }

  /** Restart qemu-nbd on its port: it read the image size at start. */
  async refreshExport(server: string, exportName: string, volumePath: string): Promise<void> {
    checkName("server", server, SERVER_NAME);
    checkName("exportName", exportName, EXPORT_NAME);
    const state = await this.readState(server);
    if (!state) throw new UserError("NOT_FOUND", `nbd server ${server} does not exist`, "server");
    if (!state.export || state.export.name !== exportName) throw new UserError("NOT_FOUND", `nbd server ${server} has no export ${exportName}`, "exportName");
    if (state.export.path !== volumePath) throw new UserError("CONFLICT", `export ${exportName} of nbd server ${server} serves ${state.export.path}, not ${volumePath}`, "path");
    await this.stopServer(server);
    await this.startServer(server);
  }

  /** Stop qemu-nbd and forget the export; the server (port, mode) stays remembered. */
  async removeExport(server: string, exportName: string): Promise<void> {
    checkName("server", server, SERVER_NAME);
    checkName("exportName", exportName, EXPORT_NAME);
    const state = await this.readState(server);
    if (!state?.export || state.export.name !== exportName) return;
    await this.stopServer(server);
    await this.writeState(server, { port: state.port, readOnly: state.readOnly });
  }

  async removeServer(server: string): Promise<void> {
    checkName("server", server, SERVER_NAME);
    await this.stopServer(server);
    await fs.rm(this.stateFile(server), { force: true });
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
      // A server whose qemu-nbd does not run serves nothing (a wish, or a crash): not listed.
      if (!state?.export || pid === undefined) continue;
      out.push({ server, port: state.port, readOnly: state.readOnly, pid, exports: [{ ...state.export }] });
    }
    return out;
  }

  /** qemu-nbd's pidfile for `server`. */
  pidFile(server: string): string {
    return path.join(this.root, `${server}.pid`);
  }

  /** qemu-nbd's argv for a server (tests compare the live process with it). */
  argv(server: string, state: ServerState & { export: { name: string; path: string } }): string[] {
    return [
      "--fork",
      `--pid-file=${this.pidFile(server)}`,
      "--persistent",
      `--shared=${MAX_CLIENTS}`,
      "--export-name",
      state.export.name,
      "--bind",
      this.host,
      "--port",
      String(state.port),
      "--format=raw",
      "--cache=none",
      ...(state.readOnly ? ["--read-only"] : []),
      state.export.path,
    ];
  }

  /**
   * Start qemu-nbd for the server's export. A port taken since ensureServer checked it fails the
   * start (the controller recorded that port): the retry's ensureServer picks a free one.
   */
  private async startServer(server: string): Promise<void> {
    const state = await this.readState(server);
    if (!state?.export) throw new BackendError("COMMAND_FAILED", `nbd server ${server}: no export to serve`, false);
    await fs.rm(this.pidFile(server), { force: true });
    // A session of its own: the engine stops its plugin with a signal when `pulumi up` returns.
    const args = this.argv(server, { ...state, export: state.export });
    await startDaemon(this.run, this.daemons, { kind: QEMU_NBD_EXPORT_KIND, name: server, file: "qemu-nbd", args, pidFile: this.pidFile(server) }, { timeoutMs: START_TIMEOUT_MS });
    // --fork returns once the server listens; the pidfile is written by then.
    await waitUntil(`qemu-nbd ${server} to write ${this.pidFile(server)}`, async () => (await this.runningPid(server)) !== undefined);
  }

  /** SIGTERM, then SIGKILL after a bound: only the qemu-nbd of this server's pidfile. */
  private async stopServer(server: string): Promise<void> {
    const pid = await this.runningPid(server);
    if (pid !== undefined) await stopDaemon(this.processes, pid, `qemu-nbd ${server}`, async () => (await this.runningPid(server)) === undefined, STOP_GRACE_MS);
    await fs.rm(this.pidFile(server), { force: true });
    this.daemons.remove(QEMU_NBD_EXPORT_KIND, server);
  }

  /** `port` if nothing listens on it, else the next free one. */
  private async freePort(port: number): Promise<number> {
    for (let candidate = port, tries = 0; tries <= PORT_TRIES; candidate++, tries++) {
      if (await tcpPortFree(this.host, candidate)) return candidate;
    }
    throw new BackendError("COMMAND_FAILED", `no free TCP port on ${this.host} from ${port} to ${port + PORT_TRIES}`, true);
  }

  private stateFile(server: string): string {
    return path.join(this.root, `${server}.json`);
  }

  /** The pid of the live qemu-nbd started with `server`'s pidfile, if any. */
  private runningPid(server: string): Promise<number | undefined> {
    return daemonPid(this.processes, this.pidFile(server), "qemu-nbd", `--pid-file=${this.pidFile(server)}`);
  }

  private async readState(server: string): Promise<ServerState | undefined> {
    const text = await readIfPresent(this.stateFile(server));
    if (text === undefined) return undefined;
    const state = JSON.parse(text) as Partial<ServerState>;
    if (typeof state.port !== "number" || typeof state.readOnly !== "boolean") {
      throw new BackendError("COMMAND_FAILED", `${this.stateFile(server)} is not a server state ({port, readOnly, export?}): ${text}`, false);
    }
    return { port: state.port, readOnly: state.readOnly, ...(state.export ? { export: state.export } : {}) };
  }

  private writeState(server: string, state: ServerState): Promise<void> {
    return writeStateFile(this.stateFile(server), state);
  }
}

/** Why: this target serves RBD images only (file volumes go to nbdkit, which serves many per server). */
function checkRbd(volumePath: string): void {
  if (!isRbdPath(volumePath) || !parseRbdPath(volumePath)) {
    throw invalidInput("path", `qemu-nbd exports serve RBD volume paths (rbd:pool/image:id=…:conf=…), not ${volumePath}: file volumes are served by nbdkit`);
  }
}
