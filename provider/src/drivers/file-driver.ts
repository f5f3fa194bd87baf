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
 */
import { constants } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import type { PoolConfig } from "../domain/backend";
import { checkVolumeId } from "../domain/volume-id";
import { CommandFailedError, UserError } from "../errors";
import { run as defaultRun, type Runner } from "../exec/run";
import { openNoFollow, refuseSymlink } from "./confine";
import type { PoolStats, VolumeDriver } from "./volume-driver";

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

/** Why: sizes in messages a person reads (`32 MiB`, `1.5 GiB`), bytes kept alongside. */
function human(bytes: number): string {
  if (bytes >= GiB) return `${+(bytes / GiB).toFixed(2)} GiB`;
  return `${+(bytes / MiB).toFixed(2)} MiB`;
}

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

  constructor(private readonly run: Runner = defaultRun) {}

  volumePath(pool: PoolConfig, volumeId: string): string {
    return fileVolumePath(pool, volumeId);
  }

  /** The pool's file system, measured at its folder or, before the first volume made it, the nearest folder above (a preview makes no folder). */
  async getPoolStats(pool: PoolConfig): Promise<PoolStats> {
    let at = path.resolve(pool.path);
    while (!(await fs.stat(at).then(() => true, () => false)) && path.dirname(at) !== at) at = path.dirname(at);
    const s = await fs.statfs(at);
    const fsTotal = s.blocks * s.bsize;
    const free = s.bavail * s.bsize;
    return { totalBytes: pool.totalCapacityGib !== undefined ? pool.totalCapacityGib * GiB : fsTotal, freeBytes: free };
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
    await fs.mkdir(pool.path, { recursive: true });
    let handle: fs.FileHandle;
    try {
      handle = await openNoFollow(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, "volumeId", 0o666);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      // Idempotent: an existing file of the right size is the volume we made before (O_EXCL also
      // fails on a symlink, dangling or not: that is refused, not adopted).
      await refuseSymlink(file, "volumeId");
      const st = await fs.lstat(file);
      if (st.size === sizeBytes) return;
      throw new UserError("CONFLICT", `volume file ${file} already exists with ${st.size} bytes, ${sizeBytes} asked`);
    }
    try {
      if (thick) {
        await handle.close();
        await this.allocate(pool, volumeId, file, sizeBytes);
        await refuseSymlink(file, "volumeId");
      } else {
        await handle.truncate(sizeBytes);
        await handle.close();
      }
    } catch (err) {
      await handle.close().catch(() => undefined);
      await fs.rm(file, { force: true });
      throw err;
    }
  }

  async cloneVolume(source: { pool: PoolConfig; volumeId: string }, pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    const from = fileVolumePath(source.pool, source.volumeId, "source.volumeId");
    const to = this.volumePath(pool, volumeId);
    await refuseSymlink(from, "source.volumeId");
    await refuseSymlink(to, "volumeId");
    await fs.mkdir(pool.path, { recursive: true });
    const tmp = `${to}.partial`;
    // cp keeps holes (SEEK_DATA) and reflinks where the file system can: a clone costs only the data.
    // --no-dereference: a source swapped for a link after the check is copied as a link (and
    // refused below), never read through; --remove-destination: a link left at tmp is replaced,
    // not written through.
    try {
      await fs.rm(tmp, { force: true });
      await this.run("cp", ["--sparse=always", "--reflink=auto", "--no-dereference", "--remove-destination", "--", from, tmp], { timeoutMs: 3_600_000 });
      const fh = await openNoFollow(tmp, constants.O_RDWR, "source.volumeId");
      let copiedBytes: number;
      try {
        copiedBytes = (await fh.stat()).size;
        if (copiedBytes < sizeBytes) await fh.truncate(sizeBytes);
      } finally {
        await fh.close();
      }
      // A clone on a thick pool owns all its blocks too (the copy kept the source's holes).
      if (isThickPool(pool)) await this.allocate(pool, volumeId, tmp, Math.max(copiedBytes, sizeBytes));
      await fs.rename(tmp, to);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  async extendVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    const file = this.volumePath(pool, volumeId);
    const fh = await openNoFollow(file, constants.O_RDWR, "volumeId");
    try {
      const st = await fh.stat();
      if (sizeBytes < st.size) throw new UserError("INVALID_INPUT", `cannot shrink ${file} from ${st.size} to ${sizeBytes} bytes`, "sizeGib");
      if (sizeBytes === st.size) return;
      if (!isThickPool(pool)) {
        await fh.truncate(sizeBytes);
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
      await fh.close();
    }
  }

  async deleteVolume(pool: PoolConfig, volumeId: string): Promise<void> {
    const file = this.volumePath(pool, volumeId);
    // rm would only unlink a link, but a link here is not ours to remove: say so instead.
    await refuseSymlink(file, "volumeId");
    await fs.rm(file, { force: true });
    await fs.rm(`${file}.partial`, { force: true });
  }

  async getVolumeSizeBytes(pool: PoolConfig, volumeId: string): Promise<number | undefined> {
    const file = this.volumePath(pool, volumeId);
    try {
      const st = await fs.lstat(file);
      if (st.isSymbolicLink()) await refuseSymlink(file, "volumeId");
      return st.size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }
}
