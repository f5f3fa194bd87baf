/**
 * sds as a new user installs it (issue 13): `npm run package`, the plugin installed with
 * `pulumi plugin install resource sds <version> --file <tarball>` into a fresh PULUMI_HOME, the
 * Node.js SDK installed from its `npm pack` tarball, and README.md's first program run from a folder
 * outside the checkout: up, preview and refresh without changes, destroy. Nothing the project, the
 * CLI's env, PULUMI_HOME or the state holds names the checkout, and the engine runs the plugin from
 * PULUMI_HOME. The tarball's `sds` and `sds-agent` run with only `node` on PATH.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { type OutsideProject, outsideProject, packagedArtifacts } from "../helpers/packaged";
import { repoRoot } from "../helpers/provider-process";
import { summaryCount } from "../helpers/pulumi";

jest.setTimeout(600_000);

let work: string;
let p: OutsideProject;

/** The first ```ts block of README.md: the program a reader tries first. */
function readmeProgram(): string {
  const m = /```ts\n([\s\S]*?)```/.exec(fs.readFileSync(path.join(repoRoot, "README.md"), "utf8"));
  if (!m || !m[1].includes('from "pulumi-sds"')) throw new Error("README.md's first ```ts block is not a pulumi-sds program");
  return m[1];
}

/** Every file under `dir` (following no symlinks; volume images aside) whose contents name `needle`. */
function filesNaming(dir: string, needle: string): string[] {
  const hits: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const f = path.join(d, e.name);
      if (e.isDirectory()) walk(f);
      else if (e.isFile() && !e.name.endsWith(".img") && fs.readFileSync(f).includes(needle)) hits.push(f);
    }
  };
  walk(dir);
  return hits;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(file, args, { env, timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr })),
  );
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "sds-install-"));
  // The user's project, as the README tells them to write it.
  const src = path.join(work, "my-storage");
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, "index.ts"), readmeProgram());
  fs.writeFileSync(path.join(src, "Pulumi.yaml"), "name: my-storage\nruntime:\n  name: nodejs\n  options:\n    typescript: true\n");
  fs.writeFileSync(path.join(src, "package.json"), JSON.stringify({ name: "my-storage", private: true, main: "index.ts", dependencies: { "@pulumi/pulumi": "^3.0.0", "pulumi-sds": packagedArtifacts().version } }, null, 2));
  fs.writeFileSync(path.join(src, "tsconfig.json"), JSON.stringify({ compilerOptions: { strict: true, target: "ES2022", module: "commonjs", moduleResolution: "node", esModuleInterop: true, skipLibCheck: true }, files: ["index.ts"] }));
  p = await outsideProject(src);
});

afterAll(() => {
  if (!process.env.SDS_KEEP_E2E) {
    p?.remove();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  }
});

test("README's first program: up, preview and refresh with no changes, from a folder outside the repo", async () => {
  expect(p.dir.startsWith(repoRoot)).toBe(false);
  const up = await p.ok(["up", "--yes", "--skip-preview"]);
  expect(summaryCount(up.stdout, "created")).toBe(4); // stack, profile, two volumes
  const out = await p.outputs();
  expect(out.dataPool).toBe("local/default");
  expect(typeof out.dataId).toBe("string");
  // The embedded controller keeps its state and pools in the project's .sds/.
  expect(fs.readdirSync(path.join(p.dir, ".sds/pools/default")).some((f) => f.includes(out.dataId as string))).toBe(true);
  const pre = await p.ok(["preview", "--expect-no-changes", "--logtostderr", "-v=6"]);
  // The engine found the plugin in PULUMI_HOME (not on PATH, not beside the CLI, not in the checkout).
  const found = /GetPluginPath\(resource, sds, [^)]*\): found in cache at (\S+?\/pulumi-resource-sds)\b/.exec(pre.stderr);
  expect(found?.[1]).toBe(path.join(p.pulumiHome, "plugins", `resource-sds-v${p.artifacts.version}`, "pulumi-resource-sds"));
  await p.ok(["refresh", "--yes", "--expect-no-changes"]);
});

test("the installed plugin serves the schema shipped beside its lib/", async () => {
  // (get-schema normalises the schema it is served, e.g. dropping empty lists: compare what identifies it.)
  const gist = (s: { name: string; version: string; resources: object; functions: object }) => [s.name, s.version, Object.keys(s.resources).sort(), Object.keys(s.functions).sort()];
  const served = JSON.parse((await p.ok(["package", "get-schema", "sds"])).stdout);
  expect(gist(served)).toEqual(gist(JSON.parse(fs.readFileSync(path.join(repoRoot, "schema.json"), "utf8"))));
});

