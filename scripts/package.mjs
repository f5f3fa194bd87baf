#!/usr/bin/env node
// npm run package — the installable artifacts of this repo, into dist-package/ (git-ignored):
//
//   pulumi-resource-sds-v<version>-linux-amd64.tar.gz   the plugin: `pulumi plugin install resource sds <version> --file <it>`;
//                                                       also what hosts extract to /opt/sds (sds, sds-agent)
//   pulumi-sds-<version>.tgz                            the Node.js SDK (`npm pack` of sdk/nodejs, compiled bin/)
//
// The plugin tarball needs only `node` on the host: the provider, the operator CLI and the agent are
// bundled by esbuild into lib/*.js; better-sqlite3 (a native module, loaded through `bindings`) is
// copied into node_modules/ as built here, so the host's Node.js must have this Node.js's major
// version (the launchers check). The executable `pulumi-resource-sds` at the root is what the
// Pulumi CLI runs (no PulumiPlugin.yaml: with one, `plugin install` would run a language host's
// dependency install in the plugin folder). Entries are sorted with fixed owners and mtimes, so the
// same sources give the same bytes.
//
// Options: --skip-sdk (only the plugin tarball); --out DIR (instead of dist-package/).
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const started = Date.now();
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outArg = process.argv.indexOf("--out");
const outDir = outArg > 0 && process.argv[outArg + 1] ? path.resolve(process.argv[outArg + 1]) : path.join(root, "dist-package");
const skipSdk = process.argv.includes("--skip-sdk");

function die(message) {
  process.stderr.write(`package: error: ${message}\n`);
  process.exit(1);
}
const readJson = (f) => JSON.parse(fs.readFileSync(path.join(root, f), "utf8"));

// --- one version everywhere ---------------------------------------------------------------------------
const versions = {
  "schema.json": readJson("schema.json").version,
  "package.json": readJson("package.json").version,
  "sdk/nodejs/package.json": readJson("sdk/nodejs/package.json").version,
};
const version = versions["schema.json"];
for (const [file, v] of Object.entries(versions)) {
  if (v !== version) die(`version ${v} in ${file} differs from ${version} in schema.json; make them equal (and run npm run gen-sdk)`);
}
const nodeMajor = Number(process.versions.node.split(".")[0]);
if (nodeMajor < 20) die(`node ${process.versions.node} is too old: packaging needs Node.js >= 20`);
if (process.platform !== "linux" || process.arch !== "x64") die(`the plugin tarball is linux-amd64 (its native module is built here); this is ${process.platform}-${process.arch}`);

