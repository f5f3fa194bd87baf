/**
 * The quickstart in Pulumi YAML (examples/quickstart-yaml) runs as a user runs it (issue 13): from a folder outside
 * the checkout, with the plugin installed from the packaged tarball into a fresh PULUMI_HOME and the YAML language
 * host that scripts/ensure-pulumi.sh builds beside the CLI (pulumi-yaml v1.38.0): up, preview and refresh without
 * changes, destroy. A YAML program needs no SDK: the engine reads the resource types from the plugin's schema.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type OutsideProject, outsideProject } from "../helpers/packaged";
import { repoRoot } from "../helpers/provider-process";
import { summaryCount } from "../helpers/pulumi";

jest.setTimeout(600_000);

let p: OutsideProject;

beforeAll(async () => {
  p = await outsideProject(path.join(repoRoot, "examples/quickstart-yaml"));
});

afterAll(() => {
  if (!process.env.SDS_KEEP_E2E) p?.remove();
});

const volumeFiles = (): string[] => fs.readdirSync(path.join(p.dir, ".sds/pools/default")).filter((f) => f.endsWith(".img"));

test("up makes the profile and both volumes; preview and refresh then find nothing to change", async () => {
  expect(p.dir.startsWith(repoRoot)).toBe(false);
  const up = await p.ok(["up", "--yes", "--skip-preview"]);
  expect(summaryCount(up.stdout, "created")).toBe(4); // stack, profile, two volumes
  const out = await p.outputs();
  expect(out).toEqual({ dataVolumeId: expect.any(String), dataPool: "local/default", dataStatus: "available", logsSizeGib: 2 });
  expect(volumeFiles().some((f) => f.includes(out.dataVolumeId as string))).toBe(true);
  expect(volumeFiles()).toHaveLength(2);
  // The YAML host ran the program (not some other runtime), and the engine took sds from PULUMI_HOME.
  const pre = await p.ok(["preview", "--expect-no-changes", "--logtostderr", "-v=6"]);
  expect(pre.stderr).toMatch(/GetPluginPath\(language, yaml, [^)]*\): found on \$PATH/);
  const found = /GetPluginPath\(resource, sds, [^)]*\): found in cache at (\S+?\/pulumi-resource-sds)\b/.exec(pre.stderr);
  expect(found?.[1]).toBe(path.join(p.pulumiHome, "plugins", `resource-sds-v${p.artifacts.version}`, "pulumi-resource-sds"));
  await p.ok(["refresh", "--yes", "--expect-no-changes"]);
});

test("destroy deletes them", async () => {
  const down = await p.ok(["destroy", "--yes", "--skip-preview"]);
  expect(summaryCount(down.stdout, "deleted")).toBe(4);
  expect(volumeFiles()).toEqual([]);
});
