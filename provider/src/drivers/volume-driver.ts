/**
 * A backend driver: owns the bytes of volumes in its pools. Drivers never call targets; the
 * controller composes a driver with a target.
 *
 * Contract (every implementation, checked by test/contract):
 * - `createVolume` is idempotent: a volume that already exists with the same size is success.
 * - `deleteVolume` of a volume that is gone is success.
 * - `extendVolume` only grows; a smaller size is an error.
 * - `getVolumeSizeBytes` answers `undefined` when the volume is gone (out-of-band deletes).
 * - Nothing half-made is left behind when a call fails.
 * - Every call on the pool's folder is bounded in time: a hung mount fails the call, it never
 *   holds the caller forever.
 */
import type { PoolConfig } from "../domain/backend";
import type { ProgressListener } from "../domain/progress";

export interface PoolStats {
  /** Total capacity in bytes (the pool's `totalCapacityGib`, else the file system's size). */
  totalBytes: number;
  /** Free bytes on the device right now (what an ordinary writer may still use: statfs f_bavail). */
  freeBytes: number;
  /** The file system's own size in bytes, whatever `totalCapacityGib` says (capacity reports). */
  fsBytes?: number;
  /** Free bytes, the file system's root reserve included (statfs f_bfree): what a writer running as root may still use. */
  fsFreeBytes?: number;
}

/** How much of a volume's bytes its pool holds already (file driver: the file's allocated blocks). */
export interface VolumeAllocation {
  sizeBytes: number;
  /** Bytes with blocks behind them; a write into the rest needs new blocks from the pool. */
  allocatedBytes: number;
}

export interface VolumeDriver {
  /** The driver name as written in the backends file (`file`). */
  readonly kind: string;
  /**
   * Report the pool's capacity, measured at its folder or the nearest existing one above (the
   * file driver makes nothing; a storage node's agent makes the folder inside its root).
   * Bounded: a pool on a mount that does not answer fails within the driver's time bound (a
   * `FsTimeoutError`, drivers/confine.ts) instead of hanging.
   */
  getPoolStats(pool: PoolConfig): Promise<PoolStats>;
  /**
   * {@link getPoolStats} of many pools at once (discovery at start: 10,000 pools must not cost
   * 10,000 probes one after another), each pool's answer or its error in the order given, every
   * pool bounded as there. Optional: without it, the caller asks pool by pool.
   */
  getPoolsStats?(pools: readonly PoolConfig[]): Promise<Array<PoolStats | Error>>;
  createVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void>;
  /**
   * Make `volumeId` a copy of `source` (possibly on another pool), then grow it to `sizeBytes`.
   * `onProgress` hears how many of the source's bytes are copied, when the driver can tell (a
   * storage node's driver, behind its agent, reports nothing).
   */
  cloneVolume(source: { pool: PoolConfig; volumeId: string }, pool: PoolConfig, volumeId: string, sizeBytes: number, onProgress?: ProgressListener): Promise<void>;
  extendVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void>;
  deleteVolume(pool: PoolConfig, volumeId: string): Promise<void>;
  getVolumeSizeBytes(pool: PoolConfig, volumeId: string): Promise<number | undefined>;
  /**
   * How much of the volume is allocated, or undefined when it is gone. Optional: a driver that
   * cannot tell (a storage node's, through its agent) leaves it out, and capacity reports skip
   * the volume-level findings (controller/capacity.ts).
   */
  getVolumeAllocation?(pool: PoolConfig, volumeId: string): Promise<VolumeAllocation | undefined>;
  /** Where the volume's bytes are on the storage node (a file for the file driver). */
  volumePath(pool: PoolConfig, volumeId: string): string;
}
