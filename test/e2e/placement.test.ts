/**
 * Placement through the real Pulumi CLI: three pools of different capabilities, profiles that
 * must land on each, the chosen pool shown in preview before anything exists, an impossible
 * profile failing the preview with every pool explained, and getPlacement agreeing with up.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { PulumiProject } from "../helpers/pulumi";

jest.setTimeout(600_000);
let p: PulumiProject;
const expected = { shared: "fast/ssd", bulk: "slow/hdd", dr: "archive/cold" };

const volumeFiles = () =>
  ["fast-ssd", "slow-hdd", "archive-cold"].flatMap((d) => {
    const dir = path.join(p.dir, "pools", d);
    return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  });

beforeAll(async () => {
  p = await PulumiProject.create("placement");
  await p.config({ "sds:backendsFile": "backends.yaml" });
});
afterAll(() => p?.remove());

test("preview shows the pool each new volume will land on, and creates nothing", async () => {
  const r = await p.ok(["preview"]);
  for (const [name, pool] of Object.entries(expected)) {
    expect(r.stdout).toMatch(new RegExp(`sds:index:Volume \\(${name}-vol\\):\\n\\s+placement of volume "${name}-vol": ${pool} \\(backend ${pool.split("/")[0]}, backendId [0-9a-f-]{36}`));
  }
  expect(volumeFiles()).toEqual([]);
});

test("up lands each volume where preview said, and getPlacement agrees", async () => {
  await p.ok(["up", "--yes"]);
  const out = await p.outputs();
  expect(out.volumes).toEqual(expected);
  expect(out.placements).toEqual(expected);
  expect(volumeFiles()).toHaveLength(3);
  await p.ok(["preview", "--expect-no-changes"]);
  // The "shared" profile makes its volume multiAttach: derived, never drift.
  await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  await p.ok(["preview", "--expect-no-changes"]);
});

test("a profile nothing satisfies fails the preview, explaining every pool", async () => {
  await p.config({ impossible: true });
  const r = await p.run(["preview"]);
  expect(r.code).not.toBe(0);
  const text = r.stdout + r.stderr;
  expect(text).toMatch(/no valid pool for a 5 GiB volume; every pool was rejected:/);
  expect(text).toMatch(/fast\/ssd: capabilities: diskType is SSD, profile asks NVMe/);
  expect(text).toMatch(/slow\/hdd: capabilities: diskType is HDD, profile asks NVMe/);
  expect(text).toMatch(/archive\/cold: capabilities: diskType is HDD, profile asks NVMe/);
  await p.ok(["config", "rm", "impossible"]);
});

test("a typo in a profile's extra specs is a check failure with a hint", async () => {
  await p.config({ impossible: false });
  const file = path.join(p.dir, "index.ts");
  const original = fs.readFileSync(file, "utf8");
  fs.writeFileSync(file, original.replace('diskType: "SSD"', 'diskTipe: "SSD"'));
  try {
    const r = await p.run(["preview"]);
    expect(r.code).not.toBe(0);
    // The engine prints the value of a failure's top-level property (not {<nil>}); the path leads the reason.
    expect(r.stdout).toMatch(/property extraSpecs value \{map\[.*diskTipe:\{SSD\}.*\]\} has a problem: extraSpecs\["diskTipe"\]: no pool has or could have "diskTipe"; did you mean "diskType"\?/);
    expect(r.stdout).not.toContain("{<nil>}");
  } finally {
    fs.writeFileSync(file, original);
  }
});

test("destroy removes every volume", async () => {
  await p.ok(["destroy", "--yes"]);
  expect(volumeFiles()).toEqual([]);
});
