/**
 * The agent's health loop: every few seconds the host's userspace chains are probed, and one
 * that stays broken is fenced (its I/O fails at once instead of hanging in D state while
 * libiscsi waits forever for a lost target). The provider's next refresh then reports the
 * attachment broken and its `up` puts the device back on the same path. Kernel initiators bound
 * their own waits (replacement_timeout) and need no loop. One pass at a time; a slow pass delays
 * the next instead of piling up.
 */
import type { Connector } from "../connectors/connector";

export interface HealthLoop {
  stop(): void;
}

export function startHealthLoop(o: { intervalMs: number; connectors: () => Connector[]; log: (line: string) => void; strikes?: number }): HealthLoop {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const pass = async () => {
    let connectors: Connector[];
    try {
      connectors = o.connectors();
    } catch (err) {
      o.log(`sds-agent: health check cannot run: ${(err as Error).message}`);
      return;
    }
    for (const c of connectors) {
      if (!c.sweep) continue;
      try {
        for (const f of await c.sweep(o.strikes ?? 2)) {
          o.log(`sds-agent: fenced ${f.path} (volume ${f.volumeId}, ${f.mode}): ${f.reason}; its I/O fails until the provider's next up repairs it`);
        }
      } catch (err) {
        o.log(`sds-agent: health check of ${c.protocol} connections failed: ${(err as Error).message}`);
      }
    }
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => void pass().finally(schedule), o.intervalMs);
    timer.unref();
  };
  if (o.intervalMs > 0) schedule();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
