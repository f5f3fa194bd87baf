/**
 * Health of a userspace chain (loop device → nbdfuse → [qemu-nbd/libiscsi] → target), and
 * fencing of a broken one. Why the design is what it is: what was measured on this machine
 * (kernel 6.18, qemu-nbd 7.2 with libiscsi 1.19, nbdfuse/libnbd 1.14, nbdkit 1.32, tgt 1.0.85),
 * with a device read through /dev/loopN with O_DIRECT:
 *
 * - tgtd SIGKILLed under a userspace iSCSI device: libiscsi (inside qemu-nbd) reconnects on its
 *   own, forever (its reconnect_max_retries is -1 and qemu 7.2 never sets it), backing off up to
 *   30 s between tries. Meanwhile every request waits: qemu-nbd holds it, nbdfuse waits for
 *   qemu-nbd, the loop worker waits for FUSE, and the reader sits in D state in submit_bio_wait
 *   (unkillable). qemu's `file.timeout=N` does not bound it: tasks queued while libiscsi
 *   reconnects are not timed (measured: with file.timeout=3 a read still hung 190 s). No option
 *   of qemu-nbd, libiscsi (its LIBISCSI_* variables are TCP and CHAP knobs) or the loop device
 *   bounds it. What ends it: tgtd back with the same export (libiscsi logs in again, CHAP
 *   included, and the read completes: measured 9 s after the re-export), or qemu-nbd killed
 *   (the read fails with EIO within milliseconds).
 * - nbdkit SIGKILLed under a userspace NBD device: the read fails with EIO at once (nbdfuse's
 *   connections see EOF), but libnbd never reconnects: nbdfuse stays alive with its sockets in
 *   CLOSE_WAIT and every later read fails (EINVAL/EIO), even once nbdkit serves again.
 * - A destroy after the crash: `losetup -d` of a device someone holds (the stuck reader) only
 *   marks it autoclear, so the loop keeps the FUSE file open and `umount` of the FUSE mount
 *   fails "target is busy"; a second run found the reader gone.
 * - A loop device cannot change its file while it is held: LOOP_CHANGE_FD works on read-only
 *   devices only, and LOOP_SET_FD/LOOP_CONFIGURE need a free device.
 *
 * Hence:
 * - `checkVolume` looks, bounded: the loop device maps our FUSE file, the helpers are alive, the
 *   FUSE mount is there, the helper's TCP connection to the target is ESTABLISHED (/proc, no
 *   command), the target answers a probe of its own (nbdinfo; iscsi-readcapacity16 with CHAP in
 *   the environment) and one 4 KiB O_DIRECT read through the FUSE file answers. Probes run as
 *   child processes with a timeout; nothing ever reads the loop device (a read there cannot be
 *   interrupted).
 * - `fenceVolume` kills the broken chain's helpers: pending and new I/O fail with EIO at once.
 *   It is a call of its own (the agent's health loop), not a side effect of a check: a check
 *   that kills would turn a slow target into a dead filesystem.
 * - `connectVolume` of a broken chain builds a new chain in the record's other slot and moves
 *   the loop device to it (losetup -d, losetup /dev/loopN <new file>): the same path. When the
 *   device is still held (mounted, or open by a process that did not give up) the kernel keeps
 *   it bound to the dead file, so the volume gets a new device (recorded and returned). An iSCSI
 *   chain whose helpers are alive and only lost their session is given time to log in again
 *   by itself first (that keeps even a mounted device).
 * - teardown of a broken chain kills its helpers first, so a stuck holder lets go, and unmounts
 *   lazily: one disconnect is enough.
 */
import * as fs from "node:fs";
import { CommandTimeoutError } from "../errors";
import type { PathHealth } from "./connector";
import type { Host } from "./host";
import type { ConnectionRecord, LowerLayers } from "./records";

/** Every probe that could hang runs as a child process killed after this long. */
export const PROBE_TIMEOUT_MS = 5_000;
/** How long connectVolume lets libiscsi log in again by itself (its backoff tops at 30 s). */
export const SESSION_RETURN_MS = 35_000;

/** A target probe: resolves undefined when the target answers, else a one-line reason. */
export type TargetProbe = () => Promise<string | undefined>;

/** Why a chain is broken, from what the host shows without running a command. */
export interface ChainFault {
  reason: string;
  /** Only the helper's session is down and it reconnects by itself (libiscsi). */
  reconnecting?: boolean;
}

/**
 * The cheap part of the check (process table, /proc/mounts, /proc/PID/net): no command, no
 * I/O on the chain, so connectVolume and teardown can ask it every time.
 */
