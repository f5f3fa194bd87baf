/**
 * The three SDKs are exactly what scripts/gen-sdk.sh makes from schema.json today, and the Python and Go ones build
 * as a user would build them: a wheel installed into a virtualenv next to the `pulumi` package and imported; the Go
 * module built and vetted, and imported by its schema path from a module of a user's. The Node.js SDK's build is
 * proved by `npm run build` and by the packaged-plugin tests (npm pack).
 *
 * Each SDK is built from a copy under os.tmpdir(): building in place would leave build/ and *.egg-info in the
 * checkout. The virtualenv is kept between runs (~/.cache/sds/python/, keyed by the Python and pulumi versions), so
 * PyPI is asked only on a new machine or a new version. The three jobs start together and each test awaits its own.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { repoRoot } from "../helpers/provider-process";

jest.setTimeout(900_000);

/** The files of an SDK, relative to its folder, without the build outputs a user's build leaves there. */
function files(dir: string, base = dir): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return ["bin", "node_modules", "build", "dist", "__pycache__"].includes(e.name) || e.name.endsWith(".egg-info") ? [] : files(p, base);
    return [path.relative(base, p)];
  });
}

/** Run a command; reject with its output (the one thing a reader needs when a build fails). */
function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { ...opts, encoding: "utf8", maxBuffer: 64 << 20, timeout: 600_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(" ")} (in ${opts.cwd ?? process.cwd()}) failed: ${err.message}\n${stderr}\n${stdout}`));
      else resolve(stdout);
    });
  });
}

/** Why a tool cannot be used here, or undefined when it can (the one acceptable reason to skip). */
async function missing(cmd: string, args: string[]): Promise<string | undefined> {
  try {
    await run(cmd, args);
    return undefined;
  } catch {
    return `${cmd} ${args.join(" ")} fails on this machine`;
  }
}

const schema = JSON.parse(fs.readFileSync(path.join(repoRoot, "schema.json"), "utf8"));
const version: string = schema.version;
const pulumiVersion: string = JSON.parse(fs.readFileSync(path.join(repoRoot, "package.json"), "utf8")).dependencies["@pulumi/pulumi"];
const work = fs.mkdtempSync(path.join(os.tmpdir(), "sds-sdk-fresh-"));
const copy = (sdk: string): string => {
  const dst = path.join(work, `${sdk}-build`);
  fs.cpSync(path.join(repoRoot, "sdk", sdk), dst, { recursive: true });
  return dst;
};

/** gen-sdk.sh into a fresh folder. */
async function generate(): Promise<string> {
  const out = path.join(work, "gen");
  await run("bash", [path.join(repoRoot, "scripts/gen-sdk.sh"), out]);
  return out;
}

/**
 * The cached virtualenv with the build tools and `pulumi`, made on first use. A virtualenv cannot be moved (its
 * scripts name their folder), so it is made in place under a lock folder; a run that finds the lock waits for it.
 */
async function venv(python: string): Promise<string> {
  const pyVersion = (await run(python, ["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])).trim();
  const cache = path.join(process.env.SDS_CACHE_DIR ?? path.join(os.homedir(), ".cache/sds"), "python");
  const dir = path.join(cache, `venv-py${pyVersion}-pulumi${pulumiVersion}`);
  const ready = path.join(dir, ".sds-ready");
  const lock = `${dir}.lock`;
  fs.mkdirSync(cache, { recursive: true });
  for (let waited = 0; !fs.existsSync(ready); waited += 1) {
    try {
      fs.mkdirSync(lock);
    } catch {
      if (waited > 1200) throw new Error(`waited 10 minutes for ${lock}; remove it if no test is running`);
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    try {
      if (fs.existsSync(ready)) break;
      fs.rmSync(dir, { recursive: true, force: true }); // a half-made one
      await run(python, ["-m", "venv", dir]);
      // The wheel's own dependencies (parver, semver, ...) come when the wheel is installed.
      await run(path.join(dir, "bin/python"), ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "setuptools>=61", "wheel", `pulumi==${pulumiVersion}`]);
      fs.writeFileSync(ready, "");
    } finally {
      fs.rmSync(lock, { recursive: true, force: true });
    }
  }
  return dir;
}

/** Build the wheel, install it (its dependencies from PyPI when the venv lacks them) and import it. */
async function buildPython(): Promise<{ wheel: string; imported: string } | string> {
  const python = process.env.PYTHON ?? "python3";
  const why = await missing(python, ["-m", "venv", "--help"]);
  if (why) return why;
  const venvDir = await venv(python);
  const pip = path.join(venvDir, "bin/pip"); // its shebang names this venv's python
  const src = copy("python");
  const wheels = path.join(work, "wheels");
  await run(pip, ["wheel", "--quiet", "--disable-pip-version-check", "--no-deps", "--no-build-isolation", "--wheel-dir", wheels, src]);
  const [wheel] = fs.readdirSync(wheels);
  await run(pip, ["install", "--quiet", "--disable-pip-version-check", "--force-reinstall", "--no-deps", path.join(wheels, wheel)]);
  await run(pip, ["install", "--quiet", "--disable-pip-version-check", path.join(wheels, wheel), `pulumi==${pulumiVersion}`]); // missing dependencies only
  await run(pip, ["check", "--disable-pip-version-check"]);
  const imported = await run(
    path.join(venvDir, "bin/python"),
    ["-c", "import importlib.metadata as m, pulumi_sds as s; print(s.__file__, m.version('pulumi_sds'), s.Volume.__name__, s.Profile.__name__, s.Attachment.__name__, s.ReplicationPair.__name__, s.get_pools.__name__)"],
    { cwd: work }, // not the source folder: the import must come from the installed wheel
  );
  return { wheel, imported: imported.trim() };
}

const goEnv = (): NodeJS.ProcessEnv => ({ ...process.env, GOFLAGS: "-mod=mod", GOTOOLCHAIN: "local", CGO_ENABLED: "0" });

/** go build and go vet in the SDK's module, then a user's module that imports it by its schema path. */
async function buildGo(): Promise<{ modulePath: string; built: string } | string> {
  const why = await missing("go", ["version"]);
  if (why) return why;
  const src = copy("go");
  const env = goEnv();
  await run("go", ["build", "./..."], { cwd: src, env });
  await run("go", ["vet", "./..."], { cwd: src, env });
  const modulePath = (await run("go", ["list", "-m"], { cwd: src, env })).trim();
  const user = path.join(work, "go-user");
  fs.mkdirSync(user);
  const importPath: string = schema.language.go.importBasePath;
  fs.writeFileSync(
    path.join(user, "main.go"),
    `package main

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"${importPath}"
)

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		standard, err := sds.NewProfile(ctx, "standard", &sds.ProfileArgs{ExtraSpecs: pulumi.StringMap{"provisioningPolicy": pulumi.String("Thin")}})
		if err != nil {
			return err
		}
		data, err := sds.NewVolume(ctx, "data", &sds.VolumeArgs{SizeGib: pulumi.Int(10), Profile: standard.Name})
		if err != nil {
			return err
		}
		ctx.Export("dataPool", data.PoolId)
		return nil
	})
}
`,
  );
  fs.writeFileSync(path.join(user, "go.mod"), `module example.com/sds-user\n\ngo 1.25\n\nrequire ${modulePath} v0.0.0\n\nreplace ${modulePath} => ${src}\n`);
  await run("go", ["mod", "tidy"], { cwd: user, env });
  await run("go", ["build", "-o", path.join(work, "sds-user"), "."], { cwd: user, env });
  await run("go", ["vet", "."], { cwd: user, env });
  return { modulePath, built: path.join(work, "sds-user") };
}

// Started at once (jest runs the tests of a file one after another; these do not depend on each other).
const jobs = { gen: generate(), python: buildPython(), go: buildGo() };
for (const j of Object.values(jobs)) (j as Promise<unknown>).catch(() => undefined); // awaited by their tests

afterAll(async () => {
  await Promise.allSettled(Object.values(jobs));
  fs.rmSync(work, { recursive: true, force: true });
});

describe.each(["nodejs", "python", "go"])("sdk/%s", (sdk) => {
  test("is not stale against schema.json (run `npm run gen-sdk` and commit the result)", async () => {
    const fresh = path.join(await jobs.gen, sdk);
    const committed = path.join(repoRoot, "sdk", sdk);
    expect(files(committed).sort()).toEqual(files(fresh).sort());
    const stale = files(fresh).filter((f) => fs.readFileSync(path.join(fresh, f), "utf8") !== fs.readFileSync(path.join(committed, f), "utf8"));
    expect(stale).toEqual([]);
  });
});

test("sdk/python builds a wheel of the schema's version that installs next to pulumi and imports", async () => {
  const r = await jobs.python;
  if (typeof r === "string") return console.warn(`skipped: ${r}`);
  expect(r.wheel).toBe(`pulumi_sds-${version}-py3-none-any.whl`);
  expect(r.imported).toMatch(new RegExp(`site-packages/pulumi_sds/__init__\\.py ${version.replace(/\./g, "\\.")} Volume Profile Attachment ReplicationPair get_pools$`));
});

test("sdk/go builds and vets, and a user's module imports it by language.go.importBasePath", async () => {
  const r = await jobs.go;
  if (typeof r === "string") return console.warn(`skipped: ${r}`);
  expect(r.modulePath).toBe(path.posix.dirname(schema.language.go.importBasePath));
  expect(fs.statSync(r.built).size).toBeGreaterThan(0);
});
