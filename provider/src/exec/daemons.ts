/**
 * Daemons sds starts (tgtd, nbdkit, qemu-nbd, nbdfuse): each is recorded before it starts and
 * runs in a session of its own, so that
 * - an export or a device outlives whatever started it: the provider plugin (which the engine
 *   stops when `pulumi up` returns), the CLI (Ctrl-C signals its whole process group) and the
 *   agent (a service restart);
 * - a crash between "started" and "remembered" still leaves a record naming what may be running,
 *   so reconciliation and operators find it (`<dir>/<kind>-<name>.json`).
 * The record says what was started, by which process, and where its pidfile is; it is not proof
 * that the daemon runs (ask the process table for that).
 */
import * as fs from "node:fs";
import * as path from "node:path";
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
  startedAt: string;
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

/**
 * Start a daemon that forks into the background (`file args…` returns once it runs): recorded
 * first, then run in a session of its own (see the file comment).
 */
export async function startDaemon(
  run: Runner,
  records: DaemonRecords | undefined,
  daemon: { kind: string; name: string; file: string; args: readonly string[]; pidFile?: string },
  options: RunOptions = {},
): Promise<void> {
  records?.write({
    kind: daemon.kind,
    name: daemon.name,
    argv: [daemon.file, ...daemon.args],
    pidFile: daemon.pidFile,
    startedBy: process.pid,
    startedAt: new Date().toISOString(),
  });
  await run(daemon.file, daemon.args, { ...options, detached: true });
}
