/**
 * The `sds` CLI reads a stack's provider config the way the engine hands it to the provider:
 * project-level values in Pulumi.yaml under the stack file's, an object set without --path
 * (`pulumi config set sds:hosts '{…}'`, stored as a JSON string), and secrets, which it asks
 * the real Pulumi CLI to decrypt (`pulumi config --show-secrets`, with the caller's passphrase).
 * Without the passphrase it exits 2 with one line naming the secret key.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Composition } from "../../provider/src/compose/composition";
import { resolveProviderConfig } from "../../provider/src/controller/config";
import { pulumiEnv } from "../helpers/pulumi";
import { sdsCli } from "../helpers/sds-cli";

jest.setTimeout(180_000);

let dir: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-cli-config-"));
  fs.mkdirSync(path.join(dir, ".backend"));
  env = { ...process.env, ...pulumiEnv({ backendUrl: `file://${path.join(dir, ".backend")}`, home: path.join(dir, ".home"), passphrase: "cli-config-pass" }) };
  fs.writeFileSync(path.join(dir, "Pulumi.yaml"), "name: cliconfig\nruntime: nodejs\nconfig:\n  sds:backendsFile: backends.yaml\n");
  fs.writeFileSync(path.join(dir, "backends.yaml"), "backends:\n  - name: b1\n    driver: file\n    pools: [{name: p0, path: pools/p0, totalCapacityGib: 4}]\n");
  const pulumi = (args: string[], stdin?: string) => execFileSync("pulumi", [...args, "--non-interactive"], { cwd: dir, env, input: stdin, stdio: ["pipe", "pipe", "pipe"] });
  pulumi(["stack", "init", "dev"]);
  pulumi(["config", "set", "sds:hosts", '{"h1":{"url":"http://127.0.0.1:9"}}']);
  pulumi(["config", "set", "--secret", "sds:agentToken"], "cli-config-token-0123456789");
  // The state `pulumi up` would have made (the CLI never makes one).
  const parts = new Composition(resolveProviderConfig({ backendsFile: "backends.yaml" }, dir, {}), () => undefined);
  await parts.allowWrites();
  const c = await parts.controller();
  await c.createVolume("urn:pulumi:dev::cliconfig::sds:index:Volume::v1", { name: "v1", sizeGib: 1, description: "", metadata: {} });
  await parts.close();
});

afterAll(() => (process.env.KEEP ? undefined : fs.rmSync(dir, { recursive: true, force: true })));

test("project config, a JSON-string object and a secret the Pulumi CLI decrypts", async () => {
  const r = await sdsCli(["volumes", "--json"], { cwd: dir, env, built: true });
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  expect((JSON.parse(r.stdout) as Array<{ name: string }>).map((v) => v.name)).toEqual(["v1"]);
  expect(r.stdout).not.toContain("cli-config-token");
});

test("a secret the Pulumi CLI cannot decrypt: exit 2, one line naming the key", async () => {
  const r = await sdsCli(["volumes"], { cwd: dir, env: { ...env, PULUMI_CONFIG_PASSPHRASE: "wrong-passphrase" }, built: true });
  expect(r.status).toBe(2);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toMatch(/sds:agentToken is a secret and pulumi config: .*; pass it as SDS_AGENT_TOKEN/);
});
