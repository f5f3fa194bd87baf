/**
 * Shared-target locking across machines' worth of processes, on PostgreSQL: the race of
 * shared-target-race.test.ts (two hosts attach and detach volumes of one shared iSCSI target on a
 * real tgtd, the same three steps a round, the same checks with qemu-io and tgtd's own lists),
 * but hostX's calls run in one OS process and hostY's in another (race-worker.ts), each with its
 * own PostgresStore on one shared database (one state, one state id), its own Controller and
 * Attachments: the export lock they contend on is a PostgreSQL session advisory lock. This test
 * process creates the volumes, checks, and cleans up between rounds on a third store.
 *
 * The negative run scopes the export lock per host (round 1's bug): each host's calls are in a
 * process of their own, so nothing excludes them, and it must see failures, or the test proves
 * nothing. SDS_RACE_ROUNDS sets the rounds (default 200). The state's URL (with its password)
 * and the sealing key reach the workers through their environment only.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as path from "node:path";
import * as readline from "node:readline";
import type { Attachments, ConnectionInfo } from "../../provider/src/controller/attachments";
import { PostgresStore } from "../../provider/src/store/postgres-store";
import { type PostgresCluster, postgresSkipReason, startPostgres } from "../helpers/postgres";
import { repoRoot } from "../helpers/provider-process";
import { type Env, cannotRun, makeEnv, qemuIo } from "./harness";
import type { LockScope, RaceReply, RaceRequest } from "./race-worker";

jest.setTimeout(3_600_000);
const why = cannotRun() ?? postgresSkipReason();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const rounds = Number(process.env.SDS_RACE_ROUNDS ?? 200);
const HOSTS = { hostX: "iqn.2026-11.test.host:x", hostY: "iqn.2026-11.test.host:y" } as const;
type HostName = keyof typeof HOSTS;
const spec = (name: string) => ({ name, sizeGib: 1, multiAttach: false, description: "", metadata: {} });
/** Longer than a worker's lock timeout (120 s): a call that outlives it is stuck, not waiting. */
const CALL_TIMEOUT_MS = 150_000;

/** A request as the test writes it: the worker numbers it. */
type Request = { [Op in RaceRequest["op"]]: Omit<Extract<RaceRequest, { op: Op }>, "id"> }[RaceRequest["op"]];
interface Attached {
  attachmentId: string;
  connectionInfo: ConnectionInfo;
}

/** A race-worker.ts process: one host's runner, called over its stdin/stdout. */
class Worker {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, { resolve(r: RaceReply): void; reject(e: Error): void }>();
  private next = 1;
  private stderr = "";
  readonly ready: Promise<void>;

