/**
 * The host as the connectors see it: its loop devices, mounts, processes and block devices, the
 * commands they run and the daemons they start (all injectable, so unit tests run on a fake root
 * with recorded argv), the connection records, and what the host can do (kernel initiators or the
 * userspace paths).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { BackendError, CommandFailedError, DeviceBusyError, invalidInput } from "../errors";
import { run as defaultRun, type Runner } from "../exec/run";
import { DaemonRecords } from "../exec/daemons";
import { procProcesses, type ProcessTable, spawnDetached, type Spawner, waitUntil } from "../exec/processes";
import { type ConnectionRecord, DEFAULT_STATE_DIR, RecordStore } from "./records";

/** A loop device as `losetup --json --list` reports it. */
export interface LoopDevice {
  name: string;
  backFile: string;
  ro: boolean;
}

/** Parses `losetup --json --list` (an empty output means no loop devices). */
export function parseLosetupJson(text: string): LoopDevice[] {
  if (!text.trim()) return [];
  const j = JSON.parse(text) as { loopdevices?: Array<Record<string, unknown>> };
  return (j.loopdevices ?? []).map((d) => ({
    name: String(d.name),
    // losetup marks a backing file removed after attaching with " (deleted)"
    backFile: String(d["back-file"] ?? "").replace(/ \(deleted\)$/, ""),
    ro: d.ro === true || d.ro === 1 || d.ro === "1",
  }));
}

/** Everything a connector needs from the host; every part injectable. */
export interface HostOptions {
  /** State folder (records, FUSE mounts, sockets). Default /run/sds. */
  stateDir?: string;
  /** Command runner (unit tests pass a recorder). */
  run?: Runner;
  /** Detached process starter (unit tests pass a recorder). */
  spawn?: Spawner;
  /** Process table (unit tests pass a fake). */
  processes?: ProcessTable;
  /** Root of the file system for /proc, /sys, /etc and /dev checks (unit tests pass a fake root). */
  fsRoot?: string;
  /** Milliseconds to wait for devices, mounts and processes. Default 30 s. */
  waitMs?: number;
  /** How to wait between retries (unit tests pass a recorder). Default: setTimeout. */
  sleep?: (ms: number) => Promise<void>;
}

/** losetup's words (strerror of EBUSY, EAGAIN) for a loop device another caller holds or is setting up right now. */
const LOOP_BUSY = /Device or resource busy|Resource temporarily unavailable/;

/**
 * Why stderr and not the message: losetup exits 1 for every failure, and the message also holds
 * the argv (a file name may contain any words); its stderr carries the errno's text.
 */
function loopBusy(err: unknown): boolean {
  return err instanceof CommandFailedError && LOOP_BUSY.test(err.stderr);
}
/** Backoff of {@link Host.attachLoop}: five tries over about 1.5 s. */
const LOOP_RETRY_MS = [100, 200, 400, 800];

/** The host as the connectors see it. */
export class Host {
  readonly stateDir: string;
  readonly records: RecordStore;
  /** The helpers (qemu-nbd, nbdfuse) started here, each recorded before it starts (exec/daemons.ts). */
  readonly daemons: DaemonRecords;
  readonly run: Runner;
  readonly spawn: Spawner;
  readonly processes: ProcessTable;
  readonly fsRoot: string;
  readonly waitMs: number;
  readonly sleep: (ms: number) => Promise<void>;

