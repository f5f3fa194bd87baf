/**
 * Teams sharing one PostgreSQL state, through the real Pulumi CLI, and that state failing:
 * - two runners, two stacks, `pulumi up` at the same time into one thick pool too small for
 *   both: the pool is never overbooked, the creates that do not fit fail naming the pool and
 *   its capacity, and no half-made volume is left (no row but `available` ones, no file that is
 *   not a volume of a stack);
 * - the PostgreSQL server crashes during `up`: the run fails naming `stateUrl` (never the
 *   password); once the server is back on the same data folder and port, `up` converges,
 *   preview and refresh find nothing to change, and no volume file is an orphan. The crash
 *   falls in a pause between two creates (the program's `pauseMs`), so no write is in flight;
 * - the server crashes under a create's transaction (the test holds the volumes table so the
 *   insert waits): the failure names `stateUrl` and the provider process lives to report it
 *   (no "exited prematurely"); after a restart up converges, with no orphan row or file;
 * - the server crashes between a volume's row and file and its `available` (a trigger of the
 *   test holds that UPDATE): the `creating` row left is taken up by the retry, which keeps its
 *   id and file under the retry's name; nothing is left once the stack is destroyed.
 * The state reaches the provider only through the runner's environment (SDS_STATE_URL,
 * SDS_SECRET_KEY, SDS_BACKENDS_FILE), never through argv or stack config.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import pg from "pg";
import { type PostgresCluster, postgresSkipReason, startPostgres } from "../helpers/postgres";
import { PulumiProject, type RunResult } from "../helpers/pulumi";
import { repoRoot } from "../helpers/provider-process";

jest.setTimeout(900_000);
const why = postgresSkipReason();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const GiB = 1024 ** 3;

interface VolumeRowSeen {
  id: string;
  name: string;
  owner: string;
  sizeGib: number;
  status: string;
  poolId: string;
}

/** The volume rows of the state database at `url` (none before the provider made its tables). */
async function volumeRows(url: string): Promise<VolumeRowSeen[]> {
  const c = new pg.Client({ connectionString: url });
  c.on("error", () => undefined);
  await c.connect();
  try {
    const { rows } = await c.query("SELECT id, name, owner, size_gib AS \"sizeGib\", status, pool_id AS \"poolId\" FROM volumes ORDER BY name");
    return rows as VolumeRowSeen[];
  } catch (err) {
    if ((err as { code?: string }).code === "42P01") return []; // relation "volumes" does not exist yet
    throw err;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** The volumes a stack's Pulumi state holds (`pulumi stack export`). */
async function stackVolumes(p: PulumiProject): Promise<Array<{ resource: string; id: string; sizeGib: number; status: string; poolId: string }>> {
  const resources = (await p.stackExport()).deployment.resources ?? [];
  return resources
    .filter((r) => r.type === "sds:index:Volume")
    .map((r) => ({
      resource: r.urn.slice(r.urn.lastIndexOf("::") + 2),
      id: String(r.id),
      sizeGib: Number(r.outputs?.sizeGib),
      status: String(r.outputs?.status),
      poolId: String(r.outputs?.poolId),
    }));
}

/** The files in a pool folder (none before its first volume). */
const poolFiles = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []);
const fileOf = (id: string) => `volume-${id}.img`;
const text = (r: RunResult) => `${r.stdout}\n${r.stderr}`;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A session of the test's own on `url`; a server that dies under it does not end the test process. */
async function session(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on("error", () => undefined);
  await c.connect();
  return c;
}

/** Poll `check` every 50 ms until it answers true; throws with the run's output if `up` ended first (or after 60 s). */
async function until(what: string, up: Promise<RunResult>, check: () => Promise<boolean>): Promise<void> {
  let ended: RunResult | undefined;
  void up.then((r) => (ended = r));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (ended) throw new Error(`pulumi up ended before ${what}:\n${text(ended)}`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`test: ${what} did not happen within 60 s`);
    await sleep(50);
  }
}

