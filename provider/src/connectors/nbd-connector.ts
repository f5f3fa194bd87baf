/**
 * The NBD connector.
 *
 * - kernel (when /sys/block/nbd0 exists): `nbd-client HOST PORT /dev/nbdX -N EXPORT [-readonly]`,
 *   released with `nbd-client -d /dev/nbdX`; a device is free when /sys/block/nbdX/pid is absent.
 * - userspace (no kernel NBD client): nbdfuse makes the export a file of a FUSE mount, a loop
 *   device makes the file a block device:
 *     nbdfuse [-r] -P <pidfile> <stateDir>/nbd/mnt/<id>-<mode>/disk nbd://HOST:PORT/EXPORT   (detached)
 *     losetup -f --show [--read-only] <stateDir>/nbd/mnt/<id>-<mode>/disk
 *   torn down in reverse: `losetup -d`, `umount <mountdir>` (nbdfuse then exits), remove the folder.
 *
 * Size changes (`extendVolume`): neither path can grow a live connection (nbdfuse learns the
 * export size once, when it connects; nbd-client has no resize), so both reconnect under the
 * same device, which must not be in use (mounted, held): INVALID_STATE otherwise.
 * - kernel: `nbd-client -d /dev/nbdX`, then `nbd-client HOST PORT /dev/nbdX -N EXPORT [-readonly]`;
 * - userspace: a new nbdfuse in the connection's other slot (`<id>-<mode>.1`), then the loop
 *   device moves to it (`losetup -d /dev/loopN`, `losetup [--read-only] /dev/loopN <new file>`),
 *   then the old nbdfuse goes (see {@link refreshFuseLoop}).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { BackendError, invalidInput } from "../errors";
import type { Connection, PathHealth, VolumePath } from "./connector";
import { fuseLoop, keepOrRepair, refreshFuseLoop, startFuse, teardownFuseLoop } from "./fuse-chain";
import { BaseConnector, type ConnectorOptions, orphanLoops } from "./base-connector";
import { checkFuseChain, lastLine, PROBE_TIMEOUT_MS, type TargetProbe } from "./path-health";
import { checkIdleForReconnect, type Host } from "./host";
import { type ConnectionRecord, modeOf, newRecord, pathOf, type Teardown } from "./records";

export interface NbdConnectorOptions extends ConnectorOptions {
  /** Force the kernel client or the userspace path; default: kernel when the probe finds it. */
  mode?: "kernel" | "userspace";
}

export class NbdConnector extends BaseConnector {
  readonly protocol = "nbd";
  readonly mode: "kernel" | "userspace";

  constructor(options: NbdConnectorOptions = {}) {
    super(options);
    this.mode = options.mode ?? (this.capabilities().nbdKernel ? "kernel" : "userspace");
  }

  getSearchPath(): string {
    return this.mode === "kernel" ? "/dev" : this.host.stateDir;
  }

  async connectVolume(c: Connection): Promise<{ path: string }> {
    const { host, port, exportName } = nbdTarget(c);
    const mode = modeOf(c);
    const rec = this.host.records.read(c.volumeId, mode);
    if (rec && (await this.livePaths(rec)).length) {
      if (rec.via === "kernel") return { path: rec.device };
      // the device is there: keep it, and put a whole chain back under it when the old one broke
      return { path: await keepOrRepair(this.host, "nbd", c, rec, (p, keep) => startFuse(this.host, p, nbdfuseCommand(host, port, exportName, c.readOnly), keep)) };
    }
    if (rec) await this.teardown(rec, true).catch(() => undefined); // leftovers of a connection whose device went away
    if (this.mode === "kernel") {
      const device = await this.freeNbdDevice();
      await this.host.run("nbd-client", nbdClientArgs(host, port, device, exportName, c.readOnly));
      this.host.records.write(newRecord(c, "kernel", device));
      return { path: device };
    }
    const device = await fuseLoop(this.host, "nbd", c, nbdfuseCommand(host, port, exportName, c.readOnly));
    return { path: device };
  }

  /** Reconnects under the same device (see the file comment); the export must report the new size already. */
  async extendVolume(c: Connection): Promise<number> {
    const { host, port, exportName } = nbdTarget(c);
    const rec = await this.liveRecord(c);
    if (rec.via === "kernel") {
      checkIdleForReconnect(this.host, rec);
      await this.host.run("nbd-client", ["-d", rec.device]);
      await this.host.waitUntil(`${rec.device} to disconnect`, () => !this.nbdConnected(rec.device));
      await this.host.run("nbd-client", nbdClientArgs(host, port, rec.device, exportName, c.readOnly));
      return this.host.deviceSize(rec.device);
    }
    return refreshFuseLoop(this.host, "nbd", c, rec, (p, keep) => startFuse(this.host, p, nbdfuseCommand(host, port, exportName, c.readOnly), keep));
  }

