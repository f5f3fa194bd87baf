/**
 * What a reviewer reads in `pulumi preview --diff`, through the real CLI on a real tgtd (root):
 * each placement line names its volume (three volumes in one preview); the refusals `up` would
 * hit fail the preview in one line naming the volume (a second attachment of a volume that is not
 * multiAttach, against the state or within one preview; a volume no pool can hold; a growth its
 * pool cannot hold); the
 * connection info of a `connect: false` attachment shows its portals, IQN and LUN without
 * `--show-secrets` while the CHAP password stays `[secret]` and out of the state in plain text;
 * and the README's qemu `--image-opts` login (with an initiator name) works with that info.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { cannotRun } from "../datapath/harness";
import { freeTcpPort } from "../helpers/daemons";
import { localTargets } from "../../provider/src/targets/local-targets";
import { PulumiProject } from "../helpers/pulumi";

jest.setTimeout(600_000);
const why = cannotRun() ?? (fs.existsSync("/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so") ? undefined : "needs qemu's iscsi driver (Debian package qemu-block-extra)");
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

suite("preview a reviewer can read", () => {
  let p: PulumiProject;
  let port: number;
  let initiator: string;
  const volumeFiles = () => (fs.existsSync(path.join(p.dir, "pools/p0")) ? fs.readdirSync(path.join(p.dir, "pools/p0")) : []);
  /** A preview that must fail: its exit code, and the error lines the CLI printed. */
  const refused = async (config: Record<string, boolean | number>) => {
    await p.config(config);
    const r = await p.run(["preview", "--diff"]);
    for (const k of Object.keys(config)) await p.ok(["config", "rm", k]);
    const errors = `${r.stdout}\n${r.stderr}`.split("\n").filter((l) => /error:/.test(l));
    return { code: r.code, errors, all: `${r.stdout}\n${r.stderr}` };
  };

  beforeAll(async () => {
    p = await PulumiProject.create("preview-review");
    port = await freeTcpPort();
    fs.writeFileSync(
      path.join(p.dir, "backends.yaml"),
      `backends:\n  - name: array\n    driver: file\n    export: {protocol: iscsi, portal: "127.0.0.1:${port}", chap: true}\n    pools:\n      - {name: p0, path: pools/p0, totalCapacityGib: 20, maxOverSubscriptionRatio: 1, multiAttach: true}\n`,
    );
    const { localConnector } = await import("../../provider/src/controller/attachments");
    initiator = localConnector().initiator!;
    await p.config({ "sds:backendsFile": "backends.yaml", initiator });
  });
  afterAll(async () => {
    if (!p) return;
    await p.run(["destroy", "--yes"]);
    // The provider leaves tgtd running (exports outlive `pulumi up`); the test stops its own.
    await localTargets(path.join(p.dir, ".sds/run")).iscsi(`127.0.0.1:${port}`).stop();
    p.remove();
  });

  test("preview --diff: each placement line names its volume; nothing is made", async () => {
    const r = await p.ok(["preview", "--diff"]);
    const lines = `${r.stdout}\n${r.stderr}`.split("\n").filter((l) => l.includes("placement of volume"));
    for (const v of ["data", "logs", "scratch"]) {
      expect(lines.filter((l) => new RegExp(`placement of volume "${v}": array/p0 \\(backend array, backendId [0-9a-f-]{36}, sharedTargets true\\)`).test(l))).toHaveLength(1);
    }
    expect(volumeFiles()).toEqual([]);
  });

  test("connectionInfo: portals, IQN and LUN readable without --show-secrets; the password is [secret] and not in the state", async () => {
    const up = await p.ok(["up", "--yes", "--diff"]);
    // The engine shows the new attachment's outputs with only the password hidden.
    expect(up.stdout).toMatch(new RegExp(`portals\\s*: \\[\\s*\\[0\\]: "127\\.0\\.0\\.1:${port}"`));
    expect(up.stdout).toMatch(/authPassword\s*: \[secret\]/);
    expect(up.stdout).toMatch(/targetIqn\s*: "iqn\./);

    const plain = JSON.parse((await p.ok(["stack", "output", "--json"])).stdout);
    expect(plain.hvTarget).toMatchObject({ protocol: "iscsi", portals: [`127.0.0.1:${port}`], authMethod: "CHAP", readOnly: false });
    expect(plain.hvTarget.targetIqn).toMatch(/^iqn\./);
    expect(typeof plain.hvTarget.targetLun).toBe("number");
    expect(plain.hvTarget.authUsername).toBeTruthy();
    expect(plain.hvPassword).toBe("[secret]");
    // The Node.js SDK makes a whole Output secret when any part of it is: the program exports the
    // readable part with pulumi.unsecret (as the README shows).
    expect(plain.hvInfo).toBe("[secret]");

    const all = JSON.parse((await p.ok(["stack", "output", "--json", "--show-secrets"])).stdout);
    const password = all.hvPassword as string;
    expect(password.length).toBeGreaterThan(8);
    const exported = (await p.ok(["stack", "export"])).stdout;
    expect(exported).not.toContain(password);
    // In the state, only the password is a secret: the rest of connectionInfo is plain.
    const hv = JSON.parse(exported).deployment.resources.find((x: { urn: string }) => x.urn.endsWith("::hv"));
    expect(hv.outputs.connectionInfo.portals).toEqual([`127.0.0.1:${port}`]);
    expect(hv.outputs.connectionInfo.authPassword).toMatchObject({ "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270" });

    // The README's hypervisor login: qemu --image-opts with the initiator name the export was
    // made for, the CHAP password from a file (never in argv).
    const info = all.hvInfo;
    const secretFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "sds-chap-")), "chap");
    fs.writeFileSync(secretFile, password, { mode: 0o600 });
    try {
      const opts = `driver=iscsi,transport=tcp,portal=${info.portals[0]},target=${info.targetIqn},lun=${info.targetLun},user=${info.authUsername},password-secret=chap0,initiator-name=${initiator}`;
      const { stdout } = await promisify(execFile)("qemu-img", ["info", "--object", `secret,id=chap0,file=${secretFile}`, "--image-opts", opts], { timeout: 30_000 });
      expect(stdout).toMatch(/virtual size: 2 GiB \(2147483648 bytes\)/);
      // Another initiator name is not in the export's ACL: refused.
      const other = opts.replace(`initiator-name=${initiator}`, "initiator-name=iqn.2026-01.org.example:intruder");
      await expect(promisify(execFile)("qemu-img", ["info", "--object", `secret,id=chap0,file=${secretFile}`, "--image-opts", other], { timeout: 30_000 })).rejects.toThrow();
    } finally {
      fs.rmSync(path.dirname(secretFile), { recursive: true, force: true });
    }
  });

  test("a second attachment of a volume that is not multiAttach fails the preview, in one line naming the volume and the attachment it has", async () => {
    const r = await refused({ second: true });
    expect(r.code).not.toBe(0);
    expect(r.errors.join("\n")).toMatch(/attachment "hv2" \(volumeId\): volume data-[0-9a-f]{7} \([0-9a-f-]{36}\) is not multiAttach and is already attached: attachment [0-9a-f-]{36} \("hv"\) to host localhost \(rw\)/);
  });

  test("the same second attachment passes the preview when that update makes the volume multiAttach (as up would)", async () => {
    await p.config({ second: true, dataMultiAttach: true });
    const r = await p.run(["preview"]);
    for (const k of ["second", "dataMultiAttach"]) await p.ok(["config", "rm", k]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/\+ 1 to create/);
  });

  test("two new attachments of one volume that is not multiAttach in the same preview: the second fails it", async () => {
    const r = await refused({ twoNew: true });
    expect(r.code).not.toBe(0);
    expect(r.errors.join("\n")).toMatch(/attachment "(a|b)" \(volumeId\): volume logs-[0-9a-f]{7} \([0-9a-f-]{36}\) is not multiAttach and attachment "(b|a)" of this same preview attaches it too/);
  });

  test("a volume no pool can hold fails the preview", async () => {
    const r = await refused({ huge: true });
    expect(r.code).not.toBe(0);
    expect(r.errors.join("\n")).toMatch(/volume "huge": no valid pool for a 500 GiB volume; every pool was rejected: array\/p0: capacity: 16 GiB free/);
    expect(volumeFiles()).toHaveLength(3);
  });

  test("a growth the pool cannot hold fails the preview", async () => {
    const r = await refused({ dataSizeGib: 40 });
    expect(r.code).not.toBe(0);
    expect(r.errors.join("\n")).toMatch(/sizeGib: pool array\/p0 cannot grow volume data-[0-9a-f]{7} by 38 GiB: 16 GiB free/);
  });

  test("refresh finds nothing to change (the nested secret reads back the same)", async () => {
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
    await p.ok(["preview", "--expect-no-changes"]);
  });
});
