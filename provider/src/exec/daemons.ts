/**
 * Daemons sds starts (tgtd, nbdkit, qemu-nbd, nbdfuse): each is recorded before it starts and
 * runs in a session of its own, so that
 * - an export or a device outlives whatever started it: the provider plugin (which the engine
 *   stops when `pulumi up` returns), the CLI (Ctrl-C signals its whole process group) and the
 *   agent (a service restart);
 * - a crash between "started" and "remembered" still leaves a record naming what may be running,
 *   so reconciliation and operators find it (`<dir>/<kind>-<name>.json`).
 * The record says what was started, by which process, and where its pidfile is; it is not proof
 * that the daemon runs (ask the process table for that). Its name is unique per start where
 * starts can repeat (a connector's helpers: `<connection>.<attempt>`), so a second attempt never
 * overwrites the record, pidfile or socket of a first one that is still running (issue 12: a
 * qemu-nbd leaked because its pidfile name was reused).
 *
 * Reaping ({@link reapDaemons}, at start): a record whose daemon is dead goes (with its pidfile
 * and socket); a live daemon of a kind the caller may stop that nothing needs any more is stopped
 * (SIGTERM, SIGKILL after a bound) and its record goes. A record whose starter still runs is left
 * to it (it may be about to record what it started elsewhere).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { CommandFailedError, CommandTimeoutError } from "../errors";
import { type ProcessTable, processStart, procProcesses, waitUntil } from "./processes";
import type { RunOptions, Runner } from "./run";

/** What is known of a daemon sds started. */
export interface DaemonRecord {
  /** What it is: `tgtd`, `nbdkit`, `qemu-nbd`, `nbdfuse`. */
  kind: string;
  /** Unique per kind in one records folder (a control port, a server name, a connection). */
  name: string;
  /** Its argv (never a secret: secrets reach daemons through files or stdin). */
  argv: string[];
  /** Where the daemon writes its pid, when it does. */
  pidFile?: string;
  /** The process that started it. */
  startedBy: number;
  /** That process's start time (exec/processes.ts `processStart`): its pid alone may be reused. */
  startedByStart?: string;
  startedAt: string;
  /** Its pid, once known (from its pidfile or its spawn). */
  pid?: number;
  /** Its unix socket, removed with the record. */
  socket?: string;
  /** Its FUSE mount (nbdfuse), unmounted when it is reaped and nothing else uses the folder. */
  mountDir?: string;
  /** What it wrote to stderr while starting, though it started (see {@link startDaemon}). */
  startWarning?: string;
}

/** The records of one folder (a provider's or an agent's run folder). */
export class DaemonRecords {
  constructor(readonly dir: string) {}

  private file(kind: string, name: string): string {
    return path.join(this.dir, `${kind}-${name}.json`);
  }

  /** Write (or replace) a record, atomically, readable by root only. */
  write(record: DaemonRecord): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const file = this.file(record.kind, record.name);
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(record), { mode: 0o600 });
    fs.renameSync(tmp, file);
  }

  /** Forget a daemon (it was stopped). Forgetting what is not recorded is success. */
  remove(kind: string, name: string): void {
    fs.rmSync(this.file(kind, name), { force: true });
  }

  /** Forget the daemons of `kind` recorded with `pid` (one stopped by its owner, who knows its pid, not its record's name). */
  removePid(kind: string, pid: number): void {
    for (const r of this.list(kind)) if (r.kind === kind && r.pid === pid) this.remove(r.kind, r.name);
  }

  /** Every record of the folder (of one kind when given). */
  list(kind?: string): DaemonRecord[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const out: DaemonRecord[] = [];
    for (const n of names.sort()) {
      if (!n.endsWith(".json") || (kind && !n.startsWith(`${kind}-`))) continue;
      try {
        out.push(JSON.parse(fs.readFileSync(path.join(this.dir, n), "utf8")) as DaemonRecord);
      } catch {
        // half-written by a crash: the next write of that daemon replaces it
      }
    }
    return out;
  }
}

/** What a caller says of a daemon it is about to start. */
export interface DaemonStart {
  kind: string;
  name: string;
  file: string;
  args: readonly string[];
  pidFile?: string;
  socket?: string;
  mountDir?: string;
}

/** Record a daemon about to start, by this process; returns the record (to add its pid once known). */
export function recordDaemon(records: DaemonRecords | undefined, d: DaemonStart): DaemonRecord {
  const { file, args, ...rest } = d;
  const record: DaemonRecord = { ...rest, argv: [file, ...args], startedBy: process.pid, startedByStart: processStart(process.pid) ?? undefined, startedAt: new Date().toISOString() };
  records?.write(record);
  return record;
}

/**
 * Start a daemon that forks into the background (`file args…` returns once it runs): recorded
 * first, then run in a session of its own (see the file comment). Returns its record; a start
 * that failed (not one that timed out) leaves none.
 *
 * A failed start whose pidfile names a live process running this very argv did start: qemu-nbd
 * `--fork` exits 1 whenever its child wrote anything to stderr before detaching, a warning too
 * (libiscsi's "Failed MODE_SENSE(6), LUN assumed writable", which a unit attention on a shared
 * target gives), and its child writes the pidfile only once the export serves. Taking that exit
 * at its word failed the attachment and dropped the record of a daemon that went on running.
 */
