/**
 * Capacity truth at refresh: how full a volume's pool really is, and whether writes through the
 * volume's devices fail (or are about to fail) for want of space.
 *
 * The figures come from the pool's file system (statfs, bounded: drivers/file-driver.ts) and
 * from each volume file's allocated blocks, measured at the moment of the refresh. Thresholds:
 * - *near full*: less than {@link NEAR_FULL_FRACTION} (10 %) of the file system free. A fraction,
 *   not a fixed amount, so a small pool and a large one both warn before their last writes; the
 *   warning says the figures, so a reader can judge a large pool's 10 % themselves.
 * - *full*: less than {@link FULL_SLACK_BYTES} (1 MiB) free for ordinary writers (f_bavail).
 * - *provisioned past its free space* (thin pools): the blocks the pool's volumes may still
 *   claim (size minus allocated, summed) exceed what is free: writes will fail before every
 *   volume is written once.
 *
 * What the ENOSPC finding proves, precisely: the pool's file system has (almost) no free blocks
 * and this volume's file has blocks it does not own yet, so the next write through its device
 * into such a region needs a block the file system cannot give, and fails with ENOSPC at the file
 * (EIO at the device: the loop driver, nbdkit and tgtd all pass it up as an I/O error). It does
 * not prove a write has already failed: sds does not see the writes (they go from the host's
 * kernel to the target). Writes into regions the file already owns still succeed. When the file
 * system keeps a root reserve (ext4's 5 %), a writer running as root (loop devices, tgtd, nbdkit
 * started by sds as root) may still use it: the finding says so and how much there is.
 */
import type { BackendConfig, PoolConfig } from "../domain/backend";
import { human } from "../drivers/file-driver";
import type { VolumeAllocation } from "../drivers/volume-driver";
import type { VolumeRow } from "../store/store";
import type { PoolCatalog } from "./pool-catalog";

/** Below this fraction of its file system free, a pool is near full. */
export const NEAR_FULL_FRACTION = 0.1;
/** Below this many bytes free for ordinary writers, a pool is full. */
export const FULL_SLACK_BYTES = 1024 ** 2;

const GiB = 1024 ** 3;

export { human };

/** A pool's usage as measured now. */
export interface PoolUsage {
  /** `backend/pool`. */
  poolId: string;
  backendName: string;
  poolName: string;
  path: string;
  thin: boolean;
  /** The file system's size. */
  fsBytes: number;
  /** Free for ordinary writers (f_bavail). */
  freeBytes: number;
  /** Free with the root reserve (f_bfree); undefined when the driver cannot tell. */
  rootFreeBytes?: number;
  /** Sum of the sizes of the pool's volumes. */
  provisionedBytes: number;
  /** Blocks the pool's volumes may still claim (size − allocated, summed); undefined when the driver cannot tell. */
  unallocatedBytes?: number;
}

/** The volume-level figures: its size and allocation. */
export type VolumeUsage = VolumeAllocation;

/** What refresh says about a volume's pool and the volume. */
export interface CapacityReport {
  usage: PoolUsage;
  volume?: VolumeUsage;
  /** Warnings for the volume's refresh (near full, provisioned past free, ENOSPC). */
  warnings: string[];
  /** Set when writes into the volume's unallocated blocks fail with ENOSPC (see the header). */
  enospc?: string;
}

function poolText(u: PoolUsage): string {
  return `pool ${u.poolId} (backend ${u.backendName}, ${u.path})`;
}

function usedText(u: PoolUsage): string {
  const used = u.fsBytes - u.freeBytes;
  const pct = u.fsBytes > 0 ? ` (${+((used / u.fsBytes) * 100).toFixed(1)} % used)` : "";
  return `${human(u.freeBytes)} free, ${human(used)} used of ${human(u.fsBytes)}${pct}`;
}

/**
 * Pure: the findings on a pool (near full, provisioned past free) and on one of its volumes
 * (ENOSPC). Order: ENOSPC first, it is the one that breaks writes.
 */
