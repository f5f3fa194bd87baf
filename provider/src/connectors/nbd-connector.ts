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
 * Size changes: nbdfuse learns the export size once, when it connects; `extendVolume` re-reads the
 * loop device's size (`losetup -c`) but the FUSE file keeps its old size until a reconnect (see
 * the contract test). The kernel path cannot re-read either (nbd-client has no resize).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { BackendError, invalidInput } from "../errors";
import type { Connection, VolumePath } from "./connector";
import { BaseConnector, type ConnectorOptions, orphanLoops } from "./local-connector";
import { type ConnectionRecord, type Host, modeOf, newRecord, pathOf, Teardown } from "./records";

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
    if (rec && (await this.livePaths(rec)).length) return { path: rec.device };
    if (rec) await this.teardown(rec, true).catch(() => undefined); // leftovers of a broken connection
    if (this.mode === "kernel") {
      const device = await this.freeNbdDevice();
      await this.host.run("nbd-client", [host, String(port), device, "-N", exportName, ...(c.readOnly ? ["-readonly"] : [])]);
      this.host.records.write(newRecord(c, "kernel", device));
      return { path: device };
    }
    const uri = `nbd://${host}:${port}/${encodeURIComponent(exportName)}`;
    const device = await fuseLoop(this.host, "nbd", c, (file, pidFile) => ["nbdfuse", [...(c.readOnly ? ["-r"] : []), "-P", pidFile, file, uri]]);
    return { path: device };
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

/** host, port and export of an NBD connection (first portal). */
function nbdTarget(c: Connection): { host: string; port: number; exportName: string } {
  if (c.protocol !== "nbd") throw invalidInput("protocol", `the NBD connector cannot connect ${c.protocol}`);
  const portal = c.portals[0];
  const m = portal ? /^(.+):(\d+)$/.exec(portal) : null;
  if (!m) throw invalidInput("portals", `an NBD connection needs a portal "host:port", got ${JSON.stringify(portal)}`);
  return { host: m[1].replace(/^\[(.*)\]$/, "$1"), port: Number(m[2]), exportName: c.exportName ?? "" };
}

/** Where the userspace path of `kind` keeps one connection's pieces. */
export function fusePaths(host: Host, kind: "nbd" | "iscsi", c: { volumeId: string; readOnly: boolean }) {
  const name = `${c.volumeId}-${modeOf(c)}`;
  const base = path.join(host.stateDir, kind);
  const mountDir = path.join(base, "mnt", name);
  return { base, name, mountDir, file: path.join(mountDir, "disk"), runDir: path.join(base, "run"), pidFile: path.join(base, "run", `${name}.nbdfuse.pid`), logFile: path.join(base, "run", `${name}.log`) };
}

/**
 * nbdfuse (detached) + losetup for connection `c`; `command(file, pidFile)` is nbdfuse's argv.
 * The record is written as soon as nbdfuse runs, so a crash in between still leaves a record to
 * tear down. `extra` joins the record (qemu-nbd's pid and socket for iSCSI).
 */
export async function fuseLoop(
  host: Host,
  kind: "nbd" | "iscsi",
  c: Connection,
  command: (file: string, pidFile: string) => [string, string[]],
  extra: Partial<ConnectionRecord> = {},
): Promise<string> {
  const p = fusePaths(host, kind, c);
  fs.mkdirSync(p.mountDir, { recursive: true, mode: 0o700 });
  fs.mkdirSync(p.runDir, { recursive: true, mode: 0o700 });
  fs.rmSync(p.pidFile, { force: true });
  const [file, args] = command(p.file, p.pidFile);
  const spawned = await host.spawn(file, args, { logFile: p.logFile });
  const rec = newRecord(c, "userspace", "", { ...extra, backingFile: p.file, mountDir: p.mountDir, nbdfusePid: spawned });
  host.records.write(rec);
  try {
    await host.waitUntil(`nbdfuse to serve ${p.file}`, async () => {
      if (fs.existsSync(p.pidFile) && fs.existsSync(p.file)) return true;
      if (!(await host.alive(spawned, "nbdfuse"))) {
        let log = "";
        try {
          log = fs.readFileSync(p.logFile, "utf8").trim().split("\n").slice(-5).join(" | ");
        } catch {
          // no log
        }
        throw new BackendError("COMMAND_FAILED", `nbdfuse exited before serving ${p.file}${log ? `: ${log}` : ""}`, true);
      }
      return false;
    });
    const pid = Number(fs.readFileSync(p.pidFile, "utf8").trim());
    if (pid > 0) rec.nbdfusePid = pid;
    rec.device = await host.attachLoop(p.file, c.readOnly);
    host.records.write(rec);
    return rec.device;
  } catch (err) {
    const t = new Teardown();
    await teardownFuseLoop(host, t, rec, true);
    if (!t.failed) host.records.remove(rec.volumeId, rec.mode);
    throw err;
  }
}

/** Reverse of {@link fuseLoop} (and qemu-nbd, when the record has one); collects errors in `t`. */
export async function teardownFuseLoop(host: Host, t: Teardown, rec: ConnectionRecord, force: boolean): Promise<void> {
  if (rec.device) {
    await t.step(`losetup -d ${rec.device}`, async () => {
      if (await host.loopFor(rec.device, rec.backingFile)) await host.run("losetup", ["-d", rec.device]);
    });
  }
  if (rec.mountDir) {
    const dir = rec.mountDir;
    await t.step(`umount ${dir}`, async () => {
      if (host.isMounted(dir)) await host.run("umount", [...(force ? ["-l"] : []), dir]);
    });
  }
  if (rec.nbdfusePid) {
    const pid = rec.nbdfusePid;
    await t.step(`stop nbdfuse ${pid}`, () => stopProcess(host, pid, "nbdfuse", 5_000));
  }
  if (rec.qemuNbdPid) {
    const pid = rec.qemuNbdPid;
    await t.step(`stop qemu-nbd ${pid}`, async () => {
      host.processes.kill(pid, "SIGTERM");
      await stopProcess(host, pid, "qemu-nbd", 5_000);
    });
  }
  if (rec.socket) fs.rmSync(rec.socket, { force: true });
  if (rec.mountDir && !host.isMounted(rec.mountDir)) {
    const dir = rec.mountDir;
    await t.step(`rmdir ${dir}`, () => {
      try {
        fs.rmdirSync(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    });
    const p = fusePaths(host, rec.protocol === "iscsi" ? "iscsi" : "nbd", { volumeId: rec.volumeId, readOnly: rec.mode === "ro" });
    fs.rmSync(p.pidFile, { force: true });
    fs.rmSync(p.logFile, { force: true });
  }
}

/** Waits for `pid` (a `name` process) to exit; SIGTERM after `graceMs`, SIGKILL after 2×. */
async function stopProcess(host: Host, pid: number, name: string, graceMs: number): Promise<void> {
  graceMs = Math.min(graceMs, host.waitMs);
  const gone = async () => !(await host.alive(pid, name));
  if (await gone()) return;
  try {
    await host.waitUntil(`${name} ${pid} to exit`, gone, graceMs);
    return;
  } catch {
    host.processes.kill(pid, "SIGTERM");
  }
  try {
    await host.waitUntil(`${name} ${pid} to exit after SIGTERM`, gone, graceMs);
  } catch {
    host.processes.kill(pid, "SIGKILL");
    await host.waitUntil(`${name} ${pid} to exit after SIGKILL`, gone, graceMs);
  }
}