export async function startDaemon(
  run: Runner,
  records: DaemonRecords | undefined,
  daemon: DaemonStart,
  options: RunOptions = {},
  processes: ProcessTable = procProcesses,
): Promise<DaemonRecord> {
  const record = recordDaemon(records, daemon);
  try {
    await run(daemon.file, daemon.args, { ...options, detached: true });
  } catch (err) {
    // A start that timed out may still be running: the reaper decides.
    if (err instanceof CommandTimeoutError) throw err;
    if (err instanceof CommandFailedError) {
      const pid = readPid(daemon.pidFile);
      if (pid !== undefined && sameCommand(await processes.argv(pid), record.argv)) return { ...record, startWarning: err.stderr };
    }
    // It said it failed and nothing runs.
    records?.remove(daemon.kind, daemon.name);
    throw err;
  }
  return record;
}

/** What {@link reapDaemons} did, one `kind name (pid N)` per daemon. */
export interface Reaped {
  /** Records of daemons found dead, dropped. */
  removed: string[];
  /** Live daemons nothing needed, stopped. */
  stopped: string[];
}

export interface ReapOptions {
  processes: ProcessTable;
  /** Kinds that may be stopped when nothing needs them; a daemon of another kind only loses its record once dead. */
  stoppable: readonly string[];
  /** Whether a live daemon (`pid`) is still used (a device, an export). */
  needed: (record: DaemonRecord, pid: number) => boolean;
  /** Clean-up of a dead or stopped daemon beyond its record, pidfile and socket (its FUSE mount). */
  cleanup?: (record: DaemonRecord) => Promise<void>;
  /** How long a daemon gets after SIGTERM, then again after SIGKILL; default 5 s. */
  graceMs?: number;
}

/** Walk the records (see the file comment): drop the dead, stop the unneeded of the stoppable kinds. */
export async function reapDaemons(records: DaemonRecords, o: ReapOptions): Promise<Reaped> {
  const out: Reaped = { removed: [], stopped: [] };
  let table: Array<{ pid: number; argv: string[] }> | undefined;
  for (const rec of records.list()) {
    if (starterRuns(rec)) continue;
    let pid = rec.pid ?? readPid(rec.pidFile);
    if (pid !== undefined && !sameCommand(await o.processes.argv(pid), rec.argv)) pid = undefined;
    if (pid === undefined) {
      // No pid known (the starter died before it read the pidfile): look for the command itself.
      table ??= await o.processes.list();
      pid = table.find((p) => sameCommand(p.argv, rec.argv))?.pid;
    }
    const what = `${rec.kind} ${rec.name}${pid ? ` (pid ${pid})` : ""}`;
    if (pid !== undefined) {
      if (!o.stoppable.includes(rec.kind) || o.needed(rec, pid)) continue;
      await stopDaemon(o.processes, pid, rec.argv, o.graceMs ?? 5_000);
      out.stopped.push(what);
    } else {
      out.removed.push(what);
    }
    if (o.stoppable.includes(rec.kind)) {
      await o.cleanup?.(rec);
      if (rec.pidFile) fs.rmSync(rec.pidFile, { force: true });
      if (rec.socket) fs.rmSync(rec.socket, { force: true });
    }
    records.remove(rec.kind, rec.name);
  }
  return out;
}

/** Whether the process that wrote the record still runs (then the daemon is its business). */
export function starterRuns(rec: DaemonRecord): boolean {
  const start = processStart(rec.startedBy);
  if (start === null) return false;
  return !rec.startedByStart || !start || start === rec.startedByStart;
}

/** The pid a daemon wrote to its pidfile; undefined when there is none (yet). */
export function readPid(file: string | undefined): number | undefined {
  if (!file) return undefined;
  try {
    const pid = Number(fs.readFileSync(file, "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a live process's argv is the recorded one (argv[0] by its base name: a path may be resolved or not). */
export function sameCommand(argv: string[] | undefined, recorded: string[]): boolean {
  if (!argv || argv.length !== recorded.length) return false;
  return path.basename(argv[0]) === path.basename(recorded[0]) && argv.every((a, i) => i === 0 || a === recorded[i]);
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
async function stopDaemon(processes: ProcessTable, pid: number, argv: string[], graceMs: number): Promise<void> {
  const gone = async () => !sameCommand(await processes.argv(pid), argv);
  processes.kill(pid, "SIGTERM");
  try {
    await waitUntil(`${path.basename(argv[0])} ${pid} to exit after SIGTERM`, gone, graceMs);
  } catch {
    processes.kill(pid, "SIGKILL");
    await waitUntil(`${path.basename(argv[0])} ${pid} to exit after SIGKILL`, gone, graceMs);
  }
}
