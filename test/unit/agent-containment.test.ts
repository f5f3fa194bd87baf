/**
 * A storage node keeps its callers inside its storage root: a real in-process agent with a real
 * storage root on disk, driven by raw requests. Every storage route (driver, iSCSI and NBD target
 * calls that name files, replication sync, schedule and sink) is sent `../` ids, absolute ids,
 * URL-encoded ids, a symlinked pool folder, a symlinked volume file, a symlinked sink and source,
 * and a request-named peer. Each must be a 400 naming the field, and a sentinel folder beside the
 * root must keep its listing, contents and mtimes (and a fake "peer" must receive nothing).
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { request } from "undici";
import { NodeReplication } from "../../provider/src/agent/node-replication";
import { runAgent } from "../../provider/src/agent/run-agent";
import { startAgent, type RunningAgent } from "../../provider/src/agent/server";
import { FileDriver } from "../../provider/src/drivers/file-driver";

const TOKEN = "containment-token-0123456789";
const MiB = 1024 * 1024;

let base: string;
let root: string;
let outside: string;
let agent: RunningAgent;
let repl: NodeReplication;
let targetCalls: unknown[][];
/** A server posing as a peer: it must never be sent anything. */
let evil: http.Server;
let evilUrl: string;
let evilRequests: number;
const started: RunningAgent[] = [];

/** Records target calls (the iSCSI and NBD routes must refuse before any reaches a target). */
const recordingTargets = () =>
  ({
    iscsi: (portal: string) => new Proxy({}, { get: (_t, op) => (op === "then" ? undefined : async (...args: unknown[]) => void targetCalls.push(["iscsi", portal, op, ...args])) }),
    nbd: (host: string) => new Proxy({}, { get: (_t, op) => (op === "then" ? undefined : async (...args: unknown[]) => void targetCalls.push(["nbd", host, op, ...args])) }),
  }) as never;

/** Every entry under `dir` (symlinks not followed) with its kind, size, mtime and content digest. */
function snapshot(dir: string, skip: readonly string[] = []): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    const st = fs.lstatSync(d);
    out.push(`${path.relative(base, d) || "."}/ mtime=${st.mtimeMs}`);
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      if (skip.includes(p)) continue;
      const s = fs.lstatSync(p);
      const rel = path.relative(base, p);
      if (s.isSymbolicLink()) out.push(`${rel} -> ${fs.readlinkSync(p)}`);
      else if (s.isDirectory()) walk(p);
      else out.push(`${rel} size=${s.size} mtime=${s.mtimeMs} sha=${createHash("sha256").update(fs.readFileSync(p)).digest("hex")}`);
    }
  };
  walk(dir);
  return out;
}

/** The sentinel: everything in the base folder but the storage root and the agent's state. */
const sentinel = () => snapshot(base, [root, path.join(base, "state")]);

async function post(url: string, route: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await request(`${url}${route}`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }, body: JSON.stringify(body) });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? JSON.parse(text) : undefined };
}

