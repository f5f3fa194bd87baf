/**
 * Run the plugin's bundle (provider/dist/bundle/provider.js, made by scripts/bundle-provider.mjs)
 * with V8's code cache beside it: `node dist/start-bundle.js BUNDLE [plugin args…]`.
 *
 * Why: Node.js 20 has no compile cache of its own (`module.enableCompileCache()` is Node.js 22),
 * and compiling the bundle was most of what is left of the plugin's start once its ~500 files
 * became one. A cache made by another Node.js (or for another file) is rejected by V8 and the
 * bundle compiles as it would without one. Nothing is written here: the plugin's folder may be
 * read-only.
 */
import * as fs from "node:fs";
import Module from "node:module";
import * as path from "node:path";
import * as vm from "node:vm";

const file = path.resolve(process.argv[2] ?? "");
// The bundle reads its arguments from argv[2] on, as when node runs it directly.
process.argv.splice(1, 1);
let cachedData: Buffer | undefined;
try {
  cachedData = fs.readFileSync(`${file}.cache`);
} catch {
  cachedData = undefined; // no cache: compiled as usual
}
const script = new vm.Script(Module.wrap(fs.readFileSync(file, "utf8")), { filename: file, cachedData });
const bundle = new Module(file);
bundle.filename = file;
bundle.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path.dirname(file));
const run = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: Module, filename: string, dirname: string) => void;
run.call(bundle.exports, bundle.exports, Module.createRequire(file), bundle, file, path.dirname(file));
