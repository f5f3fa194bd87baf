/**
 * What the state benches share: flags, medians and quantiles, CPU time (this process, the
 * processes it waited for, a PostgreSQL server by its port), a side-by-side table, the JSON
 * result (bench/results/, git-ignored like every bench's), and scrubbing secrets from text.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { repoRoot } from "../../test/helpers/provider-process";

export { repoRoot };

/** `--name value` flags after the subcommand; unknown flags are an error, not ignored. */
export function parseFlags(argv: string[], defaults: Record<string, number>): Record<string, number> {
  const out = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m || !(m[1] in defaults)) throw new Error(`unknown argument ${argv[i]} (known: ${Object.keys(defaults).map((k) => `--${k} N`).join(", ")})`);
    const raw = m[2] ?? argv[++i];
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${m[1]}: a positive integer, not ${JSON.stringify(raw)}`);
    out[m[1]] = n;
  }
  return out;
}

/** Nearest-rank quantile (as bench/scheduler does). */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/** The median (upper middle for an even count, as bench/provider-overhead does). */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export const elapsedMs = (since: bigint): number => Number(process.hrtime.bigint() - since) / 1e6;

/** CPU milliseconds (user + system) this process spent since `since` (a process.cpuUsage()). */
export function selfCpuMs(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
}

// Why: /proc times are in clock ticks; ask once rather than assume 100.
let ticksPerSecond: number | undefined;
function tickMs(): number {
  ticksPerSecond ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  return 1000 / ticksPerSecond;
}

interface ProcStat {
  ppid: number;
  /** utime + stime, ms. */
  ownMs: number;
  /** cutime + cstime: children this process waited for, ms. */
  childrenMs: number;
}

function procStat(pid: number | "self"): ProcStat | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined; // gone
  }
  // Fields after the command name (which may hold spaces and parentheses): state is field 3.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const at = (field: number) => Number(f[field - 3]);
  return { ppid: at(4), ownMs: (at(14) + at(15)) * tickMs(), childrenMs: (at(16) + at(17)) * tickMs() };
}

/**
 * CPU ms of the child processes this process has waited for, and of theirs that they waited for
 * (Linux cutime + cstime): the Pulumi CLI, its language host and program, its plugins, as far as
 * each parent reaped its children. Take the difference around a command.
 */
export function childrenCpuMs(): number {
  return procStat("self")?.childrenMs ?? 0;
}

/**
 * A PostgreSQL server's CPU so far, in ms: the postmaster (with the backends it reaped) plus its
 * live children (backends, checkpointer, walwriter…). The server is not our child (pg_ctl
 * detaches it), so found by the port on its command line. Take the difference around a phase.
 */
export class ServerCpu {
  private constructor(private readonly pid: number) {}

  static byPort(port: number): ServerCpu {
    for (const entry of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      let argv: string[];
      try {
        argv = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      } catch {
        continue;
      }
      const p = argv.indexOf("-p");
      if (path.basename(argv[0]) === "postgres" && p > 0 && argv[p + 1] === String(port)) return new ServerCpu(Number(entry));
    }
    throw new Error(`no postgres server process listening on port ${port} found in /proc`);
  }

  ms(): number {
    const main = procStat(this.pid);
    if (!main) throw new Error(`the postgres server (pid ${this.pid}) is gone`);
    let total = main.ownMs + main.childrenMs;
    for (const entry of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const s = procStat(Number(entry));
      if (s && s.ppid === this.pid) total += s.ownMs + s.childrenMs;
    }
    return total;
  }
}

/** A table: header row, a rule, rows; columns padded to their widest cell (first left, the rest right). */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(" | ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("-|-"), ...rows.map(line)].join("\n");
}

export const fixed = (x: number, digits: number): string => (Number.isFinite(x) ? x.toFixed(digits) : "-");
export const ratio = (pg: number, sqlite: number): string => (sqlite > 0 ? `×${(pg / sqlite).toFixed(2)}` : "-");

/** Write bench/results/<name>.json (git-ignored, as the other benches' results) and say where. */
export function writeResult(name: string, result: unknown): void {
  const out = path.join(repoRoot, "bench/results", `${name}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`written ${path.relative(repoRoot, out)}`);
}

/** Passwords and keys of this run, which {@link scrub} hides wherever text is printed. */
const secrets = new Set<string>();

/** Hide `value` from everything this run prints (see {@link scrub}). */
export function keepSecret(value: string): void {
  if (value) secrets.add(value);
}

/** `text` with every secret kept by {@link keepSecret} replaced by `***` (a failure may quote a URL, an env dump, the CLI's output). */
export function scrub(text: string): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join("***");
  return out;
}
