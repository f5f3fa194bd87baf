/**
 * Names sds gives things on target daemons and hosts, in one place: they are what several states
 * sharing one daemon tell apart, and what reconciliation looks for.
 */

/** The prefix of every iSCSI name sds makes (targets, and this machine's default initiator). */
export const IQN_PREFIX = "iqn.2026-11.io.sds";

/** A volume's export name on an NBD server (and its file's stem on a pool). */
export function exportName(volumeId: string): string {
  return `volume-${volumeId}`;
}

/** `127.0.0.1:3260` → `127.0.0.1`; `[::1]:3260` → `[::1]`. */
export function portalHost(portal: string): string {
  return portal.split(":").slice(0, -1).join(":");
}
