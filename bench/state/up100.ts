/**
 * bench:state up100: the real Pulumi CLI on a program of `--volumes` sds volumes (default 100),
 * the state in SQLite (the default `sqlite:.sds/state.db`) next to the state in PostgreSQL (a
 * database of a throwaway cluster), in one run. Per store: `up`, `preview --expect-no-changes`
 * (must pass), `destroy`, each op run on both stores back to back (the store going first
 * alternates by repeat), so machine noise hits both alike.
 *
 * The two projects live in os.tmpdir(), outside the checkout (their node_modules is a link to
 * the repo's), each with a local file backend. The PostgreSQL URL (with its password) and the
 * sealing key reach the provider through the environment (SDS_STATE_URL, SDS_SECRET_KEY), never
 * argv, and are scrubbed from anything printed (common.ts).
 *
 * Measured per op: wall time; CPU of the processes the CLI run is made of (the CLI, language
 * host, program, provider plugin: Linux cutime/cstime of this process, so as far as each parent
 * waited for its children); CPU of the PostgreSQL server; CPU of this process (nearly idle).
 * The provider is the compiled one (provider/bin → provider/dist): `npm run build` first.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PostgresStore } from "../../provider/src/store/postgres-store";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import { startPostgres } from "../../test/helpers/postgres";
import { pulumiEnv } from "../../test/helpers/pulumi";
import { childrenCpuMs, elapsedMs, fixed, keepSecret, median, parseFlags, ratio, repoRoot, scrub, selfCpuMs, ServerCpu, table, writeResult } from "./common";

const kinds = ["sqlite", "postgres"] as const;
type Kind = (typeof kinds)[number];
const ops = ["up", "preview", "destroy"] as const;
type Op = (typeof ops)[number];
const argvOf: Record<Op, string[]> = {
  up: ["up", "--yes", "--skip-preview"],
  preview: ["preview", "--expect-no-changes"],
  destroy: ["destroy", "--yes", "--skip-preview"],
};
const OP_TIMEOUT_MS = 30 * 60_000;

interface Sample {
  kind: Kind;
  repeat: number;
  op: Op;
  wallSeconds: number;
  /** CPU s of the CLI's process tree (as reaped). */
  childrenCpuSeconds: number;
  /** CPU s of the PostgreSQL server (0 for SQLite). */
  serverCpuSeconds: number;
  /** CPU s of this process. */
  selfCpuSeconds: number;
}

/** A Pulumi project in a temp folder outside the checkout, with its own file backend and PULUMI_HOME. */
class TmpProject {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;

