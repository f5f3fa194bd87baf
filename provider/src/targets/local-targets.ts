/** The targets of this machine: one tgtd per iSCSI portal, one nbdkit manager per listen address. */
import { NbdkitTarget } from "./nbdkit-target";
import type { IscsiTarget, NbdTarget, TargetFactory } from "./target";
import { TgtTarget } from "./tgt-target";

/**
 * `runDir` keeps pidfiles and export state so a restarted provider finds its daemons. tgtd's
 * control channel is a unix socket named by a number: the portal's port serves, one per portal.
 */
export function localTargets(runDir: string): TargetFactory {
  const iscsi = new Map<string, IscsiTarget>();
  const nbd = new Map<string, NbdTarget>();
  return {
    iscsi(portal) {
      // tgtd takes control ports 0-32767 (its unix socket's number), one per portal.
      const t = iscsi.get(portal) ?? new TgtTarget({ controlPort: Number(portal.split(":").pop()) % 32768, portal, runDir });
      iscsi.set(portal, t);
      return t;
    },
    nbd(host) {
      const t = nbd.get(host) ?? new NbdkitTarget({ host, runDir });
      nbd.set(host, t);
      return t;
    },
  };
}