export function capacityFindings(u: PoolUsage, volume?: { name: string; id: string; usage?: VolumeUsage }): { warnings: string[]; enospc?: string } {
  const warnings: string[] = [];
  let enospc: string | undefined;
  const full = u.freeBytes < FULL_SLACK_BYTES;
  const v = volume?.usage;
  if (full && volume && v && v.allocatedBytes < v.sizeBytes) {
    const reserve = u.rootFreeBytes !== undefined && u.rootFreeBytes - u.freeBytes >= FULL_SLACK_BYTES ? `; a writer running as root may first use the file system's root reserve (${human(u.rootFreeBytes - u.freeBytes)})` : "";
    enospc =
      `ENOSPC: ${poolText(u)} is full (${usedText(u)}): writes into the ${human(v.sizeBytes - v.allocatedBytes)} of volume ${volume.name} (${volume.id}, ${human(v.sizeBytes)}) ` +
      `that have no blocks yet fail with ENOSPC (EIO through its devices)${reserve}; free space in the pool or grow its file system`;
    warnings.push(enospc);
  } else if (full) {
    warnings.push(`${poolText(u)} is full: ${usedText(u)}`);
  } else if (u.freeBytes < u.fsBytes * NEAR_FULL_FRACTION) {
    warnings.push(`${poolText(u)} is near full: ${usedText(u)} (warned below ${NEAR_FULL_FRACTION * 100} % free)`);
  }
  if (u.thin && u.unallocatedBytes !== undefined && u.unallocatedBytes > u.freeBytes) {
    warnings.push(
      `${poolText(u)} is provisioned past its free space: its thin volumes (${human(u.provisionedBytes)} in all) may still claim ${human(u.unallocatedBytes)}, ` +
        `and ${human(u.freeBytes)} is free; their writes fail with ENOSPC once it is used`,
    );
  }
  return { warnings, enospc };
}

/** Thin unless the pool's extras say Thick (as the scheduler reads it). */
function isThin(pool: PoolConfig): boolean {
  return String(pool.extras.dataStorage?.provisioningPolicy ?? "Thin").toLowerCase() !== "thick";
}

/** Measure a pool now: its file system and the allocation of each of its volumes (when the driver can tell). */
export async function measurePool(catalog: PoolCatalog, backend: BackendConfig, pool: PoolConfig, poolId: string): Promise<{ usage: PoolUsage; volumes: Map<string, VolumeUsage> }> {
  const driver = catalog.driverFor(backend);
  const stats = await driver.getPoolStats(pool);
  const rows = await catalog.volumesInPool(poolId);
  const volumes = new Map<string, VolumeUsage>();
  let unallocated: number | undefined;
  if (driver.getVolumeAllocation) {
    unallocated = 0;
    for (const r of rows) {
      const a = await driver.getVolumeAllocation(pool, r.id);
      if (!a) continue;
      volumes.set(r.id, a);
      unallocated += Math.max(0, a.sizeBytes - a.allocatedBytes);
    }
  }
  const usage: PoolUsage = {
    poolId,
    backendName: backend.name,
    poolName: pool.name,
    path: pool.path,
    thin: isThin(pool),
    fsBytes: stats.fsBytes ?? stats.totalBytes,
    freeBytes: stats.freeBytes,
    rootFreeBytes: stats.fsFreeBytes,
    provisionedBytes: rows.reduce((n, r) => n + r.sizeGib * GiB, 0),
    unallocatedBytes: unallocated,
  };
  return { usage, volumes };
}

/** The capacity report of a volume's pool and of the volume (refresh of a volume or an attachment). */
export async function volumeCapacity(catalog: PoolCatalog, row: Pick<VolumeRow, "id" | "name" | "poolId" | "backendName">): Promise<CapacityReport> {
  const { backend, pool } = catalog.locate(row);
  const { usage, volumes } = await measurePool(catalog, backend, pool, row.poolId);
  const volume = volumes.get(row.id);
  return { usage, volume, ...capacityFindings(usage, { name: row.name, id: row.id, usage: volume }) };
}
