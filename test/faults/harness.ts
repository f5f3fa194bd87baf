/**
 * Fault injection on real `pulumi` runs (issue 12): a stack of test/faults/program on real tgtd,
 * nbdkit, loop devices, an sds-agent and a SQLite or PostgreSQL state; SIGKILL of the provider
 * plugin, the CLI or the agent at a point the engine's own progress names (the k-th step of an
 * `up`, a `destroy` or a failover update, read from `--event-log`), never after a sleep; then what
 * an operator does (refresh, up) and the proof that the stack converged (`preview
 * --expect-no-changes`). Kill points come from a seed, so a failing cycle can be replayed.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { localTargets } from "../../provider/src/targets/local-targets";
import { freeTcpPort } from "../helpers/daemons";
import { type PostgresCluster, startPostgres } from "../helpers/postgres";
import { isPluginArgv, repoRoot } from "../helpers/provider-process";
import { PulumiProject } from "../helpers/pulumi";
import { type Census, takeCensus } from "./census";

export type StoreKind = "sqlite" | "postgres";
export type KillTarget = "provider" | "cli" | "agent";
export type Phase = "up" | "destroy" | "failover";

/** Where to kill: the `k`-th non-"same" step event of `when` kind (started or finished) of `phase`. */
export interface KillPoint {
  phase: Phase;
  target: KillTarget;
  when: "started" | "finished";
  k: number;
  /** Count only the steps of this resource (its name): the agent is killed on the step that uses it. */
  resource?: string;
}

/** One follow-up command after a kill. */
export interface FollowUp {
  command: string;
  code: number;
  seconds: number;
  /** Lines of its output that say it waited on a lock. */
  lockLines: string[];
  /** Seconds it said it waited on a lock (the largest), when it said so. */
  lockWaitSeconds?: number;
}

export interface KillResult extends KillPoint {
  store: StoreKind;
  cycle: number;
  /** The step the kill landed on ("create sds:index:Volume::v3"), or undefined when the run ended before the point. */
  at?: string;
  fired: boolean;
  /** Exit code of the killed run (null: killed by a signal). */
  runCode: number | null;
  /** CLI killed: seconds until its plugin was gone on its own (undefined: it stayed and was killed by the harness). */
  pluginExitSeconds?: number;
  /** Processes of the killed CLI's tree still alive 15 s after its kill (then killed by the harness). */
  orphans: string[];
  /** The stack's pending operations right after the killed run ("creating …::v3"). */
  pendingAfterKill: string[];
  followUps: FollowUp[];
  /** `preview --expect-no-changes` exited 0 after the recovery. */
  converged: boolean;
  notes: string[];
}

/** A seed replays the same kill points (mulberry32). */
import { seeded } from "../helpers/seeded";

export { seeded };

/** Steps of each phase the program makes (up/destroy: every resource; failover: the pair's update). */
const STEPS: Record<Phase, number> = { up: 10, destroy: 10, failover: 1 };

/**
 * `n` kill points from `seed`: targets and phases taken in turn (so any 9 consecutive points cover
 * every pair; with no agent, agent kills become provider kills), the step and its edge drawn.
 */
export function planKills(seed: number, n: number, o: { agent: boolean } = { agent: true }): KillPoint[] {
  const rnd = seeded(seed);
  const targets: KillTarget[] = o.agent ? ["provider", "cli", "agent"] : ["provider", "cli"];
  const phases: Phase[] = ["up", "failover", "destroy"];
  const out: KillPoint[] = [];
  const offset = Math.floor(rnd() * 9);
  for (let i = 0; i < n; i++) {
    const j = i + offset;
    const phase = phases[j % 3];
    const target = targets[Math.floor(j / 3) % targets.length];
    const when = rnd() < 0.5 ? "started" : "finished";
    const k = 1 + Math.floor(rnd() * STEPS[phase]);
    out.push(target === "agent" && phase !== "failover" ? { phase, target, when, k: 1, resource: "a-nbd" } : { phase, target, when, k });
  }
  return out;
}

