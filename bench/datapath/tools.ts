/**
 * bench/datapath helpers: the timed I/O (dd, qemu-img bench), cache dropping, and the extra
 * processes/devices the layer and other rows make (loop devices, qemu-nbd, qemu-storage-daemon), each
 * registered in a {@link Cleanup} so it is ended by pid / device name even when the bench fails.
 */
import { randomFillSync } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { run } from "../../provider/src/exec/run";

export const MiB = 1024 * 1024;
const LONG = 15 * 60_000;

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Things to undo, undone in reverse order; every step runs even when an earlier one failed. */
export class Cleanup {
  private readonly steps: Array<{ what: string; fn: () => Promise<unknown> | unknown }> = [];
  private running?: Promise<string[]>;

  add(what: string, fn: () => Promise<unknown> | unknown): void {
    if (!this.running) {
      this.steps.push({ what, fn });
      return;
    }
    // Made while cleaning up (a signal during setup): undo it as soon as possible.
    this.running = this.running.then(async (failed) => {
      try {
        await fn();
      } catch (err) {
        failed.push(`${what}: ${(err as Error).message}`);
      }
      return failed;
    });
  }

  /** Runs every step once (later calls wait for the first); returns the failures. */
  run(): Promise<string[]> {
    this.running ??= (async () => {
      const failed: string[] = [];
      while (this.steps.length) {
        const s = this.steps.pop()!;
        try {
          await s.fn();
        } catch (err) {
          failed.push(`${s.what}: ${(err as Error).message}`);
        }
      }
      return failed;
    })();
    return this.running;
  }
}

/** sync, then drop the page cache, dentries and inodes, so the next read comes from the disk. */
export async function dropCaches(): Promise<void> {
  await run("sync", [], { timeoutMs: LONG });
  fs.writeFileSync("/proc/sys/vm/drop_caches", "3\n");
}

export function canDropCaches(): boolean {
  try {
    fs.writeFileSync("/proc/sys/vm/drop_caches", "3\n");
    return true;
  } catch {
    return false;
  }
}

/** dd's own elapsed time ("… copied, 0.327 s, …"); with conv=fsync it includes the final fsync. */
function ddSeconds(stderr: string): number {
  const m = /copied, ([\d.]+(?:e-?\d+)?) s/.exec(stderr);
  if (!m) throw new Error(`could not read dd's time from: ${stderr.trim()}`);
  return Number(m[1]);
}

export interface DdOptions {
  bs: number;
  count: number;
  /** O_DIRECT on the file or device measured (the bench's default, both for raw and paths). */
  direct: boolean;
}

/** Sequential write of `src` onto `target`: O_DIRECT + fsync (or buffered + fdatasync). Seconds. */
export async function ddWrite(src: string, target: string, o: DdOptions): Promise<number> {
  const args = [`if=${src}`, `of=${target}`, `bs=${o.bs}`, `count=${o.count}`, "iflag=fullblock"];
  args.push(o.direct ? "oflag=direct" : "", o.direct ? "conv=fsync,notrunc" : "conv=fdatasync,notrunc");
  const r = await run("dd", args.filter(Boolean), { timeoutMs: LONG });
  return ddSeconds(r.stderr);
}

/** Sequential read of `target` to /dev/null (O_DIRECT or buffered). Seconds. */
export async function ddRead(target: string, o: DdOptions): Promise<number> {
  const args = [`if=${target}`, "of=/dev/null", `bs=${o.bs}`, `count=${o.count}`, ...(o.direct ? ["iflag=direct"] : [])];
  const r = await run("dd", args, { timeoutMs: LONG });
  return ddSeconds(r.stderr);
}

export interface QemuBenchOptions {
  /** The image: `["--image-opts", "driver=raw,file.driver=nbd,…"]` or `["-f", "raw", "iscsi://…"]`. */
  image: string[];
  bs: number;
  count: number;
  depth: number;
  write: boolean;
  /** Extra environment (libiscsi takes the CHAP password from LIBISCSI_CHAP_PASSWORD). */
  env?: Record<string, string>;
  secrets?: string[];
}

/**
 * `qemu-img bench`: sequential requests of `bs` with `depth` in flight from a FUSE-free, loop-free
 * client (QEMU's own NBD client, or libiscsi). Writes end with one flush inside the measured run
 * (`--flush-interval=count`), as dd's conv=fsync does. Seconds as qemu-img reports them (the I/O
 * only: no process start, no connect or login).
 */
export async function qemuBench(o: QemuBenchOptions): Promise<number> {
  const args = ["bench", "-c", String(o.count), "-s", String(o.bs), "-d", String(o.depth), "-t", "none"];
  if (o.write) args.push("-w", `--flush-interval=${o.count}`, "--pattern=171");
  args.push(...o.image);
  const r = await run("qemu-img", args, { timeoutMs: LONG, env: o.env, secrets: o.secrets });
  const m = /Run completed in ([\d.]+) seconds/.exec(r.stdout);
  if (!m) throw new Error(`could not read qemu-img bench's time from: ${r.stdout.trim()}`);
  return Number(m[1]);
}

/** `losetup -f --show [options] file`, detached again by the cleanup. */
export async function makeLoop(cleanup: Cleanup, file: string, options: string[] = []): Promise<string> {
  const dev = (await run("losetup", ["-f", "--show", ...options, file])).stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(dev)) throw new Error(`losetup gave no loop device for ${file}: ${dev}`);
  cleanup.add(`losetup -d ${dev}`, () => run("losetup", ["-d", dev]));
  return dev;
}

