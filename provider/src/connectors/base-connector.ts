/**
 * What every connector shares: the host view, the connector properties, and the record-driven
 * path queries, teardown, health check and fence (os-brick's InitiatorConnector base). Each
 * protocol's connector adds how it connects, what its teardown steps are, and how it checks its
 * chain.
 */
import * as os from "node:os";
import { DeviceBusyError, UserError } from "../errors";
import type { Reaped } from "../exec/daemons";
import type { Connection, Connector, ConnectorProperties, PathHealth, VolumePath } from "./connector";
import { type Capabilities, Host, type HostOptions, initiatorName, probe } from "./host";
import { killHelpers } from "./path-health";
import { reapHelpers } from "./reap";
import { type ConnectionRecord, layersOf, modeOf, pathOf, Teardown } from "./records";

/** Options of every connector. */
export interface ConnectorOptions extends HostOptions {
  /** This host's address as targets see it. Default 127.0.0.1. */
  ip?: string;
  hostname?: string;
  /** What this host can do; default from {@link probe}. */
  capabilities?: Capabilities;
}

/** What all connectors share: the host view, properties, and the live check of records. */
export abstract class BaseConnector implements Connector {
  abstract readonly protocol: "iscsi" | "nbd" | "local";
  readonly host: Host;
  protected readonly options: ConnectorOptions;

  constructor(options: ConnectorOptions = {}) {
    this.options = options;
    this.host = new Host(options);
  }

  capabilities(): Capabilities {
    if (this.options.capabilities) return this.options.capabilities;
    const p = probe(this.host.fsRoot);
    return { iscsiKernel: p.iscsiKernel, nbdKernel: p.nbdKernel, userspace: p.userspace };
  }

  async getConnectorProperties(): Promise<ConnectorProperties> {
    const hostname = this.options.hostname ?? os.hostname();
    return { initiator: initiatorName(this.host.fsRoot, hostname), ip: this.options.ip ?? "127.0.0.1", hostname, multipath: false, capabilities: this.capabilities() };
  }

  abstract connectVolume(connection: Connection): Promise<{ path: string }>;
  abstract getSearchPath(): string;

  /** Idempotent: nothing recorded is success; a device still held is refused unless `force`. */
  async disconnectVolume(c: Connection, options: { force?: boolean } = {}): Promise<void> {
    const rec = this.host.records.read(c.volumeId, modeOf(c));
    if (!rec) return;
    if ((await this.livePaths(rec)).length) this.checkNotInUse(rec.device, options.force);
    await this.teardown(rec, !!options.force, c.authPassword ? [c.authPassword] : []);
  }

  /** Undo a connection, collecting errors and going on; the record goes only when every step worked. */
  protected async teardown(rec: ConnectionRecord, force: boolean, secrets: string[] = []): Promise<void> {
    const t = new Teardown(secrets);
    await this.teardownSteps(t, rec, force);
    if (!t.failed) this.host.records.remove(rec.volumeId, rec.mode);
    t.throwIfFailed(`${rec.volumeId} (${rec.mode})`);
  }

  /** See {@link Connector.reapOrphans}. */
  reapOrphans(): Promise<Reaped> {
    return reapHelpers(this.host);
  }

  /** Bounded: see {@link Connector.checkVolume}; a record of this protocol is checked by {@link checkRecord}. */
  async checkVolume(c: Connection): Promise<PathHealth> {
    const rec = this.host.records.read(c.volumeId, modeOf(c));
    if (!rec || rec.protocol !== this.protocol) return { path: null, healthy: false, reason: "not connected" };
    return this.checkRecord(rec, c);
  }

  /**
   * See {@link Connector.fenceVolume}. Only userspace chains have helpers to stop; the kernel
   * paths bound their own waits (the iSCSI session's replacement_timeout) and a loop device
   * over a local file has nothing under it that can vanish.
   */
  async fenceVolume(c: Connection): Promise<PathHealth> {
    const health = await this.checkVolume(c);
    const rec = this.host.records.read(c.volumeId, modeOf(c));
    if (health.healthy || !rec || rec.via !== "userspace") return health;
    await killHelpers(this.host, layersOf(rec));
    return health;
  }

  /** Chains found broken by {@link sweep}, by `volumeId/mode`: how many sweeps in a row, or "fenced". */
  private readonly strikes = new Map<string, number | "fenced">();

