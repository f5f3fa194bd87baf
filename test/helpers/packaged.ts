/**
 * sds as a user outside this repo gets it: the plugin tarball and the Node.js SDK tarball that
 * `npm run package` builds (scripts/package.mjs), and Pulumi projects in folders under os.tmpdir()
 * that use them — the plugin installed with `pulumi plugin install resource sds <version> --file`
 * into the project's own PULUMI_HOME, `pulumi-sds` installed from the packed SDK — and whose env
 * holds no path into the checkout.
 *
 *   const { version } = packagedArtifacts();
 *   const p = await outsideProject("/abs/path/to/program");      // Node.js (package.json) or YAML
 *   await p.ok(["up", "--yes"]);  …  p.remove();
 *
 * Costs, once per set of sources: `npm run package` (a few seconds), and one `npm install` (the SDK
 * tarball, @pulumi/pulumi, typescript, ts-node, @types/node and the program's own dependencies) in a
 * shared folder os.tmpdir()/sds-outside-<hash>/, whose node_modules every project folder made under
 * it inherits. Both are done under a lock, so two jest workers share them, and kept for later runs
 * (keyed by the hash of what went in); shared folders unused for two hours are deleted when a new one
 * is made. The plugin tarball's copy lives in os.tmpdir()/sds-plugin-<hash>/ (projects without a
 * package.json, i.e. Pulumi YAML, are made under it).
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { repoRoot } from "./provider-process";
import { PulumiWorkspace, pulumiBinDir, pulumiEnv } from "./pulumi";

export interface PackagedArtifacts {
  /** `pulumi-resource-sds-v<version>-linux-amd64.tar.gz` (built into test/.work/packaged/<hash>/). */
  pluginTarball: string;
  /** `pulumi-sds-<version>.tgz`, the `npm pack` of sdk/nodejs (same folder). */
  sdkTarball: string;
  /** The schema's version (= package.json's; `npm run package` refuses a mismatch). */
  version: string;
}

/** The files `npm run package` reads: when their contents are unchanged, the earlier outputs are reused. */
function inputsHash(): string {
  const h = createHash("sha256");
  const add = (rel: string): void => {
    const abs = path.join(repoRoot, rel);
    const st = fs.statSync(abs, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) {
      for (const e of fs.readdirSync(abs).sort()) if (e !== "bin" && e !== "node_modules") add(path.join(rel, e));
      return;
    }
    h.update(`${rel}\0`).update(fs.readFileSync(abs)).update("\0");
  };
  for (const f of ["provider/src", "sdk/nodejs", "schema.json", "package.json", "package-lock.json", "LICENSE", "scripts/package.mjs"]) add(f);
  h.update(process.versions.node);
  return h.digest("hex").slice(0, 16);
}

const sleep = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Run `fn` holding a lock folder (other jest workers wait; a lock left by a dead process is taken over). */
function withLock<T>(lockDir: string, fn: () => T, timeoutMs = 15 * 60_000): T {
  fs.mkdirSync(path.dirname(lockDir), { recursive: true });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      fs.mkdirSync(lockDir);
      fs.writeFileSync(path.join(lockDir, "pid"), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      let pid = 0;
      let since = Date.now();
      try {
        since = fs.statSync(lockDir).mtimeMs;
        pid = Number(fs.readFileSync(path.join(lockDir, "pid"), "utf8")) || 0;
      } catch {
        // released meanwhile, or its holder is between mkdir and writeFile
      }
      let alive = pid > 0;
      if (alive) {
        try {
          process.kill(pid, 0);
        } catch {
          alive = false;
        }
      }
      // No pid for 10 s: its holder died between mkdir and writeFile.
      if (!alive && (pid > 0 || Date.now() - since > 10_000)) fs.rmSync(lockDir, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`waited ${timeoutMs / 1000}s for the lock ${lockDir} (held by pid ${pid})`, { cause: err });
      else sleep(250);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(lockDir, { recursive: true, force: true });
  }
}

let artifacts: PackagedArtifacts | undefined;

/**
 * The plugin and SDK tarballs of the current sources: `npm run package` once per jest run (and not
 * at all while the sources are those of an earlier run), under a lock in test/.work/.
 */