  constructor(name: string, env: Env, stateUrl: string, secretKey: string) {
    this.child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", path.join(__dirname, "race-worker.ts"), env.dir, env.portal], {
      cwd: repoRoot,
      env: { ...process.env, SDS_RACE_STATE_URL: stateUrl, SDS_RACE_SECRET_KEY: secretKey },
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child.stderr!.on("data", (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    let started!: () => void;
    let failed!: (e: Error) => void;
    this.ready = new Promise<void>((res, rej) => ((started = res), (failed = rej)));
    const timer = setTimeout(() => failed(new Error(`worker ${name} not ready after 60 s: ${this.stderr}`)), 60_000);
    readline.createInterface({ input: this.child.stdout! }).on("line", (line) => {
      const msg = JSON.parse(line) as RaceReply | { ready: true };
      if ("ready" in msg) {
        clearTimeout(timer);
        started();
        return;
      }
      this.pending.get(msg.id)?.resolve(msg);
      this.pending.delete(msg.id);
    });
    this.child.on("exit", (code, signal) => {
      clearTimeout(timer);
      const err = new Error(`worker ${name} exited (${code ?? signal}): ${this.stderr}`);
      failed(err);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    });
  }

  /** Send one request; its reply, or a rejection when the worker failed it, died or took too long. */
  async call(req: Request): Promise<RaceReply & { ok: true }> {
    const id = this.next++;
    const reply = await new Promise<RaceReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`worker call ${req.op} took over ${CALL_TIMEOUT_MS / 1000} s`));
      }, CALL_TIMEOUT_MS);
      this.pending.set(id, {
        resolve: (r) => (clearTimeout(timer), resolve(r)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.child.stdin!.write(`${JSON.stringify({ ...req, id })}\n`);
    });
    if (!reply.ok) throw new Error(reply.error);
    return reply;
  }

  /** Close its stdin (it closes its store and exits); SIGKILL if it has not after 5 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

/** Run the rounds; returns how many checks failed (stops early after 5 failures). */
async function race(env: Env, workers: Record<HostName, Worker>, scope: LockScope): Promise<{ failures: number; rounds: number; examples: string[]; ms: number }> {
  const started = Date.now();
  const A = await env.controller.createVolume(`urn:A:${scope}`, spec(`A-${scope}`));
  const B = await env.controller.createVolume(`urn:B:${scope}`, spec(`B-${scope}`));
  const attach = async (v: typeof A, host: HostName, owner: string): Promise<Attached> => {
    const r = await workers[host].call({ op: "attach", scope, owner, volumeId: v.id, host, initiator: HOSTS[host] });
    return { attachmentId: r.attachmentId!, connectionInfo: r.connectionInfo! };
  };
  const detach = (host: HostName, x: Attached) => workers[host].call({ op: "detach", scope, attachmentId: x.attachmentId });
  let failures = 0;
  const examples: string[] = [];
  const fail = (round: number, why: string) => {
    failures++;
    if (examples.length < 5) examples.push(`round ${round}: ${why}`);
  };
  const reachable = async (round: number, what: string, r: Attached, host: HostName) => {
    const io = await qemuIo(r.connectionInfo, "read 0 4k", { initiator: HOSTS[host], readOnly: true });
    if (!io.ok) fail(round, `${what} unreachable: ${io.output.trim().split("\n").pop()}`);
  };
  const settled = async <T,>(round: number, what: string, p: Promise<T>): Promise<T | undefined> => {
    try {
      return await p;
    } catch (err) {
      fail(round, `${what} failed: ${(err as Error).message}`);
      return undefined;
    }
  };
  const cleaner = env.attachments;
  let round = 0;
  for (; round < rounds && failures < 5; round++) {
    // 1. two first attaches at once, from two hosts (two processes)
    const [onA, onB] = await Promise.all([settled(round, "first attach of A (hostX)", attach(A, "hostX", `urn:a${round}`)), settled(round, "first attach of B (hostY)", attach(B, "hostY", `urn:b${round}`))]);
    if (onA) await reachable(round, "A (hostX)", onA, "hostX");
    if (onB) await reachable(round, "B (hostY)", onB, "hostY");
    // 2. two last detaches at once
    await Promise.all([onA && settled(round, "detach of A", detach("hostX", onA)), onB && settled(round, "detach of B", detach("hostY", onB))]);
    await nothingLeft(env, cleaner, round, fail);
    // 3. A's detach (hostX) and B's attach (hostY) at once
    const again = await settled(round, "attach of A (hostX)", attach(A, "hostX", `urn:a2${round}`));
    const [, onB2] = await Promise.all([again && settled(round, "detach of A", detach("hostX", again)), settled(round, "attach of B (hostY)", attach(B, "hostY", `urn:b2${round}`))]);
    if (onB2) await reachable(round, "B (hostY) after A's detach", onB2, "hostY");
    // Back to nothing, one at a time from this process, so the next round starts clean whatever happened.
    for (const x of await env.store.listAttachments()) await cleaner.detach(x.id).catch(() => undefined);
    await cleanUp(env, cleaner);
  }
  return { failures, rounds: round, examples, ms: Date.now() - started };
}

