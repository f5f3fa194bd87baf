/**
 * Attachments through the real Pulumi CLI on a real tgtd (root): a multiAttach volume with an rw
 * and an ro attachment, no changes after up, a mode change replaces, a second attachment of a
 * volume that is not multiAttach fails with a clear error, the CHAP password stays a secret, and
 * destroy leaves no target behind.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { cannotRun, processesMentioning, qemuIo } from "../datapath/harness";
import { freeTcpPort } from "../helpers/daemons";
import { localTargets } from "../../provider/src/targets/local-targets";
import { PulumiProject, summaryCount } from "../helpers/pulumi";

jest.setTimeout(900_000);
const why = cannotRun();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

suite("attachments", () => {
  let p: PulumiProject;
  let port: number;
  const tgtTargets = () => execFileSync("tgtadm", ["-C", String(port % 32768), "--lld", "iscsi", "--op", "show", "--mode", "target"], { encoding: "utf8" });

  beforeAll(async () => {
    p = await PulumiProject.create("attachments");
    port = await freeTcpPort();
    fs.writeFileSync(
      path.join(p.dir, "backends.yaml"),
      `backends:\n  - name: array\n    driver: file\n    sharedTargets: true\n    export: {protocol: iscsi, portal: "127.0.0.1:${port}", chap: true}\n    pools:\n      - {name: p0, path: pools/p0, totalCapacityGib: 50, multiAttach: true}\n`,
    );
    await p.config({ "sds:backendsFile": "backends.yaml" });
  });
  afterAll(async () => {
    if (!p) return;
    await p.run(["destroy", "--yes"]);
    // The provider leaves tgtd running (exports outlive `pulumi up`); the test stops its own.
    await localTargets(path.join(p.dir, ".sds/run")).iscsi(`127.0.0.1:${port}`).stop();
    p.remove();
  });

  test("up: rw and ro attachments of a multiAttach volume; data written through rw reads back through ro; no changes after", async () => {
    await p.ok(["up", "--yes"]);
    const out = JSON.parse((await p.ok(["stack", "output", "--json", "--show-secrets"])).stdout);
    expect(out.writerInfo).toMatchObject({ protocol: "iscsi", portals: [`127.0.0.1:${port}`], authMethod: "CHAP", readOnly: false });
    expect(out.readerInfo.readOnly).toBe(true);
    const { localConnector } = await import("../../provider/src/controller/attachments");
    const me = localConnector().initiator;
    expect((await qemuIo(out.writerInfo, "write -P 0x42 0 64k", { initiator: me })).ok).toBe(true);
    expect((await qemuIo(out.readerInfo, "read -P 0x42 0 64k", { initiator: me, readOnly: true })).ok).toBe(true);
    expect((await qemuIo(out.readerInfo, "write -P 0x43 0 4k", { initiator: me })).ok).toBe(false);
    await p.ok(["preview", "--expect-no-changes"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("connect on localhost: real block devices; a pattern written through the rw device reads back through the ro device, which refuses writes", async () => {
    const out = await p.outputs();
    const w = out.writerDevice as string;
    const r = out.readerDevice as string;
    expect(w).toMatch(/^\/dev\/loop\d+$/);
    expect(r).toMatch(/^\/dev\/loop\d+$/);
    expect(fs.statSync(w).isBlockDevice()).toBe(true);
    const pattern = Buffer.alloc(1024 * 1024, 0x6b);
    const file = path.join(p.dir, "pattern.bin");
    fs.writeFileSync(file, pattern);
    execFileSync("dd", [`if=${file}`, `of=${w}`, "bs=1M", "count=1", "seek=2", "oflag=direct", "conv=fsync", "status=none"]);
    const back = execFileSync("dd", [`if=${r}`, "bs=1M", "count=1", "skip=2", "iflag=direct", "status=none"]);
    expect(Buffer.compare(back, pattern)).toBe(0);
    expect(() => execFileSync("dd", [`if=${file}`, `of=${r}`, "bs=4k", "count=1", "oflag=direct", "status=none"], { stdio: "pipe" })).toThrow();
  });

  test("the CHAP password is a secret: not in the state in plain text", async () => {
    const out = JSON.parse((await p.ok(["stack", "output", "--json", "--show-secrets"])).stdout);
    const password = out.writerInfo.authPassword as string;
    expect(password.length).toBeGreaterThan(8);
    expect((await p.ok(["stack", "export"])).stdout).not.toContain(password);
    expect(fs.readFileSync(path.join(p.dir, ".sds/state.db")).includes(Buffer.from(password))).toBe(false);
  });

  test("changing mode replaces the attachment (create before delete on a multiAttach volume)", async () => {
    const before = (await p.outputs()).readerId;
    await p.config({ readerMode: "rw" });
    const pre = await p.previewJson();
    expect(pre.changeSummary).toMatchObject({ replace: 1 });
    const up = await p.ok(["up", "--yes", "--skip-preview"]);
    expect(summaryCount(up.stdout, "replaced")).toBe(1);
    expect((await p.outputs()).readerId).not.toBe(before);
    await p.ok(["preview", "--expect-no-changes"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("a second attachment of a volume that is not multiAttach fails with a clear error", async () => {
    await p.config({ second: true });
    const r = await p.run(["up", "--yes", "--skip-preview"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toMatch(/volume single-[0-9a-f]{7} \([0-9a-f-]{36}\) is not multiAttach and is already attached: attachment [0-9a-f-]{36} to host localhost/);
    await p.ok(["config", "rm", "second"]);
    await p.ok(["up", "--yes", "--skip-preview"]);
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
  });

  test("destroy disconnects (no loop device, FUSE mount or qemu-nbd left) and removes every attachment, target, LUN and ACL, and every volume", async () => {
    expect(tgtTargets()).toContain("iqn.2026-11.io.sds:");
    await p.ok(["destroy", "--yes", "--skip-preview"]);
    expect(tgtTargets().trim()).toBe("");
    expect(execFileSync("losetup", ["--list", "--noheadings", "--output", "BACK-FILE"], { encoding: "utf8" })).not.toContain(p.dir);
    expect(fs.readFileSync("/proc/mounts", "utf8")).not.toContain(p.dir);
    // tgtd itself stays up (exports outlive `pulumi up`; afterAll stops it); nothing else of ours may.
    expect(processesMentioning(p.dir).filter((x) => !/^\d+: tgtd /.test(x))).toEqual([]);
    expect(fs.readdirSync(path.join(p.dir, "pools/p0"))).toEqual([]);
  });
});