/** What `losetup --list` says of a loop device (did direct I/O take?). */
export async function loopInfo(dev: string): Promise<{ dio: boolean; logSec: number }> {
  const r = await run("losetup", ["--list", "--json", "-O", "NAME,DIO,LOG-SEC", dev]);
  const d = (JSON.parse(r.stdout) as { loopdevices: Array<Record<string, unknown>> }).loopdevices[0] ?? {};
  return { dio: d.dio === true || d.dio === 1 || d.dio === "1", logSec: Number(d["log-sec"] ?? 512) };
}

async function alive(pid: number, name: string): Promise<boolean> {
  try {
    const argv0 = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] ?? "";
    return path.basename(argv0) === name;
  } catch {
    return false;
  }
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Ends `pid` (a `name` process): SIGTERM, then SIGKILL when it does not go. */
async function stop(pid: number, name: string): Promise<void> {
  if (!(await alive(pid, name))) return;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  try {
    await waitFor(`${name} ${pid} to exit`, async () => !(await alive(pid, name)), 5_000);
  } catch {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
    await waitFor(`${name} ${pid} to exit after SIGKILL`, async () => !(await alive(pid, name)), 5_000);
  }
}

function mounted(dir: string): boolean {
  return fs
    .readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .some((l) => l.split(" ")[1] === dir);
}

/**
 * A qemu-nbd of our own over a unix socket (the connector's iSCSI relay, started the same way:
 * `qemu-nbd --fork --persistent --pid-file … -k SOCK [options] --image-opts …`). Ended by the
 * cleanup. The connector's own qemu-nbd takes one client (nbdfuse), hence a second one to measure
 * the relay without FUSE.
 */
export async function makeQemuNbd(cleanup: Cleanup, dir: string, imageOpts: string, objects: string[], options: string[] = []): Promise<{ socket: string; pid: number }> {
  fs.mkdirSync(dir, { recursive: true });
  const sock = path.join(dir, "qemu-nbd.sock");
  const pidFile = path.join(dir, "qemu-nbd.pid");
  await run("qemu-nbd", ["--fork", "--persistent", "--pid-file", pidFile, "-k", sock, ...options, ...objects, "--image-opts", imageOpts], { timeoutMs: 60_000 });
  const pid = Number(fs.readFileSync(pidFile, "utf8").trim());
  cleanup.add(`qemu-nbd ${pid}`, async () => {
    await stop(pid, "qemu-nbd");
    fs.rmSync(sock, { force: true });
  });
  return { socket: sock, pid };
}

const TICK = 100; // USER_HZ: /proc's clock ticks per second on Linux

/** CPU seconds (user + system, all threads) each process has used so far; gone processes count 0. */
export function processCpu(pids: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, pid] of Object.entries(pids)) {
    try {
      // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out[name] = (Number(f[11]) + Number(f[12])) / TICK; // utime, stime (fields 14, 15)
    } catch {
      out[name] = 0;
    }
  }
  return out;
}

/** CPU seconds the whole host has been busy (all CPUs; not idle, not iowait). */
export function hostBusy(): number {
  const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((x, y) => x + y, 0);
  return (total - f[3]! - f[4]!) / TICK;
}

/** `n` MiB of random bytes in `file` (tmpfs when we can: reading the source must cost ~nothing). */
export function makeSource(file: string, mib: number): void {
  const fd = fs.openSync(file, "w", 0o600);
  try {
    const buf = Buffer.alloc(MiB);
    for (let i = 0; i < mib; i++) fs.writeSync(fd, randomFillSync(buf));
  } finally {
    fs.closeSync(fd);
  }
}

/** Whether the first `bytes` of `a` and `b` are the same (cmp). */
export async function sameBytes(a: string, b: string, bytes: number): Promise<boolean> {
  try {
    await run("cmp", ["-n", String(bytes), a, b], { timeoutMs: LONG });
    return true;
  } catch (err) {
    process.stderr.write(`read-back of ${b}: ${(err as { stdout?: string }).stdout?.trim() || (err as Error).message}\n`);
    return false;
  }
}

export async function version(cmd: string, args: string[] = ["--version"]): Promise<string> {
  try {
    const r = await run(cmd, args);
    return `${r.stdout}${r.stderr}`.split("\n")[0]!.trim();
  } catch {
    return "?";
  }
}

/**
 * A qemu-storage-daemon of our own exporting one block node as a FUSE file (`--export type=fuse`):
 * the one-hop userspace chain for iSCSI (libiscsi and FUSE in one process, no NBD socket between).
 * `blockdevs` are the `--blockdev` values, the last one's node-name `disk` is exported.
 * Unmounted and ended by the cleanup. Returns the FUSE file and the daemon's pid.
 */
export async function makeQsdFuse(cleanup: Cleanup, bin: string, dir: string, blockdevs: string[], objects: string[]): Promise<{ file: string; pid: number }> {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "disk");
  fs.writeFileSync(file, "");
  const pidFile = path.join(dir, "qsd.pid");
  const args = [...objects, ...blockdevs.flatMap((b) => ["--blockdev", b]), "--export", `type=fuse,id=exp,node-name=disk,mountpoint=${file},writable=on`, "--pidfile", pidFile, "--daemonize"];
  await run(bin, args, { timeoutMs: 60_000 });
  const pid = Number(fs.readFileSync(pidFile, "utf8").trim());
  cleanup.add(`qemu-storage-daemon ${pid} on ${file}`, async () => {
    if (mounted(file)) await run("umount", [file]).catch(() => run("umount", ["-l", file]));
    await stop(pid, path.basename(bin));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(`qemu-storage-daemon to serve ${file}`, () => mounted(file));
  return { file, pid };
}
