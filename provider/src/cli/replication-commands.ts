/**
 * `sds replication status` and `sds replication sync` (alias `sds replicate`, which systemd
 * timers and scripts call: deploy/sds-replicate.timer).
 *
 * `sync` syncs every enabled replication pair on its primary whose last sync is older than its
 * rpoSeconds (every such pair with --all, one with --pair), as the embedded controller has no
 * agent to do it on a timer: run it from a timer, or by hand before a planned failover. A state
 * with no pairs is an error (exit 2): a timer pointed at the wrong stack must fail, not report
 * success forever. Prints one line per pair; exits 1 when a sync failed.
 */
import { UserError } from "../errors";
import type { Log } from "../compose/composition";
import { type StackFlags, stderrLog, withStack } from "./open-stack";
import { inventoryOf } from "./inventory-commands";
import { age, bytes, printRows } from "./output";
import { stderrProgress } from "./progress";

export function replicationStatus(flags: StackFlags & { json?: boolean }): Promise<number> {
  return withStack(flags, async (s) => {
    const rows = await (await inventoryOf(s)).pairs();
    printRows(
      rows,
      [
        { header: "PAIR", value: (p) => p.id },
        { header: "PRIMARY", value: (p) => p.primaryVolume ?? p.primaryVolumeId },
        { header: "TARGET", value: (p) => p.targetBackend },
        { header: "ACTIVE", value: (p) => p.activeSide },
        { header: "ENABLED", value: (p) => p.enabled },
        { header: "STATUS", value: (p) => p.status },
        { header: "RPO", value: (p) => `${p.rpoSeconds}s`, right: true },
        { header: "LAST_SYNC", value: (p) => (p.lastSyncAt ? `${age(p.lagSeconds ?? undefined)} ago` : "never") },
        { header: "DUE", value: (p) => p.due },
        { header: "SENT", value: (p) => bytes(p.bytesTransferred), right: true },
        { header: "LAST_ERROR", value: (p) => p.lastError },
      ],
      { json: flags.json, empty: "no replication pairs" },
    );
    return 0;
  });
}

/** What `sds replication sync` was asked. */
export type SyncFlags = StackFlags & { all?: boolean; pair?: string; progress?: boolean; json?: boolean };

export function replicationSync(flags: SyncFlags): Promise<number> {
  // The sync's own lines ("replication <id> (scheduled, forward): N bytes sent …") are the
  // command's output, as they always were; warnings go to stderr.
  const log: Log = (severity, m) => (severity === "info" ? !flags.json && process.stdout.write(`${m}\n`) : stderrLog(severity, m));
  return withStack(
    flags,
    async (s) => {
      if (!flags.json) process.stdout.write(`sds replicate: state ${s.parts.stateShown}, backends from ${s.config.backendsSource}${s.stack.stack ? ` (stack ${s.stack.stack})` : ""}\n`);
      const pairs = await s.parts.store.listPairs();
      if (pairs.length === 0) {
        throw new UserError(
          "NOT_FOUND",
          `nothing to sync: the state ${s.parts.stateShown} holds no replication pairs; run sds in the folder of the Pulumi project that deployed them, or pass --project DIR, --stack NAME or --state URL`,
          "stateUrl",
        );
      }
      if (flags.pair !== undefined && !pairs.some((p) => p.id === flags.pair)) {
        throw new UserError("NOT_FOUND", `--pair: no replication pair "${flags.pair}" in this state (sds replication status lists them)`, "pair");
      }
      await s.parts.allowWrites();
      const replication = await s.parts.replication();
      // Percent and rate on stderr: asked for, or stderr is a terminal (a person waiting).
      const progress = flags.progress || process.stderr.isTTY ? (id: string) => stderrProgress(id) : undefined;
      let done: Array<{ id: string; ok: boolean; bytes?: number; error?: string }>;
      if (flags.pair !== undefined) {
        try {
          const r = await replication.sync(flags.pair, { reason: "manual", progress: progress?.(flags.pair) });
          done = [{ id: flags.pair, ok: true, bytes: r.bytesTransferred }];
        } catch (err) {
          done = [{ id: flags.pair, ok: false, error: (err as Error).message }];
        }
      } else {
        done = await replication.syncDue({ all: flags.all, progress });
      }
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ synced: done.filter((d) => d.ok), failed: done.filter((d) => !d.ok) }, null, 2)}\n`);
      } else {
        for (const d of done) if (!d.ok) process.stdout.write(`replication ${d.id}: FAILED: ${d.error}\n`);
        process.stdout.write(`sds replicate: ${done.filter((d) => d.ok).length} pair(s) synced, ${done.filter((d) => !d.ok).length} failed\n`);
      }
      return done.some((d) => !d.ok) ? 1 : 0;
    },
    { log },
  );
}
