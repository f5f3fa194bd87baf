/**
 * `sds pools`, `sds volumes`, `sds attachments`, `sds paths`, `sds targets [stop]`: what a stack
 * holds, read through the controller (controller/inventory.ts, daemon-census.ts) on the state and
 * backends the stack uses. Tables for people, `--json` for scripts (the fields of each view).
 */
import { UserError } from "../errors";
import { daemonCensus, stopUnusedDaemons } from "../controller/daemon-census";
import { Inventory } from "../controller/inventory";
import { type OpenStack, type StackFlags, withStack } from "./open-stack";
import { gib, json, printRows } from "./output";

type ListFlags = StackFlags & { json?: boolean };

/** The inventory of an open stack. */
export async function inventoryOf(s: OpenStack): Promise<Inventory> {
  return new Inventory(s.parts.store, await s.parts.controller());
}

export function pools(flags: ListFlags): Promise<number> {
  return withStack(flags, async (s) => {
    const rows = await (await inventoryOf(s)).pools();
    printRows(
      rows,
      [
        { header: "POOL", value: (p) => p.id },
        { header: "AZ", value: (p) => p.availabilityZone },
        { header: "TYPE", value: (p) => p.storageType },
        { header: "MULTIATTACH", value: (p) => p.multiAttach },
        { header: "REPLICATION", value: (p) => p.replication },
        { header: "PROVISIONING", value: (p) => p.provisioning },
        { header: "TOTAL_GIB", value: (p) => gib(p.totalGib), right: true },
        { header: "FREE_GIB", value: (p) => gib(p.freeGib), right: true },
        { header: "PROVISIONED_GIB", value: (p) => gib(p.provisionedGib), right: true },
        { header: "VOLUMES", value: (p) => p.volumes, right: true },
      ],
      { json: flags.json, empty: "no pools" },
    );
    return 0;
  });
}

export function volumes(flags: ListFlags): Promise<number> {
  return withStack(flags, async (s) => {
    const rows = await (await inventoryOf(s)).volumes();
    printRows(
      rows,
      [
        { header: "NAME", value: (v) => v.name },
        { header: "ID", value: (v) => v.id },
        { header: "SIZE_GIB", value: (v) => v.sizeGib, right: true },
        { header: "STATUS", value: (v) => v.status },
        { header: "POOL", value: (v) => v.pool },
        { header: "PROFILE", value: (v) => v.profile },
        { header: "MULTIATTACH", value: (v) => v.multiAttach },
        { header: "REPLICATION", value: (v) => v.replicationStatus },
        { header: "ATTACHMENTS", value: (v) => v.attachments, right: true },
      ],
      { json: flags.json, empty: "no volumes" },
    );
    return 0;
  });
}

export function attachments(flags: ListFlags): Promise<number> {
  return withStack(flags, async (s) => {
    const rows = await (await inventoryOf(s)).attachments();
    printRows(
      rows,
      [
        { header: "ID", value: (a) => a.id },
        { header: "VOLUME", value: (a) => a.volume ?? a.volumeId },
        { header: "HOST", value: (a) => a.host },
        { header: "MODE", value: (a) => a.mode },
        { header: "PROTOCOL", value: (a) => a.protocol },
        { header: "STATUS", value: (a) => (a.brokenReason ? `${a.status} (broken)` : a.status) },
        { header: "DEVICE", value: (a) => a.devicePath },
        { header: "TARGET", value: (a) => a.target },
      ],
      { json: flags.json, empty: "no attachments" },
    );
    return 0;
  });
}

