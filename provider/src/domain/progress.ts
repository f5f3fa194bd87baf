/**
 * How far a long operation got (a clone's copy, a replication sync's scan), reported by the layer
 * doing the work to whoever shows it. The controller knows nothing of Pulumi: the resource layer
 * turns these into the engine's status messages and log lines (domain/progress-throttle.ts).
 */

export interface Progress {
  /** Bytes of the volume done so far (copied, or scanned and sent where they differed). */
  doneBytes: number;
  /** Bytes in all; 0 when the total is not known yet. */
  totalBytes: number;
}

/** Called as work advances, possibly very often: cheap, never throws, never awaited. */
export type ProgressListener = (p: Progress) => void;

/** Makes a listener for one named phase of an operation (e.g. `initial sync`, `failback resync`). */
export type ProgressReporter = (phase: string) => ProgressListener;
