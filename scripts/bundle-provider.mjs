#!/usr/bin/env node
// npm run build, after tsc — the plugin as one file, which provider/bin/pulumi-resource-sds runs:
//
//   provider/dist/bundle/provider.js        esbuild bundle of provider/src/main.ts (better-sqlite3, a
//                                           native module, and pg-native stay outside, as in npm run package)
//   provider/dist/bundle/provider.js.cache  V8's code cache of it, for this Node.js (dist/start-bundle.js
//                                           uses it; another Node.js rejects it and compiles as usual)
//   provider/dist/bundle/null-provider.js   the same for bench/provider-overhead's do-nothing provider
//
// Why (issue 14): the engine starts the plugin for every `pulumi up`, `preview`, `destroy`; loading
// ~500 files of dist/ and node_modules/ one by one, then compiling them, was 40 % of the plugin's
// CPU in a 100-volume up. One file read and a code cache cut the start to less than half.
import * as fs from "node:fs";
import Module from "node:module";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as vm from "node:vm";
import * as esbuild from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outDir = path.join(root, "provider/dist/bundle");
fs.rmSync(outDir, { recursive: true, force: true });
await esbuild.build({
  absWorkingDir: root,
  // The do-nothing provider of bench/provider-overhead starts the same way, so the bench's floor
  // is not charged for loading that sds no longer pays.
  entryPoints: { provider: "provider/src/main.ts", "null-provider": "provider/src/bench/null-provider.ts" },
  outdir: outDir,
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  external: ["better-sqlite3", "pg-native"],
  sourcemap: "linked",
  logLevel: "warning",
});
for (const name of ["provider.js", "null-provider.js"]) {
  const file = path.join(outDir, name);
  // Compiled as dist/start-bundle.js compiles it (the CommonJS wrapper, the same file name), so V8 accepts the cache.
  const script = new vm.Script(Module.wrap(fs.readFileSync(file, "utf8")), { filename: file });
  fs.writeFileSync(`${file}.cache`, script.createCachedData());
}
