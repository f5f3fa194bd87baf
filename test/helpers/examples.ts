/**
 * The examples of examples/ as a user runs them: a copy outside this checkout (test/helpers/packaged.ts:
 * the packaged plugin in a fresh PULUMI_HOME, the packed SDK), edited to the test's addresses and
 * folders as a user edits them to theirs, with secrets set through stdin (never argv), and the `sds`
 * and `sds-agent` launchers of the installed plugin.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { type OutsideProject, outsideProject } from "./packaged";
import { repoRoot } from "./provider-process";

/**
 * Copy `examples/<name>` outside the checkout and create `stack`; `edits` maps a text to its
 * replacement in every file of the copy, in order (e.g. the example's `10.0.0.5:3260` to the lab's
 * portal); `env` is more env for the CLI and the plugin (SDS_STATE_URL, …).
 */
export async function outsideExample(name: string, stack: string, o: { edits?: Record<string, string>; env?: NodeJS.ProcessEnv } = {}): Promise<OutsideProject> {
  const edits = o.edits ?? {};
  const p = await outsideProject(path.join(repoRoot, "examples", name), { stack, env: o.env });
  const edit = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const f = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (!e.name.startsWith(".") && e.name !== "node_modules") edit(f);
      } else if (e.isFile() && Object.keys(edits).length > 0) {
        const text = fs.readFileSync(f, "utf8");
        let out = text;
        for (const [from, to] of Object.entries(edits)) out = out.split(from).join(to);
        if (out !== text) fs.writeFileSync(f, out);
      }
    }
  };
  edit(p.dir);
  return p;
}

/**
 * An example's afterAll: `pulumi destroy` (a failed test may have left its stack up), then the
 * loop devices a failed destroy left over the copy's files (the test made them, the test takes
 * them away; its census has said so already), then the folder.
 */
export async function destroyAndRemove(p: OutsideProject | undefined): Promise<void> {
  if (!p) return;
  await p.run(["destroy", "--yes"]);
  for (const l of loopsUnder(p.dir)) execFileSync("losetup", ["-d", l.split(" ")[0]]);
  p.remove();
}

/** `pulumi config set --secret key` with the value on stdin, as the examples' READMEs say. */
export function setSecret(p: OutsideProject, key: string, value: string): void {
  execFileSync("pulumi", ["config", "set", "--secret", key, "--non-interactive"], { cwd: p.dir, env: p.env, input: value, stdio: ["pipe", "pipe", "pipe"] });
}

/** A launcher of the plugin installed in the project's PULUMI_HOME: `sds`, `sds-agent`, `pulumi-resource-sds`. */
export function installedBin(p: OutsideProject, name: "sds" | "sds-agent" | "pulumi-resource-sds"): string {
  const bin = path.join(p.pulumiHome, "plugins", `resource-sds-v${p.artifacts.version}`, name);
  if (!fs.existsSync(bin)) throw new Error(`test setup: the installed plugin has no ${name} (${bin})`);
  return bin;
}

/** Loop devices whose backing file is under `dir` ("/dev/loopN over <file>"). */
export function loopsUnder(dir: string): string[] {
  const out = execFileSync("losetup", ["--json", "--list"], { encoding: "utf8" }).trim();
  const loops = (out ? JSON.parse(out).loopdevices : []) as Array<{ name: string; "back-file": string | null }>;
  return loops.filter((l) => (l["back-file"] ?? "").startsWith(`${dir}/`)).map((l) => `${l.name} over ${l["back-file"]}`);
}

/** The backing file of loop device `dev`, or undefined. */
export function loopBackingFile(dev: string): string | undefined {
  const out = execFileSync("losetup", ["--json", "--list"], { encoding: "utf8" }).trim();
  const loops = (out ? JSON.parse(out).loopdevices : []) as Array<{ name: string; "back-file": string | null }>;
  return loops.find((l) => l.name === dev)?.["back-file"] ?? undefined;
}

/** Every regular file under `dir` (relative), for a census of pool folders. */
export function filesIn(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}
