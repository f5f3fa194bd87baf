/**
 * The userspace chain under a loop device, shared by the NBD and iSCSI connectors:
 *   [qemu-nbd (iSCSI)] → nbdfuse (a FUSE file) → losetup (a block device).
 * Making it (`fuseLoop`), moving the loop device to a new chain under the same path
 * (`refreshFuseLoop` for a grown volume, `repairFuseLoop` for a broken chain), and taking it
 * down (`teardownFuseLoop`). Why a broken chain is rebuilt beside the device and not in place,
 * and what the kernel allows: see path-health.ts.
 */
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { BackendError } from "../errors";
import { recordDaemon } from "../exec/daemons";
import type { Connection } from "./connector";
import { chainFault, killHelpers, SESSION_RETURN_MS } from "./path-health";
import { checkIdleForReconnect, type Host } from "./host";
import { type ConnectionRecord, layersOf, type LowerLayers, modeOf, newRecord, Teardown } from "./records";

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
  return { base, name, mountDir, file: path.join(mountDir, "disk"), runDir, logFile: path.join(runDir, `${name}.log`) };
}

export type FusePaths = ReturnType<typeof fusePaths>;

/** The slot the record's live pieces do not use. */
function otherSlot(rec: ConnectionRecord): 0 | 1 {
  return rec.mountDir?.endsWith(".1") ? 0 : 1;
}