/** Pids of live processes whose argv matches. */
export function pidsWhere(match: (argv: string[], pid: number) => boolean): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0").filter(Boolean);
      if (argv.length && match(argv, Number(e))) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined;
  }
}

/** Live descendants of `root`, with their argv. */
export function descendants(root: number): Array<{ pid: number; argv: string[] }> {
  const all: Array<{ pid: number; argv: string[]; ppid?: number }> = [];
  pidsWhere((argv, pid) => {
    all.push({ pid, argv, ppid: parentOf(pid) });
    return false;
  });
  const found = new Set([root]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of all) {
      if (p.ppid !== undefined && found.has(p.ppid) && !found.has(p.pid)) {
        found.add(p.pid);
        grew = true;
      }
    }
  }
  return all.filter((p) => p.pid !== root && found.has(p.pid)).map(({ pid, argv }) => ({ pid, argv }));
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return fs.existsSync(`/proc/${pid}`) && !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};
/** SIGKILL `pid`; false when it was gone already. */
function killPid(pid: number): boolean {
  try {
    process.kill(pid, "SIGKILL");
    return true;
  } catch {
    return false;
  }
}
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const isPlugin = isPluginArgv;

/** The step events of a `--event-log` file, as they come (the engine appends one JSON object a line). */
class EventTail {
  private offset = 0;
  private rest = "";
  constructor(private readonly file: string) {}
  /** New step events since the last call: op, type, urn and whether it started or finished. */
  poll(): Array<{ when: "started" | "finished"; op: string; type: string; urn: string }> {
    let buf: Buffer;
    try {
      const fd = fs.openSync(this.file, "r");
      try {
        const size = fs.fstatSync(fd).size;
        buf = Buffer.alloc(Math.max(0, size - this.offset));
        fs.readSync(fd, buf, 0, buf.length, this.offset);
        this.offset = size;
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      return [];
    }
    const text = this.rest + buf.toString("utf8");
    const lines = text.split("\n");
    this.rest = lines.pop() ?? "";
    const out: Array<{ when: "started" | "finished"; op: string; type: string; urn: string }> = [];
    for (const line of lines) {
      if (!line.trim()) continue;
      let e: Record<string, { metadata?: { op?: string; type?: string; urn?: string } }>;
      try {
        e = JSON.parse(line);
      } catch {
        continue;
      }
      const pre = e.resourcePreEvent?.metadata;
      const done = e.resOutputsEvent?.metadata;
      const m = pre ?? done;
      if (!m || m.type === "pulumi:pulumi:Stack" || m.type?.startsWith("pulumi:providers:")) continue;
      out.push({ when: pre ? "started" : "finished", op: m.op ?? "", type: m.type ?? "", urn: m.urn ?? "" });
    }
    return out;
  }
}

/** Lines of a command's output that say it waited on a lock, and the longest wait they name. */
export function lockWaits(output: string): { lines: string[]; seconds?: number } {
  // The provider's lines (store/lock.ts): "waiting for lock … held by …" and "lock … taken after waiting N s";
  // not the CLI's own "the stack is currently locked … wait for the other process(es)".
  const lines = output.split("\n").filter((l) => /waiting for lock|lock .*after waiting/i.test(l)).map((l) => l.trim());
  const secs = lines.flatMap((l) => [...l.matchAll(/(\d+(?:\.\d+)?)\s*(ms|s)\b/g)].map((m) => Number(m[1]) / (m[2] === "ms" ? 1000 : 1)));
  return { lines, seconds: secs.length ? Math.max(...secs) : undefined };
}

export interface FaultStackOptions {
  store: StoreKind;
  /** Run the NBD attachment through an sds-agent on 127.0.0.1 (kill target "agent"). */
  agent: boolean;
  /** A label for the work folder. */
  name?: string;
  log?: (line: string) => void;
}

/** One stack of the fault program with its backends, state, agent; {@link cycle} runs one kill and its recovery. */
export class FaultStack {
  p!: PulumiProject;
  iscsiPort = 0;
  nbdPort = 0;
  private pg?: PostgresCluster;
  private stateUrl?: string;
  private agentChild?: ChildProcess;
  private agentPort = 0;
  private agentStateDir = "";
  private activeSide: "primary" | "secondary" = "primary";
  /** Whether the stack's resources exist (after a recovery: yes; after a plain destroy: no). */
  private deployed = false;
  readonly log: (line: string) => void;

