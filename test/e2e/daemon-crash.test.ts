/**
 * A target daemon killed under connected devices (root, real CLI, real tgtd/nbdkit, real loop
 * devices): `kill -9` of tgtd (iSCSI, CHAP) or of the nbdkit servers (NBD) while a multiAttach
 * volume is attached rw and ro on this machine. Then, as an operator would:
 * - `pulumi refresh` shows each attachment `broken`, with the reason (round 1 kept saying
 *   `attached`), and I/O on the device ends within seconds (an error, or data once the initiator
 *   logged in again to the export made again) instead of hanging;
 * - `pulumi up` repairs both: the same device paths, the data written before the crash reads
 *   back, new writes work; `refresh --expect-no-changes` passes;
 * - `pulumi destroy` completes in one run (round 1 needed two: "umount … target is busy").
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { cannotRun } from "../datapath/harness";
import { ddRead, ddWrite, type LocalBackendProject, localBackendProject } from "../helpers/local-backend";
import type { PulumiProject } from "../helpers/pulumi";

jest.setTimeout(900_000);
const why = cannotRun();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

/** pids of live processes whose argv matches. */
function pidsOf(match: (argv: string[]) => boolean): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
      if (argv.length && match(argv)) out.push(Number(pid));
    } catch {
      // gone
    }
  }
  return out;
}

suite.each([
  ["iscsi", true],
  ["nbd", false],
] as const)("%s: the target daemon killed under connected devices", (protocol, chap) => {
  let p: PulumiProject;
  let port: number;
  let stack: LocalBackendProject;

  beforeAll(async () => {
    stack = await localBackendProject("survive", `crash-${protocol}`, protocol, chap);
    ({ p, port } = stack);
  });
  afterAll(async () => stack?.teardown());

  test("refresh shows the broken paths; up repairs them on the same devices; destroy completes in one run", async () => {
    await p.ok(["up", "--yes", "--skip-preview"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
    const before = await p.outputs();
    const rw = before.writerDevice as string;
    const ro = before.readerDevice as string;
    expect([rw, ro]).toEqual([expect.stringMatching(/^\/dev\/loop\d+$/), expect.stringMatching(/^\/dev\/loop\d+$/)]);
    const pattern = ddWrite(p.dir, rw, 0x3c, 4);

    const daemons =
      protocol === "iscsi"
        ? pidsOf((a) => path.basename(a[0]!) === "tgtd" && a[a.indexOf("-C") + 1] === String(port % 32768))
        : pidsOf((a) => path.basename(a[0]!) === "nbdkit" && a.some((x) => x.startsWith(`dir=${p.dir}`)));
    expect(daemons.length).toBeGreaterThan(0);
    for (const pid of daemons) process.kill(pid, "SIGKILL");

    // refresh: both attachments broken, with a reason; the dead device fails fast instead of hanging.
    await p.ok(["refresh", "--yes"]);
    const attachments = ((await p.stackExport()).deployment.resources ?? []).filter((r) => r.type === "sds:index:Attachment");
    expect(attachments).toHaveLength(2);
    for (const a of attachments) {
      expect(a.outputs?.status).toBe("broken");
      expect(String(a.outputs?.statusReason)).toMatch(/\S/);
    }
    // A read on the device ends within seconds: with an error (the path is fenced, or nbdfuse
    // lost its server for good), or with data when the initiator already logged in again to the
    // export the refresh made again. It never hangs (round 1's read sat in D state ~10 minutes).
    const started = Date.now();
    const read = spawnSync("dd", [`if=${rw}`, "bs=4k", "count=1", "iflag=direct", "of=/dev/null", "status=none"], { timeout: 120_000 });
    expect(read.signal).toBeNull(); // not killed by the 120 s timeout
    expect(Date.now() - started).toBeLessThan(30_000);
    if (protocol === "nbd") expect(read.status).not.toBe(0); // nbdfuse never reconnects

    // up: the preview says what it will do, then the repair; the same devices, the data, new writes.
    const pre = await p.previewJson();
    expect(pre.changeSummary).toMatchObject({ update: 2 });
    await p.ok(["up", "--yes", "--skip-preview"]);
    const after = await p.outputs();
    expect([after.writerDevice, after.readerDevice]).toEqual([rw, ro]);
    expect(Buffer.compare(ddRead(ro, 4), pattern)).toBe(0);
    const again = ddWrite(p.dir, rw, 0x3d, 6);
    expect(Buffer.compare(ddRead(ro, 6), again)).toBe(0);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
    await p.ok(["preview", "--expect-no-changes"]);

    // Another crash, then destroy straight away: one run, nothing left.
    for (const pid of protocol === "iscsi" ? pidsOf((a) => path.basename(a[0]!) === "tgtd" && a[a.indexOf("-C") + 1] === String(port % 32768)) : pidsOf((a) => path.basename(a[0]!) === "nbdkit" && a.some((x) => x.startsWith(`dir=${p.dir}`)))) {
      process.kill(pid, "SIGKILL");
    }
    await p.ok(["destroy", "--yes", "--skip-preview"]);
    expect(execFileSync("losetup", ["--list", "--noheadings", "--output", "BACK-FILE"], { encoding: "utf8" })).not.toContain(p.dir);
    expect(fs.readFileSync("/proc/mounts", "utf8")).not.toContain(p.dir);
    expect(fs.readdirSync(path.join(p.dir, "pools/p0"))).toEqual([]);
  });
});
