/**
 * `sds doctor`: what is wrong with a stack's storage on this machine, each finding with the
 * command that fixes it. It changes nothing. Checks, in order:
 *
 *   state      the state is sound (the caller's state check)
 *   backends   what the loaded backends differ in from the state (warnings of discovery)
 *   exports    every export the state knows is served by its daemon (tgtd, nbdkit) on this machine
 *   daemons    recorded daemons: gone (a record to drop), or running with nothing to serve
 *   agents     every host and storage node in the provider's hosts answers
 *   locks      locks held by a process that is dead (SQLite; PostgreSQL frees them itself)
 *   volumes    rows stuck mid-operation or in error; rows whose file is gone; files no row names
 *   attachments  broken paths, attachments in error, attachments of volumes that are gone
 *   replication  pairs with a last error, or past their RPO
 *
 * `fail` is something broken now (data unreachable, an operation that will not finish by
 * itself); `warn` is something to clean up or watch. The CLI exits 1 when any finding fails.
 */
import * as fs from "node:fs";
import { portalHost } from "../domain/names";
import { describeHolder, holderIsDead } from "../store/lock-holder";
import type { Store } from "../store/store";
import { QEMU_NBD_EXPORT_KIND } from "../targets/qemu-nbd-target";
import type { TargetFactory } from "../targets/target";
import type { Controller } from "./controller";
import { daemonCensus } from "./daemon-census";
import { Inventory } from "./inventory";

export interface Finding {
  check: "state" | "backends" | "exports" | "daemons" | "agents" | "locks" | "volumes" | "attachments" | "replication";
  severity: "ok" | "warn" | "fail";
  /** What was found, one line. */
  message: string;
  /** The command (or step) that fixes it; null when there is nothing to do. */
  fix: string | null;
}

export interface DoctorOptions {
  store: Store;
  controller: Controller;
  /** The state check's verdict (`sds state check`). */
  state: { ok: boolean; line: string };
  /** Warnings discovery logged (backends that differ from the state's record). */
  backendWarnings: string[];
  runDir: string;
  targets: TargetFactory;
  /** This machine's targets for `driver: rbd` backends (their NBD servers are qemu-nbd's); `targets` when not given. */
  rbdTargets?: TargetFactory;
  /** The hosts of the provider config, each probed by `probe` (resolves, or rejects with why). */
  hosts: string[];
  probe: (host: string) => Promise<void>;
  now?: () => Date;
}