  private constructor(readonly o: FaultStackOptions) {
    this.log = o.log ?? (() => undefined);
  }

  static async create(o: FaultStackOptions): Promise<FaultStack> {
    const s = new FaultStack(o);
    await s.setUp();
    return s;
  }

  private async setUp(): Promise<void> {
    this.p = await PulumiProject.create(path.join(repoRoot, "test/faults/program"), { name: this.o.name ?? `faults-${this.o.store}` });
    const dir = this.p.dir;
    this.iscsiPort = await freeTcpPort();
    this.nbdPort = await freeTcpPort();
    fs.writeFileSync(
      path.join(dir, "backends.yaml"),
      [
        "backends:",
        "  - name: iscsi",
        "    driver: file",
        "    sharedTargets: true",
        `    export: {protocol: iscsi, portal: "127.0.0.1:${this.iscsiPort}", chap: true}`,
        "    replicationTargets: [{backend: dr}]",
        "    pools: [{name: p0, path: pools/iscsi, totalCapacityGib: 50, replication: async}]",
        "  - name: nbd",
        "    driver: file",
        "    sharedTargets: true",
        `    export: {protocol: nbd, portal: "127.0.0.1:${this.nbdPort}"}`,
        "    pools: [{name: p0, path: pools/nbd, totalCapacityGib: 50}]",
        "  - name: dr",
        "    driver: file",
        "    pools: [{name: p0, path: pools/dr, totalCapacityGib: 50}]",
        "",
      ].join("\n"),
    );
    await this.p.config({ "sds:backendsFile": "backends.yaml" });
    if (this.o.store === "postgres") {
      this.pg = await startPostgres();
      this.stateUrl = await this.pg.createDatabase();
      // The state reaches the provider through the environment only, never argv or stack config.
      Object.assign(this.p.env, { SDS_STATE_URL: this.stateUrl, SDS_SECRET_KEY: randomBytes(32).toString("base64") });
    }
    if (this.o.agent) {
      const token = randomBytes(24).toString("hex");
      fs.writeFileSync(path.join(dir, "agent-token"), token, { mode: 0o600 });
      this.agentPort = await freeTcpPort();
      this.agentStateDir = path.join(dir, "agent-state");
      await this.startAgent();
      await this.p.config({ agentHost: "app1" });
      await this.p.config({ "sds:hosts": JSON.stringify({ app1: { url: `http://127.0.0.1:${this.agentPort}` } }), "sds:agentToken": token }, { secret: true });
    }
  }