test("nothing names the checkout: project folder, PULUMI_HOME, SDK, env, state", async () => {
  const plugins = JSON.parse((await p.ok(["plugin", "ls", "--json"])).stdout) as Array<{ name: string; kind: string; version: string; path?: string }>;
  expect(plugins.filter((x) => x.name === "sds").map((x) => [x.kind, x.version])).toEqual([["resource", p.artifacts.version]]);
  // The project (with .pulumi-home, the backend and .sds inside) and the shared node_modules above it.
  expect(filesNaming(p.dir, repoRoot)).toEqual([]);
  expect(filesNaming(path.join(path.dirname(path.dirname(p.dir)), "node_modules/pulumi-sds"), repoRoot)).toEqual([]);
  expect(Object.entries(p.env).filter(([, v]) => v?.includes(repoRoot))).toEqual([]);
  expect((await p.ok(["stack", "export"])).stdout).not.toContain(repoRoot);
});

test("destroy leaves no volumes", async () => {
  const down = await p.ok(["destroy", "--yes", "--skip-preview"]);
  expect(summaryCount(down.stdout, "deleted")).toBe(4);
  expect(fs.readdirSync(path.join(p.dir, ".sds/pools/default")).filter((f) => f.endsWith(".img"))).toEqual([]);
});

test("the tarball's sds and sds-agent run with only node on PATH, and through a symlink; a missing or unfit node is named in one line", async () => {
  const dir = fs.mkdtempSync(path.join(work, "opt-sds-"));
  const bin = fs.mkdtempSync(path.join(work, "bin-"));
  fs.symlinkSync(process.execPath, path.join(bin, "node"));
  await new Promise<void>((resolve, reject) =>
    execFile("tar", ["-xzf", packagedArtifacts().pluginTarball, "-C", dir], (err) => (err ? reject(err) : resolve())),
  );
  // A host's install: /usr/local/bin/sds -> /opt/sds/sds (the launcher resolves the link to find lib/).
  const links = fs.mkdtempSync(path.join(work, "links-"));
  fs.symlinkSync(path.join(dir, "sds"), path.join(links, "sds"));
  // A node of another major version, as far as the launcher can tell.
  const fakeNode = (v: string): string => {
    const d = fs.mkdtempSync(path.join(work, "node-"));
    fs.writeFileSync(path.join(d, "node"), `#!/bin/sh\necho ${v}\n`, { mode: 0o755 });
    return d;
  };
  const onlyNode = { PATH: bin };
  const [sds, agent, linked, noNode, oldNode, otherNode] = await Promise.all([
    run(path.join(dir, "sds"), ["--help"], onlyNode),
    run(path.join(dir, "sds-agent"), ["--help"], onlyNode),
    run(path.join(links, "sds"), ["--help"], { PATH: `${bin}:/usr/bin:/bin` }),
    run(path.join(dir, "sds"), ["--help"], { PATH: work }),
    run(path.join(dir, "sds"), ["--help"], { PATH: fakeNode("v18.19.1") }),
    run(path.join(dir, "pulumi-resource-sds"), [], { PATH: fakeNode("v99.0.0") }),
  ]);
  expect({ code: sds.code, out: sds.stdout + sds.stderr }).toEqual({ code: 0, out: expect.stringMatching(/replicate/) });
  expect({ code: agent.code, out: agent.stdout + agent.stderr }).toEqual({ code: 0, out: expect.stringMatching(/--token-file/) });
  expect({ code: linked.code, out: linked.stdout + linked.stderr }).toEqual({ code: 0, out: expect.stringMatching(/replicate/) });
  expect({ code: noNode.code, err: noNode.stderr.trim() }).toEqual({ code: 127, err: expect.stringMatching(/^sds: node not found on PATH; this package needs Node\.js \d+\.x$/) });
  expect({ code: oldNode.code, err: oldNode.stderr.trim() }).toEqual({ code: 1, err: expect.stringMatching(/^sds: node v18\.19\.1 is too old: Node\.js >= 20 is needed/) });
  expect({ code: otherNode.code, err: otherNode.stderr.trim() }).toEqual({ code: 1, err: expect.stringMatching(/^sds: node v99\.0\.0 cannot load this package's native module \(better-sqlite3, built for Node\.js \d+\.x\)/) });
});
