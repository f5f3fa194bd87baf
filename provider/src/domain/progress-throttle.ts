/**
 * Progress of long operations (a clone, an initial replication sync, a failback resync) as the
 * user sees it in `pulumi up`: a status message (ephemeral: the interactive display shows it on
 * the resource's row) and an info line every 10% or 5 s (what a non-interactive run, i.e. a CI
 * log, prints). The controller reports as often as it likes; {@link ProgressThrottle} decides what
 * is worth a message, so the engine gets a few per second at most.
 */
import type { Progress, ProgressListener } from "./progress";

/** What one progress report is worth: a status message, an info line, both or neither. */
export interface ProgressMessages {
  status?: string;
  info?: string;
}

export interface ThrottleOptions {
  /** Least time between two status messages. Default 500 ms. */
  statusEveryMs?: number;
  /** An info line whenever the percentage crosses a multiple of this. Default 10. */
  infoEveryPercent?: number;
  /** …or when this much time passed since the last one. Default 5000 ms. */
  infoEveryMs?: number;
  /** Clock in ms, for tests. */
  now?: () => number;
}

const MiB = 1024 * 1024;

function size(bytes: number): string {
  return bytes >= 10 * 1024 * MiB ? `${(bytes / (1024 * MiB)).toFixed(1)} GiB` : `${Math.round(bytes / MiB)} MiB`;
}

/**
 * Turns a stream of {@link Progress} reports into few, readable messages:
 * `<what>: 40% (205 MiB of 512 MiB, 96 MiB/s)`. The rate is the average since the first report.
 * The last report (done = total) always gives both a status and an info line.
 */
export class ProgressThrottle {
  private readonly now: () => number;
  private readonly statusEveryMs: number;
  private readonly infoEveryPercent: number;
  private readonly infoEveryMs: number;
  private startedAt: number | undefined;
  private lastStatusAt = -Infinity;
  private lastInfoAt = -Infinity;
  private lastInfoStep = -1;
  private finished = false;

  constructor(
    private readonly what: string,
    o: ThrottleOptions = {},
  ) {
    this.now = o.now ?? (() => performance.now());
    this.statusEveryMs = o.statusEveryMs ?? 500;
    this.infoEveryPercent = o.infoEveryPercent ?? 10;
    this.infoEveryMs = o.infoEveryMs ?? 5000;
  }

  /** The messages this report is worth. */
  next(p: Progress): ProgressMessages {
    if (this.finished || p.totalBytes <= 0) return {};
    const t = this.now();
    if (this.startedAt === undefined) {
      this.startedAt = t;
      // The start is a step of its own: 0% is not worth a line, the next step is.
      this.lastInfoAt = t;
      this.lastInfoStep = 0;
    }
    const done = Math.min(p.doneBytes, p.totalBytes);
    const percent = Math.floor((done / p.totalBytes) * 100);
    const last = done >= p.totalBytes;
    const seconds = (t - this.startedAt) / 1000;
    const rate = seconds > 0 ? `, ${size(done / seconds)}/s` : "";
    const text = `${this.what}: ${percent}% (${size(done)} of ${size(p.totalBytes)}${rate})`;
    const out: ProgressMessages = {};
    if (last || t - this.lastStatusAt >= this.statusEveryMs) {
      out.status = text;
      this.lastStatusAt = t;
    }
    const step = Math.floor(percent / this.infoEveryPercent);
    if (last || step > this.lastInfoStep || t - this.lastInfoAt >= this.infoEveryMs) {
      out.info = text;
      this.lastInfoAt = t;
      this.lastInfoStep = step;
    }
    if (last) this.finished = true;
    return out;
  }
}

/** Where progress messages go: the engine's status line of a resource, and its log. */
export interface ProgressSink {
  status(message: string): void;
  info(message: string): void;
}

/**
 * A listener for the controller that reports `what` through `sink`, throttled. An info line also
 * takes the resource's row in the display, so a report worth both sends only the info line.
 */
export function progressListener(what: string, sink: ProgressSink, o?: ThrottleOptions): ProgressListener {
  const throttle = new ProgressThrottle(what, o);
  return (p) => {
    const m = throttle.next(p);
    if (m.info !== undefined) sink.info(m.info);
    else if (m.status !== undefined) sink.status(m.status);
  };
}
