/**
 * Drive the real Pulumi CLI (built by scripts/ensure-pulumi.sh) on a program, fully offline:
 * a file backend, a private PULUMI_HOME, a passphrase, no update checks, no plugin downloads.
 * Projects live under test/.work/ so their node_modules resolve to the repo's.
 */
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { repoRoot } from "./provider-process";

let pulumiDir: string | undefined;

/** The folder holding `pulumi` and `pulumi-language-nodejs` (built once, cached outside the checkout). */
export function pulumiBinDir(): string {
  pulumiDir ??= execFileSync("bash", [path.join(repoRoot, "scripts/ensure-pulumi.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop()!;
  return pulumiDir;
}

/**
 * What the real Pulumi CLI needs to run a project here without a network or a terminal: this
 * repo's CLI first on PATH, a file backend, its own PULUMI_HOME, a passphrase for secrets, and
 * no update checks, plugin downloads, registry lookups or confirmations.
 */
export function pulumiEnv(o: { backendUrl: string; home: string; passphrase: string }): NodeJS.ProcessEnv {
  return {
    PATH: `${pulumiBinDir()}:${process.env.PATH}`,
    PULUMI_BACKEND_URL: o.backendUrl,
    PULUMI_HOME: o.home,
    PULUMI_CONFIG_PASSPHRASE: o.passphrase,
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_DIY_BACKEND_NO_LEGACY_WARNING: "true",
    PULUMI_DISABLE_REGISTRY_RESOLVE: "true",
    PULUMI_SKIP_CONFIRMATIONS: "true",
    PULUMI_NODEJS_TRANSPILE_ONLY: "true",
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * A Pulumi project folder and the env the CLI runs in: `run`, `ok`, `config`, previews, exports and
 * outputs. PulumiProject (a work folder in the checkout) and OutsideProject (test/helpers/packaged.ts:
 * a folder outside it, with the packaged plugin and SDK) differ only in how they make the folder and env.
 */
export abstract class PulumiWorkspace {
  constructor(
    readonly dir: string,
    readonly env: NodeJS.ProcessEnv,
  ) {}

  /** Run `pulumi <args>` in the project; never throws on a non-zero exit. */
  run(args: string[], timeoutMs = 300_000): Promise<RunResult> {
    return new Promise((resolve) => {
      execFile(
        "pulumi",
        [...args, "--non-interactive", "--color", "never"],
        { cwd: this.dir, env: this.env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
        (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
      );
    });
  }

  /** Run and require exit 0, with the CLI's output in the failure message. */
  async ok(args: string[], timeoutMs?: number): Promise<RunResult> {
    const r = await this.run(args, timeoutMs);
    if (r.code !== 0) {
      // CI shows only the head of a failure message: the engine's errors come first.
      const errors = `${r.stdout}\n${r.stderr}`.split("\n").filter((l) => /error|failed|panic/i.test(l));
      throw new Error(`pulumi ${args.join(" ")} exited ${r.code}\n--- errors\n${errors.join("\n")}\n--- stderr\n${r.stderr}\n--- stdout\n${r.stdout}`);
    }
    return r;
  }

  async config(values: Record<string, string | number | boolean>, options: { secret?: boolean } = {}): Promise<void> {
    for (const [k, v] of Object.entries(values)) await this.ok(["config", "set", ...(options.secret ? ["--secret"] : []), k, String(v)]);
  }

  /** `pulumi preview --json`: the steps and the summary of changes by op. */
  async previewJson(extra: string[] = []): Promise<{ steps: Array<{ op: string; urn: string; detailedDiff?: Record<string, unknown>; newState?: { outputs?: Record<string, unknown> } }>; changeSummary: Record<string, number> }> {
    const r = await this.ok(["preview", "--json", ...extra]);
    return JSON.parse(r.stdout);
  }

  async stackExport(): Promise<{ deployment: { resources?: Array<{ urn: string; type: string; id?: string; inputs?: Record<string, unknown>; outputs?: Record<string, unknown> }> } }> {
    return JSON.parse((await this.ok(["stack", "export"])).stdout);
  }

  async outputs(): Promise<Record<string, unknown>> {
    return JSON.parse((await this.ok(["stack", "output", "--json"])).stdout);
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export class PulumiProject extends PulumiWorkspace {
  /** Copy `test/e2e/programs/<name>` (or an absolute folder) into a fresh work folder and create stack `test`. */
  static async create(program: string, options: { name?: string; stack?: string } = {}): Promise<PulumiProject> {
    const p = PulumiProject.make(program, options.name ?? path.basename(program));
    await p.ok(["stack", "init", options.stack ?? "test"]);
    return p;
  }

  private static make(program: string, name: string): PulumiProject {
    const base = path.join(repoRoot, "test/.work");
    fs.mkdirSync(base, { recursive: true });
    const dir = fs.mkdtempSync(path.join(base, `${name}-`));
    const src = path.isAbsolute(program) ? program : path.join(repoRoot, "test/e2e/programs", program);
    for (const f of fs.readdirSync(src)) fs.copyFileSync(path.join(src, f), path.join(dir, f));
    const yaml = fs.readFileSync(path.join(dir, "Pulumi.yaml"), "utf8").replace("${PROVIDER_BIN}", path.join(repoRoot, "provider/bin"))
      .replace("${NULL_BIN}", path.join(repoRoot, "bench/provider-overhead/null-plugin"));
    fs.writeFileSync(path.join(dir, "Pulumi.yaml"), yaml);
    fs.mkdirSync(path.join(dir, ".pulumi-backend"), { recursive: true });
    return new PulumiProject(dir, {
      ...process.env,
      ...pulumiEnv({ backendUrl: `file://${path.join(dir, ".pulumi-backend")}`, home: path.join(dir, ".pulumi-home"), passphrase: "e2e-passphrase" }),
      SDS_STATE_URL: "",
      SDS_BACKENDS_FILE: "",
    });
  }
}

/** Count `op` occurrences in an update summary line of `pulumi up` (e.g. "~ 1 updated"). */
export function summaryCount(output: string, word: "created" | "updated" | "replaced" | "deleted" | "unchanged"): number {
  // The summary's own lines ("    + 4 created", "    +-1 replaced", "    3 unchanged"), not a
  // progress line about a resource whose name ends in a digit ("reader-app3 created").
  const all = [...output.matchAll(new RegExp(`^\\s*(?:[-+~]+\\s*)?(\\d+) ${word}\\s*$`, "gm"))];
  return all.length > 0 ? Number(all[all.length - 1]![1]) : 0;
}
