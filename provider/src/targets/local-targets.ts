/** The targets of this machine: one tgtd per iSCSI portal, one nbdkit manager per listen address; qemu-nbd for RBD volumes over NBD. */
import { NbdkitTarget } from "./nbdkit-target";
import { QemuNbdTarget } from "./qemu-nbd-target";
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

/**
 * The targets of this machine for `driver: rbd` backends: `base`'s tgtd for iSCSI (tgt's rbd
 * backing store serves RBD paths beside files), one qemu-nbd manager per listen address for NBD
 * (nbdkit has no rbd plugin on Debian 12). Same `runDir` as `base`.
 */
export function localRbdTargets(runDir: string, base: TargetFactory): TargetFactory {
  const nbd = new Map<string, NbdTarget>();
  return {
    iscsi: (portal) => base.iscsi(portal),
    nbd(host) {
      const t = nbd.get(host) ?? new QemuNbdTarget({ host, runDir });
      nbd.set(host, t);
      return t;
    },
  };
}