  protected async teardownSteps(t: Teardown, rec: ConnectionRecord, force: boolean): Promise<void> {
    if (rec.via === "kernel") {
      await t.step(`nbd-client -d ${rec.device}`, async () => {
        if (this.nbdConnected(rec.device)) await this.host.run("nbd-client", ["-d", rec.device]);
      });
    } else {
      await teardownFuseLoop(this.host, t, rec, force);
    }
  }

  /** Kernel: the client still serves the device; userspace: the chain (path-health.ts); both: the server answers a handshake. */
  protected async checkRecord(rec: ConnectionRecord, c: Connection): Promise<PathHealth> {
    const probe = serverProbe(this.host, c);
    if (rec.via !== "kernel") return checkFuseChain(this.host, rec, probe);
    if (!this.nbdConnected(rec.device)) return { path: rec.device, healthy: false, reason: `no nbd-client serves ${rec.device} any more` };
    const unreachable = await probe();
    return unreachable ? { path: rec.device, healthy: false, reason: unreachable } : { path: rec.device, healthy: true };
  }

  protected async livePaths(rec: ConnectionRecord): Promise<VolumePath[]> {
    if (rec.via === "kernel") return this.nbdConnected(rec.device) ? [pathOf(rec)] : [];
    return this.liveLoop(rec);
  }

  protected async orphanPaths(explained: Set<string>): Promise<VolumePath[]> {
    return orphanLoops(this.host, "nbd", explained, path.join(this.host.stateDir, "nbd"));
  }

  private nbdConnected(device: string): boolean {
    return this.host.exists(`/sys/block/${path.basename(device)}/pid`);
  }

  /** The first /dev/nbdX with no client (no /sys/block/nbdX/pid) that no record holds. */
  private async freeNbdDevice(): Promise<string> {
    const held = new Set(this.host.records.list("nbd").map((r) => r.device));
    let names: string[] = [];
    try {
      names = fs.readdirSync(this.host.sys("/sys/block")).filter((n) => /^nbd\d+$/.test(n));
    } catch {
      // no /sys/block: no devices
    }
    names.sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
    const free = names.find((n) => !this.nbdConnected(`/dev/${n}`) && !held.has(`/dev/${n}`));
    if (!free) throw new BackendError("COMMAND_FAILED", "no free /dev/nbdX device on this host", true);
    return `/dev/${free}`;
  }
}

function nbdClientArgs(host: string, port: number, device: string, exportName: string, readOnly: boolean): string[] {
  return [host, String(port), device, "-N", exportName, ...(readOnly ? ["-readonly"] : [])];
}

/** The NBD handshake with the server (`nbdinfo --size URI`, bounded): what the device's chain needs from it. */
function serverProbe(host: Host, c: Connection): TargetProbe {
  const t = nbdTarget(c);
  return async () => {
    try {
      await host.run("nbdinfo", ["--size", nbdUri(t.host, t.port, t.exportName)], { timeoutMs: PROBE_TIMEOUT_MS });
      return undefined;
    } catch (err) {
      return `NBD server at ${t.host}:${t.port} (export ${JSON.stringify(t.exportName)}) does not answer: ${lastLine((err as Error).message)}`;
    }
  };
}

function nbdUri(host: string, port: number, exportName: string): string {
  return `nbd://${host.includes(":") ? `[${host}]` : host}:${port}/${encodeURIComponent(exportName)}`;
}

/** nbdfuse's argv for an NBD export (what {@link startFuse} runs). */
function nbdfuseCommand(host: string, port: number, exportName: string, readOnly: boolean) {
  const uri = `nbd://${host}:${port}/${encodeURIComponent(exportName)}`;
  return (file: string, pidFile: string): [string, string[]] => ["nbdfuse", [...(readOnly ? ["-r"] : []), "-P", pidFile, file, uri]];
}

/** host, port and export of an NBD connection (first portal). */
function nbdTarget(c: Connection): { host: string; port: number; exportName: string } {
  if (c.protocol !== "nbd") throw invalidInput("protocol", `the NBD connector cannot connect ${c.protocol}`);
  const portal = c.portals[0];
  const m = portal ? /^(.+):(\d+)$/.exec(portal) : null;
  if (!m) throw invalidInput("portals", `an NBD connection needs a portal "host:port", got ${JSON.stringify(portal)}`);
  return { host: m[1].replace(/^\[(.*)\]$/, "$1"), port: Number(m[2]), exportName: c.exportName ?? "" };
}

