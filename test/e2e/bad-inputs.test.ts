/** Bad input through the real CLI: a clear error naming the property (or file and line), and nothing made. */
import * as fs from "node:fs";
import * as path from "node:path";
import { PulumiProject } from "../helpers/pulumi";

jest.setTimeout(600_000);
let p: PulumiProject;

beforeAll(async () => {
  p = await PulumiProject.create("bad-inputs");
});
afterAll(() => p?.remove());

const nothingMade = () => {
  const pool = path.join(p.dir, ".sds/pools/default");
  expect(fs.existsSync(pool) ? fs.readdirSync(pool) : []).toEqual([]);
};

async function fails(pattern: RegExp): Promise<void> {
  for (const cmd of [["preview"], ["up", "--yes"]]) {
    const r = await p.run(cmd);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(pattern);
  }
  // The state holds nothing of ours after a failed update.
  const state = JSON.parse((await p.ok(["stack", "export"])).stdout);
  expect((state.deployment.resources ?? []).filter((r: { type: string }) => r.type.startsWith("sds:index:"))).toEqual([]);
  nothingMade();
}

test("sizeGib 0 is a check failure naming sizeGib", async () => {
  await p.config({ size: 0 });
  await fails(/sds:index:Volume resource 'bad': property sizeGib value \{0\} has a problem: must be at least 1/);
});

test("a fractional size is refused", async () => {
  await p.config({ size: 1.5 });
  await fails(/property sizeGib value \{1.5\} has a problem: must be a whole number of GiB/);
});

test("an unknown profile is a check failure naming profile", async () => {
  await p.config({ size: 1, profile: "platinum" });
  await fails(/property profile value \{platinum\} has a problem: no profile with id or name "platinum"/);
  await p.ok(["config", "rm", "profile"]);
});

test("a malformed backends file names the file and line", async () => {
  const file = path.join(p.dir, "backends.yaml");
  fs.writeFileSync(file, "backends:\n  - name: fast\n    driver: file\n    pools:\n      - name: p0\n        path: pools/p0\n        totalCapacityGib: lots\n");
  await p.config({ "sds:backendsFile": file });
  await fails(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:7: backends\\[0\\]\\.pools\\[0\\]\\.totalCapacityGib:`));
  await p.ok(["config", "rm", "sds:backendsFile"]);
});

test("a typo in an extra-spec key shows the value written, not {<nil>} (issue 12)", async () => {
  // The engine looks a failure's property up as a top-level key: a nested path printed {<nil>}.
  await p.config({ size: 1, specs: JSON.stringify({ diskTyp: "SSD" }) });
  await fails(/sds:index:Profile resource 'gold': property extraSpecs value \{map\[diskTyp:\{SSD\}\]\} has a problem: extraSpecs\["diskTyp"\]: no pool has or could have "diskTyp"; did you mean "diskType"\?/);
  expect((await p.run(["preview"])).stdout).not.toContain("<nil>");
  await p.ok(["config", "rm", "specs"]);
});

test("a backends key indented too deep names its own line (issue 12)", async () => {
  const file = path.join(p.dir, "backends.yaml");
  fs.writeFileSync(file, "backends:\n  - name: fast\n    driver: file\n    pools:\n      - name: p0\n          path: pools/p0\n");
  await p.config({ size: 1, "sds:backendsFile": file });
  await fails(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:6: invalid YAML: "path" is indented deeper than the keys beside it, so it reads as part of the value on line 5`));
  await p.ok(["config", "rm", "sds:backendsFile"]);
});

test("with the inputs fixed, the same stack comes up", async () => {
  await p.config({ size: 1 });
  await p.ok(["up", "--yes"]);
  await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  await p.ok(["destroy", "--yes"]);
  nothingMade();
});
