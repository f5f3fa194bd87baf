/**
 * The daemons sds started on this machine (exec/daemons.ts records them in `<run dir>/daemons`),
 * as `sds targets` and `sds doctor` show them, and `sds targets stop`: stop those nothing uses
 * any more, changing nothing that is in use.
 *
 * What "in use" means per kind:
 * - tgtd: it serves any target at all (of this state or another sharing the daemon);
 * - nbdkit: this state knows its server (a target row: an attachment's export), or the server
 *   is not this state's (another state's name; left alone);
 * - qemu-nbd-export (an rbd backend's NBD server): as nbdkit, through the rbd targets;
 * - qemu-nbd, nbdfuse: a connection record names it (the connectors' own reaper decides).
 * A daemon whose starter still runs (a provider mid-`up`) is left to it. A record whose daemon is
 * gone is dropped, unless it is an export this state still needs (that is a lost export for
 * `pulumi up` to make again, and `sds doctor` says so).
 */
import * as path from "node:path";
import { type DaemonRecord, DaemonRecords, type Reaped, readPid, sameCommand, starterRuns } from "../exec/daemons";
import { procProcesses, type ProcessTable } from "../exec/processes";
import { withStoreLock } from "../store/lock";
import type { Store } from "../store/store";
import { QEMU_NBD_EXPORT_KIND } from "../targets/qemu-nbd-target";
import type { TargetFactory } from "../targets/target";

/** One recorded daemon and whether it runs. */
export interface DaemonView {
  kind: string;
  name: string;
  pid: number | null;
  running: boolean;
  /** What it serves, for people: a portal, a server's address. */
  detail: string;
  startedAt: string;
  /** The pid of the process that started it, and whether that process still runs. */
  startedBy: number;
  starterRuns: boolean;
}

export interface CensusOptions {
  runDir: string;
  processes?: ProcessTable;
}

/** The daemons recorded in `runDir`, each looked up in the process table. */
export async function daemonCensus(o: CensusOptions): Promise<DaemonView[]> {
  const processes = o.processes ?? procProcesses;
  const out: DaemonView[] = [];
  for (const rec of new DaemonRecords(path.join(o.runDir, "daemons")).list()) {
    const pid = await livePid(processes, rec);
    out.push({
      kind: rec.kind,
      name: rec.name,
      pid: pid ?? null,
      running: pid !== undefined,
      detail: detailOf(rec),
      startedAt: rec.startedAt,
      startedBy: rec.startedBy,
      starterRuns: starterRuns(rec),
    });
  }
  return out;
}

/** Why: a pid alone may have been reused; the argv must match the record (exec/daemons.ts judges a record the same way). */
async function livePid(processes: ProcessTable, rec: DaemonRecord): Promise<number | undefined> {
  const known = rec.pid ?? readPid(rec.pidFile);
  if (known !== undefined && sameCommand(await processes.argv(known), rec.argv)) return known;
  return (await processes.list()).find((p) => sameCommand(p.argv, rec.argv))?.pid;
}

/** tgtd: its portal (`--iscsi portal=ip:port`); nbdkit: `host:port`; helpers: their argv's last word. */
function detailOf(rec: DaemonRecord): string {
  const a = rec.argv;
  const after = (flag: string) => (a.indexOf(flag) >= 0 ? a[a.indexOf(flag) + 1] : undefined);
  if (rec.kind === "tgtd") return a.find((x) => x.startsWith("portal="))?.slice("portal=".length) ?? "";
  if (rec.kind === "nbdkit") return `${after("-i") ?? "?"}:${after("-p") ?? "?"}${a.includes("-r") ? " (read-only)" : ""}`;
  if (rec.kind === QEMU_NBD_EXPORT_KIND) return `${after("--bind") ?? "?"}:${after("--port") ?? "?"}${a.includes("--read-only") ? " (read-only)" : ""}`;
  return rec.mountDir ?? rec.socket ?? a[a.length - 1] ?? "";
}

export interface StopUnusedOptions {
  store: Store;
  runDir: string;
  /** This machine's targets (compose: localTargets(runDir)). */
  targets: TargetFactory;
  /** This machine's targets for `driver: rbd` backends (their NBD servers are qemu-nbd's); `targets` when not given. */
  rbdTargets?: TargetFactory;
  /** This state's tag (the start of its NBD server names). */
  stateTag: string;
  /** The connectors' reaper of helpers no connection uses (Connector.reapOrphans). */
  reapHelpers?: () => Promise<Reaped>;
  processes?: ProcessTable;
}

export interface Stopped {
  /** Daemons stopped, `kind name (pid N)`. */
  stopped: string[];
  /** Records of daemons no longer running, dropped. */
  removed: string[];
  /** Running daemons left, each with why. */
  kept: string[];
}

/** `sds targets stop` (see the file comment). */
export async function stopUnusedDaemons(o: StopUnusedOptions): Promise<Stopped> {
  const out: Stopped = { stopped: [], removed: [], kept: [] };
  const records = new DaemonRecords(path.join(o.runDir, "daemons"));
  const byKey = new Map(records.list().map((r) => [`${r.kind}/${r.name}`, r]));
  const lock = <T>(name: string, fn: () => Promise<T>) =>
    withStoreLock(o.store, name, { timeoutMs: 60_000, holderPrefix: "sds-targets-stop", timedOut: (by) => new Error(`lock ${name} is held${by ? ` by ${by}` : ""}; try again later`) }, fn);
  for (const d of await daemonCensus({ runDir: o.runDir, processes: o.processes })) {
    const rec = byKey.get(`${d.kind}/${d.name}`)!;
    const what = `${d.kind} ${d.name}${d.pid ? ` (pid ${d.pid})` : ""}`;
    if (d.kind !== "tgtd" && d.kind !== "nbdkit" && d.kind !== QEMU_NBD_EXPORT_KIND) continue; // helpers: the connectors' reaper, below
    const starter = `${what}: the process that started it (pid ${d.startedBy}) still runs`;
    if (d.kind === "tgtd") {
      const t = o.targets.iscsi(d.detail);
      if (d.running) {
        const served = await t.list();
        if (served.length > 0) {
          out.kept.push(`${what}: serves ${served.length} target(s) on ${d.detail}`);
          continue;
        }
        if (d.starterRuns) {
          out.kept.push(starter);
          continue;
        }
        await t.stop();
        out.stopped.push(what);
      } else {
        records.remove(rec.kind, rec.name);
        out.removed.push(what);
      }
      continue;
    }
    const known = await o.store.getTarget(d.name);
    if (known) {
      if (d.running) out.kept.push(`${what}: serves the export of ${known.backendName} (mode ${known.mode}) this state knows`);
      else out.kept.push(`${what}: not running, but this state still needs its export: run pulumi up (or any sds write) to make it again`);
      continue;
    }
    if (!d.name.startsWith(`${o.stateTag}-`)) {
      out.kept.push(`${what}: not this state's server`);
      continue;
    }
    if (d.starterRuns) {
      out.kept.push(starter);
      continue;
    }
    const host = d.detail.split(":").slice(0, -1).join(":") || "127.0.0.1";
    const nbd = d.kind === QEMU_NBD_EXPORT_KIND ? (o.rbdTargets ?? o.targets).nbd(host) : o.targets.nbd(host);
    await lock(`export:${d.name}`, () => nbd.removeServer(d.name));
    (d.running ? out.stopped : out.removed).push(what);
  }
  const r = await o.reapHelpers?.();
  if (r) {
    out.stopped.push(...r.stopped);
    out.removed.push(...r.removed);
  }
  return out;
}