export function packagedArtifacts(): PackagedArtifacts {
  if (artifacts) return artifacts;
  const version: string = JSON.parse(fs.readFileSync(path.join(repoRoot, "schema.json"), "utf8")).version;
  const base = path.join(repoRoot, "test/.work/packaged");
  artifacts = withLock(path.join(base, "lock"), () => {
    const key = inputsHash();
    const dir = path.join(base, key);
    const result = { pluginTarball: path.join(dir, `pulumi-resource-sds-v${version}-linux-amd64.tar.gz`), sdkTarball: path.join(dir, `pulumi-sds-${version}.tgz`), version };
    if (fs.existsSync(result.pluginTarball) && fs.existsSync(result.sdkTarball)) return result;
    // Earlier sources' outputs: another jest run (a colleague's, in this checkout) may still be using them for a while.
    for (const old of fs.readdirSync(base)) {
      const st = fs.statSync(path.join(base, old), { throwIfNoEntry: false });
      if (old !== "lock" && st && Date.now() - st.mtimeMs > 3600_000) fs.rmSync(path.join(base, old), { recursive: true, force: true });
    }
    try {
      // Straight into this run's folder: a `npm run package` of someone else's may rewrite dist-package/ meanwhile.
      execFileSync("npm", ["run", "--silent", "package", "--", "--out", dir], { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      throw new Error(`npm run package failed\n${e.stderr ?? ""}\n${e.stdout ?? ""}`, { cause: err });
    }
    return result;
  });
  return artifacts;
}

const fileHash = (f: string): string => createHash("sha256").update(fs.readFileSync(f)).digest("hex");

/** Copy a folder, leaving out what a checkout's copy of a program may hold but a user's would not. */
function copyProgram(src: string, dst: string): void {
  fs.mkdirSync(dst, { recursive: true });
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    if (["node_modules", ".sds", "bin", ".pulumi-backend", ".pulumi-home"].includes(e.name)) continue;
    if (e.isDirectory()) copyProgram(path.join(src, e.name), path.join(dst, e.name));
    else if (e.isFile()) fs.copyFileSync(path.join(src, e.name), path.join(dst, e.name));
  }
}

/**
 * The shared folder whose node_modules the projects under it use: the SDK from its tarball, the
 * Pulumi SDK and TypeScript tooling at this repo's versions, and `extraDeps` (a program's own).
 * Made once per distinct set of tarballs and dependencies (a lock under os.tmpdir()).
 */
function sharedFolder(a: PackagedArtifacts, extraDeps: Record<string, string>): string {
  const root = JSON.parse(fs.readFileSync(path.join(repoRoot, "package.json"), "utf8"));
  const deps: Record<string, string> = {
    ...extraDeps,
    "@pulumi/pulumi": root.dependencies["@pulumi/pulumi"],
    typescript: root.devDependencies.typescript,
    "ts-node": root.devDependencies["ts-node"],
    "@types/node": root.devDependencies["@types/node"],
    "pulumi-sds": `file:./${path.basename(a.sdkTarball)}`,
  };
  const sorted = Object.fromEntries(Object.entries(deps).sort(([x], [y]) => x.localeCompare(y)));
  const key = createHash("sha256").update(fileHash(a.sdkTarball)).update(JSON.stringify(sorted)).digest("hex").slice(0, 12);
  const dir = path.join(os.tmpdir(), `sds-outside-${key}`);
  return withLock(`${dir}.lock`, () => {
    const ready = path.join(dir, "node_modules/.sds-ready");
    if (fs.existsSync(ready)) {
      fs.utimesSync(ready, new Date(), new Date());
      return dir;
    }
    pruneShared(dir);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(a.sdkTarball, path.join(dir, path.basename(a.sdkTarball)));
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "sds-outside-deps", private: true, dependencies: sorted }, null, 2) + "\n");
    try {
      execFileSync("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"], { cwd: dir, env: outsideEnv({}), encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      throw new Error(`npm install in ${dir} failed\n${e.stderr ?? ""}\n${e.stdout ?? ""}`, { cause: err });
    }
    fs.writeFileSync(path.join(dir, "node_modules/.sds-ready"), "");
    return dir;
  });
}

/** Delete the other shared folders (sds-outside-*, sds-plugin-*) nobody has used for two hours and nobody holds. */
function pruneShared(keep: string): void {
  const tmp = os.tmpdir();
  for (const name of fs.readdirSync(tmp)) {
    const dir = path.join(tmp, name);
    if (!/^sds-(outside|plugin)-[0-9a-f]{12}$/.test(name) || dir === keep || fs.existsSync(`${dir}.lock`)) continue;
    const used = [path.join(dir, "node_modules/.sds-ready"), dir].map((f) => fs.statSync(f, { throwIfNoEntry: false })?.mtimeMs ?? 0);
    if (Date.now() - Math.max(...used) > 2 * 3600_000) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * An env for a process outside the checkout: the Pulumi CLI's folder and node's folder, then the
 * system's; HOME, USER, locale and TMPDIR from this process; nothing else from it (jest's env holds
 * npm_* variables and a PATH naming the checkout).
 */
function outsideEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const k of ["HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "npm_config_cache"]) {
    const v = process.env[k];
    if (v !== undefined && !v.includes(repoRoot)) env[k] = v;
  }
  return { ...env, PATH: outsidePath(), ...extra };
}