  /** Start (or, after a kill, restart as systemd would) the sds-agent; resolves once it listens. */
  async startAgent(): Promise<void> {
    const child = spawn(path.join(repoRoot, "provider/bin/sds-agent"), ["--listen", `127.0.0.1:${this.agentPort}`, "--token-file", path.join(this.p.dir, "agent-token"), "--state-dir", this.agentStateDir], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.agentChild = child;
    let err = "";
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`sds-agent did not listen within 30 s: ${err}`)), 30_000);
      child.stderr!.on("data", (d) => {
        err += String(d);
        if (err.includes("listening")) {
          clearTimeout(t);
          resolve();
        }
      });
      child.on("exit", (c) => {
        clearTimeout(t);
        reject(new Error(`sds-agent exited ${c}: ${err}`));
      });
    });
    child.removeAllListeners("exit");
    child.stderr!.removeAllListeners("data");
    child.stderr!.resume();
  }

  /** The agent process's pid (node under the bin/sds-agent wrapper). */
  private agentPids(): number[] {
    const root = this.agentChild?.pid;
    if (!root || !alive(root)) return [];
    return [root, ...descendants(root).map((d) => d.pid)];
  }

  /** `pulumi <args>` timed, with the lock waits it reports. */
  async follow(args: string[], timeoutMs = 600_000): Promise<FollowUp & { output: string }> {
    const started = Date.now();
    const r = await this.p.run(args, timeoutMs);
    const output = `${r.stdout}\n${r.stderr}`;
    const locks = lockWaits(output);
    const f = { command: `pulumi ${args.join(" ")}`, code: r.code, seconds: (Date.now() - started) / 1000, lockLines: locks.lines, lockWaitSeconds: locks.seconds, output };
    this.log(`[${this.o.store}] ${f.command} → ${f.code} in ${f.seconds.toFixed(1)} s${locks.lines.length ? ` (lock: ${locks.lines[0]})` : ""}`);
    return f;
  }

  private async ensureDeployed(want: boolean): Promise<void> {
    if (want === this.deployed) return;
    const r = want ? await this.follow(["up", "--yes", "--skip-preview"]) : await this.follow(["destroy", "--yes", "--skip-preview"]);
    if (r.code !== 0) throw new Error(`setup ${r.command} exited ${r.code}:\n${tail(r.output)}`);
    this.deployed = want;
    if (!want) await this.setSide("primary");
  }

  private async setSide(side: "primary" | "secondary"): Promise<void> {
    this.activeSide = side;
    await this.p.config({ activeSide: side });
  }

  /**
   * A CLI killed while saving can leave the file backend's checkpoint attributes empty
   * (`<stack>.json.attrs`, 0 bytes: every command then fails "failed to load checkpoint: EOF";
   * the checkpoint itself is written whole). The operator's repair: remove the empty file.
   */
  private async repairCheckpoint(result: KillResult): Promise<void> {
    const r = await this.p.run(["stack", "export"]);
    if (r.code === 0 || !/failed to load checkpoint/.test(r.stderr + r.stdout)) return;
    const stacks = path.join(this.p.dir, ".pulumi-backend/.pulumi/stacks");
    for (const project of fs.readdirSync(stacks)) {
      for (const f of fs.readdirSync(path.join(stacks, project))) {
        const file = path.join(stacks, project, f);
        if (f.endsWith(".attrs") && fs.statSync(file).size === 0) {
          fs.rmSync(file);
          result.notes.push(`checkpoint repaired: removed the empty ${f} (pulumi: failed to load checkpoint: EOF)`);
        }
      }
    }
  }

  private async pendingCreates(): Promise<Array<{ urn: string; type: string; inputs: Record<string, unknown> }>> {
    const d = (await this.p.stackExport()).deployment as { pending_operations?: Array<{ type: string; resource: { urn: string; type: string; inputs?: Record<string, unknown> } }> };
    return (d.pending_operations ?? []).filter((o) => o.type === "creating").map((o) => ({ urn: o.resource.urn, type: o.resource.type, inputs: o.resource.inputs ?? {} }));
  }

  /**
   * What `sds recover` (the operator's command) says to run after a crash: the argv of each
   * `pulumi import` it prints (what the provider made that the stack does not hold, by URN).
   */
  private async recoverImports(): Promise<string[][]> {
    const exported = JSON.stringify(await this.p.stackExport());
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(path.join(repoRoot, "provider/bin/sds"), ["recover"], { cwd: this.p.dir, env: this.p.env, stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => (code === 0 ? resolve(stdout) : reject(new Error(`sds recover exited ${code}: ${stderr.trim()}`))));
      child.stdin.end(exported);
    });
    return out
      .split("\n")
      .filter((l) => l.startsWith("pulumi import "))
      .map((l) => l.split("#")[0].trim().split(/\s+/).slice(1));
  }

  private async pairExists(): Promise<boolean> {
    return ((await this.p.stackExport()).deployment.resources ?? []).some((r) => r.type === "sds:index:ReplicationPair");
  }

  /** Run `args` with `--event-log`, SIGKILL `point.target` at `point`; resolves when the run has ended. */
  private async runAndKill(args: string[], point: KillPoint, result: KillResult): Promise<void> {
    const logFile = path.join(this.p.dir, `events-${result.cycle}.jsonl`);
    fs.rmSync(logFile, { force: true });
    const child = spawn("pulumi", [...args, "--event-log", logFile, "--non-interactive", "--color", "never"], { cwd: this.p.dir, env: { ...this.p.env, PULUMI_DEBUG_COMMANDS: "true" }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += String(d)));
    child.stderr.on("data", (d) => (output += String(d)));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    let done = false;
    void exited.then(() => (done = true));
    const tailer = new EventTail(logFile);
    let seen = 0;
    const deadline = Date.now() + 600_000;
    while (!done && !result.fired && Date.now() < deadline) {
      for (const e of tailer.poll()) {
        if (e.op === "same" || e.op === "refresh" || e.op === "read" || e.when !== point.when) continue;
        if (point.resource && !e.urn.endsWith(`::${point.resource}`)) continue;
        if (++seen !== point.k) continue;
        result.at = `${e.when} ${e.op} ${e.type}::${e.urn.split("::").pop()}`;
        await this.kill(point.target, child.pid!, result);
        break;
      }
      if (!result.fired) await sleep(20);
    }
    const timer = setTimeout(() => {
      result.notes.push("the killed run did not end within 300 s: hang (killed by the harness)");
      child.kill("SIGKILL");
    }, 300_000);
    result.runCode = await exited;
    clearTimeout(timer);
    if (!result.fired) result.notes.push(`the run ended (${result.runCode}) before step ${point.k} ${point.when}`);
    else if (point.target !== "cli" && result.runCode === 0 && point.target === "provider") result.notes.push("the run succeeded although its plugin was killed");
    fs.writeFileSync(path.join(this.p.dir, `run-${result.cycle}.log`), output);
    if (point.target === "agent" && result.fired) await this.agentRestarted;
  }
  private agentRestarted?: Promise<void>;

  private async kill(target: KillTarget, cliPid: number, result: KillResult): Promise<void> {
    if (target === "provider") {
      const plugins = descendants(cliPid).filter((d) => isPlugin(d.argv));
      if (!plugins.length) return void result.notes.push("no plugin process found at the kill point");
      result.fired = plugins.map((d) => killPid(d.pid)).some(Boolean);
      if (!result.fired) result.notes.push("the plugin was gone at the kill point");
    } else if (target === "cli") {
      const tree = descendants(cliPid);
      if (!killPid(cliPid)) return void result.notes.push("the CLI was gone at the kill point");
      result.fired = true;
      const plugins = tree.filter((d) => isPlugin(d.argv)).map((d) => d.pid);
      const started = Date.now();
      // The plugin watches its parent: it should be gone on its own within a few seconds.
      while (plugins.some(alive) && Date.now() - started < 15_000) await sleep(100);
      if (!plugins.some(alive)) result.pluginExitSeconds = (Date.now() - started) / 1000;
      const left = tree.filter((d) => alive(d.pid));
      result.orphans = left.map((d) => `${d.pid} ${d.argv.join(" ").slice(0, 160)}`);
      for (const d of left) {
        try {
          process.kill(d.pid, "SIGKILL");
        } catch {
          // gone meanwhile
        }
      }
    } else {
      // The agent's main process only: deploy/sds-agent.service has KillMode=process (the daemons
      // it started outlive it), Restart=on-failure and RestartSec=2s, as done here.
      const pid = this.agentChild?.pid;
      if (!pid || !alive(pid)) return void result.notes.push("no agent process at the kill point");
      if (!killPid(pid)) return void result.notes.push("the agent was gone at the kill point");
      result.fired = true;
      this.agentRestarted = sleep(2000).then(() => this.startAgent());
    }
  }

  /** One cycle: get the stack where `point.phase` starts, run it with the kill, recover, check convergence. */
  async cycle(point: KillPoint, cycle: number): Promise<KillResult> {
    const result: KillResult = { ...point, store: this.o.store, cycle, fired: false, runCode: null, orphans: [], pendingAfterKill: [], followUps: [], converged: false, notes: [] };
    if (point.target === "agent" && !this.o.agent) throw new Error("agent kill on a stack without an agent");
    await this.ensureDeployed(point.phase !== "up");
    if (point.phase === "failover") await this.setSide(this.activeSide === "primary" ? "secondary" : "primary");
    const args = point.phase === "destroy" ? ["destroy", "--yes", "--skip-preview"] : ["up", "--yes", "--skip-preview"];
    await this.runAndKill(args, point, result);
    this.deployed = true;
    await this.repairCheckpoint(result);
    const pending = (await this.p.stackExport()).deployment as { pending_operations?: Array<{ type: string; resource: { urn: string } }> };
    result.pendingAfterKill = (pending.pending_operations ?? []).map((o) => `${o.type} ${o.resource.urn.split("::").pop()}`);
    await this.recover(result);
    this.log(`[${this.o.store}] cycle ${cycle} ${point.target}@${point.phase} ${result.at ?? "(not fired)"} (exit ${result.runCode}, pending [${result.pendingAfterKill.join(", ")}]): ${result.converged ? "converged" : "NOT CONVERGED"}${result.notes.length ? ` (${result.notes.join("; ")})` : ""}`);
    return result;
  }

  /** What an operator does after a crash: refresh (dropping cut-short creates if the CLI asks), up, then the check. */
  private async recover(result: KillResult): Promise<void> {
    const push = (f: FollowUp & { output: string }) => {
      const { output: _o, ...rest } = f;
      result.followUps.push(rest);
      return f;
    };
    // A killed CLI leaves the file backend's lock: the operator removes it (nothing else runs on the stack).
    if (result.target === "cli" && result.fired) push(await this.follow(["cancel", "--yes"]));
    // Pending creates: a non-interactive refresh keeps them silently (v3.259), an `up` then makes
    // the resource again under a new auto-name, and the cut-short one would leak.
    // `refresh --import-pending-creates URN ID` does not help: the refresh drops the op it turns
    // into "importing" ("interrupted while importing"). So the operator does what the README
    // says: `pulumi stack export | sds recover` finds by URN what the provider made for each, the
    // pending creates are cleared, each finished volume or profile is imported, and the next `up`
    // takes up the rest (cut-short volumes, attachments, pairs) under the same URN.
    // `sds recover` also finds what no pending operation names: a create whose answer never
    // reached the engine (the provider killed while the row became available).
    const pending = await this.pendingCreates();
    const imports = await this.recoverImports();
    if (pending.length || imports.length) result.notes.push(`pending creates: ${pending.length} cleared; ${imports.length} imported (sds recover)`);
    const refresh = push(await this.follow(["refresh", "--yes", "--skip-preview", ...(pending.length ? ["--clear-pending-creates"] : [])]));
    for (const args of imports) {
      const imported = push(await this.follow([...args, "--skip-preview"]));
      if (imported.code !== 0) result.notes.push(`${args.slice(0, 4).join(" ")} failed: ${firstError(imported.output)}`);
    }
    if (refresh.code !== 0) result.notes.push(`refresh failed: ${firstError(refresh.output)}`);
    // A new pair starts on its primary: with the pair gone (a destroy got that far), fail back in config.
    if (this.activeSide === "secondary" && !(await this.pairExists())) await this.setSide("primary");
    const up = push(await this.follow(["up", "--yes", "--skip-preview"]));
    if (up.code !== 0) {
      // Counted against the stack (a note, and the table's failed follow-ups); one more try as an operator would.
      result.notes.push(`up failed: ${firstError(up.output)}`);
      push(await this.follow(["up", "--yes", "--skip-preview"]));
    }
    const check = push(await this.follow(["preview", "--expect-no-changes"]));
    result.converged = check.code === 0;
    if (!result.converged) {
      const changes = check.output.split("\n").filter((l) => /^\s*[~+-]{1,2}\s+\S/.test(l)).slice(0, 6).map((l) => l.trim());
      result.notes.push(`preview --expect-no-changes: ${changes.join(" | ") || firstError(check.output)}`);
      fs.writeFileSync(path.join(this.p.dir, `preview-${result.cycle}.log`), check.output);
    }
  }

  /** Destroy, then the census of what is left (before the harness stops its own daemons). */
  async finish(): Promise<{ destroyCode: number; census: Census }> {
    const d = await this.follow(["destroy", "--yes", "--skip-preview"]);
    this.deployed = false;
    const census = await takeCensus({
      dir: this.p.dir,
      runDir: path.join(this.p.dir, ".sds/run"),
      stateUrl: this.stateUrl,
      iscsiControlPort: this.iscsiPort % 32768,
      ownPids: [...this.agentPids(), process.pid],
      stack: this.p,
      // The portal's tgtd outlives destroy by design (exports outlive `pulumi up`): the harness
      // stops it as an operator would, once its targets are counted; then processes and records.
      stopPortal: () => this.stopPortal(),
    });
    return { destroyCode: d.code, census };
  }

  private stopPortal(): Promise<void> {
    return localTargets(path.join(this.p.dir, ".sds/run")).iscsi(`127.0.0.1:${this.iscsiPort}`).stop();
  }

  /** Stop what the harness started (agent, the portal's tgtd, PostgreSQL), clear whatever the stack left on the machine, remove the folder unless `keep`. */
  async teardown(keep = false): Promise<void> {
    const agents = this.agentPids();
    for (const pid of agents) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    for (let i = 0; i < 50 && agents.some(alive); i++) await sleep(100);
    forceClean(this.p.dir, this.log);
    await this.stopPortal().catch(() => undefined);
    await this.pg?.stop();
    if (!keep) this.p.remove();
  }
}