/** `sds paths --host H [VOLUME]`: the block devices of this state's volumes on a host (this machine, or through its agent). */
export function paths(volume: string | undefined, flags: ListFlags & { host: string }): Promise<number> {
  return withStack(flags, async (s) => {
    const all = await (await inventoryOf(s)).volumes();
    const names = new Map(all.map((v) => [v.id, v.name]));
    let volumeId: string | undefined;
    if (volume !== undefined) {
      volumeId = all.find((v) => v.id === volume || v.name === volume)?.id;
      if (!volumeId) throw new UserError("NOT_FOUND", `VOLUME: no volume named or with id "${volume}" in this state (sds volumes lists them)`, "volume");
    }
    const rows = (await s.parts.hostPaths(flags.host, volumeId)).map((p) => ({ host: flags.host, volumeId: p.volumeId ?? null, volume: p.volumeId ? (names.get(p.volumeId) ?? null) : null, path: p.path, protocol: p.protocol, via: p.via }));
    printRows(
      rows,
      [
        { header: "VOLUME", value: (p) => p.volume ?? p.volumeId },
        { header: "PATH", value: (p) => p.path },
        { header: "PROTOCOL", value: (p) => p.protocol },
        { header: "VIA", value: (p) => p.via },
      ],
      { json: flags.json, empty: `no paths on ${flags.host}${volume ? ` for volume ${volume}` : ""}` },
    );
    return 0;
  });
}

/** `sds targets`: the exports this state knows, and the daemons sds started on this machine. */
export function targets(flags: ListFlags): Promise<number> {
  return withStack(flags, async (s) => {
    const exports = await (await inventoryOf(s)).targets();
    const daemons = await daemonCensus({ runDir: s.parts.runDir() });
    if (flags.json) {
      process.stdout.write(json({ targets: exports, daemons }));
      return 0;
    }
    process.stdout.write("TARGETS (exports this state knows)\n");
    printRows(
      exports,
      [
        { header: "NAME", value: (t) => t.name },
        { header: "PROTOCOL", value: (t) => t.protocol },
        { header: "BACKEND", value: (t) => t.backend },
        { header: "MODE", value: (t) => t.mode },
        { header: "PORTAL", value: (t) => t.portal },
        { header: "CHAP", value: (t) => t.chap },
        { header: "LUNS", value: (t) => t.luns.length, right: true },
        { header: "ATTACHMENTS", value: (t) => t.attachments.length, right: true },
      ],
      { empty: "none" },
    );
    process.stdout.write(`\nDAEMONS (started by sds on this machine, ${s.parts.runDir()})\n`);
    printRows(
      daemons,
      [
        { header: "KIND", value: (d) => d.kind },
        { header: "NAME", value: (d) => d.name },
        { header: "PID", value: (d) => d.pid, right: true },
        { header: "RUNNING", value: (d) => d.running },
        { header: "SERVES", value: (d) => d.detail },
        { header: "STARTED", value: (d) => d.startedAt },
      ],
      { empty: "none" },
    );
    return 0;
  });
}

/** `sds targets stop`: stop the daemons sds started that nothing uses (controller/daemon-census.ts). */
export function targetsStop(flags: ListFlags): Promise<number> {
  return withStack(flags, async (s) => {
    const a = await s.parts.attachments();
    const r = await stopUnusedDaemons({
      store: s.parts.store,
      runDir: s.parts.runDir(),
      targets: s.parts.targets(),
      rbdTargets: s.parts.rbdTargets(),
      stateTag: await a.stateTag(),
      reapHelpers: () => s.parts.connectorFor("local").reapOrphans?.() ?? Promise.resolve({ stopped: [], removed: [] }),
    });
    if (flags.json) {
      process.stdout.write(json(r));
      return 0;
    }
    for (const d of r.stopped) process.stdout.write(`stopped ${d}\n`);
    for (const d of r.removed) process.stdout.write(`dropped the record of ${d} (no longer running)\n`);
    for (const d of r.kept) process.stdout.write(`kept ${d}\n`);
    process.stdout.write(`sds targets stop: ${r.stopped.length} stopped, ${r.removed.length} record(s) dropped, ${r.kept.length} kept\n`);
    return 0;
  });
}
