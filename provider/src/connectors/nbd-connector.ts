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
import type { Connection, VolumePath } from "./connector";
import { BaseConnector, type ConnectorOptions, orphanLoops } from "./local-connector";
import { checkIdleForReconnect, type ConnectionRecord, type Host, layersOf, type LowerLayers, modeOf, newRecord, pathOf, Teardown } from "./records";

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

/**
 * Where the userspace path of `kind` keeps one connection's pieces. Two slots, so that
 * `extendVolume` can make new pieces next to the live ones: slot 0 is `<id>-<mode>`, slot 1
 * `<id>-<mode>.1` (names end in -rw/-ro, so a slot name never collides with a volume's).
 */
export function fusePaths(host: Host, kind: "nbd" | "iscsi", c: { volumeId: string; readOnly: boolean }, slot: 0 | 1 = 0) {
  return fusePathsNamed(path.join(host.stateDir, kind), `${c.volumeId}-${modeOf(c)}${slot ? ".1" : ""}`);
}

function fusePathsNamed(base: string, name: string) {
  const mountDir = path.join(base, "mnt", name);
  const runDir = path.join(base, "run");
  return { base, name, mountDir, file: path.join(mountDir, "disk"), runDir, pidFile: path.join(runDir, `${name}.nbdfuse.pid`), logFile: path.join(runDir, `${name}.log`) };
}

export type FusePaths = ReturnType<typeof fusePaths>;

/** The slot the record's live pieces do not use. */
function otherSlot(rec: ConnectionRecord): 0 | 1 {
  return rec.mountDir?.endsWith(".1") ? 0 : 1;
}

/** Records `layers` as they come (the connection's own, or its extra ones during an extend). */
export type KeepLayers = (layers: LowerLayers) => void;

/**
 * Starts nbdfuse (detached) serving `p.file`; `command(file, pidFile)` is its argv. `keep` gets
 * the pieces before the start and again once nbdfuse runs, so a crash in between still leaves a
 * record to tear down. Resolves once the file is served; on failure the caller tears down what
 * it kept.
 */
export async function startFuse(host: Host, p: FusePaths, command: (file: string, pidFile: string) => [string, string[]], keep: KeepLayers): Promise<void> {
  fs.mkdirSync(p.mountDir, { recursive: true, mode: 0o700 });
  fs.mkdirSync(p.runDir, { recursive: true, mode: 0o700 });
  fs.rmSync(p.pidFile, { force: true });
  const layers: LowerLayers = { backingFile: p.file, mountDir: p.mountDir };
  keep(layers);
  const [file, args] = command(p.file, p.pidFile);
  const spawned = await host.spawn(file, args, { logFile: p.logFile });
  keep({ ...layers, nbdfusePid: spawned });
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
  if (pid > 0 && pid !== spawned) keep({ ...layers, nbdfusePid: pid });
}

/**
 * nbdfuse (detached) + losetup for connection `c`; `command(file, pidFile)` is nbdfuse's argv.
 * The record is written as soon as nbdfuse runs, so a crash in between still leaves a record to
 * tear down. `extra` joins the record (qemu-nbd's pid and socket for iSCSI); a failure tears
 * down everything, `extra`'s qemu-nbd included.
 */
export async function fuseLoop(
  host: Host,
  kind: "nbd" | "iscsi",
  c: Connection,
  command: (file: string, pidFile: string) => [string, string[]],
  extra: Partial<ConnectionRecord> = {},
): Promise<string> {
  const rec = newRecord(c, "userspace", "", extra);
  try {
    await startFuse(host, fusePaths(host, kind, c), command, (layers) => {
      Object.assign(rec, layers);
      host.records.write(rec);
    });
    rec.device = await host.attachLoop(rec.backingFile as string, c.readOnly, undefined, { directIo: true });
    host.records.write(rec);
    return rec.device;
  } catch (err) {
    const t = new Teardown();
    await teardownFuseLoop(host, t, rec, true);
    if (!t.failed) host.records.remove(rec.volumeId, rec.mode);
    throw err;
  }
}

/**
 * `extendVolume` of the userspace paths. nbdfuse (and qemu-nbd) learn the size once, when they
 * connect, so the live pieces cannot grow: make new pieces in the other slot (they connect now
 * and see the new size) while the device keeps working, then move the loop device over
 * (`losetup -d /dev/loopN`, `losetup /dev/loopN <new file>`: the same path for the user), then
 * tear the old pieces down. Why this order: if the new pieces cannot be made, the connection is
 * untouched; and the device is free only between two losetup calls, so another `losetup -f`
 * is unlikely to take it (if one does, the volume goes to a new device and the error says
 * which). The device must be unused (a loop device cannot change its file under a mount):
 * INVALID_STATE otherwise, and the new size shows after the next reconnect. `make(p, keep)` starts the new pieces in `p`, handing each to `keep` as it starts.
 */
