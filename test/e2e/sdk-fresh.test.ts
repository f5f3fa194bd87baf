/** sdk/nodejs must be exactly what `pulumi package gen-sdk` makes from schema.json today. */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { repoRoot } from "../helpers/provider-process";

jest.setTimeout(600_000);

function files(dir: string, base = dir): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === "bin" || e.name === "node_modules" ? [] : files(p, base);
    return [path.relative(base, p)];
  });
}

test("sdk/nodejs is not stale against schema.json", () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "sds-gensdk-"));
  try {
    execFileSync("bash", [path.join(repoRoot, "scripts/gen-sdk.sh"), out], { stdio: ["ignore", "ignore", "pipe"] });
    const committed = path.join(repoRoot, "sdk/nodejs");
    const fresh = path.join(out, "nodejs");
    expect(files(committed).sort()).toEqual(files(fresh).sort());
    const stale = files(fresh).filter((f) => fs.readFileSync(path.join(fresh, f), "utf8") !== fs.readFileSync(path.join(committed, f), "utf8"));
    expect(stale).toEqual([]); // run `npm run gen-sdk` and commit the result
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
