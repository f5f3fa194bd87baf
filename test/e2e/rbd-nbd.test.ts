/**
 * The Ceph RBD backend over NBD through the real Pulumi CLI (root): a real single-node Ceph
 * (test/helpers/ceph.ts) with a Ceph user holding only the README's rbd caps, an rbd backend
 * exporting over NBD (qemu-nbd serving the image through librbd, one server per volume and mode:
 * `sharedTargets: false`) beside a file backend, and two hosts in network namespaces, each with
 * its own sds-agent. A multiAttach volume on RBD is attached rw to hostA and ro to hostB: a
 * pattern written on hostA reads back on hostB and through librbd, hostB cannot write; growing it
 * while attached grows hostA's device (qemu-nbd restarted for the new size, the device
 * reconnected); both qemu-nbd killed are reported by refresh and made again by up; destroy
 * leaves no image, no qemu-nbd, no row. Every step ends with
 * `refresh --expect-no-changes`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { procProcesses } from "../../provider/src/exec/processes";
import { cannotRun, processesMentioning } from "../datapath/harness";
import { type CephCluster, cephSkipReason } from "../helpers/ceph";
import { freeTcpPort, skipReason } from "../helpers/daemons";
import type { NetLab } from "../helpers/netns";
import { type PulumiProject, summaryCount } from "../helpers/pulumi";
import * as rbdLab from "../helpers/rbd-lab";
import { sdsCli } from "../helpers/sds-cli";

jest.setTimeout(900_000);
const why =
  cannotRun() ??
  cephSkipReason() ??
  skipReason(["qemu-nbd", "qemu-img"]) ??
  (fs.existsSync("/usr/bin/unshare") || fs.existsSync("/bin/unshare") ? undefined : "multi-host tests need unshare (util-linux)");
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const CEPH_POOL = "sds";

suite("Ceph RBD backend over NBD (qemu-nbd): rw and ro attachments on two hosts, grow, destroy", () => {
  let ceph: CephCluster;
  let lab: NetLab;
  let p: PulumiProject;
  let work: string;
  let port: number;
  let close: rbdLab.RbdHostsLab["close"] | undefined;
  let l: rbdLab.RbdHostsLab;
  const images = () => rbdLab.rbdImages(ceph, CEPH_POOL);
  const rbdSize = (image: string) => rbdLab.rbdSize(ceph, CEPH_POOL, image);
  /** This project's qemu-nbd export servers (their pidfiles are in its run folder). */
  const servers = async () => (await procProcesses.list()).filter((x) => path.basename(x.argv[0] ?? "") === "qemu-nbd" && x.argv.some((a) => a.startsWith(`--pid-file=${p.dir}/`)));

  beforeAll(async () => {
    port = await freeTcpPort();
    l = await rbdLab.startRbdHostsLab({ program: "rbd", name: "rbd-nbd", pool: CEPH_POOL, exportLines: (net) => ["sharedTargets: false", `export: {protocol: nbd, portal: "${net.rootIp}:${port}"}`] });
    ({ ceph, lab, p, work, close } = l);
  }, 300_000);

  afterAll(
    async () =>
      close?.(async () => {
        // Exports outlive the provider: whatever a failed test left of this project's, ended here.
        for (const s of await servers()) procProcesses.kill(s.pid, "SIGKILL");
      }),
    300_000,
  );

  test("up: the shared volume on RBD, served by two qemu-nbd (rw, ro) through librbd as user sds; devices on hostA (rw) and hostB (ro); no changes after", async () => {
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "created")).toBe(7); // stack, 2 profiles, 2 volumes, 2 attachments
    const out = await p.outputs();
    expect(out).toMatchObject({ backendName: "ceph", poolId: "ceph/rbd0", plainBackend: "files" });
    expect(await images()).toEqual([out.volumeId]);
    expect(await rbdSize(String(out.volumeId))).toBe(1 * GiB);
    expect(out.aDevice).toMatch(/^\/dev\//);
    expect(out.bDevice).toMatch(/^\/dev\//);
    expect(out.aInfo).toMatchObject({ protocol: "nbd", readOnly: false });
    expect(out.bInfo).toMatchObject({ protocol: "nbd", readOnly: true });
    const live = await servers();
    expect(live).toHaveLength(2);
    for (const s of live) {
      expect(s.argv[s.argv.length - 1]).toMatch(new RegExp(`^rbd:${CEPH_POOL}/${out.volumeId}:id=sds:conf=`));
      expect(s.argv).toContain("--bind");
      expect(s.argv[s.argv.indexOf("--bind") + 1]).toBe(lab.rootIp);
    }
    expect(live.filter((s) => s.argv.includes("--read-only"))).toHaveLength(1);
    // sds doctor asks qemu-nbd (not nbdkit) for the rbd backend's servers, and knows its daemons.
    const doctor = await sdsCli(["doctor", "--json"], { built: true, cwd: p.dir, env: p.env });
    const findings = JSON.parse(doctor.stdout) as Array<{ check: string; severity: string; message: string }>;
    expect(findings.filter((f) => f.check === "exports")).toEqual([expect.objectContaining({ severity: "ok", message: `qemu-nbd on ${lab.rootIp} serves this state's 2 NBD export(s)` })]);
    expect(findings.filter((f) => f.check === "daemons" && f.severity !== "ok")).toEqual([]);
    await p.ok(["preview", "--expect-no-changes"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("a pattern written through hostA's device reads back on hostB and through librbd; hostB cannot write", async () => {
    const out = await p.outputs();
    rbdLab.checkPatternAcrossHosts(l, CEPH_POOL, out);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("growing the attached volume is one update: the image and both devices (rw on hostA, ro on hostB) see 2 GiB; the data stays", async () => {
    const before = await p.outputs();
    await p.config({ sizeGib: 2 });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "updated")).toBe(1);
    expect(summaryCount(up.stdout, "replaced")).toBe(0);
    const after = await p.outputs();
    expect(after.aDevice).toBe(before.aDevice);
    await rbdLab.checkGrown(l, CEPH_POOL, after, ["hostA", "hostB"]);
    expect(await servers()).toHaveLength(2);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("both qemu-nbd killed: refresh reports both attachments broken, up makes the servers again on their ports and reconnects the same devices", async () => {
    const before = await p.outputs();
    const killed = await servers();
    expect(killed).toHaveLength(2);
    const ports = killed.map((s) => s.argv[s.argv.indexOf("--port") + 1]).sort();
    for (const s of killed) procProcesses.kill(s.pid, "SIGKILL");
    await p.ok(["refresh", "--yes"]);
    const attachments = ((await p.stackExport()).deployment.resources ?? []).filter((r) => r.type === "sds:index:Attachment");
    expect(attachments.map((a) => a.outputs?.status)).toEqual(["broken", "broken"]);
    await p.ok(["up", "--yes"]);
    const after = await p.outputs();
    expect([after.aDevice, after.bDevice]).toEqual([before.aDevice, before.bDevice]);
    const live = await servers();
    expect(live.map((s) => s.argv[s.argv.indexOf("--port") + 1]).sort()).toEqual(ports);
    const back = lab.exec("hostB", ["dd", `if=${after.bDevice}`, "bs=1M", "skip=2", "count=4", "iflag=direct", "status=none"]);
    expect(rbdLab.sha(back)).toBe(fs.readFileSync(path.join(work, "pattern.sha"), "utf8"));
    lab.exec("hostA", ["dd", `of=${after.aDevice}`, "bs=1M", "seek=8", "count=1", "iflag=fullblock", "oflag=direct", "conv=fsync", "status=none"], Buffer.alloc(MiB, 9));
    expect(lab.exec("hostB", ["dd", `if=${after.bDevice}`, "bs=1M", "skip=8", "count=1", "iflag=direct", "status=none"]).equals(Buffer.alloc(MiB, 9))).toBe(true);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("destroy leaves no image, no qemu-nbd, no state row, no device", async () => {
    const out = await p.outputs();
    await p.ok(["destroy", "--yes"]);
    await rbdLab.checkNothingLeft(l, CEPH_POOL);
    expect(await servers()).toEqual([]);
    expect(processesMentioning(p.dir)).toEqual([]);
    expect(out.volumeId).toBeTruthy();
  });
});
