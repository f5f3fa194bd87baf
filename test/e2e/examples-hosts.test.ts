/**
 * The examples that need hosts with agents, as a user runs them: examples/multiattach-cluster,
 * examples/storage-nodes and examples/ci-preview, each copied outside this checkout with the
 * packaged plugin installed from its tarball and `pulumi-sds` from the packed SDK
 * (test/helpers/packaged.ts), its addresses and pool folders edited to the lab's as a user edits
 * them to theirs, hosts and tokens given as the READMEs say (tokens as secrets, through stdin).
 *
 * One lab for the three: two storage nodes and three application hosts in network namespaces
 * (test/helpers/netns.ts), each running the `sds-agent` of the extracted plugin tarball (as
 * deploy/ installs it), storage nodes with --storage-root. Each example: up, its own steps (the
 * writer's data read on both readers, which cannot write; volumes on the pools of two nodes; the
 * team stack on PostgreSQL), preview and refresh --expect-no-changes, destroy, and a census: no
 * path, loop device, mount or daemon of ours on any host, no volume file or target on the nodes;
 * after the lab, no namespace and no agent.
 */
import { type ChildProcess, execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { AgentClient } from "../../provider/src/agent/client";
import { cannotRun, processesMentioning } from "../datapath/harness";
import { freeTcpPort } from "../helpers/daemons";
import { destroyAndRemove, filesIn, installedBin, loopsUnder, outsideExample, setSecret } from "../helpers/examples";
import { bytesAt } from "../helpers/files";
import { NetLab, startLabAgent } from "../helpers/netns";
import { type OutsideProject, packagedArtifacts } from "../helpers/packaged";
import { type PostgresCluster, postgresSkipReason, startPostgres } from "../helpers/postgres";

jest.setTimeout(900_000);
const why = cannotRun() ?? (fs.existsSync("/usr/bin/unshare") || fs.existsSync("/bin/unshare") ? undefined : "the examples' hosts run in network namespaces: they need unshare (util-linux)");
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const TOKEN = randomBytes(24).toString("hex");
const MiB = 1024 * 1024;
/** The summary's "+ N created" (summaryCount would also match "reader-app3 created" in the progress lines). */
const created = (stdout: string) => Number(/^\s*\+ (\d+) created$/m.exec(stdout)?.[1] ?? 0);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const STORAGE = ["storage1", "storage2"] as const;
const APPS = ["app1", "app2", "app3"] as const;

suite("examples with hosts and storage nodes, from copies outside the repo", () => {
  let lab: NetLab;
  let work: string;
  const agents = new Map<string, { child: ChildProcess; stateDir: string; client: AgentClient }>();
  /** Each storage node's portal (a free port: tgtd's control socket is per port, shared by every namespace). */
  const portals = new Map<string, string>();
  const root = (node: string) => path.join(work, `${node}-root`);
  /** An example's copy set up as its README says: the backends file, sds:hosts (the agents' URLs), sds:agentToken as a secret, then `config`. */
  const hostsExample = async (name: string, stack: string, edits: Record<string, string>, hosts: readonly string[], config: Record<string, number>) => {
    const p = await outsideExample(name, stack, { edits });
    await p.config({ "sds:backendsFile": "backends.yaml", ...config });
    for (const h of hosts) await p.ok(["config", "set", "--path", `sds:hosts.${h}.url`, `http://${lab.node(h).ip}:7700`]);
    setSecret(p, "sds:agentToken", TOKEN);
    return p;
  };

  /** What a host still has of ours: its agent's paths, loop devices over its state folder, mounts there, helper daemons. */
  const hostLeftovers = async (name: string): Promise<string[]> => {
    const a = agents.get(name)!;
    const paths = (await a.client.getAllVolumePaths()).map((p) => `path ${p.path} of ${p.volumeId}`);
    const mounts = fs.readFileSync(`/proc/${a.child.pid}/mounts`, "utf8").split("\n").filter((l) => l.includes(a.stateDir));
    return [...paths, ...loopsUnder(a.stateDir), ...mounts, ...processesMentioning(a.stateDir)].map((l) => `${name}: ${l}`);
  };
  /** What a storage node still has: volume files under its root, targets on its tgtd. */
  const nodeLeftovers = async (name: string): Promise<string[]> => {
    const files = filesIn(root(name)).map((f) => `${name}: file ${f}`);
    // A node whose tgtd never started (no example used its portal yet) has no targets.
    const targets = (await agents
      .get(name)!
      .client.iscsiCall(portals.get(name)!, { op: "list", args: [] })
      .catch((err: Error) => (/can't connect to tgt daemon/.test(err.message) ? [] : Promise.reject(err)))) as unknown[];
    return [...files, ...targets.map((t) => `${name}: target ${JSON.stringify(t)}`)];
  };
  const census = async () => [...(await Promise.all([...STORAGE.map(nodeLeftovers), ...APPS.map(hostLeftovers)])).flat()];

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "sds-examples-hosts-"));
    // The hosts run the packaged agent, extracted as deploy/ installs it (/opt/sds).
    const opt = path.join(work, "opt-sds");
    fs.mkdirSync(opt);
    execFileSync("tar", ["-xzf", packagedArtifacts().pluginTarball, "-C", opt]);
    fs.writeFileSync(path.join(work, "token"), TOKEN, { mode: 0o600 });
    lab = new NetLab([...STORAGE, ...APPS]);
    lab.up();
    for (const s of STORAGE) {
      fs.mkdirSync(root(s), { mode: 0o700 });
      portals.set(s, `${lab.node(s).ip}:${await freeTcpPort()}`);
    }
    await Promise.all(
      [...STORAGE, ...APPS].map(async (name) => {
        const extra = name.startsWith("storage") ? ["--storage-root", root(name)] : [];
        agents.set(name, await startLabAgent(lab, name, { work, token: TOKEN, extra, bin: path.join(opt, "sds-agent") }));
      }),
    );
  });

  afterAll(async () => {
    const pids = [...agents.values()].map((a) => a.child.pid!);
    try {
      // tgtd outlives the agents (exports outlive `pulumi up`): stop each storage node's.
      for (const s of STORAGE) await agents.get(s)?.client.iscsiCall(portals.get(s)!, { op: "stop", args: [] }).catch(() => undefined);
      for (const a of agents.values()) await a.client.close();
    } finally {
      lab?.down();
      // What a failed test left (each example's census has said so already): devices over the
      // hosts' state folders and the helpers the agents started for them, by pid.
      if (work) {
        for (const l of loopsUnder(work)) spawnSync("losetup", ["-d", l.split(" ")[0]]);
        for (const line of processesMentioning(work)) spawnSync("kill", ["-KILL", line.split(":")[0]]);
        if (!process.env.SDS_KEEP_E2E) fs.rmSync(work, { recursive: true, force: true });
      }
    }
    // The lab's census: its namespaces and agents are gone.
    const namespaces = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
    for (const n of lab?.nodes.values() ?? []) expect(namespaces).not.toContain(n.ns);
    await new Promise((r) => setTimeout(r, 200));
    expect(pids.filter((pid) => fs.existsSync(`/proc/${pid}`) && !fs.readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z "))).toEqual([]);
  });

  describe("multiattach-cluster: one volume, rw on app1, ro on app2 and app3, iSCSI with CHAP", () => {
    let p: OutsideProject;
    beforeAll(async () => {
      p = await hostsExample("multiattach-cluster", "cluster", { "10.0.0.5:3260": portals.get("storage1")!, "/srv/sds": root("storage1") }, ["storage1", ...APPS], { sizeGib: 1 });
    });
    afterAll(() => destroyAndRemove(p));

    test("up: a device on each host; what app1 writes, app2 and app3 read, and cannot write; no changes after; destroy leaves nothing", async () => {
      const up = await p.ok(["up", "--yes"]);
      expect(created(up.stdout)).toBe(5);
      const out = await p.outputs();
      expect(out.pool).toBe("cluster/shared");
      const devices = out.devicePaths as Record<string, { mode: string; device: string }>;
      expect(devices).toEqual({
        app1: { mode: "rw", device: expect.stringMatching(/^\/dev\/loop\d+$/) },
        app2: { mode: "ro", device: expect.stringMatching(/^\/dev\/loop\d+$/) },
        app3: { mode: "ro", device: expect.stringMatching(/^\/dev\/loop\d+$/) },
      });
      // The README's `sds attachments`, from the installed plugin: the three, each with its host's device.
      const listed = JSON.parse(execFileSync(installedBin(p, "sds"), ["attachments", "--json", "--stack", "cluster"], { cwd: p.dir, env: { ...p.env, SDS_AGENT_TOKEN: TOKEN }, encoding: "utf8" })) as Array<{ host: string; mode: string; protocol: string; devicePath: string }>;
      expect(listed.map((a) => [a.host, a.mode, a.protocol, a.devicePath]).sort()).toEqual(Object.entries(devices).map(([h, d]) => [h, d.mode, "iscsi", d.device]).sort());
      // Each export has its CHAP account; in the state only its password is a secret (ciphertext).
      const exported = await p.stackExport();
      const infos = (exported.deployment.resources ?? []).filter((r) => r.type === "sds:index:Attachment").map((r) => r.outputs?.connectionInfo as Record<string, unknown>);
      expect(infos).toHaveLength(3);
      for (const info of infos) expect(info).toMatchObject({ authMethod: "CHAP", authUsername: expect.any(String), authPassword: { ciphertext: expect.any(String) } });
      // The agent token is in the stack's config and state only encrypted.
      expect(fs.readFileSync(path.join(p.dir, "Pulumi.cluster.yaml"), "utf8")).not.toContain(TOKEN);
      expect(JSON.stringify(exported)).not.toContain(TOKEN);

      const pattern = randomBytes(4 * MiB);
      lab.exec("app1", ["dd", `of=${devices.app1.device}`, "bs=1M", "seek=2", "oflag=direct", "conv=fsync", "status=none"], pattern);
      for (const reader of ["app2", "app3"]) {
        const back = lab.exec(reader, ["dd", `if=${devices[reader].device}`, "bs=1M", "skip=2", "count=4", "iflag=direct", "status=none"]);
        expect(sha(back)).toBe(sha(pattern));
        expect(() => lab.exec(reader, ["dd", `of=${devices[reader].device}`, "bs=4k", "count=1", "oflag=direct", "status=none"], Buffer.alloc(4096, 1))).toThrow();
      }

      await p.ok(["preview", "--expect-no-changes"]);
      await p.ok(["refresh", "--yes", "--expect-no-changes"]);
      await p.ok(["destroy", "--yes"]);
      expect(await census()).toEqual([]);
    });
  });

  describe("storage-nodes: volumes on two storage nodes' pools, by profile, attached on app1", () => {
    let p: OutsideProject;
    beforeAll(async () => {
      const edits = {
        "10.0.0.5:3260": portals.get("storage1")!,
        "10.0.0.6:3260": portals.get("storage2")!,
        "/srv/sds/ssd": path.join(root("storage1"), "ssd"),
        "/srv/sds/hdd": path.join(root("storage2"), "hdd"),
      };
      p = await hostsExample("storage-nodes", "nodes", edits, [...STORAGE, "app1"], { dbSizeGib: 1, logsSizeGib: 1 });
    });
    afterAll(() => destroyAndRemove(p));

    test("up: db on storage1's ssd pool, logs on storage2's hdd pool, both devices on app1; a write lands in the node's file; no changes after; destroy leaves nothing", async () => {
      const up = await p.ok(["up", "--yes"]);
      expect(created(up.stdout)).toBe(7);
      const out = await p.outputs();
      const ids = out.volumeIds as { db: string; logs: string };
      const devices = out.devices as { db: string; logs: string };
      expect(out.pools).toEqual({ db: "fast/ssd", logs: "bulk/hdd" });
      expect(filesIn(root("storage1"))).toEqual([`ssd/volume-${ids.db}.img`]);
      expect(filesIn(root("storage2"))).toEqual([`hdd/volume-${ids.logs}.img`]);
      const onApp = (await agents.get("app1")!.client.getAllVolumePaths()).map((x) => [x.volumeId, x.path]).sort();
      expect(onApp).toEqual([[ids.db, devices.db], [ids.logs, devices.logs]].sort());

      const pattern = randomBytes(MiB);
      lab.exec("app1", ["dd", `of=${devices.logs}`, "bs=1M", "seek=1", "oflag=direct", "conv=fsync", "status=none"], pattern);
      expect(sha(bytesAt(path.join(root("storage2"), "hdd", `volume-${ids.logs}.img`), MiB, MiB))).toBe(sha(pattern));

      await p.ok(["preview", "--expect-no-changes"]);
      await p.ok(["refresh", "--yes", "--expect-no-changes"]);
      await p.ok(["destroy", "--yes"]);
      expect(await census()).toEqual([]);
    });
  });

  const pgWhy = postgresSkipReason();
  (pgWhy ? describe.skip : describe)("ci-preview: the team stack on PostgreSQL, its committed config and backends file", () => {
    let pg: PostgresCluster;
    let p: OutsideProject;
    beforeAll(async () => {
      pg = await startPostgres();
      const env = { SDS_STATE_URL: await pg.createDatabase(), SDS_SECRET_KEY: randomBytes(32).toString("base64") };
      p = await outsideExample("ci-preview", "team", {
        env,
        edits: { "10.0.0.5:3260": portals.get("storage1")!, "10.0.0.5": lab.node("storage1").ip, "10.0.0.11": lab.node("app1").ip, "/srv/sds": root("storage1") },
      });
      setSecret(p, "sds:agentToken", TOKEN);
    });
    afterAll(async () => {
      await destroyAndRemove(p);
      await pg?.stop();
    });

    test("up with the committed Pulumi.team.yaml and backends.yaml; no changes after; destroy leaves nothing; no state or key in the folder", async () => {
      await p.ok(["up", "--yes"]);
      const out = await p.outputs();
      expect(out).toEqual({ pools: { db: "array/ssd", wal: "array/ssd" }, devices: { db: expect.stringMatching(/^\/dev\/loop\d+$/), wal: expect.stringMatching(/^\/dev\/loop\d+$/) } });
      await p.ok(["preview", "--expect-no-changes"]);
      await p.ok(["refresh", "--yes", "--expect-no-changes"]);
      await p.ok(["destroy", "--yes"]);
      expect(await census()).toEqual([]);
      // The state is in PostgreSQL and the key in the environment.
      expect(filesIn(p.dir).filter((f) => /(^|\/)(state\.db|secret\.key)/.test(f))).toEqual([]);
    });
  });
});
