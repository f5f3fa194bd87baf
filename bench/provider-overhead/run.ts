/**
 * bench/provider-overhead: the CPU time (user + system) of `pulumi up` and `pulumi destroy` for N
 * sds volumes next to N resources of a do-nothing provider built on the same server code, in one
 * run, rounds interleaved so machine noise hits both alike. Prints a table and writes JSON.
 *
 *   npm run bench:provider-overhead -- [count=100] [rounds=5] [--baseline DIST]
 *
 * CPU is that of `pulumi` and all its children (the language host, the program, the plugins),
 * as GNU time reports it (the rusage of every process the tree waited for): on a machine shared
 * with other work, CPU time is the figure that does not move with the load; wall time is printed
 * too. `--baseline DIST` adds a third program: the same sds program run by the plugin built in
 * another checkout's `provider/dist` (e.g. `/work/main/provider/dist`, its `main.js`), so a change
 * is measured side by side with the code before it, in the same rounds.
 *
 * Both programs return the same number of outputs (one: the ids of their resources), and the
 * do-nothing resource answers with as many output properties as a volume, so what the engine
 * stores per resource is alike and the ratio is the provider's own cost.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { PulumiProject } from "../../test/helpers/pulumi";
import { repoRoot } from "../../test/helpers/provider-process";

const flags = process.argv.slice(2);
const baselineAt = flags.indexOf("--baseline");
const baseline = baselineAt >= 0 ? path.resolve(flags[baselineAt + 1] ?? "") : undefined;
const positional = flags.filter((_, i) => baselineAt < 0 || (i !== baselineAt && i !== baselineAt + 1));
const count = Number(positional[0] ?? 100);
const rounds = Number(positional[1] ?? 5);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

type Op = "up" | "destroy";
interface Sample {
  wallSeconds: number;
  cpuSeconds: number;
}

/** `pulumi <args>` under GNU time: wall and CPU seconds of the CLI and every process below it. */
function measured(p: PulumiProject, args: string[]): Promise<Sample> {
  const out = path.join(p.dir, "time.txt");
  return new Promise((resolve, reject) => {
    execFile(
      "/usr/bin/time",
      ["-o", out, "-f", "%e %U %S", "pulumi", ...args, "--non-interactive", "--color", "never"],
      { cwd: p.dir, env: p.env, timeout: 1_800_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`pulumi ${args.join(" ")} failed: ${err.message}\n${stderr}\n${stdout}`));
        const [wall, user, system] = fs.readFileSync(out, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
        resolve({ wallSeconds: wall, cpuSeconds: user + system });
      },
    );
  });
}

async function main(): Promise<void> {
  if (baseline !== undefined && !fs.existsSync(path.join(baseline, "main.js"))) throw new Error(`--baseline ${baseline}: no main.js there (give a provider/dist folder)`);
  const programs = path.join(repoRoot, "bench/provider-overhead/programs");
  const kinds = ["sds", "null", ...(baseline ? ["baseline"] : [])];
  const projects: Record<string, PulumiProject> = {};
  for (const k of kinds) projects[k] = await PulumiProject.create(path.join(programs, k === "baseline" ? "sds" : k), { name: `bench-${k}` });
  if (baseline) {
    // The same program, its plugin path pointing at a launcher of the baseline's dist.
    const p = projects.baseline;
    const bin = path.join(p.dir, "baseline-plugin");
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, "pulumi-resource-sds"), `#!/usr/bin/env bash\nexec node ${JSON.stringify(path.join(baseline, "main.js"))} "$@"\n`, { mode: 0o755 });
    const yamlFile = path.join(p.dir, "Pulumi.yaml");
    fs.writeFileSync(yamlFile, fs.readFileSync(yamlFile, "utf8").replace(path.join(repoRoot, "provider/bin"), bin));
  }
  const samples: Record<string, Record<Op, Sample[]>> = Object.fromEntries(kinds.map((k) => [k, { up: [], destroy: [] }]));
  try {
    for (const k of kinds) await projects[k].config({ count });
    for (let r = 0; r < rounds; r++) {
      // Each round another order, so no program always runs first (or right after another).
      const order = kinds.map((_, i) => kinds[(i + r) % kinds.length]);
      for (const k of order) {
        const up = await measured(projects[k], ["up", "--yes", "--skip-preview"]);
        const destroy = await measured(projects[k], ["destroy", "--yes", "--skip-preview"]);
        samples[k].up.push(up);
        samples[k].destroy.push(destroy);
        process.stderr.write(
          `round ${r + 1}/${rounds} ${k}: up ${up.cpuSeconds.toFixed(2)} s CPU (${up.wallSeconds.toFixed(2)} s wall), destroy ${destroy.cpuSeconds.toFixed(2)} s CPU (${destroy.wallSeconds.toFixed(2)} s wall)\n`,
        );
      }
    }
  } finally {
    for (const p of Object.values(projects)) p.remove();
  }
  const med = (k: string, op: Op, f: keyof Sample) => median(samples[k][op].map((s) => s[f]));
  // Ratios per round (the programs of one round ran under the same load), then their median.
  const ratio = (k: string, op: Op, f: keyof Sample) => median(samples[k][op].map((s, i) => s[f] / samples.null[op][i][f]));
  const figures = (k: string) => ({
    cpuRatio: { up: ratio(k, "up", "cpuSeconds"), destroy: ratio(k, "destroy", "cpuSeconds") },
    wallRatio: { up: ratio(k, "up", "wallSeconds"), destroy: ratio(k, "destroy", "wallSeconds") },
  });
  const result = {
    bench: "provider-overhead",
    count,
    rounds,
    when: new Date().toISOString(),
    ...figures("sds"),
    ...(baseline ? { baseline: { dist: baseline, ...figures("baseline") } } : {}),
    medianSeconds: Object.fromEntries(kinds.map((k) => [k, { upCpu: med(k, "up", "cpuSeconds"), upWall: med(k, "up", "wallSeconds"), destroyCpu: med(k, "destroy", "cpuSeconds"), destroyWall: med(k, "destroy", "wallSeconds") }])),
    raw: samples,
  };
  console.log(`pulumi, ${count} resources, medians of ${rounds} interleaved rounds (ratio: median of per-round ratios to the do-nothing provider)`);
  console.log("program            | up CPU (s) | up wall (s) | destroy CPU (s) | CPU ratio up | CPU ratio destroy | wall ratio up");
  console.log("-------------------|------------|-------------|-----------------|--------------|-------------------|--------------");
  for (const k of kinds) {
    const m = result.medianSeconds[k];
    const f = k === "null" ? undefined : figures(k);
    const cell = (x: number | undefined, w: number) => (x === undefined ? "" : x.toFixed(2)).padStart(w);
    console.log(
      `${(k === "baseline" ? `sds @ ${path.basename(path.dirname(path.dirname(baseline!)))}` : k === "null" ? "do-nothing" : "sds").padEnd(18)} | ${cell(m.upCpu, 10)} | ${cell(m.upWall, 11)} | ${cell(m.destroyCpu, 15)} | ${cell(f?.cpuRatio.up, 12)} | ${cell(f?.cpuRatio.destroy, 17)} | ${cell(f?.wallRatio.up, 13)}`,
    );
  }
  const out = path.join(repoRoot, "bench/results/provider-overhead.json");
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(result, null, 2));
  console.log(`written ${path.relative(repoRoot, out)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
