/**
 * A team's repository and its runners, for tests of stacks that several people and CI share:
 * one "origin" (the example as the team committed it, with their addresses), and any number of
 * runners, each a fresh copy of it in its own folder outside this checkout, with its own
 * PULUMI_HOME (its own machine), all on one Pulumi file backend and one secrets passphrase (the
 * team's). What a runner is given in its environment (SDS_STATE_URL, SDS_SECRET_KEY, …) never
 * goes on a command line; `pulumi config set --secret` takes its value on stdin.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pulumiEnv, type RunResult } from "./pulumi";
import { repoRoot } from "./provider-process";

/** Folders a copy of the program never takes: installed packages and local state. */
const NOT_COPIED = new Set(["node_modules", ".sds"]);

function copyTree(from: string, to: string, edit: (rel: string, text: string) => string, rel = ""): void {
  fs.mkdirSync(to, { recursive: true });
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    if (NOT_COPIED.has(e.name)) continue;
    const src = path.join(from, e.name);
    const dst = path.join(to, e.name);
    const r = path.join(rel, e.name);
    if (e.isDirectory()) copyTree(src, dst, edit, r);
    else fs.writeFileSync(dst, edit(r, fs.readFileSync(src, "utf8")));
  }
}

/** Every file under `dir` (relative paths), following no symlink (node_modules is one). */
export function filesUnder(dir: string, rel = ""): string[] {
  return fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).flatMap((e) => {
    const r = path.join(rel, e.name);
    return e.isDirectory() ? [r + "/", ...filesUnder(dir, r)] : [r];
  });
}

export class TeamRepo {
  /** The team's committed tree. */
  readonly origin: string;
  /** The Pulumi file backend every runner logs in to. */
  readonly backendUrl: string;
  private readonly runners: Runner[] = [];

  /**
   * Copy `example` (a folder of examples/) into `<work>/origin`, replacing each `edits` key by
   * its value in every file (the team's own addresses and paths), and pointing the plugin path
   * at this checkout's provider.
   */
  constructor(
    readonly work: string,
    example: string,
    edits: Record<string, string>,
    private readonly passphrase: string,
  ) {
    this.origin = path.join(work, "origin");
    const src = path.join(repoRoot, "examples", example);
    copyTree(src, this.origin, (rel, text) => {
      let out = text;
      for (const [from, to] of Object.entries(edits)) out = out.split(from).join(to);
      if (rel === "Pulumi.yaml") out = out.replace("path: ../../provider/bin", `path: ${path.join(repoRoot, "provider/bin")}`);
      return out;
    });
    const backend = path.join(work, "pulumi-backend");
    fs.mkdirSync(backend, { recursive: true });
    this.backendUrl = `file://${backend}`;
  }

  /**
   * A fresh checkout of the origin in a new folder under the OS temp folder (outside this
   * repository), with `env` on top of the team's Pulumi settings.
   */
  checkout(name: string, env: Record<string, string>): Runner {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `sds-team-${name}-`));
    copyTree(this.origin, dir, (_rel, text) => text);
    // The program's packages: this checkout's (`pulumi-sds` is the workspace's sdk/nodejs).
    fs.symlinkSync(path.join(repoRoot, "node_modules"), path.join(dir, "node_modules"));
    const home = path.join(this.work, `pulumi-home-${path.basename(dir)}`);
    const runner = new Runner(name, dir, home, { ...clean(process.env), ...pulumiEnv({ backendUrl: this.backendUrl, home, passphrase: this.passphrase }), ...env });
    this.runners.push(runner);
    return runner;
  }

  /** A runner in the origin itself (the teammate who creates the stack and commits its config). */
  maintainer(): Runner {
    const home = path.join(this.work, "pulumi-home-maintainer");
    return new Runner("maintainer", this.origin, home, { ...clean(process.env), ...pulumiEnv({ backendUrl: this.backendUrl, home, passphrase: this.passphrase }) });
  }

  /** Remove every runner's folder (the work folder is the caller's). */
  removeCheckouts(): void {
    for (const r of this.runners) fs.rmSync(r.dir, { recursive: true, force: true });
  }
}

/** The test process's environment without what would leak into a runner's provider. */
function clean(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out = { ...env };
  for (const k of Object.keys(out)) if (k.startsWith("SDS_") || k.startsWith("PULUMI_")) delete out[k];
  return out;
}

export class Runner {
  constructor(
    readonly name: string,
    readonly dir: string,
    readonly home: string,
    readonly env: NodeJS.ProcessEnv,
  ) {}

  /** `pulumi <args>` in the runner's folder; `input` goes to stdin. Never throws on a non-zero exit. */
  run(args: string[], o: { input?: string; timeoutMs?: number } = {}): Promise<RunResult & { seconds: number }> {
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const child = spawn("pulumi", [...args, "--non-interactive", "--color", "never"], { cwd: this.dir, env: this.env, stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += String(d)));
      child.stderr.on("data", (d) => (stderr += String(d)));
      const timer = setTimeout(() => child.kill("SIGKILL"), o.timeoutMs ?? 300_000);
      child.on("error", reject);
      child.on("close", (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? 1, stdout, stderr, seconds: (Date.now() - started) / 1000 });
      });
      child.stdin.end(o.input ?? "");
    });
  }

  /** Run and require exit 0, the CLI's output in the failure message. */
  async ok(args: string[], o: { input?: string; timeoutMs?: number } = {}): Promise<RunResult & { seconds: number }> {
    const r = await this.run(args, o);
    if (r.code !== 0) {
      const errors = `${r.stdout}\n${r.stderr}`.split("\n").filter((l) => /error|failed|panic/i.test(l));
      throw new Error(`[${this.name}] pulumi ${args.join(" ")} exited ${r.code}\n--- errors\n${errors.join("\n")}\n--- stderr\n${r.stderr}\n--- stdout\n${r.stdout}`);
    }
    return r;
  }

  /** Edit a file of the checkout: `replace` maps an exact text to its replacement (each must occur once). */
  edit(file: string, replace: Record<string, string>): void {
    const p = path.join(this.dir, file);
    let text = fs.readFileSync(p, "utf8");
    for (const [from, to] of Object.entries(replace)) {
      const n = text.split(from).length - 1;
      if (n !== 1) throw new Error(`test setup: ${file} has ${n} occurrence(s) of ${JSON.stringify(from)}, expected 1`);
      text = text.split(from).join(to);
    }
    fs.writeFileSync(p, text);
  }
}
