/**
 * Two hosts on one shared target, across network namespaces (root, real CLI, real agents, tgtd on
 * a storage node): one multiAttach volume attached rw from hostA and from hostB, so both
 * attachments share the storage node's target, its CHAP account and the volume's LUN. Ten rounds
 * of `up`, `up` again (no changes), `refresh --expect-no-changes`, a pattern written on hostA read
 * on hostB, `destroy`; after each destroy the storage node has no target, LUN or CHAP account, the
 * state no row, and tgtd no open deleted file. Round 1 failed every first `up` here ("this target
 * already exists") and each destroy left a target and a LUN whose file tgtd kept open.
 *
 * SDS_SHARED_HOSTS_ROUNDS sets the rounds (default 10).
 */
import { type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { AgentClient } from "../../provider/src/agent/client";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import { cannotRun } from "../datapath/harness";
import { NetLab, startLabAgent } from "../helpers/netns";
import { PulumiProject, summaryCount } from "../helpers/pulumi";

jest.setTimeout(1_800_000);
const why = cannotRun() ?? (fs.existsSync("/usr/bin/unshare") || fs.existsSync("/bin/unshare") ? undefined : "multi-host tests need unshare (util-linux)");
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const rounds = Number(process.env.SDS_SHARED_HOSTS_ROUNDS ?? 10);
const TOKEN = randomBytes(24).toString("hex");
/** Not 3260: the other multi-host suite's storage tgtd uses control port 3260 (a unix socket every namespace shares). */
const PORT = 3262;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

suite("two hosts on one shared iSCSI target of a storage node", () => {
  let lab: NetLab;
  let p: PulumiProject;
  let work: string;
  const agents = new Map<string, { child: ChildProcess; client: AgentClient }>();
  const portal = () => `${lab.node("storage").ip}:${PORT}`;
  const tgtadm = (...args: string[]) => lab.exec("storage", ["tgtadm", "-C", String(PORT), "--lld", "iscsi", ...args]).toString();

  const startAgent = async (name: string, extra: string[] = []) => {
    agents.set(name, await startLabAgent(lab, name, { work, token: TOKEN, extra }));
  };

  /** What the storage node and the state still hold after a destroy; [] when nothing. */
  const leftovers = async (): Promise<string[]> => {
    const left: string[] = [];
    const targets = tgtadm("--op", "show", "--mode", "target");
    if (targets.trim()) left.push(`targets: ${targets.trim().split("\n").filter((l) => /^Target|LUN: [1-9]/.test(l.trim())).join(" | ")}`);
    const accounts = tgtadm("--op", "show", "--mode", "account").split("\n").slice(1).map((l) => l.trim()).filter(Boolean);
    if (accounts.length) left.push(`CHAP accounts: ${accounts.join(", ")}`);
    const store = new SqliteStore(path.join(p.dir, ".sds/state.db"));
    try {
      const rows = [
        ...(await store.listTargets()).map((t) => `target row ${t.name}`),
        ...(await store.listAttachments()).map((a) => `attachment row ${a.id}`),
        ...(await store.listVolumes()).map((v) => `volume row ${v.id}`),
      ];
      left.push(...rows);
    } finally {
      await store.close();
    }
    // tgtd keeps a LUN's backing file open: a deleted volume it still holds never frees its space.
    for (const pid of fs.readdirSync("/proc").filter((x) => /^\d+$/.test(x))) {
      let argv: string;
      try {
        argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
      } catch {
        continue;
      }
      if (!argv.startsWith("tgtd\0") || !argv.includes(`\0${PORT}\0`)) continue;
      for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
        let target: string;
        try {
          target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          continue;
        }
        if (target.includes(work) && target.endsWith("(deleted)")) left.push(`tgtd ${pid} holds deleted ${target}`);
      }
    }
    return left;
  };

  beforeAll(async () => {
    lab = new NetLab(["storage", "hostA", "hostB"]);
    lab.up();
    p = await PulumiProject.create("shared-hosts");
    work = path.join(p.dir, "lab");
    fs.mkdirSync(path.join(work, "pools"), { recursive: true });
    fs.writeFileSync(path.join(work, "token"), TOKEN, { mode: 0o600 });
    await startAgent("storage", ["--storage-root", path.join(work, "pools")]);
    await startAgent("hostA");
    await startAgent("hostB");
    fs.writeFileSync(
      path.join(p.dir, "backends.yaml"),
      [
        "backends:",
        "  - name: array",
        "    driver: file",
        "    node: storage",
        "    sharedTargets: true",
        `    export: {protocol: iscsi, portal: "${portal()}", chap: true}`,
        "    pools:",
        `      - {name: p0, path: ${path.join(work, "pools", "p0")}, totalCapacityGib: 50, multiAttach: true}`,
        "",
      ].join("\n"),
    );
    const hosts = Object.fromEntries(["storage", "hostA", "hostB"].map((h) => [h, { url: `http://${lab.node(h).ip}:7700` }]));
    await p.config({ "sds:backendsFile": "backends.yaml" });
    await p.config({ "sds:hosts": JSON.stringify(hosts), "sds:agentToken": TOKEN }, { secret: true });
  });

  afterAll(async () => {
    try {
      if (p) await p.run(["destroy", "--yes"]);
      await agents.get("storage")?.client.iscsiCall(portal(), { op: "stop", args: [] }).catch(() => undefined);
      for (const a of agents.values()) await a.client.close();
    } finally {
      lab?.down();
      p?.remove();
    }
  });

  test(`${rounds} rounds of up, up (no changes), refresh (no changes), I/O from both hosts, destroy: 0 failures, nothing left`, async () => {
    const failures: string[] = [];
    for (let round = 0; round < rounds; round++) {
      try {
        const up = await p.ok(["up", "--yes", "--skip-preview"]);
        expect(summaryCount(up.stdout, "created")).toBe(4);
        await p.ok(["up", "--yes", "--skip-preview", "--expect-no-changes"]);
        await p.ok(["refresh", "--yes", "--expect-no-changes"]);
        const out = JSON.parse((await p.ok(["stack", "output", "--json", "--show-secrets"])).stdout);
        expect(out.aTarget).toBe(out.bTarget); // one shared target for both hosts
        expect([out.aDevice, out.bDevice]).toEqual([expect.stringMatching(/^\/dev\/loop\d+$/), expect.stringMatching(/^\/dev\/loop\d+$/)]);
        const pattern = randomBytes(1024 * 1024);
        lab.exec("hostA", ["dd", `of=${out.aDevice}`, "bs=1M", `seek=${round % 8}`, "oflag=direct", "conv=fsync", "status=none"], pattern);
        const back = lab.exec("hostB", ["dd", `if=${out.bDevice}`, "bs=1M", `skip=${round % 8}`, "count=1", "iflag=direct", "status=none"]);
        expect(sha(back)).toBe(sha(pattern));
        await p.ok(["destroy", "--yes", "--skip-preview"]);
        expect(await leftovers()).toEqual([]);
        for (const h of ["hostA", "hostB"]) expect(await agents.get(h)!.client.getAllVolumePaths()).toEqual([]);
      } catch (err) {
        failures.push(`round ${round}: ${(err as Error).message.split("\n").slice(0, 12).join("\n")}`);
        await p.run(["destroy", "--yes", "--skip-preview"]);
      }
    }
    expect(failures).toEqual([]);
  });
});
