/**
 * `sds replicate` beside a Pulumi project: it reads the stack's `sds:*` provider config, runs the
 * controller the provider runs, and refuses (exit 2, one line saying what to pass) where it would
 * otherwise sync nothing: no project, no state, several stacks, an encrypted stateUrl.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { readStackConfig } from "../../provider/src/compose/stack-config";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import { repoRoot } from "../helpers/provider-process";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-stack-config-"));
  fs.writeFileSync(path.join(dir, "Pulumi.yaml"), "name: p\nruntime: nodejs\n");
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const sds = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(path.join(repoRoot, "provider/bin/sds"), args, {
    cwd: dir,
    encoding: "utf8",
    env: { ...process.env, SDS_STATE_URL: "", SDS_BACKENDS_FILE: "", ...env },
  });

describe("readStackConfig", () => {
  test("a stack file with a key indented too deep names that key's line (issue 12)", () => {
    const file = path.join(dir, "Pulumi.dev.yaml");
    fs.writeFileSync(file, "config:\n  sds:stateUrl: sqlite:state.db\n    sds:backendsFile: backends.yaml\n");
    expect(() => readStackConfig(dir)).toThrow(`${file}:3: invalid YAML: "sds:backendsFile" is indented deeper than the keys beside it, so it reads as part of the value on line 2`);
  });

  test("the one stack that configures sds: its plain values, and the keys it holds encrypted", () => {
    fs.writeFileSync(path.join(dir, "Pulumi.dev.yaml"), "config:\n  sds:backendsFile: backends.yaml\n  sds:agentToken:\n    secure: AAABAKz\n  other:key: 1\n");
    fs.writeFileSync(path.join(dir, "Pulumi.unrelated.yaml"), "config:\n  aws:region: x\n");
    expect(readStackConfig(dir)).toEqual({ stack: "dev", file: path.join(dir, "Pulumi.dev.yaml"), raw: { backendsFile: "backends.yaml" }, secure: ["agentToken"] });
  });

  test("several stacks configuring sds need --stack; an unknown stack is named", () => {
    fs.writeFileSync(path.join(dir, "Pulumi.a.yaml"), "config:\n  sds:backendsFile: a.yaml\n");
    fs.writeFileSync(path.join(dir, "Pulumi.b.yaml"), "config:\n  sds:backendsFile: b.yaml\n");
    expect(() => readStackConfig(dir)).toThrow(/several stacks .* configure sds \(a, b\); pass --stack NAME/);
    expect(readStackConfig(dir, "b").raw).toEqual({ backendsFile: "b.yaml" });
    expect(() => readStackConfig(dir, "c")).toThrow(/no Pulumi\.c\.yaml .* \(stacks here: a, b\)/);
  });

  test("no stack file: nothing", () => {
    expect(readStackConfig(dir)).toEqual({ raw: {}, secure: [] });
  });
});

describe("sds replicate", () => {
  test("uses the stack's backends file and state (no --backends needed), and says which; a state without pairs is nothing to sync (exit 2)", async () => {
    fs.mkdirSync(path.join(dir, "pool"));
    fs.writeFileSync(path.join(dir, "backends.yaml"), `backends:\n  - name: b1\n    driver: file\n    pools:\n      - {name: p1, path: ${path.join(dir, "pool")}, totalCapacityGib: 10}\n`);
    fs.writeFileSync(path.join(dir, "Pulumi.dev.yaml"), "config:\n  sds:backendsFile: backends.yaml\n  sds:stateUrl: sqlite:state/s.db\n");
    await new SqliteStore(path.join(dir, "state/s.db")).close();
    const r = sds(["replicate"]);
    expect(r.stdout).toContain(`state ${path.join(dir, "state/s.db")}, backends from ${path.join(dir, "backends.yaml")} (stack dev)`);
    expect(r.stderr).toMatch(/^sds: nothing to sync: the state .*\/state\/s\.db holds no replication pairs/);
    expect(r.status).toBe(2);
  });

  test("a folder with no state is an error naming what to pass, and no state is made", () => {
    const r = sds(["replicate"]);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/no sds state at .*\.sds\/state\.db \(from the default\); run sds in the folder of the Pulumi project .* --project DIR, --stack NAME or --state URL/);
    expect(fs.existsSync(path.join(dir, ".sds"))).toBe(false);
  });

  test("outside a Pulumi project: exit 2, saying so", () => {
    fs.rmSync(path.join(dir, "Pulumi.yaml"));
    const r = sds(["replicate"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/is not a Pulumi project \(no Pulumi\.yaml\)/);
  });

  test("an encrypted sds:stateUrl must be passed another way", () => {
    fs.writeFileSync(path.join(dir, "Pulumi.dev.yaml"), "config:\n  sds:stateUrl:\n    secure: v1:abc\n");
    const r = sds(["replicate"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/sds:stateUrl is a secret and (the pulumi CLI is not on PATH|pulumi config: .*); pass it as --state URL or SDS_STATE_URL/);
  });
});
