/**
 * The operator CLI on a PostgreSQL state (a throwaway cluster, test/helpers/postgres.ts): a
 * database without sds's tables is no state (exit 2, one line, the password never shown) and
 * the CLI does not make the tables there (opening a PostgresStore would); a state moved there
 * with `sds state migrate` answers `sds volumes` and `sds pools` as the SQLite one did. The URL
 * travels in SDS_STATE_URL, never on the command line.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import pg from "pg";
import { Composition } from "../../provider/src/compose/composition";
import { resolveProviderConfig } from "../../provider/src/controller/config";
import { type PostgresCluster, postgresSkipReason, startPostgres } from "../helpers/postgres";
import { sdsCli } from "../helpers/sds-cli";

jest.setTimeout(120_000);
const why = postgresSkipReason();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

suite("sds on a PostgreSQL state", () => {
  let cluster: PostgresCluster;
  let dir: string;
  const sds = (args: string[], url: string) => sdsCli(args, { built: true, cwd: dir, env: { SDS_STATE_URL: url } });

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-cli-pg-"));
    fs.writeFileSync(path.join(dir, "Pulumi.yaml"), "name: pg\nruntime: nodejs\n");
    fs.writeFileSync(path.join(dir, "Pulumi.dev.yaml"), "config:\n  sds:backendsFile: backends.yaml\n");
    fs.writeFileSync(path.join(dir, "backends.yaml"), "backends:\n  - {name: b, driver: file, pools: [{name: p, path: pool, totalCapacityGib: 4}]}\n");
    const parts = new Composition(resolveProviderConfig({ backendsFile: "backends.yaml" }, dir, {}), () => undefined);
    try {
      await parts.allowWrites();
      await (await parts.controller()).createVolume("urn:pulumi:dev::pg::sds:index:Volume::db", { name: "db", sizeGib: 1, description: "", metadata: {} });
    } finally {
      await parts.close();
    }
    cluster = await startPostgres();
  });
  afterAll(async () => {
    await cluster?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test("a database without an sds state: exit 2, nothing made there, no password shown", async () => {
    const empty = await cluster.createDatabase();
    const r = await sds(["volumes"], empty);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^sds: no sds state in the database at postgres:\/\/.*\*\*\*.* \(from SDS_STATE_URL\); run sds in the folder of the Pulumi project that deployed it/);
    expect(r.stderr.split("\n")).toHaveLength(2);
    expect(r.stderr).not.toContain(cluster.password);
    const client = new pg.Client({ connectionString: empty });
    await client.connect();
    try {
      expect((await client.query("SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'")).rows[0].n).toBe(0);
    } finally {
      await client.end();
    }
  });

  test("a state migrated there answers volumes and pools", async () => {
    const url = await cluster.createDatabase();
    const m = await sds(["state", "migrate", "--from", "sqlite:.sds/state.db"], url);
    expect(m.status).toBe(0);
    const volumes = JSON.parse((await sds(["volumes", "--json"], url)).stdout);
    expect(volumes).toEqual([expect.objectContaining({ name: "db", sizeGib: 1, pool: "b/p", status: "available" })]);
    const pools = await sds(["pools"], url);
    expect(pools.status).toBe(0);
    expect(pools.stdout).toMatch(/\nb\/p\s+.*\s+4\s+\S+\s+1\s+1\n$/);
  });
});
