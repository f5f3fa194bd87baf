/**
 * An rbd backend given inline in stack config, field by field with `pulumi config set --path`,
 * with only its key set as a secret (`--secret --path 'sds:backends[0].rbd.key'`): how a team
 * adds a Ceph key to a committed Pulumi.<stack>.yaml without encrypting the whole list. Real
 * single-node Ceph, a user with the README's caps only, the real CLI. The key stays out of the
 * stack file, the state, the CLI's output and every file sds writes except the 0600 keyring
 * file the README names; up creates the image, refresh finds no change, destroy removes it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { cannotRun } from "../datapath/harness";
import { type CephCluster, cephSkipReason, startCeph } from "../helpers/ceph";
import { PulumiProject } from "../helpers/pulumi";
import { rbdImages, readmeCaps } from "../helpers/rbd-lab";

jest.setTimeout(600_000);
const why = cannotRun() ?? cephSkipReason();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const CEPH_POOL = "inline";

/** Every file under `dir` whose bytes hold `needle`. */
function filesHolding(dir: string, needle: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const f = path.join(e.parentPath ?? e.path, e.name);
    if (fs.readFileSync(f).includes(needle)) out.push(f);
  }
  return out;
}

suite("an rbd backend inline in stack config, only its key a secret (config set --secret --path)", () => {
  let ceph: CephCluster;
  let p: PulumiProject;
  let key: string;

  beforeAll(async () => {
    ceph = await startCeph();
    await ceph.pool(CEPH_POOL);
    await ceph.makeUser("sds", readmeCaps([CEPH_POOL]));
    key = ((await ceph.cephJson(["auth", "get-key", "client.sds"])) as { key: string }).key;
    p = await PulumiProject.create("rbd-inline-key");
    const set = (k: string, v: string, secret = false) => p.ok(["config", "set", "--path", ...(secret ? ["--secret"] : []), k, v]);
    await set("sds:backends[0].name", "ceph");
    await set("sds:backends[0].driver", "rbd");
    await set("sds:backends[0].rbd.monHost", ceph.monHost);
    await set("sds:backends[0].rbd.user", "sds");
    await set("sds:backends[0].rbd.key", key, true);
    await set("sds:backends[0].export.protocol", "iscsi");
    await set("sds:backends[0].pools[0].name", "fast");
    await set("sds:backends[0].pools[0].path", CEPH_POOL);
  }, 300_000);
  afterAll(async () => {
    try {
      if (p) await p.run(["destroy", "--yes"]);
    } finally {
      await ceph?.stop();
      p?.remove();
    }
  }, 300_000);

  test("the stack file holds the key encrypted only", () => {
    const stackFile = fs.readFileSync(path.join(p.dir, "Pulumi.test.yaml"), "utf8");
    expect(stackFile).toMatch(/key:\s*\n\s*secure: /);
    expect(stackFile).not.toContain(key);
  });

  test("up creates the image; the key is in no state, output or file but the 0600 keyring", async () => {
    const up = await p.ok(["up", "--yes", "--skip-preview"]);
    expect(`${up.stdout}${up.stderr}`).not.toContain(key);
    const out = await p.outputs();
    expect(out.backendName).toBe("ceph");
    expect(await rbdImages(ceph, CEPH_POOL)).toHaveLength(1);

    const exported = await p.stackExport();
    // The default provider's inputs and outputs hold the backends: the engine keeps the whole list a secret.
    const provider = exported.deployment.resources?.find((r) => r.type === "pulumi:providers:sds");
    expect(provider?.inputs?.backends).toHaveProperty("ciphertext");
    expect(provider?.outputs?.backends).toHaveProperty("ciphertext");
    const state = JSON.stringify(exported);
    expect(state).not.toContain(key);
    const holding = filesHolding(p.dir, key);
    expect(holding.map((f) => path.basename(f))).toEqual(["ceph.client.sds.keyring"]);
    expect(fs.statSync(holding[0]!).mode & 0o777).toBe(0o600);
  });

  test("refresh and a preview find no change", async () => {
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
    const pre = await p.ok(["preview", "--diff", "--expect-no-changes"]);
    expect(`${pre.stdout}${pre.stderr}`).not.toContain(key);
  });

  test("destroy removes the image", async () => {
    await p.ok(["destroy", "--yes"]);
    expect(await rbdImages(ceph, CEPH_POOL)).toEqual([]);
    expect(filesHolding(p.dir, key).filter((f) => !f.endsWith(".keyring"))).toEqual([]);
  });
});