  /**
   * One pass of the agent's health loop: every userspace chain of this connector that a record
   * can describe is checked (bounded); one broken `strikes` passes in a row is fenced, so I/O on
   * it fails now instead of waiting for a target that may never come back (libiscsi in qemu-nbd
   * waits forever; see path-health.ts). The device and the record stay: the provider's next run
   * reports the attachment broken and its `up` puts it back on the same path. Returns the chains
   * fenced by this pass (each is reported once).
   */
  async sweep(strikes = 2): Promise<Array<{ volumeId: string; mode: "rw" | "ro"; path: string; reason: string }>> {
    const fenced: Array<{ volumeId: string; mode: "rw" | "ro"; path: string; reason: string }> = [];
    const seen = new Set<string>();
    for (const rec of this.host.records.list(this.protocol)) {
      const c = rec.via === "userspace" ? this.connectionOfRecord(rec) : undefined;
      if (!c) continue;
      const key = `${rec.volumeId}/${rec.mode}`;
      seen.add(key);
      const h = await this.checkRecord(rec, c).catch((err: Error): PathHealth => ({ path: rec.device, healthy: false, reason: err.message }));
      const was = this.strikes.get(key);
      if (h.healthy) {
        this.strikes.delete(key);
        continue;
      }
      if (was === "fenced") continue;
      const n = (was ?? 0) + 1;
      this.strikes.set(key, n);
      if (n < strikes) continue;
      await killHelpers(this.host, layersOf(rec));
      this.strikes.set(key, "fenced");
      fenced.push({ volumeId: rec.volumeId, mode: rec.mode, path: rec.device, reason: h.reason ?? "unhealthy" });
    }
    for (const key of this.strikes.keys()) if (!seen.has(key)) this.strikes.delete(key);
    return fenced;
  }

  /**
   * A connection rebuilt from a record, enough to probe its chain (never a CHAP password:
   * records hold none, so the read through the chain judges the target); undefined when the
   * record cannot describe one, or when this protocol's chain fails fast by itself.
   */
  protected connectionOfRecord(_rec: ConnectionRecord): Connection | undefined {
    return undefined;
  }

  /** The health of a record of this connector (the chain under its device). */
  protected abstract checkRecord(rec: ConnectionRecord, c: Connection): Promise<PathHealth>;

  /** The steps that undo `rec`, in reverse order of making it. */
  protected abstract teardownSteps(t: Teardown, rec: ConnectionRecord, force: boolean): Promise<void>;

  /** The paths a record still has on the host (empty when nothing of it is left). */
  protected abstract livePaths(rec: ConnectionRecord): Promise<VolumePath[]>;

  /** Loop devices of this protocol that no record explains (orphans); default none. */
  protected async orphanPaths(_explained: Set<string>): Promise<VolumePath[]> {
    return [];
  }

  async getVolumePaths(connection: Connection): Promise<VolumePath[]> {
    const out: VolumePath[] = [];
    for (const mode of ["rw", "ro"] as const) {
      const rec = this.host.records.read(connection.volumeId, mode);
      if (rec && rec.protocol === this.protocol) out.push(...(await this.livePaths(rec)));
    }
    return out;
  }

  async getAllVolumePaths(): Promise<VolumePath[]> {
    const out: VolumePath[] = [];
    for (const rec of this.host.records.list(this.protocol)) out.push(...(await this.livePaths(rec)));
    out.push(...(await this.orphanPaths(new Set(out.map((p) => p.path)))));
    return out;
  }

  /**
   * The loop device over the volume file re-reads the file's size (`losetup -c`), live, even
   * while mounted; the path stays. (Other connectors override this: see theirs.)
   */
  async extendVolume(connection: Connection): Promise<number> {
    const rec = await this.liveRecord(connection);
    await this.host.run("losetup", ["-c", rec.device]);
    return this.host.deviceSize(rec.device);
  }

  /** The record of a connection whose device exists now; INVALID_STATE otherwise (nothing to extend). */
  protected async liveRecord(c: Connection): Promise<ConnectionRecord> {
    const mode = modeOf(c);
    const rec = this.host.records.read(c.volumeId, mode);
    if (!rec || rec.protocol !== this.protocol) throw new UserError("INVALID_STATE", `volume ${c.volumeId} is not connected (${mode}, ${this.protocol}) on this host`);
    if (!(await this.livePaths(rec)).length) throw new UserError("INVALID_STATE", `volume ${c.volumeId} (${mode}) lost its device ${rec.device || "(none yet)"} on this host; connect it again`);
    return rec;
  }

  /** Refuses to release a device something still holds, unless `force`. */
  protected checkNotInUse(device: string, force: boolean | undefined): void {
    if (force) return;
    const why = this.host.inUse(device);
    if (why) throw new DeviceBusyError(device, `cannot disconnect: ${why} (use force to tear down anyway)`, why);
  }

  /** Detach `rec`'s loop device if it still maps its backing file. */
  protected async detachLoop(t: Teardown, rec: ConnectionRecord): Promise<void> {
    await t.step(`losetup -d ${rec.device}`, () => this.host.detachLoop(rec.device, rec.backingFile));
  }

  /** The record's loop device, when it still maps its backing file. */
  protected async liveLoop(rec: ConnectionRecord): Promise<VolumePath[]> {
    return (await this.host.loopFor(rec.device, rec.backingFile)) ? [pathOf(rec)] : [];
  }
}

/** Loop devices whose backing file is inside `dir` (not inside `exclude`) and not in `explained`. */
export async function orphanLoops(host: Host, protocol: VolumePath["protocol"], explained: Set<string>, dir: string, exclude: string[] = []): Promise<VolumePath[]> {
  const inside = (f: string, d: string) => f.startsWith(d.endsWith("/") ? d : `${d}/`);
  return (await host.loops())
    .filter((l) => inside(l.backFile, dir) && !exclude.some((d) => inside(l.backFile, d)) && !explained.has(l.name))
    .map((l) => ({ path: l.name, protocol, via: protocol === "local" ? ("loop" as const) : ("userspace" as const) }));
}
