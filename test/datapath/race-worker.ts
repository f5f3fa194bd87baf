/**
 * One runner of test/datapath/shared-target-race-pg.test.ts, in a process of its own: its own
 * PostgresStore on the shared state, its own Controller and Attachments, the env's tgtd. Driven
 * over stdin/stdout, one JSON object a line: a {@link RaceRequest} in, a {@link RaceReply} out
 * (after `{"ready":true}` once the store is open); requests run as they come, concurrently.
 * stdout carries nothing else. stdin closing closes the store and ends the process.
 *
 * Run: `node -r ts-node/register/transpile-only test/datapath/race-worker.ts <env dir> <portal>`.
 * The state's URL (with its password) and the sealing key come in the environment only
 * (SDS_RACE_STATE_URL, SDS_RACE_SECRET_KEY), never in argv, and are removed from it at once so
 * no process this one starts inherits them.
 */
import * as path from "node:path";
import * as readline from "node:readline";
import { Attachments, type ConnectionInfo } from "../../provider/src/controller/attachments";
import { Controller } from "../../provider/src/controller/controller";
import { SecretBox } from "../../provider/src/controller/secret-box";
import { PostgresStore } from "../../provider/src/store/postgres-store";
import { localTargets } from "../../provider/src/targets/local-targets";
import { envBackends } from "./harness";

/** What the export lock covers in this request's Attachments ("host": the negative run only). */
export type LockScope = "target" | "host";

export type RaceRequest =
  | { id: number; op: "attach"; scope: LockScope; owner: string; volumeId: string; host: string; initiator: string }
  | { id: number; op: "detach"; scope: LockScope; attachmentId: string };

export type RaceReply =
  | { id: number; ok: true; attachmentId?: string; connectionInfo?: ConnectionInfo }
  | { id: number; ok: false; error: string };

async function main(): Promise<void> {
  const [dir, portal] = process.argv.slice(2);
  const url = process.env.SDS_RACE_STATE_URL;
  const secretKey = process.env.SDS_RACE_SECRET_KEY;
  delete process.env.SDS_RACE_STATE_URL;
  delete process.env.SDS_RACE_SECRET_KEY;
  if (!dir || !portal || !url || !secretKey) throw new Error("usage: race-worker.ts <env dir> <portal>, with SDS_RACE_STATE_URL and SDS_RACE_SECRET_KEY in the environment");

  const store = await PostgresStore.open(url, { onLockLost: (m) => process.stderr.write(`race-worker: ${m}\n`) });
  const controller = new Controller({ store, backends: envBackends(dir, portal, { protocol: "iscsi", sharedTargets: true, chap: true }) });
  await controller.discover();
  const targets = localTargets(path.join(dir, "run"));
  const box = SecretBox.forState({ secretKey });
  const attachments = new Map<LockScope, Attachments>();
  const of = (scope: LockScope) => {
    const a = attachments.get(scope) ?? new Attachments({ store, controller, targets, box, exportLockScope: scope });
    attachments.set(scope, a);
    return a;
  };
  const reply = (r: RaceReply | { ready: true }) => process.stdout.write(`${JSON.stringify(r)}\n`);

  const serve = async (req: RaceRequest): Promise<RaceReply> => {
    try {
      if (req.op === "attach") {
        const r = await of(req.scope).attach(req.owner, { volumeId: req.volumeId, host: req.host, mode: "rw", connector: { initiator: req.initiator } });
        return { id: req.id, ok: true, attachmentId: r.row.id, connectionInfo: r.connectionInfo };
      }
      await of(req.scope).detach(req.attachmentId);
      return { id: req.id, ok: true };
    } catch (err) {
      return { id: req.id, ok: false, error: err instanceof Error ? err.message : String(err) };
    }
  };

  const inFlight = new Set<Promise<void>>();
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (!line.trim()) return;
    const p = serve(JSON.parse(line) as RaceRequest).then((r) => void reply(r));
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  });
  reply({ ready: true });
  await new Promise((r) => lines.once("close", r));
  await Promise.all(inFlight);
  await store.close();
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`race-worker: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