  constructor(o: HostOptions = {}) {
    this.stateDir = path.resolve(o.stateDir ?? DEFAULT_STATE_DIR);
    this.records = new RecordStore(this.stateDir);
    this.daemons = new DaemonRecords(path.join(this.stateDir, "daemons"));
    this.run = o.run ?? defaultRun;
    this.spawn = o.spawn ?? spawnDetached;
    this.processes = o.processes ?? procProcesses;
    this.fsRoot = o.fsRoot ?? "/";
    this.waitMs = o.waitMs ?? 30_000;
    this.sleep = o.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  /** A host path under the (possibly fake) root. */
  sys(p: string): string {
    return path.join(this.fsRoot, p);
  }

  exists(p: string): boolean {
    return fs.existsSync(this.sys(p));
  }

  async loops(): Promise<LoopDevice[]> {
    return parseLosetupJson((await this.run("losetup", ["--json", "--list"])).stdout);
  }

  /**
   * `losetup -f --show [--read-only] file` → /dev/loopN; with `device`,
   * `losetup [--read-only] /dev/loopN file` (attach at that device, so a reconnect keeps the
   * path a user has). Why the retries: losetup -f picks a free device, then binds it; another
   * losetup between the two (a concurrent attach, another tool), or udev still probing a device
   * just detached, makes it fail with EBUSY/EAGAIN. Only those errors are retried, with backoff.
   */
  async attachLoop(file: string, readOnly: boolean, device?: string, options: { directIo?: boolean } = {}): Promise<string> {
    if (device !== undefined && !/^\/dev\/loop\d+$/.test(device)) throw invalidInput("device", `${JSON.stringify(device)} is not a loop device (/dev/loopN)`);
    // Direct I/O over a FUSE file (bench/datapath): requests reach nbdfuse whole and in parallel,
    // not as 128 KiB readahead, and the volume is not cached twice. Not for plain files (the local
    // connector): measured again for issue 14 (interleaved with raw O_DIRECT, 1 MiB), a direct-I/O
    // loop over the volume file wrote at 1.08-1.25 and read at 0.74-0.77 of raw, the buffered one
    // at 1.31-1.34 and 0.81-1.06: its writeback and readahead batch what dd sends one at a time.
    const ro = [...(readOnly ? ["--read-only"] : []), ...(options.directIo ? ["--direct-io=on"] : [])];
    const args = device ? [...ro, device, file] : ["-f", "--show", ...ro, file];
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await this.run("losetup", args);
        if (device) return device;
        const dev = r.stdout.trim();
        if (!/^\/dev\/loop\d+$/.test(dev)) throw new BackendError("COMMAND_FAILED", `losetup gave no loop device for ${file}: ${JSON.stringify(dev)}`, false);
        return dev;
      } catch (err) {
        if (attempt >= LOOP_RETRY_MS.length || !loopBusy(err)) throw err;
        await this.sleep(LOOP_RETRY_MS[attempt]);
      }
    }
  }

  /**
   * `losetup -d dev` when `dev` still maps `file`, then wait (at most `timeoutMs`) until the
   * device lets go of the file. Why the wait: when anyone else has the device open at that
   * moment, the kernel only marks it to go at its last close, and since Linux 5.17 even that
   * clearing runs later, on a workqueue, after the I/O in flight drained; a holder that just got
   * its EIO (a broken chain) or a short-lived opener lets go within moments, more slowly on a
   * loaded machine. Past the wait it returns: whoever checks the paths next sees what is left.
   */
  async detachLoop(dev: string, file: string | undefined, timeoutMs = Math.min(this.waitMs, 30_000)): Promise<void> {
    if (!(await this.loopFor(dev, file))) return;
    await this.run("losetup", ["-d", dev]);
    await this.waitUntil(`${dev} to be released`, async () => !(await this.loopFor(dev, file)), timeoutMs).catch(() => undefined);
  }

  /** The live loop device `dev` when it still maps `file`. */
  async loopFor(dev: string | undefined, file: string | undefined): Promise<LoopDevice | undefined> {
    if (!dev || !file) return undefined;
    return (await this.loops()).find((l) => l.name === dev && l.backFile === file);
  }

  /** [source, mount point] pairs from /proc/mounts (octal escapes decoded). */
  mountTable(): Array<[string, string]> {
    let text: string;
    try {
      text = fs.readFileSync(this.sys("/proc/mounts"), "utf8");
    } catch {
      return [];
    }
    const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    return text
      .split("\n")
      .filter(Boolean)
      .map((l) => l.split(" "))
      .map((f) => [unescape(f[0]), unescape(f[1] ?? "")] as [string, string]);
  }

  mounts(): string[] {
    return this.mountTable().map((m) => m[1]);
  }

  isMounted(dir: string | undefined): boolean {
    return !!dir && this.mounts().includes(dir);
  }

  /** Whether `pid` is alive and its argv[0] ends with `name` (pids get reused). */
  async alive(pid: number | undefined, name: string): Promise<boolean> {
    if (!pid) return false;
    const argv = await this.processes.argv(pid);
    return !!argv && path.basename(argv[0] ?? "") === name;
  }

  /** Something holds the device: mounted, or a kernel holder (dm, md, …) on it. */
  inUse(dev: string): string | undefined {
    const m = this.mountTable().find((e) => e[0] === dev);
    if (m) return `${dev} is mounted on ${m[1]}`;
    const holders = this.sys(`/sys/block/${path.basename(dev)}/holders`);
    try {
      const h = fs.readdirSync(holders);
      if (h.length) return `${dev} is held by ${h.join(", ")}`;
    } catch {
      // no such device or no holders folder
    }
    return undefined;
  }

  /** Size of a block device in bytes (`blockdev --getsize64`). */
  async deviceSize(dev: string): Promise<number> {
    const r = await this.run("blockdev", ["--getsize64", dev]);
    const n = Number(r.stdout.trim());
    if (!Number.isFinite(n)) throw new BackendError("COMMAND_FAILED", `blockdev gave no size for ${dev}: ${r.stdout}`, false);
    return n;
  }

  async waitUntil(what: string, check: () => Promise<boolean> | boolean, timeoutMs = this.waitMs): Promise<void> {
    await waitUntil(what, async () => check(), timeoutMs);
  }
}