export async function chainFault(host: Host, l: LowerLayers & { portal?: string }): Promise<ChainFault | undefined> {
  if (l.nbdfusePid && !(await host.alive(l.nbdfusePid, "nbdfuse"))) return { reason: `nbdfuse (pid ${l.nbdfusePid}) exited` };
  if (l.qemuNbdPid && !(await host.alive(l.qemuNbdPid, "qemu-nbd"))) return { reason: `qemu-nbd (pid ${l.qemuNbdPid}) exited` };
  if (l.mountDir && !host.isMounted(l.mountDir)) return { reason: `the FUSE mount ${l.mountDir} is gone` };
  // The helper that talks to the target: qemu-nbd for iSCSI, nbdfuse itself for NBD.
  const pid = l.qemuNbdPid ?? l.nbdfusePid;
  const states = pid ? tcpStates(host, pid) : undefined;
  if (pid && states && !states.includes(ESTABLISHED)) {
    return l.qemuNbdPid
      ? { reason: `qemu-nbd (pid ${pid}) lost its iSCSI session${l.portal ? ` to ${l.portal}` : ""} and is reconnecting`, reconnecting: true }
      : { reason: `nbdfuse (pid ${pid}) lost its connection to the NBD server (nbdfuse does not reconnect)` };
  }
  return undefined;
}

/**
 * The full check of a userspace record: device, cheap part, the target's own answer, then one
 * O_DIRECT read through the FUSE file (the read goes through every layer but the loop device).
 */
export async function checkFuseChain(host: Host, rec: ConnectionRecord, probe: TargetProbe): Promise<PathHealth> {
  const path = rec.device || null;
  const bad = (reason: string): PathHealth => ({ path, healthy: false, reason });
  if (!(await host.loopFor(rec.device, rec.backingFile))) return bad(`${rec.device || "the loop device"} no longer maps ${rec.backingFile ?? "its FUSE file"}`);
  const fault = await chainFault(host, rec);
  if (fault) return bad(fault.reason);
  const unreachable = await probe();
  if (unreachable) return bad(unreachable);
  try {
    await host.run("dd", [`if=${rec.backingFile}`, "of=/dev/null", "bs=4096", "count=1", "iflag=direct"], { timeoutMs: PROBE_TIMEOUT_MS });
  } catch (err) {
    const msg = (err as Error).message;
    return bad(err instanceof CommandTimeoutError ? `a read through ${rec.backingFile} got no answer within ${PROBE_TIMEOUT_MS / 1000} s` : `a read through ${rec.backingFile} failed: ${lastLine(msg)}`);
  }
  return { path, healthy: true };
}

/**
 * Kills the helpers of a broken chain (SIGKILL: they hold nothing worth flushing, the target is
 * gone): the FUSE connection aborts and every pending and later request on the device fails
 * with EIO instead of waiting. Waits until they are gone.
 */
export async function killHelpers(host: Host, l: LowerLayers): Promise<void> {
  const pids: Array<[number, string]> = [];
  if (l.qemuNbdPid) pids.push([l.qemuNbdPid, "qemu-nbd"]);
  if (l.nbdfusePid) pids.push([l.nbdfusePid, "nbdfuse"]);
  for (const [pid, name] of pids) if (await host.alive(pid, name)) host.processes.kill(pid, "SIGKILL");
  for (const [pid, name] of pids) await host.waitUntil(`${name} ${pid} to exit after SIGKILL`, async () => !(await host.alive(pid, name)), Math.min(host.waitMs, 10_000));
}

/** The last non-empty line of a command's error: what the tool said. */
export function lastLine(text: string): string {
  return (
    text
      .trim()
      .split("\n")
      .filter((s) => s.trim())
      .pop() ?? text
  ).slice(0, 300);
}

const ESTABLISHED = "01";

/**
 * States (hex, as /proc/net/tcp writes them) of the TCP sockets `pid` holds (none: empty);
 * undefined when /proc cannot tell (a fake root in tests, a process gone meanwhile).
 */
function tcpStates(host: Host, pid: number): string[] | undefined {
  let inodes: Set<string>;
  try {
    inodes = new Set(
      fs
        .readdirSync(host.sys(`/proc/${pid}/fd`))
        .map((fd) => {
          try {
            return /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(host.sys(`/proc/${pid}/fd/${fd}`)))?.[1];
          } catch {
            return undefined; // closed meanwhile
          }
        })
        .filter((i): i is string => !!i),
    );
  } catch {
    return undefined;
  }
  const states: string[] = [];
  for (const table of ["tcp", "tcp6"]) {
    let text: string;
    try {
      text = fs.readFileSync(host.sys(`/proc/${pid}/net/${table}`), "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && inodes.has(f[9])) states.push(f[3]);
    }
  }
  return states;
}