/** `base` plus an id of this attempt: names of helpers' files that a later attempt never reuses (see exec/daemons.ts). */
export function attemptName(base: string): string {
  return `${base}.${randomUUID().slice(0, 8)}`;
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
  const name = attemptName(p.name);
  const pidFile = path.join(p.runDir, `${name}.nbdfuse.pid`);
  const layers: LowerLayers = { backingFile: p.file, mountDir: p.mountDir };
  keep(layers);
  const [file, args] = command(p.file, pidFile);
  const record = recordDaemon(host.daemons, { kind: "nbdfuse", name, file, args, pidFile, mountDir: p.mountDir });
  const spawned = await host.spawn(file, args, { logFile: p.logFile }).catch((err: unknown) => {
    host.daemons.remove(record.kind, record.name); // it could not start: nothing runs
    throw err;
  });
  host.daemons.write({ ...record, pid: spawned });
  keep({ ...layers, nbdfusePid: spawned });
  await host.waitUntil(`nbdfuse to serve ${p.file}`, async () => {
    if (fs.existsSync(pidFile) && fs.existsSync(p.file)) return true;
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
  const pid = Number(fs.readFileSync(pidFile, "utf8").trim());
  if (pid > 0 && pid !== spawned) {
    host.daemons.write({ ...record, pid });
    keep({ ...layers, nbdfusePid: pid });
  }
  fs.rmSync(pidFile, { force: true }); // the records keep the pid
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
  const wanted = rec.device;
  await moveLoop(host, kind, c, rec, make, () => checkIdleForReconnect(host, rec));
  const size = await host.deviceSize(rec.device);
  if (rec.device !== wanted) {
    throw new BackendError("COMMAND_FAILED", `volume ${rec.volumeId} now shows ${size} bytes, but at ${rec.device}: ${wanted} was taken by another program while the volume moved to its new connection`, false);
  }
  return size;
}

/**
 * `connectVolume` of a connection whose chain broke (see path-health.ts): the dead helpers are
 * killed first (pending I/O on the device fails with EIO, so a stuck reader lets go), then a
 * new chain in the other slot, then the loop device moves to it at the same path. The same path
 * is impossible only while someone still holds the device (mounted, or open): the kernel keeps
 * a held loop device bound to its old, dead file (`losetup -d` then only marks it to go at its
 * last close, and a read-write loop device cannot change its file in place), so the volume gets
 * a new device, which is recorded and returned. Returns the device.
 */
export async function repairFuseLoop(host: Host, kind: "nbd" | "iscsi", c: Connection, rec: ConnectionRecord, make: (p: FusePaths, keep: KeepLayers) => Promise<void>): Promise<string> {
  await killHelpers(host, layersOf(rec));
  await moveLoop(host, kind, c, rec, make);
  return rec.device;
}

/**
 * New pieces in the other slot (recorded as extra layers while they start), the loop device
 * moved to them (another device when `rec.device` will not take them), the old pieces torn
 * down. `beforeDetach` may refuse the move once the new pieces run. Updates `rec` and its file.
 */
async function moveLoop(
  host: Host,
  kind: "nbd" | "iscsi",
  c: Connection,
  rec: ConnectionRecord,
  make: (p: FusePaths, keep: KeepLayers) => Promise<void>,
  beforeDetach: () => void = () => undefined,
): Promise<void> {
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
    beforeDetach();
    await host.run("losetup", ["-d", rec.device]);
  } catch (err) {
    return dropFresh(err);
  }
  const old = layersOf(rec);
  Object.assign(rec, { backingFile: undefined, mountDir: undefined, nbdfusePid: undefined, qemuNbdPid: undefined, socket: undefined }, fresh);
  rec.extraLayers = [old];
  host.records.write(rec);
  try {
    await host.attachLoop(fresh.backingFile as string, c.readOnly, rec.device, { directIo: true });
  } catch (err) {
    // Taken by someone else meanwhile, or still held: the volume gets another device rather than none.
    rec.device = await host.attachLoop(fresh.backingFile as string, c.readOnly, undefined, { directIo: true }).catch(() => Promise.reject(err));
    host.records.write(rec);
  }
  // 3. the old pieces go (kept in the record when they will not)
  const t = new Teardown(secrets);
  await teardownLayers(host, t, old, !(await chainAlive(host, old)));
  rec.extraLayers = t.failed ? [old] : undefined;
  host.records.write(rec);
}

/** Whether the pieces' helpers still run (a replaced live chain) rather than died (a repaired one). */
async function chainAlive(host: Host, l: LowerLayers): Promise<boolean> {
  return !l.nbdfusePid || (await host.alive(l.nbdfusePid, "nbdfuse"));
}

/**
 * `connectVolume` of a userspace record whose loop device still maps its file: the same path
 * when the chain is whole; a chain whose iSCSI session is down but whose helpers run is given
 * {@link SESSION_RETURN_MS} to log in again by itself (that keeps even a held device); anything
 * else is repaired ({@link repairFuseLoop}).
 */
export async function keepOrRepair(host: Host, kind: "nbd" | "iscsi", c: Connection, rec: ConnectionRecord, make: (p: FusePaths, keep: KeepLayers) => Promise<void>): Promise<string> {
  let fault = await chainFault(host, rec);
  if (fault?.reconnecting) {
    await host.waitUntil(`qemu-nbd ${rec.qemuNbdPid} to log in again`, async () => !(await chainFault(host, rec))?.reconnecting, Math.min(host.waitMs, SESSION_RETURN_MS)).catch(() => undefined);
    fault = await chainFault(host, rec);
  }
  if (!fault) return rec.device;
  return repairFuseLoop(host, kind, c, rec, make);
}

/**
 * Reverse of {@link fuseLoop} (and qemu-nbd, when the record has one); collects errors in `t`.
 * A broken chain (see path-health.ts) loses its helpers first, so I/O stuck on the device fails
 * and its holder lets go of the device, which then goes at once rather than at its last close;
 * its dead FUSE mount is unmounted lazily. One call is enough after a target crash.
 */
export async function teardownFuseLoop(host: Host, t: Teardown, rec: ConnectionRecord, force: boolean): Promise<void> {
  const broken = !!(await chainFault(host, rec));
  if (broken) await t.step("stop the broken chain's helpers", () => killHelpers(host, layersOf(rec)));
  if (rec.device) {
    // a holder that got its EIO closes the device within moments; one that stays (a mount) keeps it until it lets go
    await t.step(`losetup -d ${rec.device}`, () => host.detachLoop(rec.device, rec.backingFile));
  }
  await teardownLayers(host, t, layersOf(rec), force || broken);
  for (const l of rec.extraLayers ?? []) await teardownLayers(host, t, l, force);
}

/** The pieces under a loop device, in reverse order of making them: umount, nbdfuse, qemu-nbd, files. */
async function teardownLayers(host: Host, t: Teardown, l: LowerLayers, force: boolean): Promise<void> {
  if (l.mountDir) {
    const dir = l.mountDir;
    await t.step(`umount ${dir}`, () => umountFuse(host, dir, force));
  }
  if (l.nbdfusePid) {
    const pid = l.nbdfusePid;
    if (await t.step(`stop nbdfuse ${pid}`, () => stopProcess(host, pid, "nbdfuse", 5_000))) host.daemons.removePid("nbdfuse", pid);
  }
  if (l.qemuNbdPid) {
    const pid = l.qemuNbdPid;
    const stopped = await t.step(`stop qemu-nbd ${pid}`, async () => {
      // only a live qemu-nbd: the pid of a dead one may belong to another process by now
      if (await host.alive(pid, "qemu-nbd")) host.processes.kill(pid, "SIGTERM");
      await stopProcess(host, pid, "qemu-nbd", 5_000);
    });
    if (stopped) host.daemons.removePid("qemu-nbd", pid);
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
    fs.rmSync(fusePathsNamed(path.dirname(path.dirname(dir)), path.basename(dir)).logFile, { force: true });
  }
}

/**
 * umount of a chain's FUSE mount. Right after `losetup -d`, the loop device may still hold the
 * FUSE file for a moment (the kernel drops it after the device's in-flight I/O drained, later
 * than losetup --list stops showing it), and umount says "target is busy": retried for a few
 * seconds (at most the host's wait) before that is an error. `force` unmounts lazily at once.
 */
async function umountFuse(host: Host, dir: string, force: boolean): Promise<void> {
  if (!host.isMounted(dir)) return;
  if (force) {
    await host.run("umount", ["-l", dir]);
    return;
  }
  const deadline = Date.now() + Math.min(host.waitMs, 10_000);
  for (let wait = 50; ; wait = Math.min(wait * 2, 1_000)) {
    try {
      await host.run("umount", [dir]);
      return;
    } catch (err) {
      if (!/target is busy|EBUSY/i.test((err as Error).message) || Date.now() + wait > deadline || !host.isMounted(dir)) throw err;
      await host.sleep(wait);
    }
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
