/**
 * Four machines in network namespaces, the real Pulumi CLI in this one: a storage node (its
 * sds-agent drives the file driver and tgtd), a second storage node (the replica), hostA and hostB
 * (their sds-agents connect through the userspace iSCSI path, each in its own network, mount and
 * UTS namespace). A multiAttach volume is attached rw to hostA and ro to hostB: a pattern written
 * on hostA reads back on hostB, hostB cannot write, the storage node's agent replicates it to the
 * second node on its own timer, growing the volume grows hostA's device (and the replica), and
 * after destroy no path, loop device, FUSE mount or daemon of ours is left on either host.
 */
import { type ChildProcess, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { AgentClient } from "../../provider/src/agent/client";
import { cannotRun, processesMentioning } from "../datapath/harness";
import { bytesAt } from "../helpers/files";
import { NetLab, startLabAgent } from "../helpers/netns";
import { PulumiProject, summaryCount } from "../helpers/pulumi";

jest.setTimeout(900_000);
const why = cannotRun() ?? (fs.existsSync("/usr/bin/unshare") || fs.existsSync("/bin/unshare") ? undefined : "multi-host tests need unshare (util-linux)");
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const GiB = 1024 ** 3;
const TOKEN = randomBytes(24).toString("hex");
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

suite("multi-host: storage node, hostA, hostB in network namespaces", () => {
  let lab: NetLab;
  let p: PulumiProject;
  let work: string;
  const agents = new Map<string, { child: ChildProcess; stateDir: string; client: AgentClient }>();
  const portal = () => `${lab.node("storage").ip}:3260`;

  const startAgent = async (name: string, extra: string[] = []) => {
    agents.set(name, await startLabAgent(lab, name, { work, token: TOKEN, extra }));
  };

  /** Devices and mounts of ours on a host: loop devices over files in its state folder, mounts in its mount namespace. */
  const leftovers = (name: string): string[] => {
    const a = agents.get(name)!;
    const loops = JSON.parse(execFileSync("losetup", ["--json", "--list"], { encoding: "utf8" }) || '{"loopdevices":[]}').loopdevices as Array<{ name: string; "back-file": string | null }>;
    const mine = loops.filter((l) => (l["back-file"] ?? "").includes(a.stateDir)).map((l) => `${l.name} over ${l["back-file"]}`);
    const mounts = fs.readFileSync(`/proc/${a.child.pid}/mounts`, "utf8").split("\n").filter((l) => l.includes(a.stateDir));
    return [...mine, ...mounts, ...processesMentioning(a.stateDir)];
  };

  beforeAll(async () => {
    lab = new NetLab(["storage", "hostA", "hostB", "storage2"]);
    lab.up();
    p = await PulumiProject.create("multihost");
    work = path.join(p.dir, "lab");
    fs.mkdirSync(path.join(work, "pools"), { recursive: true });
    fs.mkdirSync(path.join(work, "pools2"), { recursive: true });
    fs.writeFileSync(path.join(work, "token"), TOKEN, { mode: 0o600 });
    // Each storage node may replicate only to the other, named by its key in the provider's hosts.
    const peers = (peer: string) => {
      const file = path.join(work, `peer-${peer}.json`);
      fs.writeFileSync(file, JSON.stringify({ [peer]: { url: `http://${lab.node(peer).ip}:7700`, token: TOKEN } }), { mode: 0o600 });
      return file;
    };
    await startAgent("storage", ["--storage-root", path.join(work, "pools"), "--peers", peers("storage2")]);
    await startAgent("storage2", ["--storage-root", path.join(work, "pools2"), "--peers", peers("storage")]);
    await startAgent("hostA");
    await startAgent("hostB");
    fs.writeFileSync(
      path.join(p.dir, "backends.yaml"),
      [
        "backends:",
        "  - name: array",
        "    driver: file",
        "    node: storage",
        `    export: {protocol: iscsi, portal: "${portal()}", chap: true}`,
        "    replicationTargets: [{backend: dr}]",
        "    pools:",
        `      - {name: p0, path: ${path.join(work, "pools", "p0")}, totalCapacityGib: 50, multiAttach: true, replication: async}`,
        "  - name: dr",
        "    driver: file",
        "    node: storage2",
        `    export: {protocol: iscsi, portal: "${lab.node("storage2").ip}:3260"}`,
        "    pools:",
        `      - {name: p0, path: ${path.join(work, "pools2", "p0")}, totalCapacityGib: 50, multiAttach: true}`,
        "",
      ].join("\n"),
    );
    const hosts = Object.fromEntries(["storage", "storage2", "hostA", "hostB"].map((h) => [h, { url: `http://${lab.node(h).ip}:7700` }]));
    await p.config({ "sds:backendsFile": "backends.yaml", sizeGib: 1 });
    await p.config({ "sds:hosts": JSON.stringify(hosts), "sds:agentToken": TOKEN }, { secret: true });
  });

  afterAll(async () => {
    try {
      if (p) await p.run(["destroy", "--yes"]);
      // tgtd outlives the provider and the agent (exports outlive `pulumi up`): stop the storage node's.
      await agents.get("storage")?.client.iscsiCall(portal(), { op: "stop", args: [] }).catch(() => undefined);
      for (const a of agents.values()) await a.client.close();
    } finally {
      lab?.down();
      p?.remove();
    }
  });

  test("up: the volume is on the storage node, with a real device on hostA (rw) and on hostB (ro); no changes after", async () => {
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "created")).toBe(5);
    const out = await p.outputs();
    expect(out.aDevice).toMatch(/^\/dev\/loop\d+$/);
    expect(out.bDevice).toMatch(/^\/dev\/loop\d+$/);
    expect(out.aDevice).not.toBe(out.bDevice);
    expect(fs.readdirSync(path.join(work, "pools", "p0"))).toEqual([`volume-${out.volumeId}.img`]);
    // Each host's agent reports its own path of the volume (path discovery), and only its own.
    const onA = await agents.get("hostA")!.client.getAllVolumePaths();
    const onB = await agents.get("hostB")!.client.getAllVolumePaths();
    expect(onA.map((x) => [x.path, x.volumeId])).toEqual([[out.aDevice, out.volumeId]]);
    expect(onB.map((x) => [x.path, x.volumeId])).toEqual([[out.bDevice, out.volumeId]]);
    await p.ok(["preview", "--expect-no-changes"]);
  });

  test("a pattern written through hostA's device reads back through hostB's; hostB cannot write", async () => {
    const out = await p.outputs();
    // Never dd to a path that is not the device up made (a failed up leaves no outputs).
    expect([out.aDevice, out.bDevice]).toEqual([expect.stringMatching(/^\/dev\/loop\d+$/), expect.stringMatching(/^\/dev\/loop\d+$/)]);
    const pattern = randomBytes(4 * 1024 * 1024);
    lab.exec("hostA", ["dd", `of=${out.aDevice}`, "bs=1M", "seek=2", "oflag=direct", "conv=fsync", "status=none"], pattern);
    const back = lab.exec("hostB", ["dd", `if=${out.bDevice}`, "bs=1M", "skip=2", "count=4", "iflag=direct", "status=none"]);
    expect(sha(back)).toBe(sha(pattern));
    expect(() => lab.exec("hostB", ["dd", `of=${out.bDevice}`, "bs=4k", "count=1", "oflag=direct", "status=none"], Buffer.alloc(4096, 1))).toThrow();
    fs.writeFileSync(path.join(work, "pattern.sha"), sha(pattern));
  });

  test("the storage node's agent replicates the pattern to the second storage node on its own timer (rpoSeconds 2)", async () => {
    const out = await p.outputs();
    const replica = path.join(work, "pools2", "p0", `volume-${out.secondaryVolumeId}.img`);
    const want = fs.readFileSync(path.join(work, "pattern.sha"), "utf8");
    const deadline = Date.now() + 60_000;
    const at = () => sha(bytesAt(replica, 2 * 1024 * 1024, 4 * 1024 * 1024));
    while (at() !== want) {
      if (Date.now() > deadline) throw new Error("the replica did not get the pattern within 60 s");
      await new Promise((r) => setTimeout(r, 500));
    }
    const pairs = await agents.get("storage")!.client.pairs();
    expect(pairs).toEqual([expect.objectContaining({ rpoSeconds: 2, lastError: null })]);
    expect(pairs[0].bytesTransferred).toBeGreaterThanOrEqual(4 * 1024 * 1024);
  });

  test("growing the volume is one update (no replace) and grows hostA's device; the data stays", async () => {
    const before = await p.outputs();
    expect(before.aDevice).toMatch(/^\/dev\/loop\d+$/);
    await p.config({ sizeGib: 2 });
    const up = await p.ok(["up", "--yes"]);
    expect(summaryCount(up.stdout, "updated")).toBe(1);
    expect(summaryCount(up.stdout, "replaced")).toBe(0);
    const after = await p.outputs();
    expect(after.aDevice).toBe(before.aDevice);
    expect(Number(lab.exec("hostA", ["blockdev", "--getsize64", String(after.aDevice)]).toString().trim())).toBe(2 * GiB);
    const back = lab.exec("hostA", ["dd", `if=${after.aDevice}`, "bs=1M", "skip=2", "count=4", "iflag=direct", "status=none"]);
    expect(sha(back)).toBe(fs.readFileSync(path.join(work, "pattern.sha"), "utf8"));
    // The end of the grown device is writable on hostA.
    lab.exec("hostA", ["dd", `of=${after.aDevice}`, "bs=1M", `seek=${2 * 1024 - 1}`, "count=1", "iflag=fullblock", "oflag=direct", "status=none"], Buffer.alloc(1 << 20, 7));
  });

  test("destroy: nothing of ours is left on either host, and the volume is gone from the storage node", async () => {
    await p.ok(["destroy", "--yes"]);
    for (const h of ["hostA", "hostB"]) {
      expect(await agents.get(h)!.client.getAllVolumePaths()).toEqual([]);
      expect(leftovers(h)).toEqual([]);
    }
    expect(fs.readdirSync(path.join(work, "pools", "p0"))).toEqual([]);
    expect(fs.readdirSync(path.join(work, "pools2", "p0"))).toEqual([]);
    expect(await agents.get("storage")!.client.pairs()).toEqual([]);
    const targets = (await agents.get("storage")!.client.iscsiCall(portal(), { op: "list", args: [] })) as unknown[];
    expect(targets).toEqual([]);
  });
});
