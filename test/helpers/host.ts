/**
 * What connector tests check and clean on the real host, through the connectors' own Host
 * (connectors/records.ts): loop devices, mounts (octal escapes decoded), live helper processes,
 * and a sweep that ends what a test's connections left, by device, mount and recorded pid only.
 */
import { Host, type LoopDevice } from "../../provider/src/connectors/host";
import { RecordStore } from "../../provider/src/connectors/records";
import { procProcesses } from "../../provider/src/exec/processes";
import { run } from "../../provider/src/exec/run";

const host = new Host();

export function loops(): Promise<LoopDevice[]> {
  return host.loops();
}

/** Mount points under `dir`. */
export function mountsUnder(dir: string): string[] {
  return host.mounts().filter((m) => m.startsWith(`${dir}/`));
}

/** `pid` is alive and is `name` (pids get reused). */
export function alive(pid: number | undefined, name: string): Promise<boolean> {
  return host.alive(pid, name);
}

/**
 * Ends what a test left behind: loop devices whose backing file is under `dir`, mounts under
 * `dir`, and the nbdfuse/qemu-nbd pids of the records in `stateDir` (and their extra layers).
 */
export async function sweepConnections(dir: string, stateDir: string): Promise<void> {
  const recs = new RecordStore(stateDir).list();
  for (const l of await loops()) if (l.backFile.startsWith(`${dir}/`)) await run("losetup", ["-d", l.name]).catch(() => undefined);
  for (const m of mountsUnder(dir).reverse()) await run("umount", ["-l", m]).catch(() => undefined);
  for (const r of recs.flatMap((rec) => [rec, ...(rec.extraLayers ?? [])])) {
    if (await alive(r.nbdfusePid, "nbdfuse")) procProcesses.kill(r.nbdfusePid as number, "SIGKILL");
    if (await alive(r.qemuNbdPid, "qemu-nbd")) procProcesses.kill(r.qemuNbdPid as number, "SIGKILL");
  }
}
