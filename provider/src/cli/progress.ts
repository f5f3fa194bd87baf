/**
 * Progress of a long operation on stderr (`sds replication sync` of a large initial sync): the
 * percent and rate the controller reports (domain/progress.ts), throttled as `pulumi up` shows
 * them (domain/progress-throttle.ts). On a terminal one line is rewritten in place; elsewhere (a log,
 * `--progress` in a timer's journal) a line every 10% or 5 s.
 */
import type { ProgressReporter } from "../domain/progress";
import { ProgressThrottle } from "../domain/progress-throttle";

/** A reporter for pair `pairId`'s syncs, writing to `stream` (a terminal rewrites its line). */
export function stderrProgress(pairId: string, stream: NodeJS.WriteStream = process.stderr): ProgressReporter {
  return (phase) => {
    const throttle = new ProgressThrottle(`${phase} sync of pair ${pairId}`);
    return (p) => {
      const m = throttle.next(p);
      const last = p.totalBytes > 0 && p.doneBytes >= p.totalBytes;
      if (stream.isTTY) {
        if (m.status) stream.write(`\r${m.status}\x1b[K${last ? "\n" : ""}`);
      } else if (m.info) {
        stream.write(`${m.info}\n`);
      }
    };
  };
}