fs.mkdirSync(outDir, { recursive: true });
const stage = fs.mkdtempSync(path.join(outDir, ".stage-"));
try {
  // --- bundled JavaScript --------------------------------------------------------------------------------
  const bundled = await esbuild.build({
    absWorkingDir: root,
    entryPoints: {
      provider: "provider/src/main.ts",
      sds: "provider/src/cli-main.ts",
      "sds-agent": "provider/src/agent-main.ts",
    },
    outdir: path.join(stage, "lib"),
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    // better-sqlite3 is required from the copy in node_modules/ (its addon is found relative to it);
    // pg-native is pg's optional native client, never required unless asked for.
    external: ["better-sqlite3", "pg-native"],
    legalComments: "eof",
    logLevel: "warning",
    metafile: true,
  });

  // The licenses of the npm packages bundled into lib/ (their notices must travel with them).
  const packageDirs = new Set();
  for (const input of Object.keys(bundled.metafile.inputs)) {
    const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m) packageDirs.add(m[1]);
  }
  const notices = [...packageDirs].sort().map((dir) => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, dir, "package.json"), "utf8"));
    const file = fs.readdirSync(path.join(root, dir)).sort().find((f) => /^(licen[cs]e|copying)/i.test(f));
    const text = file ? fs.readFileSync(path.join(root, dir, file), "utf8").trim() : `(no license file in the package; package.json says ${pkg.license})`;
    return `## ${pkg.name} ${pkg.version} (${pkg.license ?? "license not stated"})\n\n${text}\n`;
  });
  fs.writeFileSync(path.join(stage, "THIRD_PARTY_NOTICES.md"), `# Third-party packages bundled into lib/\n\n${notices.join("\n")}`);

  // --- native modules, as installed here -----------------------------------------------------------------
  const copyFile = (from, to) => {
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(from, to);
  };
  const copyPackage = (name, keep) => {
    const src = path.join(root, "node_modules", name);
    if (!fs.existsSync(src)) die(`node_modules/${name} is missing: run npm install first`);
    const walk = (rel) => {
      for (const e of fs.readdirSync(path.join(src, rel), { withFileTypes: true })) {
        const r = path.join(rel, e.name);
        if (e.isDirectory()) walk(r);
        else if (keep(r)) copyFile(path.join(src, r), path.join(stage, "node_modules", name, r));
      }
    };
    walk("");
  };
  copyPackage("better-sqlite3", (r) => r === "package.json" || r === "LICENSE" || (r.startsWith("lib/") && r.endsWith(".js")) || r === "build/Release/better_sqlite3.node");
  copyPackage("bindings", (r) => !r.startsWith("README"));
  copyPackage("file-uri-to-path", (r) => ["package.json", "LICENSE", "index.js"].includes(r));
  if (!fs.existsSync(path.join(stage, "node_modules/better-sqlite3/build/Release/better_sqlite3.node"))) die("node_modules/better-sqlite3 has no build/Release/better_sqlite3.node: run npm install (it builds it)");

  // --- launchers -------------------------------------------------------------------------------------------
  // POSIX sh; readlink -f (when there is one) so that a symlink (/usr/local/bin/sds -> /opt/sds/sds)
  // finds lib/; nothing else outside the shell but node. They exec node, so the plugin's parent is the
  // engine (provider/src/main.ts watches it).
  const launcher = (what, script) => `#!/bin/sh
# ${what} (sds ${version}, packaged by npm run package). Needs Node.js ${nodeMajor}.x on PATH.
self=$0
if command -v readlink >/dev/null 2>&1; then self=$(readlink -f "$0"); fi
here=\${self%/*}
v=$(node --version 2>/dev/null) || { echo "sds: node not found on PATH; this package needs Node.js ${nodeMajor}.x" >&2; exit 127; }
major=\${v#v}; major=\${major%%.*}
if [ "$major" -lt 20 ] 2>/dev/null; then echo "sds: node $v is too old: Node.js >= 20 is needed (this package was built with ${nodeMajor}.x)" >&2; exit 1; fi
if [ "$major" != ${nodeMajor} ]; then echo "sds: node $v cannot load this package's native module (better-sqlite3, built for Node.js ${nodeMajor}.x); use Node.js ${nodeMajor}.x or run npm run package with node $v" >&2; exit 1; fi
exec node "$here/lib/${script}" "$@"
`;
  const launchers = {
    "pulumi-resource-sds": launcher("The Pulumi resource plugin: the engine runs it and reads its port", "provider.js"),
    sds: launcher("sds operator commands (sds --help)", "sds.js"),
    "sds-agent": launcher("The sds host agent (sds-agent --help)", "sds-agent.js"),
  };
  for (const [name, text] of Object.entries(launchers)) fs.writeFileSync(path.join(stage, name), text, { mode: 0o755 });

  // --- schema, license, readme -----------------------------------------------------------------------------
  fs.copyFileSync(path.join(root, "schema.json"), path.join(stage, "schema.json"));
  if (fs.existsSync(path.join(root, "LICENSE"))) fs.copyFileSync(path.join(root, "LICENSE"), path.join(stage, "LICENSE"));
  fs.writeFileSync(path.join(stage, "README.md"), `# sds ${version} (linux-amd64)

The sds Pulumi resource plugin, the \`sds\` operator CLI and the \`sds-agent\` host daemon.
Needs Node.js ${nodeMajor}.x on PATH (the bundled better-sqlite3 is built for it); nothing else.

As a Pulumi plugin:

    pulumi plugin install resource sds ${version} --file pulumi-resource-sds-v${version}-linux-amd64.tar.gz

On a host (agent, \`sds replicate\` timer):

    mkdir -p /opt/sds && tar -xzf pulumi-resource-sds-v${version}-linux-amd64.tar.gz -C /opt/sds
    ln -s /opt/sds/sds /usr/local/bin/sds && ln -s /opt/sds/sds-agent /usr/local/bin/sds-agent
    sds --help; sds-agent --help

Contents: \`pulumi-resource-sds\`, \`sds\`, \`sds-agent\` (launchers), \`lib/\` (bundled JavaScript;
\`THIRD_PARTY_NOTICES.md\` lists its npm packages and their licenses), \`node_modules/\` (better-sqlite3
and what loads it), \`schema.json\`, \`LICENSE\`.
`);

  // --- the tarball: sorted, fixed owner and mtime, gzip without a name or time ----------------------------
  const tarball = path.join(outDir, `pulumi-resource-sds-v${version}-linux-amd64.tar.gz`);
  const entries = fs.readdirSync(stage).sort();
  const tmpTar = path.join(stage, "..", `.tar-${process.pid}.tar.gz`);
  execFileSync("bash", ["-o", "pipefail", "-c", 'tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1577836800 --mode=u+rw,go-w,a+rX --format=gnu -C "$1" -cf - "${@:3}" | gzip -n -9 > "$2"', "_", stage, tmpTar, ...entries]);
  fs.renameSync(tmpTar, tarball);
  const size = fs.statSync(tarball).size;
  process.stdout.write(`${path.relative(root, tarball)}  ${(size / 1024 / 1024).toFixed(1)} MiB\n`);

  // --- the Node.js SDK --------------------------------------------------------------------------------------
  if (!skipSdk) {
    execFileSync("npm", ["run", "--silent", "build:sdk"], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
    const packed = JSON.parse(execFileSync("npm", ["pack", "--json", "--pack-destination", outDir], { cwd: path.join(root, "sdk/nodejs"), encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }));
    const sdk = path.join(outDir, packed[0].filename);
    process.stdout.write(`${path.relative(root, sdk)}  ${(fs.statSync(sdk).size / 1024).toFixed(0)} KiB\n`);
  }
  process.stdout.write(`packaged sds ${version} in ${((Date.now() - started) / 1000).toFixed(1)}s\n`);
} finally {
  fs.rmSync(stage, { recursive: true, force: true });
}
