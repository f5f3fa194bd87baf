/**
 * The real Pulumi CLI on a real program: preview → up → no-change preview → no-change refresh →
 * grow (1 update) → profile change (1 replace) → out-of-band delete + refresh → import → destroy.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import Database from "better-sqlite3";
import { PulumiProject, summaryCount } from "../helpers/pulumi";

jest.setTimeout(900_000);

const GiB = 1024 ** 3;
let p: PulumiProject;

const poolDir = () => path.join(p.dir, ".sds/pools/default");
const volumeFile = (id: string) => path.join(poolDir(), `volume-${id}.img`);
const rows = (table: string) => {
  const db = new Database(path.join(p.dir, ".sds/state.db"), { readonly: true });
  try {
    return (db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
  } finally {
    db.close();
  }
};

beforeAll(async () => {
  p = await PulumiProject.create("lifecycle");
  await p.config({ dataSize: 2 });
  await p.config({ "sds:agentToken": "agent-token-plaintext-7f3a" }, { secret: true });
});

afterAll(() => {
  if (p && !process.env.SDS_KEEP_E2E) p.remove();
});

test("preview on an empty stack shows only creates, with the chosen pool, and makes nothing", async () => {
  const pre = await p.previewJson();
  expect(pre.changeSummary).toEqual({ create: 5 });
  // The placement is computed in preview: the stack output fed by data.poolId is already known.
  const text = await p.ok(["preview"]);
  expect(text.stdout).toMatch(/dataPool\s*:\s*"local\/default"/);
  expect(text.stdout).toMatch(/dataId\s*:\s*\[unknown\]/);
  expect(fs.existsSync(poolDir()) ? fs.readdirSync(poolDir()) : []).toEqual([]);
});

test("up creates real volume files; preview and refresh then show no changes", async () => {
  const up = await p.ok(["up", "--yes", "--skip-preview"]);
  expect(summaryCount(up.stdout, "created")).toBe(5);
  const out = await p.outputs();
  expect(fs.statSync(volumeFile(out.dataId as string)).size).toBe(2 * GiB);
  expect(fs.statSync(volumeFile(out.scratchId as string)).size).toBe(1 * GiB);
  await p.ok(["preview", "--expect-no-changes"]);
  await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  await p.ok(["preview", "--expect-no-changes"]);
});

test("the provider config secret is not in the state in plain text", async () => {
  const exported = (await p.ok(["stack", "export"])).stdout;
  expect(exported).not.toContain("agent-token-plaintext-7f3a");
  const revealed = (await p.ok(["stack", "export", "--show-secrets"])).stdout;
  expect(revealed).toContain("agent-token-plaintext-7f3a");
});

test("growing sizeGib is exactly one in-place update (detailed diff on sizeGib)", async () => {
  const before = await p.outputs();
  await p.config({ dataSize: 5 });
  const pre = await p.previewJson(["--diff"]);
  expect(pre.changeSummary).toEqual({ same: 4, update: 1 });
  const step = pre.steps.find((s) => s.urn.endsWith("::data"))!;
  expect(step.op).toBe("update");
  expect(Object.keys(step.detailedDiff ?? {})).toEqual(["sizeGib"]);
  const up = await p.ok(["up", "--yes", "--skip-preview"]);
  expect(summaryCount(up.stdout, "updated")).toBe(1);
  expect(summaryCount(up.stdout, "replaced")).toBe(0);
  const after = await p.outputs();
  expect(after.dataId).toBe(before.dataId);
  expect(fs.statSync(volumeFile(after.dataId as string)).size).toBe(5 * GiB);
  await p.ok(["preview", "--expect-no-changes"]);
});

test("shrinking is a check failure naming sizeGib, and changes nothing", async () => {
  await p.config({ dataSize: 3 });
  const r = await p.run(["preview"]);
  expect(r.code).not.toBe(0);
  expect(r.stdout + r.stderr).toMatch(/property sizeGib value \{3\} has a problem: volumes cannot shrink \(from 5 to 3 GiB\)/);
  await p.config({ dataSize: 5 });
  await p.ok(["preview", "--expect-no-changes"]);
});

test("changing the profile replaces the volume (one replace)", async () => {
  const before = await p.outputs();
  await p.config({ dataProfile: "silver" });
  const pre = await p.previewJson();
  expect(pre.changeSummary).toEqual({ same: 4, replace: 1 });
  const up = await p.ok(["up", "--yes", "--skip-preview"]);
  expect(summaryCount(up.stdout, "replaced")).toBe(1);
  const after = await p.outputs();
  expect(after.dataId).not.toBe(before.dataId);
  expect(fs.existsSync(volumeFile(before.dataId as string))).toBe(false);
  expect(fs.statSync(volumeFile(after.dataId as string)).size).toBe(5 * GiB);
  await p.ok(["preview", "--expect-no-changes"]);
});

test("a volume deleted out of band leaves the state on refresh", async () => {
  const { scratchId } = await p.outputs();
  fs.rmSync(volumeFile(scratchId as string));
  await p.ok(["refresh", "--yes"]);
  const state = await p.stackExport();
  expect(state.deployment.resources!.some((r) => r.urn.endsWith("::scratch"))).toBe(false);
  // The program still declares it, so the next preview wants to create it again.
  expect((await p.previewJson()).changeSummary).toEqual({ same: 4, create: 1 });
  await p.ok(["up", "--yes", "--skip-preview"]);
});

test("import adopts an existing volume and the next preview shows no changes", async () => {
  const { dataId } = await p.outputs();
  const urn = (await p.stackExport()).deployment.resources!.find((r) => r.urn.endsWith("::data"))!.urn;
  await p.ok(["state", "delete", urn, "--yes"]);
  expect(fs.existsSync(volumeFile(dataId as string))).toBe(true);
  await p.ok(["import", "sds:index:Volume", "data", dataId as string, "--yes", "--protect=false"]);
  await p.ok(["preview", "--expect-no-changes"]);
  expect((await p.outputs()).dataId).toBe(dataId);
});

test("destroy leaves no volume files and no controller rows", async () => {
  await p.ok(["destroy", "--yes", "--skip-preview"]);
  expect(fs.readdirSync(poolDir())).toEqual([]);
  expect(rows("volumes")).toBe(0);
  expect(rows("profiles")).toBe(0);
});
