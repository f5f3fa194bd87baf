/**
 * The `file` driver: a volume is a sparse file `volume-<id>.img` in its pool's folder.
 * Thin by nature: creating or growing a volume allocates no blocks.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import type { PoolConfig } from "../controller/backends";
import { UserError } from "../errors";
import { run as defaultRun, type Runner } from "../exec/run";
import type { PoolStats, VolumeDriver } from "./volume-driver";

const GiB = 1024 ** 3;

/** Where the file driver keeps a volume (also what a remote node's driver answers: agent/remote-node.ts). */
export function fileVolumePath(pool: Pick<PoolConfig, "path">, volumeId: string): string {
  return path.join(pool.path, `volume-${volumeId}.img`);
}

export class FileDriver implements VolumeDriver {
  readonly kind = "file";

  constructor(private readonly run: Runner = defaultRun) {}

  volumePath(pool: PoolConfig, volumeId: string): string {
    return fileVolumePath(pool, volumeId);
  }

  async getPoolStats(pool: PoolConfig): Promise<PoolStats> {
    await fs.mkdir(pool.path, { recursive: true });
    const s = await fs.statfs(pool.path);
    const fsTotal = s.blocks * s.bsize;
    const free = s.bavail * s.bsize;
    return { totalBytes: pool.totalCapacityGib !== undefined ? pool.totalCapacityGib * GiB : fsTotal, freeBytes: free };
  }

  async createVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    await fs.mkdir(pool.path, { recursive: true });
    const file = this.volumePath(pool, volumeId);
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(file, "wx");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      // Idempotent: an existing file of the right size is the volume we made before.
      const st = await fs.stat(file);
      if (st.size === sizeBytes) return;
      throw new UserError("CONFLICT", `volume file ${file} already exists with ${st.size} bytes, ${sizeBytes} asked`);
    }
    try {
      await handle.truncate(sizeBytes);
    } catch (err) {
      await handle.close();
      await fs.rm(file, { force: true });
      throw err;
    }
    await handle.close();
  }

  async cloneVolume(source: { pool: PoolConfig; volumeId: string }, pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    await fs.mkdir(pool.path, { recursive: true });
    const from = this.volumePath(source.pool, source.volumeId);
    const to = this.volumePath(pool, volumeId);
    const tmp = `${to}.partial`;
    // cp keeps holes (SEEK_DATA) and reflinks where the file system can: a clone costs only the data.
    try {
      await this.run("cp", ["--sparse=always", "--reflink=auto", "--", from, tmp], { timeoutMs: 3_600_000 });
      const st = await fs.stat(tmp);
      if (st.size < sizeBytes) await fs.truncate(tmp, sizeBytes);
      await fs.rename(tmp, to);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  async extendVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    const file = this.volumePath(pool, volumeId);
    const st = await fs.stat(file);
    if (sizeBytes < st.size) throw new UserError("INVALID_INPUT", `cannot shrink ${file} from ${st.size} to ${sizeBytes} bytes`, "sizeGib");
    if (sizeBytes > st.size) await fs.truncate(file, sizeBytes);
  }

  async deleteVolume(pool: PoolConfig, volumeId: string): Promise<void> {
    await fs.rm(this.volumePath(pool, volumeId), { force: true });
    await fs.rm(`${this.volumePath(pool, volumeId)}.partial`, { force: true });
  }

  async getVolumeSizeBytes(pool: PoolConfig, volumeId: string): Promise<number | undefined> {
    try {
      return (await fs.stat(this.volumePath(pool, volumeId))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }
}