beforeEach(async () => {
  base = fs.mkdtempSync("/tmp/containment-");
  root = path.join(base, "root");
  outside = path.join(base, "outside");
  fs.mkdirSync(path.join(root, "p0"), { recursive: true });
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, "secret.img"), Buffer.alloc(64 * 1024, 0x53));
  fs.writeFileSync(path.join(outside, "volume-v1.img"), Buffer.alloc(64 * 1024, 0x4f));
  fs.writeFileSync(path.join(root, "p0", "volume-v1.img"), Buffer.alloc(MiB, 0x11));
  // Symlinks a local user (or a bad restore) could have left inside the root, all leading out.
  fs.symlinkSync(outside, path.join(root, "linkpool"));
  fs.symlinkSync(path.join(outside, "secret.img"), path.join(root, "p0", "volume-evil.img"));
  fs.symlinkSync(path.join(outside, "dangle-target.img"), path.join(root, "p0", "volume-dangle.img"));
  fs.symlinkSync(path.join(outside, "secret.img"), path.join(root, "sinklink.img"));
  // A symlink that stays inside the root is fine.
  fs.symlinkSync(path.join(root, "p0"), path.join(root, "inlink"));
  // Old mtimes, so a touch within the same millisecond would still show.
  const old = new Date(Date.now() - 3_600_000);
  for (const f of ["secret.img", "volume-v1.img", "."]) fs.utimesSync(path.join(outside, f), old, old);

  targetCalls = [];
  evilRequests = 0;
  evil = http.createServer((req, res) => {
    evilRequests++;
    req.resume();
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  });
  await new Promise<void>((r) => evil.listen(0, "127.0.0.1", r));
  evilUrl = `http://127.0.0.1:${(evil.address() as AddressInfo).port}`;

  repl = new NodeReplication(path.join(base, "state"), () => undefined, { peers: {} });
  agent = await startAgent({
    host: "127.0.0.1",
    port: 0,
    token: TOKEN,
    version: "test",
    log: () => undefined,
    connectorFor: () => {
      throw new Error("no connectors on this node");
    },
    storage: { root, driverFor: () => new FileDriver(), targets: recordingTargets(), replication: repl },
  });
});

afterEach(async () => {
  repl.stop();
  for (const a of started.splice(0)) await a.close();
  await agent.close();
  await new Promise((r) => evil.close(r));
  fs.rmSync(base, { recursive: true, force: true });
});

type Case = [name: string, route: string, body: unknown, field: string];

/** Send each case; every one must be a 400 naming its field, and neither the sentinel nor the root may change. */
async function expectRefused(cases: readonly Case[]): Promise<void> {
  const before = sentinel();
  const rootBefore = snapshot(root);
  const got: string[] = [];
  for (const [name, route, body, field] of cases) {
    const r = await post(agent.url, route, body);
    const line = `${name}: ${r.status} ${r.body?.error?.code} field=${r.body?.error?.field}`;
    got.push(line);
    if (r.status === 400) {
      // One clear line that names the field.
      expect(r.body.error.message).toMatch(new RegExp(`^${field.replace(/[[\].]/g, "\\$&")}: `));
      expect(r.body.error.message).not.toContain("\n");
    }
  }
  expect(got).toEqual(cases.map(([name, , , field]) => `${name}: 400 INVALID_INPUT field=${field}`));
  expect(sentinel()).toEqual(before);
  expect(snapshot(root)).toEqual(rootBefore);
  expect(targetCalls).toEqual([]);
  expect(evilRequests).toBe(0);
}

const p0 = () => ({ name: "p0", path: path.join(root, "p0") });
const linkpool = () => ({ name: "lp", path: path.join(root, "linkpool") });
const linksub = () => ({ name: "ls", path: path.join(root, "linkpool", "sub") });
const driver = (op: string, args: unknown[]) => ({ driver: "file", call: { op, args } });

const BAD_IDS: Array<[string, string]> = [
  ["../ id", "../../../outside/secret"],
  ["../ id (new file)", "../../../outside/new"],
  ["absolute id", "/../../../outside/secret"],
  ["absolute id (etc)", "/etc/passwd"],
  ["URL-encoded id", "%2e%2e%2f%2e%2e%2f%2e%2e%2foutside%2fsecret"],
  ["dot-dot id", ".."],
  ["slash id", "a/b"],
];

test("driver calls with bad volume ids are refused at every entry, naming the argument", async () => {
  const cases: Case[] = [];
  for (const [what, id] of BAD_IDS) {
    cases.push(
      [`createVolume ${what}`, "/v1/storage/driver", driver("createVolume", [p0(), id, MiB]), "call.args[1]"],
      [`extendVolume ${what}`, "/v1/storage/driver", driver("extendVolume", [p0(), id, 2 * MiB]), "call.args[1]"],
      [`deleteVolume ${what}`, "/v1/storage/driver", driver("deleteVolume", [p0(), id]), "call.args[1]"],
      [`getVolumeSizeBytes ${what}`, "/v1/storage/driver", driver("getVolumeSizeBytes", [p0(), id]), "call.args[1]"],
      [`cloneVolume source ${what}`, "/v1/storage/driver", driver("cloneVolume", [{ pool: p0(), volumeId: id }, p0(), "c1", MiB]), "call.args[0].volumeId"],
      [`cloneVolume target ${what}`, "/v1/storage/driver", driver("cloneVolume", [{ pool: p0(), volumeId: "v1" }, p0(), id, MiB]), "call.args[2]"],
    );
  }
  await expectRefused(cases);
});

