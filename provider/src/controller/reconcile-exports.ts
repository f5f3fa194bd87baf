/**
 * Reconciliation at provider start (Cinder's ensure_export): every export the store knows is
 * made again (a restarted or rebooted target daemon lost its configuration), and strays of THIS
 * state (names with its tag that the store does not know: left by a crash) are removed. Targets
 * of other states on the same daemon are never touched. A stray that still has sessions is left
 * in place and reported: removing it would cut a host's live I/O. An attachment whose export had
 * to be made again remembers why (`brokenReason`): its device must reconnect, which refresh
 * reports and up repairs. Last, the helpers a crash left on this machine (a qemu-nbd or nbdfuse
 * that no connection uses) are stopped and the records of dead daemons dropped (issue 12).
 */
import { IQN_PREFIX, portalHost } from "../domain/names";
import type { IscsiTarget } from "../targets/target";
import { type AttachmentCore, defaultPortals } from "./attachment-core";
import { createExport, type DaemonListings, exportProblem } from "./exports";

export interface Reconciled {
  /** Exports made again or found in place. */
  ensured: number;
  /** Strays of this state removed. */
  removed: string[];
  /** Strays of this state left because initiators are logged in to them. */
  kept: string[];
  /** This machine's daemons reaped (exec/daemons.ts): helpers no connection uses, stopped; records of dead daemons, dropped. */
  reaped: string[];
}

export async function reconcileExports(core: AttachmentCore): Promise<Reconciled> {
  const out: Reconciled = { ensured: 0, removed: [], kept: [], reaped: [] };
  const tag = await core.stateTag();
  // First our strays (one may hold a tid, port or CHAP name the store's exports need)…
  const portals = new Map<string, string>(); // portal → backend name (whose node runs its tgtd)
  for (const t of await core.store.listTargets()) if (t.protocol === "iscsi") portals.set(t.portal, t.backendName);
  for (const b of core.controller.backendConfigs()) if (b.export.protocol === "iscsi") portals.set(b.export.portal ?? defaultPortals.iscsi, b.name);
  for (const [portal, backendName] of portals) {
    const t = core.targetsOf(backendName).iscsi(portal);
    let live: Awaited<ReturnType<IscsiTarget["list"]>>;
    try {
      live = await t.list();
    } catch {
      continue; // no tgtd on that portal (or its node is unreachable): nothing to clean
    }
    for (const e of live) {
      if (!e.name.startsWith(`${IQN_PREFIX}:${tag}:`) || (await core.store.getTarget(e.name))) continue;
      if ((e.sessions ?? 0) > 0) {
        out.kept.push(`${e.name} (${e.sessions} session(s))`);
        continue;
      }
      await core.withLock(`export:${e.name}`, async () => {
        await t.removeTarget(e.tid!);
        for (const user of e.chapUsers) if (user.startsWith(`sds-${tag}-`)) await t.removeChapAccount(user);
      });
      out.removed.push(e.name);
    }
  }
  // One backend per (host, driver): rbd backends' NBD servers are qemu-nbd's, the others nbdkit's.
  const nbdHosts = new Map<string, [string, string]>();
  for (const b of core.controller.backendConfigs()) if (b.export.protocol === "nbd") nbdHosts.set(`${b.driver} ${portalHost(b.export.portal ?? defaultPortals.nbd)}`, [portalHost(b.export.portal ?? defaultPortals.nbd), b.name]);
  for (const [host, backendName] of nbdHosts.values()) {
    const t = core.targetsOf(backendName).nbd(host);
    for (const server of await t.list()) {
      if (!server.server.startsWith(`${tag}-`) || (await core.store.getTarget(server.server))) continue;
      await core.withLock(`export:${server.server}`, () => t.removeServer(server.server));
      out.removed.push(server.server);
    }
  }
  // …then every export the store knows, made again where it is missing, each judged against the
  // daemons as this pass found them (one listing per daemon).
  const listings: DaemonListings = new Map();
  for (const a of await core.store.listAttachments()) {
    const v = await core.controller.getVolume(a.volumeId);
    if (!v || a.protocol === "local") continue;
    const { backend } = core.controller.locate(v);
    // A lost export (the daemon restarted or was killed) broke the path of every device on it,
    // even if the initiator logs in again by itself: refresh reports it, up repairs it.
    const problem = a.status === "attached" ? await exportProblem(core, a, listings) : undefined;
    await core.withExportLock(a, v, () => createExport(core, a, v, backend));
    if (problem) await core.store.updateAttachment(a.id, { brokenReason: `${problem}; the export was made again, its device must reconnect (pulumi up)`, updatedAt: core.at() });
    out.ensured++;
  }
  // Last, with every export in place: this machine's helpers that no device uses any more (one
  // call: the connectors share one folder of records). Exports' daemons are never stopped here.
  const r = await core.hostConnector("localhost", "local")?.reapOrphans?.();
  if (r) out.reaped.push(...r.stopped.map((d) => `stopped ${d}, which no device used`), ...r.removed.map((d) => `dropped the record of ${d}, no longer running`));
  return out;
}
