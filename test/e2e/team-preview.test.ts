/**
 * examples/ci-preview as a team runs it: two runners on two fresh checkouts outside this
 * repository (A, a teammate running `pulumi up`; B, CI running `pulumi preview --diff`), one
 * Pulumi file backend, one stack, one PostgreSQL state (SDS_STATE_URL) and one sealing key
 * (SDS_SECRET_KEY), both given in the environment only. The backend is on a storage node (a real
 * sds-agent driving the file driver and tgtd in a network namespace) and the volumes are attached
 * on an application host (another agent, another namespace), as test/e2e/multihost.test.ts does.
 *
 * What it proves: B's fresh checkout, with only the committed stack config and backends file,
 * previews A's stack with no changes; B's pull request (grow one volume, add one) previews as
 * exactly one update and one create, the new volume's pool shown; B writes nothing (no state.db,
 * no secret.key); B with another key, or without the backends file, is refused with an error that
 * names what is wrong; A then refreshes with no changes and destroys everything.
 */
import { type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { AgentClient } from "../../provider/src/agent/client";
import { cannotRun } from "../datapath/harness";
import { NetLab, startLabAgent } from "../helpers/netns";
import { type PostgresCluster, postgresSkipReason, startPostgres } from "../helpers/postgres";
import { filesUnder, type Runner, TeamRepo } from "../helpers/team";

jest.setTimeout(900_000);
const why =
  cannotRun() ??
  (fs.existsSync("/usr/bin/unshare") || fs.existsSync("/bin/unshare") ? undefined : "the storage node and the application host run in network namespaces: they need unshare (util-linux)") ??
  postgresSkipReason();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const GiB = 1024 ** 3;
const STACK = "team";
const TOKEN = randomBytes(24).toString("hex");
const KEY = randomBytes(32).toString("base64");
const WRONG_KEY = randomBytes(32).toString("base64");
const PASSPHRASE = randomBytes(12).toString("hex");

/** Every command's wall time, printed at the end (the report of a run). */
const timings: string[] = [];
const timed = async <T extends { seconds: number }>(label: string, p: Promise<T>): Promise<T> => {
  const r = await p;
  timings.push(`${label}: ${r.seconds.toFixed(1)} s`);
  return r;
};

suite("team stack: a teammate's up and CI's preview on one PostgreSQL state and a storage node", () => {
  let lab: NetLab;
  let pg: PostgresCluster;
  let work: string;
  let team: TeamRepo;
  let a: Runner;
  let b: Runner;
  let stateUrl: string;
  const agents = new Map<string, { child: ChildProcess; stateDir: string; client: AgentClient }>();
  const portal = () => `${lab.node("storage1").ip}:3260`;
  const ssdPool = () => path.join(work, "pools", "ssd");
  const volumeSizes = () => fs.readdirSync(ssdPool()).map((f) => fs.statSync(path.join(ssdPool(), f)).size).sort((x, y) => x - y);

  /** A fresh checkout of the team's repository with the team's environment, its stack selected and the agent token set (from stdin, as CI does). */
  const runner = async (name: string, env: Record<string, string> = {}): Promise<Runner> => {
    const r = team.checkout(name, { SDS_STATE_URL: stateUrl, SDS_SECRET_KEY: KEY, ...env });
    expect(fs.existsSync(path.join(r.dir, ".sds"))).toBe(false);
    await r.ok(["stack", "select", STACK]);
    await r.ok(["config", "set", "--secret", "sds:agentToken"], { input: TOKEN });
    return r;
  };

  /** B's pull request: grow `db` from 2 to 3 GiB, add `scratch` (1 GiB, same profile): one line each in the volumes table. */
  const pullRequest = (r: Runner) =>
    r.edit("index.ts", {
      'new sds.Volume("db", { sizeGib: 2,': 'new sds.Volume("db", { sizeGib: 3,',
      '    wal: new sds.Volume("wal",': '    scratch: new sds.Volume("scratch", { sizeGib: 1, profile: ssd.name }),\n    wal: new sds.Volume("wal",',
    });

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "sds-team-preview-"));
    lab = new NetLab(["storage1", "app1"]);
    lab.up();
    pg = await startPostgres();
    stateUrl = await pg.createDatabase();
    fs.mkdirSync(path.join(work, "pools"), { recursive: true });
    fs.writeFileSync(path.join(work, "token"), TOKEN, { mode: 0o600 });
    agents.set("storage1", await startLabAgent(lab, "storage1", { work, token: TOKEN, extra: ["--storage-root", path.join(work, "pools")] }));
    agents.set("app1", await startLabAgent(lab, "app1", { work, token: TOKEN }));
    // The team's repository: the example with the team's addresses (the lab's) and pool root.
    team = new TeamRepo(
      work,
      "ci-preview",
      { "10.0.0.5": lab.node("storage1").ip, "10.0.0.11": lab.node("app1").ip, "/srv/sds": path.join(work, "pools") },
      PASSPHRASE,
    );
    // Whoever creates the stack commits its Pulumi.team.yaml (now with the passphrase's salt).
    await team.maintainer().ok(["stack", "init", STACK]);
    expect(fs.readFileSync(path.join(team.origin, `Pulumi.${STACK}.yaml`), "utf8")).toMatch(/^encryptionsalt: /m);
    a = await runner("A");
  });

  afterAll(async () => {
    try {
      if (a) await a.run(["destroy", "--yes"]);
      // tgtd outlives the provider and the agent (exports outlive `pulumi up`): stop the storage node's.
      await agents.get("storage1")?.client.iscsiCall(portal(), { op: "stop", args: [] }).catch(() => undefined);
      for (const x of agents.values()) await x.client.close();
    } finally {
      lab?.down();
      await pg?.stop();
      if (!process.env.SDS_KEEP_E2E) {
        team?.removeCheckouts();
        if (work) fs.rmSync(work, { recursive: true, force: true });
      }
      if (timings.length > 0) console.log(`team-preview timings:\n  ${timings.join("\n  ")}`);
    }
  });

  test("A, a teammate: up makes the profile, two volumes on storage1's ssd pool and their devices on app1", async () => {
    await timed("A up", a.ok(["up", "--yes"]));
    const out = JSON.parse((await a.ok(["stack", "output", "--json"])).stdout);
    expect(out).toEqual({
      pools: { db: "array/ssd", wal: "array/ssd" },
      devices: { db: expect.stringMatching(/^\/dev\/loop\d+$/), wal: expect.stringMatching(/^\/dev\/loop\d+$/) },
    });
    expect(volumeSizes()).toEqual([1 * GiB, 2 * GiB]);
    expect((await agents.get("app1")!.client.getAllVolumePaths()).map((p) => p.path).sort()).toEqual([out.devices.db, out.devices.wal].sort());
    // The state is in PostgreSQL and the key in A's environment: nothing of the kind in A's folder.
    expect(filesUnder(a.dir).filter((f) => /(^|\/)(state\.db|secret\.key)/.test(f))).toEqual([]);
  });

  test("B, CI on a fresh checkout: preview --refresh --expect-no-changes passes on the committed config and backends file", async () => {
    b = await runner("B");
    await timed("B preview --refresh --expect-no-changes", b.ok(["preview", "--refresh", "--expect-no-changes"]));
  });

  test("B's pull request grows one volume and adds one: preview --diff shows exactly 1 update and 1 create, with the new volume's pool", async () => {
    pullRequest(b);
    const json = await timed("B preview --json --refresh", b.ok(["preview", "--json", "--refresh"]));
    const plan = JSON.parse(json.stdout) as {
      changeSummary: Record<string, number>;
      steps: Array<{ op: string; urn: string; detailedDiff?: Record<string, unknown>; newState?: { inputs?: Record<string, unknown> } }>;
    };
    const { same, ...changes } = plan.changeSummary;
    expect(changes).toEqual({ update: 1, create: 1 });
    expect(same).toBeGreaterThan(0);
    const changed = plan.steps.filter((s) => s.op !== "same" && s.op !== "refresh");
    expect(changed.map((s) => [s.op, s.urn.split("::").pop()]).sort()).toEqual([
      ["create", "scratch"],
      ["update", "db"],
    ]);
    expect(Object.keys(changed.find((s) => s.op === "update")!.detailedDiff ?? {})).toEqual(["sizeGib"]);
    expect(changed.find((s) => s.op === "create")!.newState?.inputs).toMatchObject({ sizeGib: 1 });

    const diff = await timed("B preview --diff --refresh", b.ok(["preview", "--diff", "--refresh"]));
    console.log(`B: pulumi preview --diff --refresh\n--- stdout\n${diff.stdout}\n--- stderr\n${diff.stderr}`);
    expect(diff.stdout).toMatch(/~ sds:index:Volume: \(update\)\n.*\n\s*\[urn=\S+::db\]\n.*\n\s*~ sizeGib: 2 => 3\n/);
    expect(diff.stdout).toMatch(/\+ sds:index:Volume: \(create\)\n\s*\[urn=\S+::scratch\]/);
    // Where the new volume lands, before it exists: in the diff (stdout, what CI posts on the pull
    // request) as the program's output, and as the scheduler's note (a diagnostic: stderr in --diff mode).
    expect(diff.stdout).toMatch(/~ pools\s*: \{[^}]*\n\s*\+ scratch\s*: "array\/ssd"\n[^}]*\}/);
    expect(diff.stderr).toMatch(/placement of volume "scratch": array\/ssd \(backend array, backendId [0-9a-f-]{36}, sharedTargets true\); 1 other pool\(s\) rejected/);
    expect(diff.stdout).toMatch(/\+ 1 to create/);
    expect(diff.stdout).toMatch(/~ 1 to update/);
  });

  test("B leaves no state behind: no state.db, no secret.key anywhere in its checkout", () => {
    const files = filesUnder(b.dir);
    expect(files.filter((f) => /(^|\/)(state\.db|secret\.key)(-wal|-shm)?$/.test(f))).toEqual([]);
    expect(files.filter((f) => f.startsWith(".sds"))).toEqual([]);
  });

  test("B with another key: up is refused in one line naming secretKey, and nothing changes", async () => {
    const wrong = await runner("B-wrong-key", { SDS_SECRET_KEY: WRONG_KEY });
    pullRequest(wrong);
    const up = await timed("B (wrong key) up", wrong.run(["up", "--yes"]));
    const said = `${up.stdout}\n${up.stderr}`;
    expect(up.code).not.toBe(0);
    expect(said).toMatch(/secretKey: sds:secretKey \(or SDS_SECRET_KEY\) does not open this state's secrets/);
    expect(volumeSizes()).toEqual([1 * GiB, 2 * GiB]);
    // Its preview reads attachments, whose CHAP secrets it cannot open either: refused the same way, or clean.
    const preview = await timed("B (wrong key) preview --refresh", wrong.run(["preview", "--refresh", "--expect-no-changes"]));
    const previewSaid = `${preview.stdout}\n${preview.stderr}`;
    if (preview.code !== 0) expect(previewSaid).toMatch(/secretKey: /);
    console.log(`B (wrong key): up exited ${up.code}, preview --refresh exited ${preview.code}; what they said about the key:\n${[said, previewSaid].join("\n").split("\n").filter((l) => /secretKey/.test(l)).join("\n")}`);
  });

  test("B without the backends file: an error naming the backends, never the built-in local backend", async () => {
    const c = await runner("B-no-backends");
    fs.rmSync(path.join(c.dir, "backends.yaml"));
    const named = await timed("B (backends file missing) preview", c.run(["preview"]));
    expect(named.code).not.toBe(0);
    expect(`${named.stdout}\n${named.stderr}`).toMatch(/backendsFile: cannot read .*backends\.yaml/);
    // Not even configured: the state's volumes are on a backend this runner does not load.
    await c.ok(["config", "rm", "sds:backendsFile"]);
    const none = await timed("B (no backends configured) preview", c.run(["preview"]));
    expect(none.code).not.toBe(0);
    expect(`${none.stdout}\n${none.stderr}`).toMatch(/backends: this state has volumes on backend "array" \(2 volume\(s\)\), but this runner loaded only the built-in `local` backend/);
    expect(fs.existsSync(path.join(c.dir, ".sds"))).toBe(false);
  });

  test("A: refresh --expect-no-changes, then destroy leaves nothing on storage1 or app1", async () => {
    await timed("A refresh --expect-no-changes", a.ok(["refresh", "--yes", "--expect-no-changes"]));
    await timed("A destroy", a.ok(["destroy", "--yes"]));
    expect(fs.readdirSync(ssdPool())).toEqual([]);
    expect(await agents.get("app1")!.client.getAllVolumePaths()).toEqual([]);
    // The last detach from the shared target removes it (its CHAP account and ACL with it).
    expect(await agents.get("storage1")!.client.iscsiCall(portal(), { op: "list", args: [] })).toEqual([]);
  });
});