test("a symlinked pool folder leading outside is refused for every driver call", async () => {
  await expectRefused([
    ["getPoolStats", "/v1/storage/driver", driver("getPoolStats", [linkpool()]), "call.args[0].path"],
    ["createVolume", "/v1/storage/driver", driver("createVolume", [linkpool(), "v9", MiB]), "call.args[0].path"],
    ["createVolume (folder below the link)", "/v1/storage/driver", driver("createVolume", [linksub(), "v9", MiB]), "call.args[0].path"],
    ["extendVolume", "/v1/storage/driver", driver("extendVolume", [linkpool(), "v1", 2 * MiB]), "call.args[0].path"],
    ["deleteVolume", "/v1/storage/driver", driver("deleteVolume", [linkpool(), "v1"]), "call.args[0].path"],
    ["getVolumeSizeBytes", "/v1/storage/driver", driver("getVolumeSizeBytes", [linkpool(), "v1"]), "call.args[0].path"],
    ["cloneVolume from it", "/v1/storage/driver", driver("cloneVolume", [{ pool: linkpool(), volumeId: "v1" }, p0(), "c2", MiB]), "call.args[0].pool.path"],
    ["cloneVolume into it", "/v1/storage/driver", driver("cloneVolume", [{ pool: p0(), volumeId: "v1" }, linkpool(), "c3", MiB]), "call.args[1].path"],
    ["createVolume (.. in the pool path)", "/v1/storage/driver", driver("createVolume", [{ name: "p", path: `${root}/p0/../../outside` }, "v9", MiB]), "call.args[0].path"],
  ]);
});

test("a symlinked volume file is refused for every driver call (existing or dangling)", async () => {
  await expectRefused([
    ["createVolume (same size as its target)", "/v1/storage/driver", driver("createVolume", [p0(), "evil", 64 * 1024]), "call.args[1]"],
    ["createVolume (dangling)", "/v1/storage/driver", driver("createVolume", [p0(), "dangle", MiB]), "call.args[1]"],
    ["extendVolume", "/v1/storage/driver", driver("extendVolume", [p0(), "evil", 2 * MiB]), "call.args[1]"],
    ["extendVolume (dangling)", "/v1/storage/driver", driver("extendVolume", [p0(), "dangle", MiB]), "call.args[1]"],
    ["deleteVolume", "/v1/storage/driver", driver("deleteVolume", [p0(), "evil"]), "call.args[1]"],
    ["getVolumeSizeBytes", "/v1/storage/driver", driver("getVolumeSizeBytes", [p0(), "evil"]), "call.args[1]"],
    ["cloneVolume from it", "/v1/storage/driver", driver("cloneVolume", [{ pool: p0(), volumeId: "evil" }, p0(), "c4", MiB]), "call.args[0].volumeId"],
    ["cloneVolume onto it", "/v1/storage/driver", driver("cloneVolume", [{ pool: p0(), volumeId: "v1" }, p0(), "evil", MiB]), "call.args[2]"],
  ]);
});

