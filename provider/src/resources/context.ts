/** What handlers get from the server: the controller (after Configure) and the engine's log. */
import type { VolumePath } from "../connectors/connector";
import type { Attachments } from "../controller/attachments";
import type { Controller } from "../controller/controller";
import type { Replication } from "../controller/replication";
import type { VolumeUpdates } from "../controller/update-volume";
import type { ProgressListener } from "../domain/progress";
import { progressListener } from "../domain/progress-throttle";

export type Severity = "debug" | "info" | "warning" | "error";

/**
 * Progress of `what` on the resource `urn`, as the user sees it in `pulumi up`: status messages
 * and, every 10% or 5 s, an info line (domain/progress-throttle.ts throttles).
 */
export function reportProgress(ctx: Pick<ProviderContext, "log" | "status">, urn: string, what: string): ProgressListener {
  return progressListener(what, { status: (m) => ctx.status(m, urn), info: (m) => ctx.log("info", m, urn) });
}

export interface ProviderContext {
  /** The configured controller; waits for Configure and start-up discovery. */
  controller(): Promise<Controller>;
  /** Replication pairs and their sync, on the same store as the controller. */
  replication(): Promise<Replication>;
  /** The update of a volume (grow through replica, targets and devices; in-place changes) as one use case. */
  volumeUpdates(): Promise<VolumeUpdates>;
  /**
   * Attach/detach, on the same store as the controller. The first use reconciles the exports the
   * state knows (made again after a target daemon restart), except with `reconcile: false`: a
   * preview only looks.
   */
  attachments(options?: { reconcile?: boolean }): Promise<Attachments>;
  /** Path discovery: the paths on a host (this machine for `localhost`, else its sds-agent), of one volume or all. */
  hostPaths(host: string, volumeId?: string): Promise<VolumePath[]>;
  /** The names in the provider's `hosts` (hosts reached through their sds-agent). */
  hostNames(): string[];
  /** Send a message to the engine, shown to the user in `pulumi up`. */
  log(severity: Severity, message: string, urn?: string): void;
  /** A status message on a resource's row in `pulumi up` (ephemeral: the next one replaces it). */
  status(message: string, urn: string): void;
  /**
   * Volumes a preview turns multiAttach on (ids): an attachment previewed after the volume's
   * update (it depends on the volume) may then be a second one, as it may in the `up`.
   */
  readonly previewedMultiAttach: Set<string>;
}