export async function diagnose(o: DoctorOptions): Promise<Finding[]> {
  const out: Finding[] = [];
  const add = (check: Finding["check"], severity: Finding["severity"], message: string, fix: string | null = null) => out.push({ check, severity, message, fix });
  const inventory = new Inventory(o.store, o.controller, o.now);

  add("state", o.state.ok ? "ok" : "fail", o.state.line, o.state.ok ? null : "restore the state from a backup (README, \"When the state is damaged\")");
  for (const w of o.backendWarnings) add("backends", "warn", w, "pulumi up records this runner's backends, or point sds:backendsFile at the file the state was built with");

  // Exports the state knows, against the daemons that serve them on this machine.
  const targets = await inventory.targets();
  const localBackends = new Set(o.controller.backendConfigs().filter((b) => b.node === "local").map((b) => b.name));
  const iscsiPortals = new Set(targets.filter((t) => t.protocol === "iscsi" && localBackends.has(t.backend)).map((t) => t.portal));
  for (const portal of iscsiPortals) {
    const want = targets.filter((t) => t.protocol === "iscsi" && t.portal === portal);
    let live: string[];
    try {
      live = (await o.targets.iscsi(portal).list()).map((e) => e.name);
    } catch (err) {
      add("exports", "fail", `tgtd on ${portal} does not answer (${firstLine(err)}): ${want.length} iSCSI export(s) of this state are down`, "pulumi up (remakes the exports and reconnects their devices)");
      continue;
    }
    const lost = want.filter((t) => !live.includes(t.name));
    if (lost.length > 0) add("exports", "fail", `tgtd on ${portal} lost ${lost.length} export(s) of this state: ${lost.map((t) => t.name).join(", ")}`, "pulumi up (remakes the exports and reconnects their devices)");
    else add("exports", "ok", `tgtd on ${portal} serves this state's ${want.length} iSCSI export(s)`);
  }
  // NBD servers by address and kind: an rbd backend's are qemu-nbd's (o.rbdTargets), the others nbdkit's.
  const rbdBackends = new Set(o.controller.backendConfigs().filter((b) => b.driver === "rbd").map((b) => b.name));
  const daemonOf = (t: { backend: string }) => (rbdBackends.has(t.backend) ? "qemu-nbd" : "nbdkit");
  const nbdGroups = new Set(targets.filter((t) => t.protocol === "nbd" && localBackends.has(t.backend)).map((t) => `${daemonOf(t)} on ${portalHost(t.portal)}`));
  for (const group of nbdGroups) {
    const [daemon, host] = group.split(" on ");
    const want = targets.filter((t) => t.protocol === "nbd" && `${daemonOf(t)} on ${portalHost(t.portal)}` === group);
    const factory = daemon === "qemu-nbd" ? (o.rbdTargets ?? o.targets) : o.targets;
    const live = (await factory.nbd(host!).list().catch(() => [])).map((s) => s.server);
    const lost = want.filter((t) => !live.includes(t.name));
    if (lost.length > 0) add("exports", "fail", `${group}: ${lost.length} server(s) of this state not running: ${lost.map((t) => t.name).join(", ")}`, "pulumi up (remakes the exports and reconnects their devices)");
    else add("exports", "ok", `${group} serves this state's ${want.length} NBD export(s)`);
  }

  // Daemons this machine's records name.
  const known = new Set(targets.map((t) => t.name));
  for (const d of await daemonCensus({ runDir: o.runDir })) {
    const what = `${d.kind} ${d.name}${d.pid ? ` (pid ${d.pid})` : ""}${d.detail ? ` on ${d.detail}` : ""}`;
    if (d.starterRuns) continue; // its starter (a provider mid-up) still runs: its business
    if (!d.running) {
      if ((d.kind === "nbdkit" || d.kind === QEMU_NBD_EXPORT_KIND) && known.has(d.name)) continue; // a lost export: reported above
      add("daemons", "warn", `${what} is recorded but not running`, "sds targets stop (drops the records of daemons that are gone)");
    } else if ((d.kind === "nbdkit" || d.kind === QEMU_NBD_EXPORT_KIND) && !known.has(d.name)) {
      add("daemons", "warn", `${what} runs, but this state knows no export on it (left by a crash)`, "sds targets stop");
    } else if (d.kind === "tgtd" && !iscsiPortals.has(d.detail)) {
      const served = await o.targets
        .iscsi(d.detail)
        .list()
        .then((l) => l.length)
        .catch(() => -1);
      if (served === 0) add("daemons", "warn", `${what} runs and serves no target`, "sds targets stop");
    } else {
      add("daemons", "ok", `${what} runs`);
    }
  }

  // Agents.
  for (const host of o.hosts) {
    try {
      await o.probe(host);
      add("agents", "ok", `the agent of ${host} answers`);
    } catch (err) {
      add("agents", "fail", `the agent of ${host} does not answer: ${firstLine(err)}`, `on ${host}: systemctl status sds-agent (and check hosts.${host}.url and its token)`);
    }
  }

  // Locks held by a dead process (SQLite keeps them as rows until a taker finds the holder dead).
  const volumes = await o.store.listVolumes();
  const attachments = await o.store.listAttachments();
  const pairs = await o.store.listPairs();
  const lockNames = new Set<string>([
    ...pairs.map((p) => `replicate:${p.id}`),
    ...targets.map((t) => `export:${t.name}`),
    ...attachments.map((a) => `connect:${a.host}:${a.volumeId}:${a.mode}`),
    ...attachments.flatMap((a) => volumes.filter((v) => v.id === a.volumeId).map((v) => `export:${a.host}:${v.backendId}`)),
  ]);
  for (const name of lockNames) {
    const holder = await o.store.lockHolder(name).catch(() => undefined);
    if (holder !== undefined && holderIsDead(holder)) {
      add("locks", "warn", `lock ${name} is held by ${describeHolder(holder)}, which is no longer running`, "none needed: the next operation that needs the lock takes it over; if one waits on it, pulumi cancel then pulumi up");
    }
  }

  // Volumes: stuck rows, files gone, files nothing names.
  for (const v of volumes) {
    if (["creating", "deleting", "extending", "attaching", "detaching"].includes(v.status)) {
      add("volumes", "warn", `volume ${v.name} (${v.id}) is ${v.status} since ${v.updatedAt}`, "if no pulumi up runs now: pulumi stack export | sds recover, then the commands it prints");
    } else if (v.status.startsWith("error")) {
      add("volumes", "fail", `volume ${v.name} (${v.id}) is ${v.status}`, "pulumi refresh, then pulumi up (retries the operation)");
    }
  }
  for (const b of o.controller.backendConfigs()) {
    if (b.node !== "local" || b.driver !== "file") continue;
    for (const p of b.pools) {
      const rows = volumes.filter((v) => v.backendName === b.name && v.poolId === `${b.name}/${p.name}`);
      let files: string[];
      try {
        files = fs.readdirSync(p.path).filter((f) => /^volume-.+\.img$/.test(f));
      } catch {
        continue; // no folder yet: nothing made there
      }
      for (const v of rows) {
        if (v.status !== "creating" && !files.includes(`volume-${v.id}.img`)) add("volumes", "fail", `volume ${v.name} (${v.id}): its file is gone from pool ${b.name}/${p.name} (${p.path})`, "pulumi refresh (forgets it), then pulumi up makes it again, empty; or restore the file");
      }
      const named = new Set(volumes.map((v) => `volume-${v.id}.img`));
      for (const f of files) if (!named.has(f)) add("volumes", "warn", `${p.path}/${f} is in pool ${b.name}/${p.name} but no volume of this state names it`, `check nothing uses it (another state sharing the pool folder?), then rm ${p.path}/${f}`);
    }
  }

  // Attachments.
  const ids = new Set(volumes.map((v) => v.id));
  for (const a of attachments) {
    if (!ids.has(a.volumeId)) add("attachments", "fail", `attachment ${a.id} on ${a.host}: its volume ${a.volumeId} is gone`, `sds force-detach ${a.id}`);
    else if (a.brokenReason) add("attachments", "fail", `attachment ${a.id} on ${a.host} is broken: ${a.brokenReason}`, "pulumi up (repairs the device)");
    else if (a.status.startsWith("error")) add("attachments", "fail", `attachment ${a.id} on ${a.host} is ${a.status}`, `pulumi up (retries it); if its host is gone: sds force-detach ${a.id}`);
  }

  // Replication.
  for (const p of await inventory.pairs()) {
    const name = p.primaryVolume ?? p.primaryVolumeId;
    if (p.lastError) add("replication", "fail", `pair ${p.id} (${name} → ${p.targetBackend}): last sync failed: ${p.lastError}`, `sds replication sync --pair ${p.id}`);
    else if (p.due && p.lastSyncAt !== null) add("replication", "warn", `pair ${p.id} (${name} → ${p.targetBackend}): last sync ${p.lagSeconds} s ago, past its RPO of ${p.rpoSeconds} s`, "sds replication sync (or enable the sds-replicate timer: deploy/README.md)");
    else if (p.due) add("replication", "warn", `pair ${p.id} (${name} → ${p.targetBackend}): never synced`, `sds replication sync --pair ${p.id}`);
  }
  return out;
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0];
}