test("iSCSI LUN and NBD export backing files must be real files under the root", async () => {
  const files: Array<[string, string]> = [
    ["through a symlinked folder", path.join(root, "linkpool", "volume-v1.img")],
    ["a symlinked file", path.join(root, "p0", "volume-evil.img")],
    ["a dangling symlink", path.join(root, "p0", "volume-dangle.img")],
    [".. out of the root", `${root}/p0/../../outside/secret.img`],
    ["absolute outside", path.join(outside, "secret.img")],
  ];
  const cases: Case[] = [];
  for (const [what, file] of files) {
    cases.push(
      [`iscsi ensureLun ${what}`, "/v1/storage/iscsi", { portal: "127.0.0.1:3260", call: { op: "ensureLun", args: [1, 1, file, false] } }, "call.args[2]"],
      [`iscsi refreshLun ${what}`, "/v1/storage/iscsi", { portal: "127.0.0.1:3260", call: { op: "refreshLun", args: [1, 1, file, true] } }, "call.args[2]"],
      [`nbd ensureExport ${what}`, "/v1/storage/nbd", { host: "127.0.0.1", call: { op: "ensureExport", args: ["s", "e", file] } }, "call.args[2]"],
      [`nbd refreshExport ${what}`, "/v1/storage/nbd", { host: "127.0.0.1", call: { op: "refreshExport", args: ["s", "e", file] } }, "call.args[2]"],
    );
  }
  await expectRefused(cases);
});

test("sync and schedule: a symlinked source or sink, and a peer named by the request, are refused", async () => {
  const vol = path.join(root, "p0", "volume-v1.img");
  const copy = path.join(root, "p0", "copy.img");
  const spec = (o: Record<string, unknown>) => ({ pairId: "p1", direction: "forward", source: vol, sink: copy, ...o });
  const specs: Array<[string, Record<string, unknown>, string]> = [
    ["symlinked source", { source: path.join(root, "sinklink.img") }, "source"],
    ["source through a symlinked folder", { source: path.join(root, "linkpool", "volume-v1.img") }, "source"],
    ["source .. out of the root", { source: `${root}/../outside/secret.img` }, "source"],
    ["symlinked sink", { sink: path.join(root, "sinklink.img") }, "sink"],
    ["dangling symlinked sink", { sink: path.join(root, "p0", "volume-dangle.img") }, "sink"],
    ["sink through a symlinked folder", { sink: path.join(root, "linkpool", "new.img") }, "sink"],
    ["peer url and token in the request", { peer: { url: evilUrl, token: TOKEN } }, "peer"],
    ["peer url as a string", { peer: evilUrl }, "peer"],
    ["unknown peer", { peer: "nobody" }, "peer"],
  ];
  const cases: Case[] = [];
  for (const [what, o, field] of specs) {
    cases.push([`sync ${what}`, "/v1/storage/replication/sync", spec(o), field]);
    cases.push([`schedule ${what}`, "/v1/storage/replication/schedule", { spec: spec(o), rpoSeconds: 1 }, `spec.${field}`]);
  }
  await expectRefused(cases);
  // Nothing was scheduled, so the node's timer has nothing to send either.
  expect(repl.pairs()).toEqual([]);
});

test("the sink route refuses a symlinked or escaping destination for every call", async () => {
  const files: Array<[string, string]> = [
    ["symlinked file", path.join(root, "sinklink.img")],
    ["dangling symlink", path.join(root, "p0", "volume-dangle.img")],
    ["through a symlinked folder", path.join(root, "linkpool", "volume-v1.img")],
    ["new file through a symlinked folder", path.join(root, "linkpool", "new.img")],
    [".. out of the root", `${root}/../outside/secret.img`],
  ];
  const calls: Array<{ op: string; args: unknown[] }> = [
    { op: "sizeBytes", args: [] },
    { op: "resize", args: [2 * MiB] },
    { op: "writeChunks", args: [[{ offset: 0, data: Buffer.alloc(4096, 0x21).toString("base64") }]] },
    { op: "zeroRanges", args: [[{ offset: 0, length: 4096 }]] },
    { op: "flush", args: [] },
    { op: "readDigests", args: [65536, "sha256"] },
  ];
  const cases: Case[] = [];
  for (const [what, file] of files) for (const call of calls) cases.push([`sink ${call.op} ${what}`, "/v1/storage/replication/sink", { path: file, call }, "path"]);
  await expectRefused(cases);
});

