/**
 * Replication between two storage nodes: two real agents (in-process, HTTP on 127.0.0.1), real
 * sparse files under each node's storage root. Node A syncs to node B through B's sink route;
 * the second sync sends only what changed; a scheduled pair syncs on A's own timer; a sink path
 * outside B's root is refused; while a sync runs, A answers how far it got (the provider's
 * progress in `pulumi up` polls it).
 */
import { randomFillSync } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { AgentClient } from "../../provider/src/agent/client";
import { NodeReplication } from "../../provider/src/agent/node-replication";
import { startAgent, type RunningAgent } from "../../provider/src/agent/server";
import { withNodeProgress } from "../../provider/src/controller/replication";
import { FileDriver } from "../../provider/src/drivers/file-driver";

// 128 MiB of real data through two real agents: seconds on a loaded 2-core CI machine, not 5.
jest.setTimeout(60_000);

const TOKEN = "node-token-0123456789";
const MiB = 1024 * 1024;
let dir: string;
const nodes: Array<{ agent: RunningAgent; root: string; repl: NodeReplication; client: AgentClient }> = [];

/** A node; `peers` are the nodes it may sync to (its agent's --peers), by name. */
async function node(name: string, peers: Record<string, { agent: RunningAgent }> = {}) {
  const root = path.join(dir, name, "pools");
  fs.mkdirSync(root, { recursive: true });
  const repl = new NodeReplication(path.join(dir, name, "state"), undefined, {
    peers: Object.fromEntries(Object.entries(peers).map(([peer, n]) => [peer, { url: n.agent.url, token: TOKEN }])),
  });
  const agent = await startAgent({
    host: "127.0.0.1",
    port: 0,
    token: TOKEN,
    version: "test",
    log: () => undefined,
    connectorFor: () => {
      throw new Error("no connectors here");
    },
    storage: { root, driverFor: () => new FileDriver(), targets: {} as never, replication: repl },
  });
  const n = { agent, root, repl, client: new AgentClient({ url: agent.url, token: TOKEN }) };
  nodes.push(n);
  return n;
}

