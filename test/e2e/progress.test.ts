/**
 * Progress of long operations in `pulumi up` (the real CLI, non-interactive as in CI): a clone of
 * a volume holding 300 MiB of real data, a replication pair's initial sync, the last sync before a
 * failover and the failback resync each print lines with their percentage and rate, named after
 * their resource.
 */
import { randomFillSync } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { PulumiProject } from "../helpers/pulumi";

jest.setTimeout(600_000);

const MiB = 1024 * 1024;

/** The progress lines of one operation in a CLI run's output, as [percent, line]. */
function progressLines(output: string, what: string): Array<[number, string]> {
  const re = new RegExp(`${what.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: (\\d+)% \\((\\d+) MiB of 1024 MiB(, \\d+ MiB/s)?\\)`);
  return output
    .split("\n")
    .map((l) => re.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => [Number(m[1]), m[0]]);
}

let p: PulumiProject;

beforeAll(async () => {
  p = await PulumiProject.create("progress");
  // backends.yaml (in the program's folder): main replicates to dr.
  await p.config({ "sds:backendsFile": "backends.yaml" });
  await p.ok(["up", "--yes", "--skip-preview"]);
  // 300 MiB of real (incompressible) data at the start of the 1 GiB source volume.
  const file = path.join(p.dir, "pools/main", `volume-${(await p.outputs()).sourceId as string}.img`);
  const fd = fs.openSync(file, "r+");
  try {
    const buf = Buffer.alloc(8 * MiB);
    for (let off = 0; off < 300 * MiB; off += buf.length) fs.writeSync(fd, randomFillSync(buf), 0, buf.length, off);
  } finally {
    fs.closeSync(fd);
  }
});
afterAll(async () => {
  if (!p) return;
  await p.run(["destroy", "--yes", "--skip-preview"]);
  p.remove();
});

test("up: the clone and the initial sync report their percentage and rate", async () => {
  await p.config({ clone: true });
  const up = await p.ok(["up", "--yes", "--skip-preview"]);
  // The live part (each resource's row as it changes), then the diagnostics kept for the log.
  const [live, diagnostics] = up.stdout.split("\nDiagnostics:\n");
  const clone = progressLines(live, 'clone of volume "copy"');
  expect(clone.at(-1)).toEqual([100, expect.stringMatching(/: 100% \(1024 MiB of 1024 MiB, \d+ MiB\/s\)$/)]);
  const sync = progressLines(live, 'initial sync of pair "dr"');
  // A sync of 1 GiB (300 MiB of data, the rest holes) takes long enough for several steps of 10%,
  // shown in order.
  expect(sync.length).toBeGreaterThanOrEqual(3);
  expect(sync.map(([pc]) => pc)).toEqual([...sync.map(([pc]) => pc)].sort((a, b) => a - b));
  expect(sync.at(-1)![0]).toBe(100);
  // The info lines (every 10%) stay among the run's diagnostics.
  expect(progressLines(diagnostics, 'initial sync of pair "dr"').map(([pc]) => pc)).toEqual([10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
  expect(progressLines(diagnostics, 'clone of volume "copy"').at(-1)?.[0]).toBe(100);
  await p.ok(["preview", "--expect-no-changes"]);
});

test("failover and failback: the last sync and the failback resync report their progress", async () => {
  await p.config({ activeSide: "secondary" });
  const over = await p.ok(["up", "--yes", "--skip-preview"]);
  expect(progressLines(over.stdout.split("\nDiagnostics:\n")[0], 'last sync before failover of pair "dr"').at(-1)?.[0]).toBe(100);
  await p.config({ activeSide: "primary" });
  const back = await p.ok(["up", "--yes", "--skip-preview"]);
  const resync = progressLines(back.stdout.split("\nDiagnostics:\n")[0], 'failback resync of pair "dr"');
  expect(resync.at(-1)?.[0]).toBe(100);
  await p.ok(["refresh", "--yes", "--expect-no-changes"]);
});