test("legitimate calls still work: a pool behind a symlink that stays inside the root, a local sync", async () => {
  const inlink = { name: "in", path: path.join(root, "inlink") };
  expect((await post(agent.url, "/v1/storage/driver", driver("createVolume", [inlink, "v2", MiB]))).status).toBe(200);
  expect(fs.statSync(path.join(root, "p0", "volume-v2.img")).size).toBe(MiB);
  expect((await post(agent.url, "/v1/storage/driver", driver("createVolume", [{ name: "n", path: path.join(root, "new", "deeper") }, "v3", MiB]))).status).toBe(200);
  expect(fs.statSync(path.join(root, "new", "deeper", "volume-v3.img")).size).toBe(MiB);
  const clone = await post(agent.url, "/v1/storage/driver", driver("cloneVolume", [{ pool: p0(), volumeId: "v1" }, inlink, "v4", 2 * MiB]));
  expect(clone.status).toBe(200);
  const cloned = fs.readFileSync(path.join(root, "p0", "volume-v4.img"));
  expect([cloned.length, cloned.subarray(0, MiB).equals(fs.readFileSync(path.join(root, "p0", "volume-v1.img")))]).toEqual([2 * MiB, true]);
  const r = await post(agent.url, "/v1/storage/replication/sync", { pairId: "ok", direction: "forward", source: path.join(root, "p0", "volume-v1.img"), sink: path.join(root, "p0", "copy.img") });
  expect(r.status).toBe(200);
  expect(fs.readFileSync(path.join(root, "p0", "copy.img")).equals(fs.readFileSync(path.join(root, "p0", "volume-v1.img")))).toBe(true);
});

test("peers come from the agent's --peers file (mode 600): a sync names one, the data goes to its agent", async () => {
  const rootB = path.join(base, "rootB");
  fs.mkdirSync(rootB);
  const nodeB = await startAgent({
    host: "127.0.0.1",
    port: 0,
    token: TOKEN,
    version: "test",
    log: () => undefined,
    connectorFor: () => {
      throw new Error("no connectors");
    },
    storage: { root: rootB, driverFor: () => new FileDriver(), targets: {} as never, replication: new NodeReplication(path.join(base, "stateB")) },
  });
  started.push(nodeB);
  const tokenFile = path.join(base, "token");
  fs.writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
  const peersFile = path.join(base, "peers.yaml");
  fs.writeFileSync(peersFile, `nodeB:\n  url: ${nodeB.url}\n  token: ${TOKEN}\n`, { mode: 0o644 });
  fs.chmodSync(peersFile, 0o644);
  const storage = ({ root: r, stateDir }: { root: string; stateDir: string }) => ({ root: r, driverFor: () => new FileDriver(), targets: {} as never, replication: new NodeReplication(stateDir) });
  const argv = ["--listen", "127.0.0.1:0", "--token-file", tokenFile, "--state-dir", path.join(base, "stateA"), "--storage-root", root, "--peers", peersFile];
  const deps = { version: "test", log: () => undefined, factory: () => { throw new Error("unused"); }, storage };
  await expect(runAgent(argv, deps)).rejects.toThrow(/chmod 600/);
  fs.chmodSync(peersFile, 0o600);
  const nodeA = (await runAgent(argv, deps))!;
  started.push(nodeA);

  const source = path.join(root, "p0", "volume-v1.img");
  const sink = path.join(rootB, "replica.img");
  const r = await post(nodeA.url, "/v1/storage/replication/sync", { pairId: "pb", direction: "forward", source, sink, peer: "nodeB" });
  expect([r.status, r.body.result?.bytesTransferred]).toEqual([200, MiB]);
  expect(fs.readFileSync(sink).equals(fs.readFileSync(source))).toBe(true);
  const unknown = await post(nodeA.url, "/v1/storage/replication/sync", { pairId: "pb", direction: "forward", source, sink, peer: "nodeC" });
  expect([unknown.status, unknown.body.error.field]).toEqual([400, "peer"]);
  expect(unknown.body.error.message).toMatch(/nodeB/);

  // A peers file that is not a map of name → {url, token} stops the agent at start, naming the entry.
  fs.writeFileSync(peersFile, `nodeB:\n  token: ${TOKEN}\n`);
  await expect(runAgent(argv, deps)).rejects.toThrow(/nodeB\.url/);
});