  constructor(
    readonly kind: Kind,
    stateEnv: { SDS_STATE_URL: string; SDS_SECRET_KEY: string },
  ) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `sds-bench-up-${kind}-`));
    const w = (f: string, text: string) => fs.writeFileSync(path.join(this.dir, f), text);
    w("Pulumi.yaml", `name: bench-state-${kind}\nruntime:\n  name: nodejs\n  options:\n    typescript: true\nplugins:\n  providers:\n    - name: sds\n      path: ${path.join(repoRoot, "provider/bin")}\n`);
    w("package.json", `{ "name": "bench-state-${kind}", "private": true, "main": "index.ts" }\n`);
    w("tsconfig.json", '{ "compilerOptions": { "strict": true, "target": "ES2022", "module": "commonjs", "moduleResolution": "node", "esModuleInterop": true, "skipLibCheck": true }, "files": ["index.ts"] }\n');
    w(
      "index.ts",
      'import * as pulumi from "@pulumi/pulumi";\nimport * as sds from "pulumi-sds";\n\nconst count = new pulumi.Config().requireNumber("count");\nfor (let i = 0; i < count; i++) new sds.Volume(`v${i}`, { sizeGib: 1 });\n',
    );
    // Why: the program resolves @pulumi/pulumi and pulumi-sds (sdk/nodejs/bin) from the repo's install.
    fs.symlinkSync(path.join(repoRoot, "node_modules"), path.join(this.dir, "node_modules"), "dir");
    fs.mkdirSync(path.join(this.dir, ".pulumi-backend"));
    this.env = {
      ...process.env,
      ...pulumiEnv({ backendUrl: `file://${path.join(this.dir, ".pulumi-backend")}`, home: path.join(this.dir, ".pulumi-home"), passphrase: "bench-passphrase" }),
      SDS_BACKENDS_FILE: "",
      ...stateEnv,
    };
  }

  /** `pulumi <args>`; rejects on a non-zero exit with the CLI's output, secrets scrubbed. */
  run(args: string[], timeoutMs = OP_TIMEOUT_MS): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile("pulumi", [...args, "--non-interactive", "--color", "never"], { cwd: this.dir, env: this.env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (!err) return resolve(String(stdout));
        const errors = `${stdout}\n${stderr}`.split("\n").filter((l) => /error|failed|panic/i.test(l));
        reject(new Error(scrub(`[${this.kind}] pulumi ${args.join(" ")} failed: ${err.message}\n--- errors\n${errors.join("\n")}\n--- stderr\n${stderr}\n--- stdout\n${stdout}`)));
      });
    });
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A warning when a provider source is newer than its compiled file: the plugin would run old code. */
function staleBuild(): string | undefined {
  const src = path.join(repoRoot, "provider/src");
  const stale: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const f = path.join(d, e.name);
      if (e.isDirectory()) walk(f);
      else if (f.endsWith(".ts")) {
        const js = path.join(repoRoot, "provider/dist", path.relative(src, f)).replace(/\.ts$/, ".js");
        if (!fs.existsSync(js) || fs.statSync(js).mtimeMs < fs.statSync(f).mtimeMs) stale.push(path.relative(repoRoot, f));
      }
    }
  };
  walk(src);
  return stale.length ? `provider/dist is older than ${stale.length} source file(s) (${stale.slice(0, 3).join(", ")}…): run \`npm run build\`` : undefined;
}

