/**
 * Several states, one target daemon (root, real CLI, real tgtd and loop devices): two Pulumi
 * projects, each with its own Pulumi state and its own sds state, whose iSCSI backends use the
 * same portal and even the same backendId (one storage array serving two teams). Each has a live
 * rw+ro attachment. `up` of each, in turns, three times: both targets stay, both devices keep
 * reading and writing (round 1's start-up reconciliation removed the other project's target).
 * Destroying one leaves the other intact.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { cannotRun } from "../datapath/harness";
import { freeTcpPort } from "../helpers/daemons";
import { PulumiProject } from "../helpers/pulumi";
import { localTargets } from "../../provider/src/targets/local-targets";
import { SqliteStore } from "../../provider/src/store/sqlite-store";

jest.setTimeout(1_200_000);
const why = cannotRun();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

/** Write a 1 MiB pattern at MiB `at` through `rw` (O_DIRECT) and read it back through `ro`. */
function writeThenRead(dir: string, rw: string, ro: string, fill: number, at: number): void {
  const pattern = Buffer.alloc(1024 * 1024, fill);
  const file = path.join(dir, `pattern-${fill}.bin`);
  fs.writeFileSync(file, pattern);
  execFileSync("dd", [`if=${file}`, `of=${rw}`, "bs=1M", "count=1", `seek=${at}`, "oflag=direct", "conv=fsync", "status=none"], { timeout: 60_000 });
  const back = execFileSync("dd", [`if=${ro}`, "bs=1M", "count=1", `skip=${at}`, "iflag=direct", "status=none"], { timeout: 60_000 });
  expect(Buffer.compare(back, pattern)).toBe(0);
}

suite("two projects with separate states on one iSCSI portal", () => {
  const projects: PulumiProject[] = [];
  let port: number;
  const tgt = () => localTargets(path.join(projects[0]!.dir, ".sds/run")).iscsi(`127.0.0.1:${port}`);

  beforeAll(async () => {
    port = await freeTcpPort();
    for (const name of ["team-a", "team-b"]) {
      const p = await PulumiProject.create("survive", { name });
      fs.writeFileSync(
        path.join(p.dir, "backends.yaml"),
        // The same backendId on purpose: two states must not collide even when everything else is equal.
        `backends:\n  - name: array\n    driver: file\n    backendId: array-1\n    sharedTargets: true\n    export: {protocol: iscsi, portal: "127.0.0.1:${port}", chap: true}\n    pools:\n      - {name: p0, path: pools/p0, totalCapacityGib: 20, multiAttach: true}\n`,
      );
      await p.config({ "sds:backendsFile": "backends.yaml" });
      projects.push(p);
    }
  });
  afterAll(async () => {
    for (const p of projects) await p.run(["destroy", "--yes"]);
    if (projects.length) await tgt().stop();
    for (const p of projects) p.remove();
  });

  test("up of each, in turns, three times: both targets stay and both devices keep writing and reading; destroy of one leaves the other", async () => {
    const devices: Array<{ rw: string; ro: string }> = [];
    let fill = 0x10;
    const checkAll = () => devices.forEach((d, i) => writeThenRead(projects[i]!.dir, d.rw, d.ro, fill++, 2 + (fill % 8)));
    for (let turn = 0; turn < 3; turn++) {
      for (const [i, p] of projects.entries()) {
        const up = await p.ok(["up", "--yes", "--skip-preview"]);
        expect(`${up.stdout}\n${up.stderr}`).not.toMatch(/removed \d+ export/);
        await p.ok(["refresh", "--yes", "--expect-no-changes"]);
        const out = await p.outputs();
        const d = { rw: out.writerDevice as string, ro: out.readerDevice as string };
        if (turn === 0) devices.push(d);
        else expect(d).toEqual(devices[i]); // the same devices, kept across runs
        checkAll();
      }
      const names = (await tgt().list()).map((t) => t.name);
      expect(names).toHaveLength(4); // each state's rw and ro target
      expect(new Set(names.map((n) => n.split(":")[1])).size).toBe(2); // two state tags
    }
    const [a, b] = projects as [PulumiProject, PulumiProject];
    const tagOf = async (p: PulumiProject) => {
      const store = new SqliteStore(path.join(p.dir, ".sds/state.db"));
      const id = (await store.stateId()).slice(0, 12);
      await store.close();
      return id;
    };
    const bTag = await tagOf(b);
    expect(await tagOf(a)).not.toBe(bTag);
    await a.ok(["destroy", "--yes", "--skip-preview"]);
    const left = (await tgt().list()).map((t) => t.name);
    expect(left).toHaveLength(2);
    for (const n of left) expect(n).toContain(`:${bTag}:`);
    writeThenRead(b.dir, devices[1]!.rw, devices[1]!.ro, 0x7e, 7);
    await b.ok(["up", "--yes", "--skip-preview", "--expect-no-changes"]);
    await b.ok(["refresh", "--yes", "--expect-no-changes"]);
    writeThenRead(b.dir, devices[1]!.rw, devices[1]!.ro, 0x7f, 8);
    await b.ok(["destroy", "--yes", "--skip-preview"]);
    expect(await tgt().list()).toEqual([]);
  });
});
