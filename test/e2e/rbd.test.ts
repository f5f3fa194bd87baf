/**
 * The Ceph RBD backend through the real Pulumi CLI (root): a real single-node Ceph
 * (test/helpers/ceph.ts) with a Ceph user holding only rbd caps, an rbd backend exporting over
 * iSCSI with CHAP (tgt's rbd backing store, tgtd on this machine) beside a file backend, and two
 * hosts in network namespaces, each with its own sds-agent connecting through the userspace
 * iSCSI path. A profile places a multiAttach volume on RBD; it is attached rw to hostA and ro to
 * hostB: a pattern written on hostA reads back on hostB and through librbd, hostB cannot write;
 * growing it while attached grows hostA's device; a clone of it holds its data; destroy leaves
 * no image, snapshot, target, CHAP account or state row.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { localTargets } from "../../provider/src/targets/local-targets";
import { cannotRun } from "../datapath/harness";
import { type CephCluster, cephSkipReason, tgtRbdSkipReason } from "../helpers/ceph";
import { freeTcpPort } from "../helpers/daemons";
import type { NetLab } from "../helpers/netns";
import { type PulumiProject, summaryCount } from "../helpers/pulumi";
import * as rbdLab from "../helpers/rbd-lab";

jest.setTimeout(900_000);
const why =
  cannotRun() ?? cephSkipReason() ?? tgtRbdSkipReason() ?? (fs.existsSync("/usr/bin/unshare") || fs.existsSync("/bin/unshare") ? undefined : "multi-host tests need unshare (util-linux)");
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const CEPH_POOL = "sds";

/** A TCP port whose tgtd control socket (port % 32768) no tgtd uses: the provider names tgtd's channel by the portal's port. */
async function portalPort(): Promise<number> {
  for (;;) {
    const port = await freeTcpPort();
    if (!fs.existsSync(`/var/run/tgtd/socket.${port % 32768}`)) return port;
  }
}

suite("Ceph RBD backend: rw and ro attachments over tgt-rbd on two hosts, grow, clone, destroy", () => {
  let ceph: CephCluster;
  let lab: NetLab;
  let p: PulumiProject;
  let work: string;
  let port: number;
  let close: rbdLab.RbdHostsLab["close"] | undefined;
  let l: rbdLab.RbdHostsLab;
  const portal = () => `${lab.rootIp}:${port}`;
  const tgtadm = (...args: string[]) => execFileSync("tgtadm", ["-C", String(port % 32768), "--lld", "iscsi", ...args], { encoding: "utf8" });
  const images = () => rbdLab.rbdImages(ceph, CEPH_POOL);
  const rbdSize = (image: string) => rbdLab.rbdSize(ceph, CEPH_POOL, image);
  /** `len` bytes at `offset` of an image, read through librbd. */
  const rbdBytes = (image: string, offset: number, len: number) => rbdLab.rbdBytes(ceph, CEPH_POOL, image, offset, len, work);

  beforeAll(async () => {
    port = await portalPort();
    l = await rbdLab.startRbdHostsLab({ program: "rbd", pool: CEPH_POOL, exportLines: (net) => [`export: {protocol: iscsi, portal: "${net.rootIp}:${port}", chap: true}`] });
    ({ ceph, lab, p, work, close } = l);
  }, 300_000);

  afterAll(
    async () =>
      close?.(async () => {
        // tgtd outlives the provider (exports outlive `pulumi up`): the test stops its own.
        if (port) await localTargets(path.join(p.dir, ".sds/run")).iscsi(portal()).stop().catch(() => undefined);
      }),
    300_000,
  );

  test("up: the profile places the shared volume on RBD (an image named by its id) and the plain one on files; devices on hostA (rw) and hostB (ro) through tgt-rbd; no changes after", async () => {
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "created")).toBe(7); // stack, 2 profiles, 2 volumes, 2 attachments
    const out = JSON.parse((await p.ok(["stack", "output", "--json", "--show-secrets"])).stdout) as Record<string, unknown>;
    expect(out).toMatchObject({ backendName: "ceph", poolId: "ceph/rbd0", plainBackend: "files" });
    expect(await images()).toEqual([out.volumeId]);
    expect(await rbdSize(String(out.volumeId))).toBe(1 * GiB);
    expect(out.aDevice).toMatch(/^\/dev\/loop\d+$/);
    expect(out.bDevice).toMatch(/^\/dev\/loop\d+$/);
    expect(out.aInfo).toMatchObject({ protocol: "iscsi", portals: [portal()], authMethod: "CHAP", readOnly: false });
    expect(out.bInfo).toMatchObject({ protocol: "iscsi", readOnly: true });
    // tgtd serves the image itself through librbd, as user sds with sds's own conf.
    const show = tgtadm("--op", "show", "--mode", "target");
    expect(show).toMatch(/Backing store type: rbd/);
    expect(show).toContain(`Backing store path: ${CEPH_POOL}/${out.volumeId}`);
    await p.ok(["preview", "--expect-no-changes"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("a pattern written through hostA's device reads back on hostB and through librbd; hostB cannot write", async () => {
    const out = await p.outputs();
    expect([out.aDevice, out.bDevice]).toEqual([expect.stringMatching(/^\/dev\/loop\d+$/), expect.stringMatching(/^\/dev\/loop\d+$/)]);
    rbdLab.checkPatternAcrossHosts(l, CEPH_POOL, out);
  });

  test("growing the attached volume is one update: the image and hostA's device see 2 GiB; the data stays", async () => {
    const before = await p.outputs();
    await p.config({ sizeGib: 2 });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "updated")).toBe(1);
    expect(summaryCount(up.stdout, "replaced")).toBe(0);
    const after = await p.outputs();
    expect(after.aDevice).toBe(before.aDevice);
    await rbdLab.checkGrown(l, CEPH_POOL, after, ["hostA"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("a clone on RBD holds the source's data, in an image of its own that needs no snapshot of the source", async () => {
    await p.config({ clone: true });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "created")).toBe(1);
    const out = await p.outputs();
    expect(out.copyBackend).toBe("ceph");
    expect((await images()).sort()).toEqual([String(out.volumeId), String(out.copyId)].sort());
    expect(rbdLab.sha(rbdBytes(String(out.copyId), 2 * MiB, 4 * MiB))).toBe(fs.readFileSync(path.join(work, "pattern.sha"), "utf8"));
    await p.ok(["preview", "--expect-no-changes"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("destroy leaves no image, snapshot, target, CHAP account, state row or device", async () => {
    const out = await p.outputs();
    await p.ok(["destroy", "--yes"]);
    await rbdLab.checkNothingLeft(l, CEPH_POOL);
    expect(tgtadm("--op", "show", "--mode", "target").trim()).toBe("");
    expect(tgtadm("--op", "show", "--mode", "account").split("\n").slice(1).map((x) => x.trim()).filter(Boolean)).toEqual([]);
    expect(fs.readdirSync(path.join(work, "pools", "f0"))).toEqual([]);
    expect(out.volumeId).toBeTruthy();
  });
});