/** `up100 [--volumes N] [--repeat R]`. */
export async function up100Bench(argv: string[]): Promise<void> {
  const { volumes, repeat } = parseFlags(argv, { volumes: 100, repeat: 1 });
  const stale = staleBuild();
  if (stale) process.stderr.write(`warning: ${stale}\n`);
  // What the program loads: node_modules/pulumi-sds is the workspace link to sdk/nodejs, built into its bin/.
  if (!fs.existsSync(path.join(repoRoot, "node_modules/pulumi-sds/bin/index.js"))) throw new Error("the SDK (sdk/nodejs/bin) is not built: run `npm run build`");

  const cluster = await startPostgres();
  const secretKey = randomBytes(32).toString("base64");
  keepSecret(cluster.password);
  keepSecret(secretKey);
  const projects: Partial<Record<Kind, TmpProject>> = {};
  const samples: Sample[] = [];
  try {
    const pgUrl = await cluster.createDatabase();
    const server = ServerCpu.byPort(Number(new URL(pgUrl).port));
    projects.sqlite = new TmpProject("sqlite", { SDS_STATE_URL: "", SDS_SECRET_KEY: "" });
    projects.postgres = new TmpProject("postgres", { SDS_STATE_URL: pgUrl, SDS_SECRET_KEY: secretKey });
    const countVolumes = async (kind: Kind) => {
      const store = kind === "sqlite" ? new SqliteStore(path.join(projects.sqlite!.dir, ".sds/state.db")) : await PostgresStore.open(pgUrl);
      try {
        return (await store.listVolumes()).length;
      } finally {
        await store.close();
      }
    };

    for (const kind of kinds) {
      await projects[kind]!.run(["stack", "init", "bench"]);
      await projects[kind]!.run(["config", "set", "count", String(volumes)]);
      // Untimed: language host, program compile, plugin start once each, so the first timed op is not the one paying for cold caches.
      await projects[kind]!.run(["preview"]);
    }

    for (let r = 0; r < repeat; r++) {
      const order = r % 2 === 0 ? kinds : [...kinds].reverse();
      for (const op of ops) {
        for (const kind of order) {
          const cpu0 = process.cpuUsage();
          const children0 = childrenCpuMs();
          const server0 = server.ms();
          const t0 = process.hrtime.bigint();
          await projects[kind]!.run(argvOf[op]);
          const wallSeconds = elapsedMs(t0) / 1000;
          const s: Sample = {
            kind,
            repeat: r,
            op,
            wallSeconds,
            childrenCpuSeconds: (childrenCpuMs() - children0) / 1000,
            serverCpuSeconds: kind === "postgres" ? (server.ms() - server0) / 1000 : 0,
            selfCpuSeconds: selfCpuMs(cpu0) / 1000,
          };
          samples.push(s);
          // The state is where it should be: every volume in it after up, none after destroy.
          const expected = op === "destroy" ? 0 : volumes;
          const found = await countVolumes(kind);
          if (found !== expected) throw new Error(`${kind} after ${op}: ${found} volumes in the state, ${expected} expected`);
          process.stderr.write(`repeat ${r + 1}/${repeat} ${op} ${kind}: ${wallSeconds.toFixed(2)} s, CLI tree CPU ${s.childrenCpuSeconds.toFixed(2)} s, PG server CPU ${s.serverCpuSeconds.toFixed(2)} s\n`);
        }
      }
    }
  } finally {
    for (const p of Object.values(projects)) p.remove();
    await cluster.stop();
  }

  const med = (kind: Kind, op: Op, k: "wallSeconds" | "childrenCpuSeconds" | "serverCpuSeconds" | "selfCpuSeconds") => median(samples.filter((s) => s.kind === kind && s.op === op).map((s) => s[k]));
  const summary = ops.map((op) => {
    const pair = (k: "wallSeconds" | "childrenCpuSeconds" | "selfCpuSeconds") => ({ sqlite: med("sqlite", op, k), postgres: med("postgres", op, k), ratio: med("postgres", op, k) / med("sqlite", op, k) });
    const total = (kind: Kind) => median(samples.filter((s) => s.kind === kind && s.op === op).map((s) => s.childrenCpuSeconds + s.serverCpuSeconds));
    return {
      op,
      wallSeconds: pair("wallSeconds"),
      childrenCpuSeconds: pair("childrenCpuSeconds"),
      serverCpuSeconds: med("postgres", op, "serverCpuSeconds"),
      totalCpuSeconds: { sqlite: total("sqlite"), postgres: total("postgres"), ratio: total("postgres") / total("sqlite") },
      selfCpuSeconds: pair("selfCpuSeconds"),
    };
  });

  console.log(`\nup100: pulumi on ${volumes} sds volumes, state in SQLite vs PostgreSQL, median of ${repeat} repeat(s), ops interleaved store by store`);
  console.log("CLI CPU = the CLI's process tree (CLI, language host, program, provider); PG CPU = the PostgreSQL server; seconds");
  const rows = summary.map((s) => [
    s.op === "preview" ? "preview --expect-no-changes" : s.op,
    fixed(s.wallSeconds.sqlite, 2),
    fixed(s.wallSeconds.postgres, 2),
    ratio(s.wallSeconds.postgres, s.wallSeconds.sqlite),
    fixed(s.childrenCpuSeconds.sqlite, 2),
    fixed(s.childrenCpuSeconds.postgres, 2),
    fixed(s.serverCpuSeconds, 2),
    ratio(s.totalCpuSeconds.postgres, s.totalCpuSeconds.sqlite),
  ]);
  console.log(table(["op", "wall sqlite", "wall PG", "wall PG/SQLite", "CLI CPU sqlite", "CLI CPU PG", "PG server CPU", "CPU PG/SQLite (CLI+server)"], rows));
  writeResult("state-up100", { bench: "state-up100", volumes, repeat, cpus: os.cpus().length, loadavg: os.loadavg(), when: new Date().toISOString(), samples, median: summary });
}