export async function refreshFuseLoop(
  host: Host,
  kind: "nbd" | "iscsi",
  c: Connection,
  rec: ConnectionRecord,
  make: (p: FusePaths, keep: KeepLayers) => Promise<void>,
): Promise<number> {
  checkIdleForReconnect(host, rec);
  const secrets = c.authPassword ? [c.authPassword] : [];
  // Leftovers of an earlier extend go first (one of them may sit in the slot we need).
  if (rec.extraLayers?.length) {
    const t = new Teardown(secrets);
    for (const l of rec.extraLayers) await teardownLayers(host, t, l, true);
    t.throwIfFailed(`what an earlier extend of ${rec.volumeId} (${rec.mode}) left`, "teardown");
    rec.extraLayers = undefined;
    host.records.write(rec);
  }
  const fresh: LowerLayers = {};
  const dropFresh = async (err: unknown): Promise<never> => {
    const t = new Teardown(secrets);
    await teardownLayers(host, t, fresh, true);
    if (!t.failed) rec.extraLayers = undefined;
    host.records.write(rec);
    throw err;
  };
  // 1. new pieces next to the live ones
  try {
    await make(fusePaths(host, kind, c, otherSlot(rec)), (layers) => {
      Object.assign(fresh, layers);
      rec.extraLayers = [fresh];
      host.records.write(rec);
    });
    // 2. move the loop device over (unless it got a user meanwhile: losetup -d would only defer)
    checkIdleForReconnect(host, rec);
    await host.run("losetup", ["-d", rec.device]);
  } catch (err) {
    return dropFresh(err);
  }
  const old = layersOf(rec);
  Object.assign(rec, { backingFile: undefined, mountDir: undefined, nbdfusePid: undefined, qemuNbdPid: undefined, socket: undefined }, fresh);
  rec.extraLayers = [old];
  host.records.write(rec);
  const wanted = rec.device;
  try {
    await host.attachLoop(fresh.backingFile as string, c.readOnly, wanted, { directIo: true });
  } catch (err) {
    // Taken by someone else meanwhile: the volume gets another device rather than none.
    rec.device = await host.attachLoop(fresh.backingFile as string, c.readOnly, undefined, { directIo: true }).catch(() => Promise.reject(err));
    host.records.write(rec);
  }
  // 3. the old pieces go (kept in the record when they will not)
  const t = new Teardown(secrets);
  await teardownLayers(host, t, old, false);
  rec.extraLayers = t.failed ? [old] : undefined;
  host.records.write(rec);
  const size = await host.deviceSize(rec.device);
  if (rec.device !== wanted) {
    throw new BackendError("COMMAND_FAILED", `volume ${rec.volumeId} now shows ${size} bytes, but at ${rec.device}: ${wanted} was taken by another program while the volume moved to its new connection`, false);
  }
  return size;
}

/** Reverse of {@link fuseLoop} (and qemu-nbd, when the record has one); collects errors in `t`. */
export async function teardownFuseLoop(host: Host, t: Teardown, rec: ConnectionRecord, force: boolean): Promise<void> {
  if (rec.device) {
    await t.step(`losetup -d ${rec.device}`, async () => {
      if (await host.loopFor(rec.device, rec.backingFile)) await host.run("losetup", ["-d", rec.device]);
    });
  }
  await teardownLayers(host, t, layersOf(rec), force);
  for (const l of rec.extraLayers ?? []) await teardownLayers(host, t, l, force);
}

/** The pieces under a loop device, in reverse order of making them: umount, nbdfuse, qemu-nbd, files. */
async function teardownLayers(host: Host, t: Teardown, l: LowerLayers, force: boolean): Promise<void> {
  if (l.mountDir) {
    const dir = l.mountDir;
    await t.step(`umount ${dir}`, async () => {
      if (host.isMounted(dir)) await host.run("umount", [...(force ? ["-l"] : []), dir]);
    });
  }
  if (l.nbdfusePid) {
    const pid = l.nbdfusePid;
    await t.step(`stop nbdfuse ${pid}`, () => stopProcess(host, pid, "nbdfuse", 5_000));
  }
  if (l.qemuNbdPid) {
    const pid = l.qemuNbdPid;
    await t.step(`stop qemu-nbd ${pid}`, async () => {
      host.processes.kill(pid, "SIGTERM");
      await stopProcess(host, pid, "qemu-nbd", 5_000);
    });
  }
  if (l.socket) fs.rmSync(l.socket, { force: true });
  if (l.mountDir && !host.isMounted(l.mountDir)) {
    const dir = l.mountDir;
    await t.step(`rmdir ${dir}`, () => {
      try {
        fs.rmdirSync(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    });
    const p = fusePathsNamed(path.dirname(path.dirname(dir)), path.basename(dir));
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
