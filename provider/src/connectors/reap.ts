/**
 * The helpers a crash left on this host (issue 12): every qemu-nbd and nbdfuse a connector
 * starts is recorded first (exec/daemons.ts, `<stateDir>/daemons`); at start (the provider's
 * export reconciliation, the agent's start) those that no connection record of the state folder
 * uses, and whose starter is dead, are stopped, with their sockets and dead FUSE mounts, and
 * records of dead daemons are dropped. What a connection uses is needed; nothing else is.
 */
import * as fs from "node:fs";
import { type Reaped, reapDaemons } from "../exec/daemons";
import type { Host } from "./host";
import { layersOf } from "./records";

/** Reap the helpers of `host`'s state folder (see the file comment). */
export async function reapHelpers(host: Host): Promise<Reaped> {
  const pids = new Set<number>();
  const mounts = new Set<string>();
  for (const rec of host.records.list()) {
    for (const l of [layersOf(rec), ...(rec.extraLayers ?? [])]) {
      for (const pid of [l.nbdfusePid, l.qemuNbdPid]) if (pid) pids.add(pid);
      if (l.mountDir) mounts.add(l.mountDir);
    }
  }
  return reapDaemons(host.daemons, {
    processes: host.processes,
    stoppable: ["qemu-nbd", "nbdfuse"],
    needed: (_rec, pid) => pids.has(pid),
    graceMs: Math.min(5_000, host.waitMs),
    cleanup: async (rec) => {
      // A FUSE mount whose nbdfuse is gone answers nothing ("transport endpoint is not connected"); one a connection uses is its business.
      const dir = rec.mountDir;
      if (!dir || mounts.has(dir)) return;
      if (host.isMounted(dir)) await host.run("umount", ["-l", dir]);
      try {
        fs.rmdirSync(dir);
      } catch {
        // gone already, or not empty (then not ours to empty)
      }
    },
  });
}
