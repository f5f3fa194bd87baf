/**
 * A clone whose source is on another backend than its copy, when one of them is RBD: a volume
 * of a `file` backend cloned onto an `rbd` one, the other way round, or between two Ceph
 * clusters. Neither driver can do it alone (the rbd driver clones inside its own cluster, the
 * file driver copies files), so the copy is made by qemu-img, which reads and writes both a
 * file and an rbd path (domain/rbd-path.ts) with nothing but the conf and user in them.
 *
 * The copy is made into a volume the destination driver has just created (thin and all zero),
 * so `--target-is-zero` lets qemu-img skip the source's holes: the copy stays thin. A copy that
 * fails leaves the destination for the caller to delete (the controller does).
 */
import type { PoolConfig } from "../domain/backend";
import type { ProgressListener } from "../domain/progress";
import { type Runner, run as defaultRun } from "../exec/run";
import type { VolumeDriver } from "./volume-driver";

/** One side of a copy: the driver of its backend, its pool, the volume. */
export interface VolumeRef {
  driver: VolumeDriver;
  pool: PoolConfig;
  volumeId: string;
}

/**
 * Make `to` (not existing yet) a copy of `from`, grown to `sizeBytes`. Both volumes must be
 * reachable from this machine (a file path here, or an rbd path): a storage node's volume is not.
 */
export async function copyAcrossBackends(from: VolumeRef, to: VolumeRef, sizeBytes: number, onProgress?: ProgressListener, runner: Runner = defaultRun): Promise<void> {
  const sourceBytes = await from.driver.getVolumeSizeBytes(from.pool, from.volumeId);
  if (sourceBytes === undefined) throw new Error(`sds internal error: the source volume ${from.volumeId} of a clone is gone`);
  await to.driver.createVolume(to.pool, to.volumeId, Math.max(sizeBytes, sourceBytes));
  const src = from.driver.volumePath(from.pool, from.volumeId);
  const dst = to.driver.volumePath(to.pool, to.volumeId);
  // qemu-img takes "rbd:…" as the rbd protocol; a file path is given as it is (an absolute path
  // cannot be mistaken for a protocol prefix).
  await runner("qemu-img", ["convert", "-n", "--target-is-zero", "-f", "raw", "-O", "raw", "-W", src, dst], { timeoutMs: 6 * 3_600_000 });
  onProgress?.({ doneBytes: sourceBytes, totalBytes: sourceBytes });
}