/**
 * What a failed destroy can leave on the machine, cleared by force so the next run starts clean:
 * loop devices backed by files under `dir`, mounts under it (lazily), processes naming it
 * (pids found here, never by name). Each is logged: the census has counted them already.
 */
export function forceClean(dir: string, log: (l: string) => void): void {
  for (const l of loopDevices().filter((x) => x.backFile.includes(dir))) {
    log(`force clean: losetup -d ${l.name} (${l.backFile})`);
    execFileSync("losetup", ["-d", l.name], { stdio: "ignore" });
  }
  const mounts = fs.readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "").filter((m) => m.startsWith(dir));
  for (const m of mounts.reverse()) {
    log(`force clean: umount -l ${m}`);
    try {
      execFileSync("umount", ["-l", m], { stdio: "ignore" });
    } catch {
      // gone meanwhile
    }
  }
  for (const pid of pidsWhere((argv) => argv.join(" ").includes(dir))) {
    if (pid === process.pid) continue;
    try {
      log(`force clean: kill -9 ${pid} (${fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").slice(0, 160)})`);
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

function tail(output: string, n = 30): string {
  return output.split("\n").slice(-n).join("\n");
}

/** The first error line of a command's output (for notes). */
function firstError(output: string): string {
  return (output.split("\n").find((l) => /error|failed/i.test(l)) ?? output.trim().split("\n").pop() ?? "").trim().slice(0, 300);
}

/** `losetup -J` rows: device and backing file. */
export function loopDevices(): Array<{ name: string; backFile: string }> {
  const j = JSON.parse(execFileSync("losetup", ["-J", "--list"], { encoding: "utf8" }) || "{}") as { loopdevices?: Array<{ name: string; "back-file": string | null }> };
  return (j.loopdevices ?? []).map((l) => ({ name: l.name, backFile: l["back-file"] ?? "" }));
}
