/**
 * The `file` driver: a volume is a file `volume-<id>.img` in its pool's folder.
 * On a thin pool (the default) the file is sparse: creating or growing a volume allocates no
 * blocks. On a thick pool (extras `dataStorage.provisioningPolicy: Thick`) every block is
 * allocated when the volume is made or grown, with fallocate(2) (`fallocate -l SIZE`: fast, no
 * data written), so a volume the file system accepted cannot hit ENOSPC later; one it cannot
 * hold is refused (a UserError naming the pool and the sizes) and leaves no file behind.
 * (`fallocate --posix` is not used: util-linux 2.38 reports success when posix_fallocate fails.)
 *
 * Every entry checks the volume id (domain/volume-id.ts), and a volume file is always a regular
 * file: one that is a symbolic link is refused, never followed (opens use O_NOFOLLOW), so a link
 * in a pool cannot make the driver grow, clone or report a file elsewhere. Keeping pool folders
 * inside a storage node's root is the agent's job (agent/server.ts, drivers/confine.ts): locally
 * a pool may well live behind a symlink.
 *
 * Every call on a pool's folder is bounded (`fsTimeoutMs`, default 10 s), because a pool may sit
 * on a mount that stopped answering (a dead NFS server, a stopped FUSE daemon) and a call there
 * blocks for ever. The pool's file system is measured first with statfs(2) in a child process
 * (`stat -f`, killed at the bound; a FUSE or NFS wait ends on a fatal signal), so a dead mount is
 * found without parking one of libuv's four threads in it; the in-process calls that follow are
 * bounded too (domain/user-paths.ts `bounded`: the caller is freed, the thread stays blocked until
 * the mount answers). A timeout is a `FsTimeoutError` (drivers/confine.ts: TIMEOUT, retryable,
 * answered as such by a storage node); controller/pool-catalog.ts turns it into one line naming
 * the pool's property (`backends[0].pools[0].path`).
 */
import { constants } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import type { PoolConfig } from "../domain/backend";
import type { ProgressListener } from "../domain/progress";
import { checkVolumeId } from "../domain/volume-id";
import { makeFolder, PathTimeoutError } from "../domain/user-paths";
import { CommandFailedError, CommandTimeoutError, UserError } from "../errors";
import { run as defaultRun, type Runner } from "../exec/run";
import { boundedFsCall, FsTimeoutError, openNoFollow, refuseSymlink } from "./confine";
import type { PoolStats, VolumeAllocation, VolumeDriver } from "./volume-driver";

/** How long one file-system call on a pool's folder may take before it is a hung mount. */
export const POOL_FS_TIMEOUT_MS = 10_000;

/** statfs(2) figures of a file system, in bytes. */
export interface FsFigures {
  sizeBytes: number;
  /** Free blocks, the root reserve included (f_bfree). */
  freeBytes: number;
  /** Free blocks an ordinary writer may use (f_bavail). */
  availBytes: number;
}

export interface FileDriverOptions {
  /** The bound of each file-system call on a pool's folder; default {@link POOL_FS_TIMEOUT_MS}. */
  fsTimeoutMs?: number;
  /** Runs `stat -f` (the bounded statfs); default exec/run. Apart from `run` so recorded argv stay the volume commands. */
  probe?: Runner;
}

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/**
 * Whether the pool preallocates its volumes: extras `dataStorage.provisioningPolicy` is `Thick`
 * (any case), read as controller/pool-catalog.ts reads it for the scheduler. The pool travels
 * whole to a storage node's driver (agent/api.ts poolWireSchema), extras included.
 */
export function isThickPool(pool: Pick<PoolConfig, "extras">): boolean {
  const extras = pool.extras as PoolConfig["extras"] | undefined;
  return String(extras?.dataStorage?.provisioningPolicy ?? "Thin").toLowerCase() === "thick";
}

/** Sizes in messages a person reads (`32 MiB`, `1.5 GiB`, `12 KiB`), bytes kept alongside. */
export function human(bytes: number): string {
  if (bytes >= GiB) return `${+(bytes / GiB).toFixed(2)} GiB`;
  if (bytes >= MiB) return `${+(bytes / MiB).toFixed(2)} MiB`;
  return `${Math.round(bytes / 1024)} KiB`;
}