/** The Pulumi CLI's folder, node's, then the system's. */
function outsidePath(): string {
  return `${pulumiBinDir()}:${path.dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;
}

/** A folder under os.tmpdir() holding a copy of the plugin tarball (the path `pulumi plugin install --file` is given). */
function pluginFolder(a: PackagedArtifacts): string {
  const dir = path.join(os.tmpdir(), `sds-plugin-${fileHash(a.pluginTarball).slice(0, 12)}`);
  const copy = path.join(dir, path.basename(a.pluginTarball));
  if (!fs.existsSync(copy)) {
    pruneShared(dir);
    fs.mkdirSync(dir, { recursive: true });
    const tmp = `${copy}.${process.pid}`;
    fs.copyFileSync(a.pluginTarball, tmp);
    fs.renameSync(tmp, copy);
  }
  fs.utimesSync(dir, new Date(), new Date());
  return dir;
}

/** A Pulumi project in a folder under os.tmpdir(), using the packaged plugin and SDK (see the file's doc). */
export class OutsideProject extends PulumiWorkspace {
  /** The PULUMI_HOME the plugin is installed in (`<dir>/.pulumi-home`). */
  readonly pulumiHome: string;
  readonly artifacts: PackagedArtifacts;

  constructor(dir: string, env: NodeJS.ProcessEnv, artifacts: PackagedArtifacts) {
    super(dir, env);
    this.pulumiHome = env.PULUMI_HOME!;
    this.artifacts = artifacts;
  }
}

export interface OutsideOptions {
  /** The stack to create (default `test`). */
  stack?: string;
  /** More env for the CLI (and so the plugin), e.g. SDS_BACKENDS_FILE. */
  env?: NodeJS.ProcessEnv;
  /**
   * Keep a `plugins:` block of Pulumi.yaml. By default it is dropped from the copy: an example in
   * this repo may point `plugins.providers` at provider/bin, which a user's project does not need
   * (and must not have: the installed plugin is what is tested).
   */
  keepPluginsBlock?: boolean;
}

/**
 * Copy the program folder `source` (absolute) to a new folder under os.tmpdir(), give it the shared
 * node_modules when it is a Node.js program (it has a package.json; Pulumi YAML programs need none),
 * a fresh PULUMI_HOME with the plugin installed from the tarball, a file backend in the folder, and
 * create the stack. `remove()` deletes the folder (the shared node_modules stay for later runs).
 */
export async function outsideProject(source: string, o: OutsideOptions = {}): Promise<OutsideProject> {
  if (!path.isAbsolute(source)) throw new Error(`outsideProject: ${source} is not an absolute path`);
  const a = packagedArtifacts();
  let parent: string;
  const pkgFile = path.join(source, "package.json");
  if (fs.existsSync(pkgFile)) {
    const pkg = JSON.parse(fs.readFileSync(pkgFile, "utf8"));
    const own: Record<string, string> = { ...pkg.devDependencies, ...pkg.dependencies };
    for (const k of ["pulumi-sds", "@pulumi/pulumi", "typescript", "ts-node", "@types/node"]) delete own[k];
    parent = path.join(sharedFolder(a, own), "projects");
  } else {
    parent = path.join(pluginFolder(a), "projects");
  }
  fs.mkdirSync(parent, { recursive: true });
  const dir = fs.mkdtempSync(path.join(parent, `${path.basename(source)}-`));
  copyProgram(source, dir);
  if (!o.keepPluginsBlock) {
    const yamlFile = path.join(dir, "Pulumi.yaml");
    const yaml = fs.readFileSync(yamlFile, "utf8");
    // A top-level `plugins:` key and its indented lines.
    fs.writeFileSync(yamlFile, yaml.replace(/^plugins:.*\n(?:[ \t]+.*\n|\s*\n)*/m, ""));
  }
  const home = path.join(dir, ".pulumi-home");
  fs.mkdirSync(path.join(dir, ".pulumi-backend"), { recursive: true });
  const env = outsideEnv({
    ...pulumiEnv({ backendUrl: `file://${path.join(dir, ".pulumi-backend")}`, home, passphrase: "e2e-passphrase" }),
    PATH: outsidePath(),
    ...o.env,
  });
  const p = new OutsideProject(dir, env, a);
  // The tarball's copy under os.tmpdir(): nothing the CLI is given names the checkout.
  await p.ok(["plugin", "install", "resource", "sds", a.version, "--file", path.join(pluginFolder(a), path.basename(a.pluginTarball))]);
  await p.ok(["stack", "init", o.stack ?? "test"]);
  return p;
}
