/**
 * provider/bin/pulumi-resource-sds (issue 14): runs the bundle `npm run build` makes (through
 * dist/start-bundle.js, with its code cache) while it is newer than dist/main.js, the compiled
 * files otherwise (tsc ran alone since); the plugin's arguments and its folder reach the bundle
 * as when node runs it directly. Played on a copy of the launcher over a fake dist/.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { repoRoot } from "../helpers/provider-process";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-launcher-"));
  fs.mkdirSync(path.join(dir, "bin"));
  fs.mkdirSync(path.join(dir, "dist/bundle"), { recursive: true });
  fs.copyFileSync(path.join(repoRoot, "provider/bin/pulumi-resource-sds"), path.join(dir, "bin/pulumi-resource-sds"));
  fs.copyFileSync(path.join(repoRoot, "provider/dist/start-bundle.js"), path.join(dir, "dist/start-bundle.js"));
  fs.writeFileSync(path.join(dir, "dist/main.js"), `process.stdout.write(JSON.stringify({ ran: "main", args: process.argv.slice(2) }));`);
  fs.writeFileSync(path.join(dir, "dist/bundle/provider.js"), `process.stdout.write(JSON.stringify({ ran: "bundle", args: process.argv.slice(2), dir: __dirname, exported: typeof module.exports }));`);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const launch = () => JSON.parse(execFileSync(path.join(dir, "bin/pulumi-resource-sds"), ["127.0.0.1:1234", "-v=9"], { encoding: "utf8" }));
const age = (file: string, secondsAgo: number) => fs.utimesSync(path.join(dir, file), new Date(Date.now() - secondsAgo * 1000), new Date(Date.now() - secondsAgo * 1000));

test("a bundle newer than dist/main.js is run, with the plugin's arguments and its own folder", () => {
  age("dist/main.js", 60);
  expect(launch()).toEqual({ ran: "bundle", args: ["127.0.0.1:1234", "-v=9"], dir: path.join(dir, "dist/bundle"), exported: "object" });
});

test("a bundle older than dist/main.js (tsc ran since) is not run; nor is a missing one", () => {
  age("dist/bundle/provider.js", 60);
  expect(launch()).toEqual({ ran: "main", args: ["127.0.0.1:1234", "-v=9"] });
  fs.rmSync(path.join(dir, "dist/bundle"), { recursive: true });
  expect(launch()).toEqual({ ran: "main", args: ["127.0.0.1:1234", "-v=9"] });
});

test("a code cache of another file is rejected by V8 and the bundle runs as without one", () => {
  age("dist/main.js", 60);
  fs.writeFileSync(path.join(dir, "dist/bundle/provider.js.cache"), fs.readFileSync(path.join(repoRoot, "provider/dist/bundle/provider.js.cache")));
  expect(launch().ran).toBe("bundle");
});