/**
 * Refuses to take a device away under its user to reconnect it (extendVolume on the paths that
 * cannot grow live): a {@link DeviceBusyError} (INVALID_STATE) naming the device and what holds it.
 */
export function checkIdleForReconnect(host: Host, rec: ConnectionRecord): void {
  const why = host.inUse(rec.device);
  if (why) throw new DeviceBusyError(rec.device, `cannot show the new size of volume ${rec.volumeId} on ${rec.device} now: ${why}; the new size shows after the next reconnect (disconnect, then connect again)`, why);
}

/** What this host can do (os-brick's connector capabilities). */
export interface Capabilities {
  iscsiKernel: boolean;
  nbdKernel: boolean;
  userspace: boolean;
}

/** Whether `name` is an executable on `PATH` (plus /sbin, /usr/sbin), under `fsRoot`. */
export function onPath(name: string, fsRoot = "/", pathVar = process.env.PATH ?? ""): boolean {
  const dirs = pathVar.split(path.delimiter).filter(Boolean).concat(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
  return dirs.some((d) => {
    try {
      fs.accessSync(path.join(fsRoot, d, name), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * Kernel iSCSI = `iscsiadm` on PATH and the iscsi_tcp module loaded; kernel NBD = /dev/nbd0's
 * block device exists; userspace = losetup and nbdfuse (qemu-nbd too, for iSCSI) on PATH.
 */
export function probe(fsRoot = "/", pathVar = process.env.PATH ?? ""): Capabilities & { qemuNbd: boolean } {
  const has = (p: string) => fs.existsSync(path.join(fsRoot, p));
  return {
    iscsiKernel: onPath("iscsiadm", fsRoot, pathVar) && has("/sys/module/iscsi_tcp"),
    nbdKernel: has("/sys/block/nbd0"),
    userspace: onPath("losetup", fsRoot, pathVar) && onPath("nbdfuse", fsRoot, pathVar),
    qemuNbd: onPath("qemu-nbd", fsRoot, pathVar),
  };
}

/** The initiator name of this host: /etc/iscsi/initiatorname.iscsi, else one of our own. */
export function initiatorName(fsRoot: string, hostname: string): string {
  try {
    const m = /^InitiatorName=(\S+)/m.exec(fs.readFileSync(path.join(fsRoot, "/etc/iscsi/initiatorname.iscsi"), "utf8"));
    if (m) return m[1];
  } catch {
    // no open-iscsi here
  }
  return `iqn.2026-11.io.sds:initiator:${hostname}`;
}
