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
 */
import type { PoolConfig } from "../domain/backend";

export interface PoolStats {
  /** Total capacity in bytes (the pool's `totalCapacityGib`, else the file system's size). */
  totalBytes: number;
  /** Free bytes on the device right now. */
  freeBytes: number;
}

export interface VolumeDriver {
  /** The driver name as written in the backends file (`file`). */
  readonly kind: string;
  /** Prepare the pool (create its folder) and report its capacity. */
  getPoolStats(pool: PoolConfig): Promise<PoolStats>;
  createVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void>;
  /** Make `volumeId` a copy of `source` (possibly on another pool), then grow it to `sizeBytes`. */
  cloneVolume(source: { pool: PoolConfig; volumeId: string }, pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void>;
  extendVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void>;
  deleteVolume(pool: PoolConfig, volumeId: string): Promise<void>;
  getVolumeSizeBytes(pool: PoolConfig, volumeId: string): Promise<number | undefined>;
  /** Where the volume's bytes are on the storage node (a file for the file driver). */
  volumePath(pool: PoolConfig, volumeId: string): string;
}