/** With no attachment, neither tgtd nor the store may hold anything of this state. */
async function nothingLeft(env: Env, a: Attachments, round: number, fail: (round: number, why: string) => void): Promise<void> {
  if ((await env.store.listAttachments()).length > 0) return; // a detach failed: counted already
  const tgt = env.targets.iscsi(env.portal);
  const tag = await a.stateTag();
  const live = (await tgt.list()).filter((t) => t.name.includes(`:${tag}:`));
  if (live.length > 0) fail(round, `targets left after both detaches: ${live.map((t) => `${t.name} (LUNs ${t.luns.map((l) => l.lun).join(",") || "none"})`).join("; ")}`);
  const accounts = (await (tgt as unknown as { accounts(): Promise<string[]> }).accounts()).filter((u) => u.startsWith(`sds-${tag}-`));
  if (accounts.length > 0) fail(round, `CHAP accounts left: ${accounts.join(", ")}`);
  const rows = await env.store.listTargets();
  if (rows.length > 0) fail(round, `target rows left: ${rows.map((t) => t.name).join(", ")}`);
}

/** Remove what a failed round left, so rounds stay independent. */
async function cleanUp(env: Env, a: Attachments): Promise<void> {
  const tgt = env.targets.iscsi(env.portal);
  const tag = await a.stateTag();
  for (const t of await tgt.list()) if (t.name.includes(`:${tag}:`)) await tgt.removeTarget(t.tid!);
  const accounts = await (tgt as unknown as { accounts(): Promise<string[]> }).accounts();
  for (const u of accounts) if (u.startsWith(`sds-${tag}-`)) await tgt.removeChapAccount(u);
  for (const t of await env.store.listTargets()) {
    for (const l of await env.store.listLuns(t.name)) await env.store.deleteLun(t.name, l.volumeId);
    await env.store.deleteTarget(t.name);
  }
}

suite("shared-target locking on PostgreSQL: two hosts in two processes, two stores on one state, one shared target", () => {
  let cluster: PostgresCluster;
  let env: Env;
  let workers: Record<HostName, Worker>;

  beforeAll(async () => {
    cluster = await startPostgres();
    const url = await cluster.createDatabase();
    const secretKey = randomBytes(32).toString("base64");
    env = await makeEnv({ protocol: "iscsi", sharedTargets: true, chap: true, store: await PostgresStore.open(url), secretKey });
    // tgtd runs before the workers start, so they find it rather than race to start it.
    await env.targets.iscsi(env.portal).start();
    workers = { hostX: new Worker("hostX", env, url, secretKey), hostY: new Worker("hostY", env, url, secretKey) };
    await Promise.all([workers.hostX.ready, workers.hostY.ready]);
  }, 120_000);
  afterAll(async () => {
    await Promise.all(Object.values(workers ?? {}).map((w) => w.stop()));
    await env?.close();
    await cluster?.stop();
  }, 120_000);

  test(`with the lock scoped per host (round 1's bug), the race is seen across processes: the test can fail [up to ${rounds} rounds]`, async () => {
    const r = await race(env, workers, "host");
    process.stderr.write(`shared-target-race-pg, lock per host: ${r.failures} failure(s) in ${r.rounds} round(s), ${(r.ms / 1000).toFixed(1)} s\n${r.examples.join("\n")}\n`);
    expect(r.failures).toBeGreaterThan(0);
  });

  test(`with the lock on the target (in PostgreSQL), every attachment is reachable and nothing is left, every round [${rounds} rounds]`, async () => {
    const r = await race(env, workers, "target");
    process.stderr.write(`shared-target-race-pg, lock on the target: ${r.failures} failure(s) in ${r.rounds} round(s), ${(r.ms / 1000).toFixed(1)} s\n`);
    expect(r.examples).toEqual([]);
    expect(r.failures).toBe(0);
    expect(r.rounds).toBe(rounds);
  });
});