suite("teams sharing a PostgreSQL state", () => {
  let cluster: PostgresCluster;
  /** Outside every project: the backends file and pool folders both runners share. */
  let shared: string;
  /** The team's sealing key: random, 32 bytes, base64; reaches the provider only as SDS_SECRET_KEY. */
  const secretKey = randomBytes(32).toString("base64");
  const projects: PulumiProject[] = [];
  /** Stacks that may still have volumes (destroyed ones leave it): afterAll destroys them. */
  const live = new Set<PulumiProject>();

  beforeAll(async () => {
    cluster = await startPostgres();
    fs.mkdirSync(path.join(repoRoot, "test/.work"), { recursive: true });
    shared = fs.mkdtempSync(path.join(repoRoot, "test/.work", "team-faults-shared-"));
  });
  // A test that failed with the server down leaves it down: the next one finds it up again.
  beforeEach(() => cluster.start());
  afterAll(async () => {
    // A test that failed half-way leaves its stacks: destroy them while the state is still up.
    await cluster?.start().catch(() => undefined);
    for (const p of live) await p.run(["destroy", "--yes", "--skip-preview"]);
    await cluster?.stop();
    if (!process.env.SDS_KEEP_E2E) {
      for (const p of projects) p.remove();
      if (shared) fs.rmSync(shared, { recursive: true, force: true });
    }
  });

  /** A backends file of one pool at an absolute path, the same for every runner that loads it. */
  function backendsFile(name: string, pool: string): { file: string; poolDir: string } {
    const poolDir = path.join(shared, name);
    const file = path.join(shared, `${name}.yaml`);
    fs.writeFileSync(file, `backends:\n  - name: ${name}\n    driver: file\n    pools:\n${pool.replace("PATH", JSON.stringify(poolDir))}`);
    return { file, poolDir };
  }

  /**
   * A new database on the cluster that keeps every commit it acknowledged, as a real server
   * does (this throwaway cluster defaults to synchronous_commit off, for speed); its URL.
   */
  async function durableDatabase(): Promise<string> {
    const url = await cluster.createDatabase();
    const admin = await session(cluster.url("postgres"));
    try {
      await admin.query(`ALTER DATABASE ${new URL(url).pathname.slice(1)} SET synchronous_commit = on`);
    } finally {
      await admin.end();
    }
    return url;
  }

  /** The message a run that lost the state at `url` shows: the URL without its password. */
  const shownUrl = (url: string) => `postgres://sds:***@127.0.0.1:${cluster.port}/${new URL(url).pathname.slice(1)}`;

  /** A copy of the team-pool program as stack `stack`, its state, backends and key in its environment. */
  async function team(stack: string, stateUrl: string, backends: string, config: Record<string, string | number | boolean>): Promise<PulumiProject> {
    const p = await PulumiProject.create("team-pool", { name: stack, stack });
    projects.push(p);
    live.add(p);
    Object.assign(p.env, { SDS_STATE_URL: stateUrl, SDS_SECRET_KEY: secretKey, SDS_BACKENDS_FILE: backends });
    await p.config(config);
    return p;
  }

  test("two stacks up at once into a pool too small for both: never overbooked, clear failures, nothing half-made; both destroy", async () => {
    const poolGib = 10;
    const { file, poolDir } = backendsFile(
      "teampool",
      `      - name: p0\n        path: PATH\n        totalCapacityGib: ${poolGib}\n        maxOverSubscriptionRatio: 1\n        extras: {dataStorage: {provisioningPolicy: Thick}}\n`,
    );
    const url = await cluster.createDatabase();
    // 2 × 4 volumes of 2 GiB: 16 GiB asked of a 10 GiB thick pool.
    const teams = [await team("team-a", url, file, { count: 4, sizeGib: 2 }), await team("team-b", url, file, { count: 4, sizeGib: 2 })];

    // --skip-preview: both runners go straight to their creates, so the outcome does not depend
    // on whether one's preview ran before the other's creates (a preview that sees the pool full
    // fails before creating anything, which would leave 2 GiB unused).
    const started = Date.now();
    const runs = await Promise.all(
      teams.map(async (p) => {
        const r = await p.run(["up", "--yes", "--skip-preview"]);
        return { ...r, seconds: (Date.now() - started) / 1000 };
      }),
    );

    const perStack = await Promise.all(teams.map((p) => stackVolumes(p)));
    const inState = perStack.flat();
    console.log(runs.map((r, i) => `team-faults: team-${"ab"[i]} up exited ${r.code} after ${r.seconds} s, ${perStack[i]!.length} volume(s) made`).join("\n"));
    const rows = await volumeRows(url);
    // The pool takes five 2 GiB volumes, whoever made them; the three other creates failed.
    const createdGib = inState.reduce((n, v) => n + v.sizeGib, 0);
    expect(createdGib).toBeLessThanOrEqual(poolGib);
    expect(createdGib).toBe(poolGib); // and not less: a refused create holds no capacity
    for (const made of perStack) expect(made.length).toBeGreaterThanOrEqual(1); // 5 made, at most 4 per stack
    expect(rows.reduce((n, v) => n + v.sizeGib, 0)).toBe(createdGib);
    const failed = runs.filter((r) => r.code !== 0);
    expect(failed.length).toBeGreaterThanOrEqual(1);
    for (const r of failed) {
      // Each create that did not fit, e.g.:
      //   no valid pool for a 2 GiB volume; every pool was rejected:
      //     teampool/p0: capacity: 0 GiB free (thick), 2 GiB asked
      expect(text(r)).toMatch(/no valid pool for a 2 GiB volume; every pool was rejected:\s+teampool\/p0: capacity: 0 GiB free \(thick\), 2 GiB asked/);
      expect(text(r)).not.toContain(cluster.password);
      expect(text(r)).not.toMatch(/exited prematurely/);
    }
    // Every volume either was made or failed for want of capacity (the diagnostics name it).
    const refused = runs.flatMap((r) => [...r.stdout.matchAll(/sds:index:Volume \((team-[ab]-\d)\):\n\s+error: no valid pool for a 2 GiB volume/g)].map((m) => m[1]!));
    expect([...refused, ...inState.map((v) => v.resource)].sort()).toEqual(["team-a", "team-b"].flatMap((t) => [0, 1, 2, 3].map((i) => `${t}-${i}`)).sort());

    // Nothing half-made: every row is a volume of one of the stacks, available; every file in the
    // pool is one of them, of its size.
    expect(rows.map((r) => r.id).sort()).toEqual(inState.map((v) => v.id).sort());
    expect(rows.filter((r) => r.status !== "available")).toEqual([]);
    expect(inState.every((v) => v.status === "available" && v.poolId === "teampool/p0")).toBe(true);
    expect(poolFiles(poolDir)).toEqual(inState.map((v) => fileOf(v.id)).sort());
    for (const v of inState) expect(fs.statSync(path.join(poolDir, fileOf(v.id))).size).toBe(v.sizeGib * GiB);
    expect(JSON.stringify(await teams[0]!.stackExport())).not.toContain(cluster.password);

    for (const p of teams) await p.ok(["refresh", "--yes", "--expect-no-changes"]);
    for (const p of teams) {
      await p.ok(["destroy", "--yes", "--skip-preview"]);
      live.delete(p);
    }
    expect(await volumeRows(url)).toEqual([]);
    expect(poolFiles(poolDir)).toEqual([]);
  });

  test("PostgreSQL crashes during up: the run fails naming stateUrl, not the password; once it is back, up converges with no orphan", async () => {
    const { file, poolDir } = backendsFile("crashpool", `      - name: p0\n        path: PATH\n        totalCapacityGib: 20\n`);
    const url = await durableDatabase();

    const count = 6;
    const p = await team("team-c", url, file, { count, sizeGib: 1, sequential: true, pauseMs: 3000 });

    // Crash the server once the first volume is available, in the pause before the second.
    const up = p.run(["up", "--yes"]);
    let done = false;
    void up.then(() => (done = true));
    let atCrash: VolumeRowSeen[];
    for (;;) {
      if (done) throw new Error(`pulumi up ended before the first volume was made:\n${text(await up)}`);
      atCrash = await volumeRows(url).catch(() => []);
      if (atCrash.some((r) => r.status === "available")) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await cluster.crash();
    const failed = await up;
    console.log(`team-faults: server crashed with ${atCrash.length} volume row(s) (${atCrash.map((r) => r.status).join(", ")}); up exited ${failed.code}`);

    expect(failed.code).not.toBe(0);
    // The next create finds no server, e.g.:
    //   error: stateUrl: cannot connect to the PostgreSQL state at
    //     postgres://sds:***@127.0.0.1:41919/sds_test_1: connect ECONNREFUSED 127.0.0.1:41919
    expect(text(failed)).toMatch(/error: stateUrl: (cannot connect to|lost) the PostgreSQL state at /);
    expect(text(failed)).toContain(shownUrl(url));
    expect(text(failed)).not.toContain(cluster.password);
    expect(text(failed)).not.toMatch(/exited prematurely/);
    const madeBefore = await stackVolumes(p);
    expect(madeBefore.length).toBeGreaterThanOrEqual(1);
    expect(madeBefore.length).toBeLessThan(count);

    await cluster.start();
    await p.config({ pauseMs: 0 });
    await p.ok(["up", "--yes"]);
    const inState = await stackVolumes(p);
    expect(inState).toHaveLength(count);
    // The volumes made before the crash are kept, not made again.
    for (const v of madeBefore) expect(inState.map((x) => x.id)).toContain(v.id);
    await p.ok(["preview", "--expect-no-changes"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);

    const rows = await volumeRows(url);
    expect(rows.map((r) => r.id).sort()).toEqual(inState.map((v) => v.id).sort());
    expect(rows.filter((r) => r.status !== "available")).toEqual([]);
    expect(poolFiles(poolDir)).toEqual(inState.map((v) => fileOf(v.id)).sort());
    expect(JSON.stringify(await p.stackExport())).not.toContain(cluster.password);

    await p.ok(["destroy", "--yes", "--skip-preview"]);
    live.delete(p);
    expect(await volumeRows(url)).toEqual([]);
    expect(poolFiles(poolDir)).toEqual([]);
  });

  test("PostgreSQL crashes under a create's transaction: the run fails naming stateUrl and the provider lives to say so; once it is back, up converges with no orphan", async () => {
    const { file, poolDir } = backendsFile("lockpool", `      - name: p0\n        path: PATH\n        totalCapacityGib: 20\n`);
    const url = await durableDatabase();
    const count = 3;
    const p = await team("team-d", url, file, { count, sizeGib: 1, sequential: true, pauseMs: 2000 });

    const up = p.run(["up", "--yes", "--skip-preview"]);
    await until("the first volume was made", up, async () => (await volumeRows(url)).some((r) => r.status === "available"));
    // In the pause before the second create, the test takes the volumes table: its insert waits.
    const holder = await session(url);
    await holder.query("BEGIN");
    await holder.query("LOCK TABLE volumes IN EXCLUSIVE MODE");
    await until("a create waited on the volumes table", up, async () => {
      const { rows } = await holder.query(
        "SELECT count(*)::int AS n FROM pg_locks WHERE relation = 'volumes'::regclass AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND NOT granted",
      );
      return rows[0].n > 0;
    });
    const atCrash = await volumeRows(url);
    await cluster.crash();
    const failed = await up;
    await holder.end().catch(() => undefined);
    console.log(`team-faults: server crashed under a waiting insert with ${atCrash.length} volume row(s) (${atCrash.map((r) => r.status).join(", ")}); up exited ${failed.code}\n${text(failed).split("\n").filter((l) => /error/i.test(l)).join("\n")}`);

    expect(failed.code).not.toBe(0);
    // The insert's connection is cut under it, e.g.:
    //   sds:index:Volume (team-d-1):
    //     error: stateUrl: lost the PostgreSQL state at postgres://sds:***@127.0.0.1:41919/sds_test_3: Connection terminated unexpectedly
    expect(text(failed)).toMatch(/sds:index:Volume \(team-d-1\):\s+error: stateUrl: lost the PostgreSQL state at /);
    expect(text(failed)).toContain(`lost the PostgreSQL state at ${shownUrl(url)}`);
    expect(text(failed)).not.toContain(cluster.password);
    expect(text(failed)).not.toMatch(/exited prematurely/);
    const madeBefore = await stackVolumes(p);
    expect(madeBefore.map((v) => v.resource)).toEqual(["team-d-0"]);

    await cluster.start();
    // The insert was never committed: nothing of team-d-1 is in the state, no file of it in the pool.
    expect((await volumeRows(url)).map((r) => r.id)).toEqual(madeBefore.map((v) => v.id));
    expect(poolFiles(poolDir)).toEqual(madeBefore.map((v) => fileOf(v.id)));
    await p.config({ pauseMs: 0 });
    await p.ok(["up", "--yes", "--skip-preview"]);
    const inState = await stackVolumes(p);
    expect(inState).toHaveLength(count);
    expect(inState.map((x) => x.id)).toContain(madeBefore[0]!.id);
    await p.ok(["preview", "--expect-no-changes"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);

    const rows = await volumeRows(url);
    expect(rows.map((r) => r.id).sort()).toEqual(inState.map((v) => v.id).sort());
    expect(rows.filter((r) => r.status !== "available")).toEqual([]);
    expect(poolFiles(poolDir)).toEqual(inState.map((v) => fileOf(v.id)).sort());

    await p.ok(["destroy", "--yes", "--skip-preview"]);
    live.delete(p);
    expect(await volumeRows(url)).toEqual([]);
    expect(poolFiles(poolDir)).toEqual([]);
  });

  test("PostgreSQL crashes between a volume's row and file and its `available`: the retry takes the `creating` row up (same id and file, the retry's name); destroy leaves nothing", async () => {
    const { file, poolDir } = backendsFile("cutpool", `      - name: p0\n        path: PATH\n        totalCapacityGib: 20\n`);
    const url = await durableDatabase();
    const count = 2;
    const p = await team("team-e", url, file, { count, sizeGib: 1, sequential: true, pauseMs: 2000 });

    const up = p.run(["up", "--yes", "--skip-preview"]);
    await until("the first volume was made", up, async () => (await volumeRows(url)).some((r) => r.status === "available"));
    // In the pause before the second create: a volume's `available` now waits (in the server) for a minute.
    const setup = await session(url);
    await setup.query(`CREATE FUNCTION sds_test_slow_available() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF OLD.status = 'creating' AND NEW.status = 'available' THEN PERFORM pg_sleep(60); END IF;
        RETURN NEW;
      END $$`);
    await setup.query("CREATE TRIGGER sds_test_slow_available BEFORE UPDATE ON volumes FOR EACH ROW EXECUTE FUNCTION sds_test_slow_available()");
    await setup.end();
    let cut: VolumeRowSeen | undefined;
    await until("the second volume's row and file were made and its `available` waited", up, async () => {
      const watch = await session(url);
      try {
        const { rows } = await watch.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'");
        if (rows[0].n === 0) return false;
      } finally {
        await watch.end();
      }
      cut = (await volumeRows(url)).find((r) => r.status === "creating");
      return cut !== undefined && poolFiles(poolDir).includes(fileOf(cut.id));
    });
    await cluster.crash();
    const failed = await up;
    console.log(`team-faults: server crashed while volume ${cut!.id} ("${cut!.name}") was creating; up exited ${failed.code}\n${text(failed).split("\n").filter((l) => /error/i.test(l)).join("\n")}`);

    expect(failed.code).not.toBe(0);
    expect(text(failed)).toMatch(/sds:index:Volume \(team-e-1\):\s+error: stateUrl: lost the PostgreSQL state at /);
    expect(text(failed)).toContain(`lost the PostgreSQL state at ${shownUrl(url)}`);
    expect(text(failed)).not.toContain(cluster.password);
    expect(text(failed)).not.toMatch(/exited prematurely/);
    const madeBefore = await stackVolumes(p);
    expect(madeBefore.map((v) => v.resource)).toEqual(["team-e-0"]);

    await cluster.start();
    const drop = await session(url);
    await drop.query("DROP TRIGGER sds_test_slow_available ON volumes");
    await drop.query("DROP FUNCTION sds_test_slow_available()");
    await drop.end();
    // What the crash left: the row of team-e-1, still `creating`, and its file.
    const left = await volumeRows(url);
    expect(left.find((r) => r.id === cut!.id)).toMatchObject({ status: "creating", name: cut!.name });
    expect(poolFiles(poolDir)).toEqual([...madeBefore.map((v) => fileOf(v.id)), fileOf(cut!.id)].sort());

    await p.config({ pauseMs: 0 });
    const retry = await p.ok(["up", "--yes", "--skip-preview"]);
    const inState = await stackVolumes(p);
    expect(inState).toHaveLength(count);
    const second = inState.find((v) => v.resource === "team-e-1")!;
    // Taken up, not made again: the same id (and so the same file), under the name of the retry.
    expect(second.id).toBe(cut!.id);
    const rows = await volumeRows(url);
    const exported = (await p.stackExport()).deployment.resources!.find((r) => r.type === "sds:index:Volume" && r.urn.endsWith("::team-e-1"))!;
    const retriedName = String(exported.outputs?.name);
    console.log(`team-faults: the creating row "${cut!.name}" was taken up as "${retriedName}"`);
    // The engine gave the retry a new auto-name: the row is found by its resource (URN), not its name.
    expect(retriedName).not.toBe(cut!.name);
    expect(text(retry)).toContain(`volume ${cut!.id}: an interrupted create of urn:pulumi:team-e::sds-e2e-team-pool::sds:index:Volume::team-e-1 (as "${cut!.name}") is taken up as "${retriedName}"`);
    expect(rows.find((r) => r.id === cut!.id)).toMatchObject({ name: retriedName, status: "available" });
    expect(rows.map((r) => r.id).sort()).toEqual(inState.map((v) => v.id).sort());
    expect(rows.filter((r) => r.status !== "available")).toEqual([]);
    expect(poolFiles(poolDir)).toEqual(inState.map((v) => fileOf(v.id)).sort());
    await p.ok(["preview", "--expect-no-changes"]);

    await p.ok(["destroy", "--yes", "--skip-preview"]);
    live.delete(p);
    expect(await volumeRows(url)).toEqual([]);
    expect(poolFiles(poolDir)).toEqual([]);
  });
});