/** At most this many paths per `stat -f` child at discovery (its argv stays well under the kernel's limit). */
const STATFS_BATCH = 4000;
/** `stat -f` children at once at discovery (this machine may have two cores; the children mostly wait on spawn). */
const STATFS_CHILDREN = 4;
/** Paths asked one by one at once, after a batch that could not tell which path failed. */
const STATFS_ALONE = 16;

/** Why: `fn` on every item, at most `limit` at once; the first rejection is passed on once all started ones settled. */
export async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  });
  const results = await Promise.allSettled(workers);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}

/** How long a pool's mount, once it answered a statfs, is taken as alive before in-process calls (they stay bounded anyway). */
const PROBE_FRESH_MS = 5_000;

/** Why: fallocate(1) says why in its stderr only; LC_ALL=C keeps the words matchable. */
function noSpace(err: unknown): boolean {
  return err instanceof CommandFailedError && /No space left on device/i.test(err.stderr);
}

/** Where the file driver keeps a volume (also what a remote node's driver answers: agent/remote-node.ts). */
export function fileVolumePath(pool: Pick<PoolConfig, "path">, volumeId: string, field = "volumeId"): string {
  return path.join(pool.path, `volume-${checkVolumeId(field, volumeId)}.img`);
}

export class FileDriver implements VolumeDriver {
  readonly kind = "file";

  private readonly fsTimeoutMs: number;
  private readonly probe: Runner;

  constructor(
    private readonly run: Runner = defaultRun,
    options: FileDriverOptions = {},
  ) {
    this.fsTimeoutMs = options.fsTimeoutMs ?? POOL_FS_TIMEOUT_MS;
    this.probe = options.probe ?? defaultRun;
  }

  volumePath(pool: PoolConfig, volumeId: string): string {
    return fileVolumePath(pool, volumeId);
  }

  /**
   * statfs(2) of `at` in a child process, killed at the bound (see the header), or undefined
   * when `at` does not exist. A mount that does not answer is a {@link FsTimeoutError}.
   */
  private async statfs(at: string): Promise<FsFigures | undefined> {
    let out: string;
    const started = Date.now();
    try {
      out = (await this.probe("stat", ["-f", "-c", "%S %b %f %a", "--", at], { timeoutMs: this.fsTimeoutMs, env: { LC_ALL: "C" } })).stdout;
    } catch (err) {
      // A child killed by a signal once its whole bound had passed timed out, whatever execa's flag says (seen: a timed-out stat reported as merely killed).
      const killedLate = err instanceof CommandFailedError && err.signal !== undefined && Date.now() - started >= this.fsTimeoutMs;
      if (err instanceof CommandTimeoutError || killedLate) throw new FsTimeoutError(at, this.fsTimeoutMs, new PathTimeoutError(at, this.fsTimeoutMs, "statfs of").message, { cause: err });
      if (err instanceof CommandFailedError && /No such file or directory/.test(err.stderr)) return undefined;
      throw err;
    }
    const [frsize, blocks, bfree, bavail] = out.trim().split(/\s+/).map(Number);
    return { sizeBytes: blocks * frsize, freeBytes: bfree * frsize, availBytes: bavail * frsize };
  }

  /**
   * The file system of the pool's folder or, before the first volume made it, of the nearest
   * folder above (a preview makes no folder); bounded. Also the probe before in-process calls.
   */
  async poolFileSystem(pool: Pick<PoolConfig, "path">): Promise<FsFigures> {
    for (let at = path.resolve(pool.path); ; at = path.dirname(at)) {
      const s = await this.statfs(at);
      if (s) return s;
      if (path.dirname(at) === at) throw new Error(`statfs of ${pool.path}: no folder on its way exists`);
    }
  }