const writeAt = (file: string, offset: number, data: Buffer) => {
  const fd = fs.openSync(file, fs.existsSync(file) ? "r+" : "w");
  fs.writeSync(fd, data, 0, data.length, offset);
  fs.closeSync(fd);
};

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), "sds-noderepl-"));
});
afterEach(async () => {
  for (const n of nodes.splice(0)) {
    n.repl.stop();
    await n.client.close();
    await n.agent.close();
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test("node A syncs a sparse volume to node B over HTTP; the next sync sends only what changed", async () => {
  const b = await node("b");
  const a = await node("a", { b });
  const source = path.join(a.root, "vol.img");
  const sink = path.join(b.root, "replica.img");
  fs.writeFileSync(source, "");
  fs.truncateSync(source, 256 * MiB);
  writeAt(source, 10 * MiB, Buffer.alloc(3 * MiB, 0x5a));
  const spec = { pairId: "p1", direction: "forward" as const, source, sink, peer: "b" };
  const first = await a.client.syncPair(spec);
  expect(first).toMatchObject({ bytesTransferred: 3 * MiB, full: true });
  expect(fs.statSync(sink).size).toBe(256 * MiB);
  expect(fs.readFileSync(sink).equals(fs.readFileSync(source))).toBe(true);
  writeAt(source, 100 * MiB, Buffer.alloc(4096, 0x7b));
  const second = await a.client.syncPair(spec);
  // One chunk of the pair's size: 64 KiB for a 256 MiB volume (chooseChunkSizeBytes).
  expect(second).toMatchObject({ bytesTransferred: 64 * 1024, full: false });
  expect(fs.readFileSync(sink).equals(fs.readFileSync(source))).toBe(true);
  // fresh: the map is forgotten, B's digests are compared, nothing differs, nothing travels.
  expect(await a.client.syncPair({ ...spec, fresh: true })).toMatchObject({ bytesTransferred: 0, full: true });
});

test("a scheduled pair syncs on the node's own timer, and is kept across a restart of the node's replication", async () => {
  const a = await node("a");
  const source = path.join(a.root, "vol.img");
  const sink = path.join(a.root, "replica.img");
  writeAt(source, 0, Buffer.alloc(MiB, 1));
  await a.client.schedulePair({ pairId: "p2", direction: "forward", source, sink }, 1);
  a.repl.start(100);
  const deadline = Date.now() + 10_000;
  while (!fs.existsSync(sink) || !fs.readFileSync(sink).equals(fs.readFileSync(source))) {
    if (Date.now() > deadline) throw new Error("no scheduled sync within 10 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  const [status] = await a.client.pairs();
  expect(status).toMatchObject({ pairId: "p2", rpoSeconds: 1, bytesTransferred: MiB, lastError: null });
  expect(new NodeReplication(path.join(dir, "a", "state")).pairs().map((p) => p.pairId)).toEqual(["p2"]);
  await a.client.unschedulePair("p2");
  await a.client.unschedulePair("p2");
  expect(await a.client.pairs()).toEqual([]);
});

test("paths outside a node's storage root are refused, naming the field", async () => {
  const a = await node("a");
  await expect(a.client.syncPair({ pairId: "p3", direction: "forward", source: "/etc/passwd", sink: path.join(a.root, "x") })).rejects.toMatchObject({ property: "source" });
  await expect(a.client.sinkCall("/etc/x.img", { op: "resize", args: [MiB] })).rejects.toMatchObject({ property: "path" });
  expect(fs.existsSync("/etc/x.img")).toBe(false);
});

// Progress of a node's sync: what the provider polls while its sync call waits, to show it in `pulumi up`.
/** 128 MiB of real data on node A, and the spec of a pair syncing it to node B. */
function pairOn(a: { agent: RunningAgent }, pairId: string) {
  const source = path.join(dir, "a", "pools", `${pairId}.img`);
  const fd = fs.openSync(source, "w");
  const buf = Buffer.alloc(8 * MiB);
  for (let off = 0; off < 128 * MiB; off += buf.length) fs.writeSync(fd, randomFillSync(buf), 0, buf.length, off);
  fs.closeSync(fd);
  return { pairId, direction: "forward" as const, source, sink: path.join(dir, "b", "pools", `${pairId}-replica.img`), peer: "b" };
}

test("the provider's side asks the node while the sync call waits, and reports the end", async () => {
  const b = await node("b");
  const a = await node("a", { b });
  const spec = pairOn(a, "p2");
  const heard: Array<{ doneBytes: number; totalBytes: number }> = [];
  const r = await withNodeProgress(a.client, "p2", (p) => heard.push(p), a.client.syncPair(spec));
  expect(r).toMatchObject({ bytesTransferred: 128 * MiB });
  expect(heard.at(-1)).toEqual({ doneBytes: 128 * MiB, totalBytes: 128 * MiB });
  expect(heard.map((p) => p.doneBytes)).toEqual([...heard.map((p) => p.doneBytes)].sort((x, y) => x - y));
});

test("a node answers how far a pair's sync in flight got, and nothing when none runs", async () => {
  const b = await node("b");
  const a = await node("a", { b });
  const spec = pairOn(a, "p1");

  expect(await a.client.syncProgress("p1")).toBeNull();
  const seen: Array<{ doneBytes: number; totalBytes: number }> = [];
  let finished = false;
  const sync = a.client.syncPair(spec).finally(() => (finished = true));
  while (!finished) {
    const p = await a.client.syncProgress("p1");
    if (p && !finished) seen.push(p);
    await new Promise((r) => setTimeout(r, 20));
  }
  expect(await sync).toMatchObject({ bytesTransferred: 128 * MiB, full: true });
  expect(seen.length).toBeGreaterThan(0);
  for (const p of seen) {
    expect(p.totalBytes).toBe(128 * MiB);
    expect(p.doneBytes).toBeGreaterThan(0);
    expect(p.doneBytes).toBeLessThanOrEqual(128 * MiB);
  }
  expect(seen.map((p) => p.doneBytes)).toEqual([...seen.map((p) => p.doneBytes)].sort((x, y) => x - y));
  expect(await a.client.syncProgress("p1")).toBeNull();
});