  /**
   * statfs(2) of many folders: a few `stat -f` children at once, up to {@link STATFS_BATCH} paths
   * each, each killed at the bound. A folder that does not exist is undefined. stat answers its
   * paths in order, line-buffered (`stdbuf -oL`): when a child times out, the first path it had
   * not answered is the one that hung (a {@link FsTimeoutError}), those before it are answered,
   * and those after it go to a child of their own. So each hung mount costs one bound, not two
   * (asking the batch's paths again one by one made a hung pool fail after twice the bound).
   * A child killed without its output (seen: a timed-out stat reported as merely killed) has its
   * paths asked one by one, as before.
   */
  private async statfsMany(paths: readonly string[]): Promise<Map<string, FsFigures | undefined | Error>> {
    const out = new Map<string, FsFigures | undefined | Error>();
    const batches: string[][] = [];
    // A name with a line break cannot be read back from stat's output: asked alone.
    const alone = paths.filter((p) => p.includes("\n"));
    const batchable = paths.filter((p) => !p.includes("\n"));
    // As few children as run at once (a spawn costs milliseconds, a statfs microseconds), within the batch's cap.
    const size = Math.min(STATFS_BATCH, Math.max(100, Math.ceil(batchable.length / STATFS_CHILDREN)));
    for (let i = 0; i < batchable.length; i += size) batches.push(batchable.slice(i, i + size));
    const one = async (p: string) => out.set(p, await this.statfs(p).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))));
    const ask = async (batch: string[]): Promise<void> => {
      let stdout: string;
      let stderr: string;
      const started = Date.now();
      try {
        ({ stdout, stderr } = await this.probe("stdbuf", ["-oL", "stat", "-f", "-c", "%S %b %f %a %n", "--", ...batch], { timeoutMs: this.fsTimeoutMs, env: { LC_ALL: "C" }, okExitCodes: [1] }));
      } catch (err) {
        const killedLate = err instanceof CommandFailedError && err.signal !== undefined && Date.now() - started >= this.fsTimeoutMs;
        if (err instanceof CommandTimeoutError) {
          const seen = parseStatLines(err.stdout);
          const told = err.stderr.split("\n").map((l) => /^stat: cannot read file system information for '(.*)': (.*)$/.exec(l.trim())).filter((m) => m !== null);
          const missing = new Set(told.filter((m) => m[2] === "No such file or directory").map((m) => m[1]));
          const hung = batch.findIndex((p) => !seen.has(p) && !told.some((m) => m[1] === p));
          for (const [p, f] of seen) out.set(p, f);
          for (const p of missing) out.set(p, undefined);
          // A path stat named with another fault before the hang, asked alone (it says which fault).
          await forEachLimit(batch.slice(0, Math.max(0, hung)).filter((p) => !seen.has(p) && !missing.has(p)), STATFS_ALONE, one);
          if (hung < 0) return;
          out.set(batch[hung], new FsTimeoutError(batch[hung], this.fsTimeoutMs, new PathTimeoutError(batch[hung], this.fsTimeoutMs, "statfs of").message, { cause: err }));
          if (hung + 1 < batch.length) await ask(batch.slice(hung + 1));
          return;
        }
        if (!killedLate) throw err;
        await forEachLimit(batch, STATFS_ALONE, one);
        return;
      }
      const seen = parseStatLines(stdout);
      // Not measured: missing (the usual case: no volume made the folder yet), or another fault.
      // When stat complained of nothing but missing folders, those are the missing ones; else each is asked alone, which tells which.
      const unanswered = batch.filter((p) => !seen.has(p));
      for (const [p, f] of seen) out.set(p, f);
      const onlyMissing = stderr.split("\n").every((l) => l.trim() === "" || /No such file or directory$/.test(l.trim()));
      if (onlyMissing) for (const p of unanswered) out.set(p, undefined);
      else await forEachLimit(unanswered, STATFS_ALONE, one);
    };
    await forEachLimit(batches, STATFS_CHILDREN, ask);
    await forEachLimit(alone, STATFS_ALONE, one);
    return out;
  }

  /**
   * {@link poolFileSystem} of many pools at once: each round measures every pool's current
   * folder in batches, and a pool whose folder does not exist goes one folder up for the next.
   */
  async poolFileSystems(pools: ReadonlyArray<Pick<PoolConfig, "path">>): Promise<Array<FsFigures | Error>> {
    const out = new Array<FsFigures | Error>(pools.length);
    let pending = pools.map((p, i) => ({ i, at: path.resolve(p.path) }));
    while (pending.length > 0) {
      const answers = await this.statfsMany([...new Set(pending.map((x) => x.at))]);
      const next: typeof pending = [];
      for (const x of pending) {
        const a = answers.get(x.at);
        if (a !== undefined) out[x.i] = a;
        else if (path.dirname(x.at) === x.at) out[x.i] = new Error(`statfs of ${pools[x.i].path}: no folder on its way exists`);
        else next.push({ i: x.i, at: path.dirname(x.at) });
      }
      pending = next;
    }
    return out;
  }

  async getPoolsStats(pools: readonly PoolConfig[]): Promise<Array<PoolStats | Error>> {
    const figures = await this.poolFileSystems(pools);
    const now = Date.now();
    return pools.map((pool, i) => {
      const s = figures[i];
      if (s instanceof Error) return s;
      this.answered.set(path.resolve(pool.path), now); // the mount answered: a create right after need not probe again
      return { totalBytes: pool.totalCapacityGib !== undefined ? pool.totalCapacityGib * GiB : s.sizeBytes, freeBytes: s.availBytes, fsBytes: s.sizeBytes, fsFreeBytes: s.freeBytes };
    });
  }

  private readonly answered = new Map<string, number>();
  /** The probe of a pool in flight: concurrent callers (the engine creates many volumes at once) share it. */
  private readonly probing = new Map<string, Promise<void>>();
  /** Pool folders this driver made or found (or is making), so a create does not make them again. */
  private readonly madeFolders = new Map<string, Promise<void>>();

  /**
   * Why: a statfs in a child before in-process calls, at most every few seconds per pool (refresh
   * reads every volume of a pool), and one at a time: each child costs the provider a fork, and
   * the engine's concurrent creates all found the answer stale at once.
   */
  private async probePool(pool: PoolConfig): Promise<void> {
    const at = path.resolve(pool.path);
    if (Date.now() - (this.answered.get(at) ?? -Infinity) < PROBE_FRESH_MS) return;
    let probe = this.probing.get(at);
    if (!probe) {
      probe = this.poolFileSystem(pool).then(() => {
        this.answered.set(at, Date.now());
      });
      this.probing.set(at, probe);
      void probe.catch(() => undefined).finally(() => this.probing.delete(at));
    }
    await probe;
  }

  /** Why: in-process calls on the pool's folder, freed at the bound (see the header). */
  private io<T>(pool: PoolConfig, what: string, fn: () => Promise<T>): Promise<T> {
    return boundedFsCall(pool.path, this.fsTimeoutMs, what, fn);
  }

  /**
   * Why: the pool's folder made (bounded, one level at a time) only after its mount answered a
   * statfs; once per folder and driver (a create that finds it gone since calls {@link remakePoolFolder}).
   */
  private async makePoolFolder(pool: PoolConfig): Promise<void> {
    await this.probePool(pool);
    const at = path.resolve(pool.path);
    let made = this.madeFolders.get(at);
    if (!made) {
      made = boundedFsCall(pool.path, this.fsTimeoutMs + 1000, "making the folder", () => makeFolder(pool.path, { mode: 0o755, timeoutMs: this.fsTimeoutMs }));
      this.madeFolders.set(at, made);
      // A folder that could not be made is tried again by the next create.
      made.catch(() => {
        if (this.madeFolders.get(at) === made) this.madeFolders.delete(at);
      });
    }
    await made;
  }

  /** Why: a pool folder removed behind our back (a clean-up, a mount gone) is made again, as the first create made it. */
  private async remakePoolFolder(pool: PoolConfig): Promise<void> {
    this.madeFolders.delete(path.resolve(pool.path));
    await this.makePoolFolder(pool);
  }

  async getPoolStats(pool: PoolConfig): Promise<PoolStats> {
    const s = await this.poolFileSystem(pool);
    return { totalBytes: pool.totalCapacityGib !== undefined ? pool.totalCapacityGib * GiB : s.sizeBytes, freeBytes: s.availBytes, fsBytes: s.sizeBytes, fsFreeBytes: s.freeBytes };
  }

  /**
   * Allocate every block of `file` up to `sizeBytes` (growing it to that size): fallocate(2)
   * mode 0 fills holes and keeps data. ENOSPC becomes a UserError naming the pool, the size
   * asked and the free space; the caller gives back what was allocated.
   * (By path: the file was opened O_NOFOLLOW just before; see confine.ts for what is left.)
   */
  private async allocate(pool: PoolConfig, volumeId: string, file: string, sizeBytes: number, fromBytes = 0): Promise<void> {
    if (sizeBytes === 0) return; // fallocate refuses a zero length; there is nothing to allocate
    try {
      await this.run("fallocate", ["-l", String(sizeBytes), "--", file], { timeoutMs: 600_000, env: { LC_ALL: "C" } });
    } catch (err) {
      if (!noSpace(err)) throw err;
      const free = await this.getPoolStats(pool).then((s) => s.freeBytes, () => undefined);
      const what = fromBytes > 0 ? `grow thick volume ${volumeId} from ${human(fromBytes)} to ${human(sizeBytes)} (${sizeBytes} bytes)` : `hold thick volume ${volumeId} of ${human(sizeBytes)} (${sizeBytes} bytes)`;
      const freeText = free === undefined ? "" : `: ${human(free)} (${free} bytes) free`;
      throw new UserError("NO_VALID_POOL", `pool ${pool.name} (${pool.path}) cannot ${what}: no space left on its file system${freeText}`, "sizeGib", { cause: err });
    }
  }

  async createVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    const file = this.volumePath(pool, volumeId);
    const thick = isThickPool(pool);
    await this.makePoolFolder(pool);
    const create = () => this.io(pool, "creating a volume file in", () => openNoFollow(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, "volumeId", 0o666));
    let handle: fs.FileHandle;
    try {
      handle = await create().catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== "ENOENT") throw err;
        await this.remakePoolFolder(pool);
        return create();
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      // Idempotent: an existing file of the right size is the volume we made before (O_EXCL also
      // fails on a symlink, dangling or not: that is refused, not adopted).
      const st = await this.io(pool, "reading a volume file in", async () => {
        await refuseSymlink(file, "volumeId");
        return fs.lstat(file);
      });
      if (st.size === sizeBytes) return;
      throw new UserError("CONFLICT", `volume file ${file} already exists with ${st.size} bytes, ${sizeBytes} asked`);
    }
    try {
      if (thick) {
        await handle.close();
        await this.allocate(pool, volumeId, file, sizeBytes);
        await this.io(pool, "checking a volume file in", () => refuseSymlink(file, "volumeId"));
      } else {
        await this.io(pool, "sizing a volume file in", async () => {
          await handle.truncate(sizeBytes);
          await handle.close();
        });
      }
    } catch (err) {
      await handle.close().catch(() => undefined);
      await this.io(pool, "removing a volume file in", () => fs.rm(file, { force: true })).catch(() => undefined);
      throw err;
    }
  }

  async cloneVolume(source: { pool: PoolConfig; volumeId: string }, pool: PoolConfig, volumeId: string, sizeBytes: number, onProgress?: ProgressListener): Promise<void> {
    const from = fileVolumePath(source.pool, source.volumeId, "source.volumeId");
    const to = this.volumePath(pool, volumeId);
    await this.probePool(source.pool);
    await this.io(source.pool, "reading a volume file in", () => refuseSymlink(from, "source.volumeId"));
    await this.makePoolFolder(pool);
    await this.io(pool, "reading a volume file in", () => refuseSymlink(to, "volumeId"));
    const tmp = `${to}.partial`;
    // cp keeps holes (SEEK_DATA) and reflinks where the file system can: a clone costs only the data.
    // --no-dereference: a source swapped for a link after the check is copied as a link (and
    // refused below), never read through; --remove-destination: a link left at tmp is replaced,
    // not written through.
    try {
      await this.io(pool, "removing a partial copy in", () => fs.rm(tmp, { force: true }));
      const copied = this.watchCopy(from, tmp, onProgress);
      try {
        await this.run("cp", ["--sparse=always", "--reflink=auto", "--no-dereference", "--remove-destination", "--", from, tmp], { timeoutMs: 3_600_000 });
      } finally {
        await copied.stop();
      }
      const copiedBytes = await this.io(pool, "sizing a copy in", async () => {
        const fh = await openNoFollow(tmp, constants.O_RDWR, "source.volumeId");
        try {
          const copied = (await fh.stat()).size;
          if (copied < sizeBytes) await fh.truncate(sizeBytes);
          return copied;
        } finally {
          await fh.close();
        }
      });
      // A clone on a thick pool owns all its blocks too (the copy kept the source's holes).
      if (isThickPool(pool)) await this.allocate(pool, volumeId, tmp, Math.max(copiedBytes, sizeBytes));
      await this.io(pool, "renaming a copy in", () => fs.rename(tmp, to));
    } catch (err) {
      await this.io(pool, "removing a partial copy in", () => fs.rm(tmp, { force: true })).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Report a running copy's progress: cp writes in order and seeks over holes, so the size the copy
   * has reached is how far it got. Polled 4 times a second; a stat that fails is skipped (the
   * copy's own errors are cp's to report). `stop` reports the end when the copy is whole.
   */
  private watchCopy(from: string, to: string, onProgress: ProgressListener | undefined): { stop(): Promise<void> } {
    if (!onProgress) return { stop: async () => undefined };
    const total = fs.stat(from).then((st) => st.size, () => 0);
    const poll = () => void Promise.all([total, fs.stat(to).then((st) => st.size, () => 0)]).then(([t, done]) => onProgress({ doneBytes: done, totalBytes: t }));
    poll();
    const timer = setInterval(poll, 250);
    return {
      stop: async () => {
        clearInterval(timer);
        const [t, done] = await Promise.all([total, fs.stat(to).then((st) => st.size, () => 0)]);
        if (t > 0 && done >= t) onProgress({ doneBytes: t, totalBytes: t });
      },
    };
  }

  async extendVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    const file = this.volumePath(pool, volumeId);
    await this.probePool(pool);
    const fh = await this.io(pool, "opening a volume file in", () => openNoFollow(file, constants.O_RDWR, "volumeId"));
    try {
      const st = await this.io(pool, "reading a volume file in", () => fh.stat());
      if (sizeBytes < st.size) throw new UserError("INVALID_INPUT", `cannot shrink ${file} from ${st.size} to ${sizeBytes} bytes`, "sizeGib");
      if (sizeBytes === st.size) return;
      if (!isThickPool(pool)) {
        await this.io(pool, "growing a volume file in", () => fh.truncate(sizeBytes));
        return;
      }
      try {
        await this.allocate(pool, volumeId, file, sizeBytes, st.size);
      } catch (err) {
        // A failed fallocate may have grown the file part way: back to the size it had.
        await fh.truncate(st.size).catch(() => undefined);
        throw err;
      }
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  async deleteVolume(pool: PoolConfig, volumeId: string): Promise<void> {
    const file = this.volumePath(pool, volumeId);
    await this.probePool(pool);
    await this.io(pool, "removing a volume file in", async () => {
      // rm would only unlink a link, but a link here is not ours to remove: say so instead.
      await refuseSymlink(file, "volumeId");
      await fs.rm(file, { force: true });
      await fs.rm(`${file}.partial`, { force: true });
    });
  }

  async getVolumeSizeBytes(pool: PoolConfig, volumeId: string): Promise<number | undefined> {
    return (await this.getVolumeAllocation(pool, volumeId))?.sizeBytes;
  }

  /** The file's size and its allocated blocks (st_blocks, 512-byte units), or undefined when it is gone. */
  async getVolumeAllocation(pool: PoolConfig, volumeId: string): Promise<VolumeAllocation | undefined> {
    const file = this.volumePath(pool, volumeId);
    await this.probePool(pool);
    return this.io(pool, "reading a volume file in", async () => {
      try {
        const st = await fs.lstat(file);
        if (st.isSymbolicLink()) await refuseSymlink(file, "volumeId");
        return { sizeBytes: st.size, allocatedBytes: st.blocks * 512 };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw err;
      }
    });
  }
}

/** `stat -f -c "%S %b %f %a %n"` lines, by path. */
function parseStatLines(stdout: string): Map<string, FsFigures> {
  const seen = new Map<string, FsFigures>();
  for (const line of stdout.split("\n")) {
    const m = /^(\d+) (\d+) (\d+) (\d+) (.*)$/.exec(line);
    if (!m) continue;
    const [frsize, blocks, bfree, bavail] = m.slice(1, 5).map(Number);
    seen.set(m[5], { sizeBytes: blocks * frsize, freeBytes: bfree * frsize, availBytes: bavail * frsize });
  }
  return seen;
}
