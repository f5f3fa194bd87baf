/**
 * sds-agent: the real HTTP(S) server on 127.0.0.1:0 in-process, with a fake in-memory connector
 * that records its calls, driven by raw requests (undici) and by AgentClient.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { request } from "undici";
import { AgentClient } from "../../provider/src/agent/client";
import { parseListen, readTokenFile, runAgent } from "../../provider/src/agent/run-agent";
import { startAgent, type RunningAgent } from "../../provider/src/agent/server";
import type { Connection } from "../../provider/src/connectors/connector";
import { FakeConnector } from "../helpers/fake-connector";
import { AgentUnavailableError, BackendError, CommandFailedError, DeviceBusyError, UserError } from "../../provider/src/errors";

const TOKEN = "agent-token-0123456789abcdef";
const CHAP = "chap-password-XYZZY-42";



const connection: Connection = {
  protocol: "iscsi",
  portals: ["10.0.0.5:3260"],
  targetIqn: "iqn.2026-11.io.sds:vol-1",
  targetLun: 1,
  authMethod: "CHAP",
  authUsername: "user",
  authPassword: CHAP,
  readOnly: false,
  volumeId: "vol-1",
};

let agent: RunningAgent;
let calls: unknown[][];
let logLines: string[];

beforeEach(async () => {
  calls = [];
  logLines = [];
  FakeConnector.failNext = undefined;
  const connected = new Map<string, string>();
  agent = await startAgent({
    host: "127.0.0.1",
    port: 0,
    token: TOKEN,
    version: "9.9.9",
    connectorFor: (p) => new FakeConnector(p, calls, connected),
    log: (l) => logLines.push(l),
  });
});
afterEach(async () => {
  await agent.close();
});

async function raw(method: string, p: string, o: { token?: string | null; body?: unknown; rawBody?: string } = {}) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  const token = o.token === undefined ? TOKEN : o.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const res = await request(`${agent.url}${p}`, { method: method as "GET", headers, body: o.rawBody ?? (o.body === undefined ? undefined : JSON.stringify(o.body)) });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

describe("auth", () => {
  it("refuses a request without a token with 401 and WWW-Authenticate: Bearer", async () => {
    const r = await raw("GET", "/v1/search-path?protocol=nbd", { token: null });
    expect(r.status).toBe(401);
    expect(r.body).toEqual({ error: { code: "UNAUTHORIZED", message: expect.any(String) } });
    expect(String(r.headers["www-authenticate"])).toMatch(/^Bearer/);
    expect(calls).toEqual([]);
  });

  it("refuses a wrong token (same length, shorter, other scheme)", async () => {
    const sameLength = TOKEN.slice(0, -1) + "X";
    for (const token of [sameLength, "short", `${TOKEN}extra`]) {
      expect((await raw("GET", "/v1/search-path?protocol=nbd", { token })).status).toBe(401);
    }
    const basic = await request(`${agent.url}/v1/search-path?protocol=nbd`, { headers: { authorization: `Basic ${TOKEN}` } });
    await basic.body.text();
    expect(basic.statusCode).toBe(401);
    expect(calls).toEqual([]);
  });

  it("accepts the right token", async () => {
    const r = await raw("GET", "/v1/search-path?protocol=nbd");
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ path: "/search/nbd" });
  });

  it("needs no token for health and the OpenAPI document", async () => {
    const h = await raw("GET", "/v1/health", { token: null });
    expect(h).toMatchObject({ status: 200, body: { ok: true, version: "9.9.9" } });
    const d = await raw("GET", "/v1/openapi.json", { token: null });
    expect(d.status).toBe(200);
    expect(d.body.openapi).toBe("3.1.0");
  });

  it("answers 401 (not 404) to an unknown route without a token, 404 / 405 with one", async () => {
    expect((await raw("GET", "/v1/nope", { token: null })).status).toBe(401);
    expect((await raw("GET", "/v1/nope")).status).toBe(404);
    const r = await raw("GET", "/v1/connections/connect");
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe("POST");
  });
});

describe("malformed requests", () => {
  const { volumeId: _v, ...noVolumeId } = connection;
  const cases: [string, unknown, string][] = [
    ["missing connection.volumeId", { connection: noVolumeId }, "connection.volumeId"],
    ["portals not an array", { connection: { ...connection, portals: "10.0.0.5:3260" } }, "connection.portals"],
    ["an empty portal", { connection: { ...connection, portals: [""] } }, "connection.portals[0]"],
    ["protocol not in the enum", { connection: { ...connection, protocol: "fc" } }, "connection.protocol"],
    ["readOnly not a boolean", { connection: { ...connection, readOnly: "no" } }, "connection.readOnly"],
    ["no connection at all", {}, "connection"],
  ];
  it.each(cases)("%s → 400 naming the field", async (_name, body, field) => {
    const r = await raw("POST", "/v1/connections/connect", { body });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: "INVALID_INPUT", field });
    expect(r.body.error.message).toContain(field);
    expect(calls).toEqual([]);
  });

  it("rejects a body that is not JSON, and a bad ?protocol=", async () => {
    const r = await raw("POST", "/v1/connections/connect", { rawBody: "{not json" });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("INVALID_INPUT");
    const q = await raw("GET", "/v1/connector/properties?protocol=fc");
    expect(q.status).toBe(400);
    expect(q.body.error.field).toBe("protocol");
    expect(calls).toEqual([]);
  });
});

describe("OpenAPI document", () => {
  it("lists every route with its method, auth and request schema", async () => {
    const doc = (await raw("GET", "/v1/openapi.json", { token: null })).body;
    const ops = Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([p, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${p}`));
    expect(ops.sort()).toEqual(
      [
        "GET /v1/health",
        "GET /v1/openapi.json",
        "GET /v1/connector/properties",
        "POST /v1/connections/connect",
        "POST /v1/connections/disconnect",
        "POST /v1/connections/paths",
        "GET /v1/paths",
        "GET /v1/search-path",
        "POST /v1/connections/extend",
        "POST /v1/connections/check",
        "POST /v1/connections/fence",
        "POST /v1/storage/driver",
        "POST /v1/storage/iscsi",
        "POST /v1/storage/nbd",
        "GET /v1/storage/replication/pairs",
        "POST /v1/storage/replication/sync",
        "POST /v1/storage/replication/schedule",
        "POST /v1/storage/replication/unschedule",
        "POST /v1/storage/replication/sink",
        "POST /v1/storage/replication/progress",
      ].sort(),
    );
    for (const p of ["/v1/connections/connect", "/v1/connections/disconnect", "/v1/connections/paths", "/v1/connections/extend"]) {
      const schema = doc.paths[p].post.requestBody.content["application/json"].schema;
      expect(schema.required).toContain("connection");
      expect(schema.properties.connection.required).toEqual(expect.arrayContaining(["protocol", "portals", "readOnly", "volumeId"]));
      expect(schema.properties.connection.properties.protocol.enum).toEqual(["iscsi", "nbd", "local"]);
      expect(schema.properties.connection.properties.portals.type).toBe("array");
    }
    expect(doc.paths["/v1/connections/disconnect"].post.requestBody.content["application/json"].schema.properties.force.type).toBe("boolean");
    expect(doc.paths["/v1/connector/properties"].get.parameters).toEqual([expect.objectContaining({ name: "protocol", in: "query", required: true })]);
    expect(doc.paths["/v1/paths"].get.parameters).toEqual([expect.objectContaining({ name: "protocol", in: "query", required: false })]);
    expect(doc.paths["/v1/health"].get.security).toEqual([]);
    expect(doc.paths["/v1/connections/connect"].post.security).toBeUndefined();
    expect(doc.security).toEqual([{ bearer: [] }]);
    expect(doc.paths["/v1/connections/extend"].post.responses["200"].content["application/json"].schema.properties.sizeBytes.type).toBe("integer");
  });
});

describe("AgentClient", () => {
  it("round-trips every call", async () => {
    const client = new AgentClient({ url: agent.url, token: TOKEN });
    try {
      expect(await client.health()).toEqual({ ok: true, version: "9.9.9" });
      expect(await client.getConnectorProperties("iscsi")).toMatchObject({ hostname: "host-1", initiator: "iqn.2026-11.io.sds:host-1" });
      expect(await client.connectVolume(connection)).toEqual({ path: "/dev/fake0" });
      expect(await client.connectVolume(connection)).toEqual({ path: "/dev/fake0" });
      expect(await client.getVolumePaths(connection)).toEqual([{ volumeId: "vol-1", path: "/dev/fake0", protocol: "iscsi", via: "loop" }]);
      expect(await client.getAllVolumePaths("nbd")).toEqual([{ path: "/dev/all-nbd", protocol: "nbd", via: "kernel" }]);
      expect((await client.getAllVolumePaths()).map((p) => p.protocol)).toEqual(["iscsi", "nbd", "local"]);
      expect(await client.getSearchPath("local")).toBe("/search/local");
      expect(await client.extendVolume(connection)).toBe(2 * 1024 ** 3);
      expect(await client.checkVolume(connection)).toEqual({ path: "/dev/fake0", healthy: false, reason: "qemu-nbd (pid 7) exited" });
      expect(await client.fenceVolume(connection)).toEqual({ path: "/dev/fake0", healthy: true });
      await client.disconnectVolume(connection, { force: true });
      await client.disconnectVolume(connection);
      expect(await client.getVolumePaths(connection)).toEqual([]);
    } finally {
      await client.close();
    }
    expect(calls.map((c) => `${c[0]}:${c[1]}`)).toEqual([
      "getConnectorProperties:iscsi",
      "connectVolume:iscsi",
      "connectVolume:iscsi",
      "getVolumePaths:iscsi",
      "getAllVolumePaths:nbd",
      "getAllVolumePaths:iscsi",
      "getAllVolumePaths:nbd",
      "getAllVolumePaths:local",
      "getSearchPath:local",
      "extendVolume:iscsi",
      "checkVolume:iscsi",
      "fenceVolume:iscsi",
      "disconnectVolume:iscsi",
      "disconnectVolume:iscsi",
      "getVolumePaths:iscsi",
    ]);
    // The connection arrives whole (CHAP included), force only when given.
    expect(calls[1][2]).toEqual(connection);
    expect(calls[12][3]).toEqual({ force: true });
    expect(calls[13][3]).toBeUndefined();
  });

  it("maps connector errors: UserError → 4xx → UserError, BackendError → 502 → BackendError, bug → 500 generic", async () => {
    const client = new AgentClient({ url: agent.url, token: TOKEN, retryBaseMs: 1 });
    try {
      FakeConnector.failNext = new UserError("CONFLICT", "device /dev/fake0 is in use", "connection");
      await expect(client.disconnectVolume(connection)).rejects.toMatchObject({ constructor: UserError, code: "CONFLICT", message: "device /dev/fake0 is in use", property: "connection" });
      FakeConnector.failNext = new UserError("NOT_FOUND", "no such target");
      const nf = await raw("POST", "/v1/connections/paths", { body: { connection } });
      expect(nf.status).toBe(404);

      FakeConnector.failNext = new BackendError("COMMAND_FAILED", "iscsiadm exited 21", true);
      const before = calls.length;
      const err = await client.connectVolume(connection).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendError);
      expect(err).toMatchObject({ code: "COMMAND_FAILED", retryable: true });
      expect((err as Error).message).toContain("iscsiadm exited 21");
      expect(calls.length - before).toBe(1); // a 502 is not retried

      FakeConnector.failNext = new Error("kaboom secret detail");
      const r = await raw("POST", "/v1/connections/connect", { body: { connection } });
      expect(r.status).toBe(500);
      expect(r.body.error.code).toBe("INTERNAL");
      expect(JSON.stringify(r.body)).not.toContain("kaboom");
      expect(logLines.join("\n")).toContain("kaboom secret detail"); // the stack stays in the agent's log
    } finally {
      await client.close();
    }
  });

  it("a CommandFailedError is a 502 with retryable, back as a BackendError; a DeviceBusyError comes back as one, device and holder included", async () => {
    const client = new AgentClient({ url: agent.url, token: TOKEN, retryBaseMs: 1 });
    try {
      FakeConnector.failNext = new CommandFailedError({ argv: ["iscsiadm", "-v", CHAP], exitCode: 8, stderr: `no portal (${CHAP})`, secrets: [CHAP], retryable: true });
      const r = await raw("POST", "/v1/connections/connect", { body: { connection } });
      expect(r.status).toBe(502);
      expect(r.body.error).toEqual({ code: "COMMAND_FAILED", message: "command failed (exit 8): iscsiadm -v ***: no portal (***)", retryable: true });
      FakeConnector.failNext = new CommandFailedError({ argv: ["iscsiadm"], exitCode: 8 });
      const err = await client.connectVolume(connection).catch((e: unknown) => e);
      expect(err).toMatchObject({ constructor: BackendError, code: "COMMAND_FAILED", retryable: false, message: `sds-agent at ${agent.url}: command failed (exit 8): iscsiadm` });

      FakeConnector.failNext = new DeviceBusyError("/dev/loop7", "cannot disconnect: /dev/loop7 is mounted on /mnt/x", "/dev/loop7 is mounted on /mnt/x");
      const busy = await client.disconnectVolume(connection).catch((e: unknown) => e);
      expect(busy).toBeInstanceOf(DeviceBusyError);
      expect(busy).toMatchObject({ code: "INVALID_STATE", device: "/dev/loop7", holder: "/dev/loop7 is mounted on /mnt/x", message: "cannot disconnect: /dev/loop7 is mounted on /mnt/x" });
      // any other INVALID_STATE stays a plain UserError: "not connected" is not "busy"
      FakeConnector.failNext = new UserError("INVALID_STATE", "volume vol-1 is not connected");
      const other = await client.extendVolume(connection).catch((e: unknown) => e);
      expect(other).toMatchObject({ constructor: UserError, code: "INVALID_STATE" });
    } finally {
      await client.close();
    }
  });

  it("does not retry an HTTP 400 (one request reaches the agent)", async () => {
    const client = new AgentClient({ url: agent.url, token: TOKEN, retryBaseMs: 1 });
    try {
      const bad = { ...connection, portals: "nope" } as unknown as Connection;
      await expect(client.connectVolume(bad)).rejects.toMatchObject({ constructor: UserError, code: "INVALID_INPUT", property: "connection.portals" });
    } finally {
      await client.close();
    }
    expect(logLines.filter((l) => l.startsWith("POST "))).toHaveLength(1);
    expect(calls).toEqual([]);
  });

  it("a wrong token is a user error, not retried", async () => {
    const client = new AgentClient({ url: agent.url, token: "wrong", retryBaseMs: 1 });
    try {
      await expect(client.getSearchPath("nbd")).rejects.toMatchObject({ constructor: UserError, message: expect.stringContaining("refused the token") });
    } finally {
      await client.close();
    }
    expect(logLines).toHaveLength(1);
  });

  it("retries connection resets, then reports AGENT_UNAVAILABLE (attempts counted)", async () => {
    let connections = 0;
    const sink = net.createServer((s) => {
      connections++;
      s.destroy(); // reset before any response
    });
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(sink.address() as net.AddressInfo).port}`;
    const client = new AgentClient({ url, token: TOKEN, retries: 3, retryBaseMs: 5 });
    try {
      const err = await client.connectVolume(connection).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendError);
      expect(err).toMatchObject({ code: "AGENT_UNAVAILABLE", retryable: true });
      expect((err as Error).message).toContain(`sds-agent at ${url} is unreachable`);
      expect(err).toBeInstanceOf(AgentUnavailableError);
      expect(err).toMatchObject({ url, cause: expect.any(Error) });
      expect(connections).toBe(4); // the first try and three retries
    } finally {
      await client.close();
      await new Promise((r) => sink.close(r));
    }
  });

  it("a stopped agent (ECONNREFUSED) → AGENT_UNAVAILABLE after the retries", async () => {
    const url = agent.url;
    await agent.close();
    const started = Date.now();
    const client = new AgentClient({ url, token: TOKEN, retries: 3, retryBaseMs: 40 });
    try {
      const err = await client.getSearchPath("nbd").catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "AGENT_UNAVAILABLE", retryable: true });
      expect((err as Error).message).toMatch(/ECONNREFUSED/);
      expect((err as Error).message).toContain("(4 attempts)");
      expect(Date.now() - started).toBeGreaterThanOrEqual(40 + 80 + 160 - 10); // backoff really waited
    } finally {
      await client.close();
      agent = await startAgent({ host: "127.0.0.1", port: 0, token: TOKEN, version: "x", connectorFor: () => { throw new Error("unused"); } });
    }
  });

  it("times out a request that gets no answer, as a retryable TIMEOUT, without retrying", async () => {
    let requests = 0;
    const silent = net.createServer((s) => {
      requests++;
      s.on("data", () => undefined); // read, never answer
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const client = new AgentClient({ url: `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`, token: TOKEN, timeoutMs: 200, retryBaseMs: 1 });
    try {
      await expect(client.extendVolume(connection)).rejects.toMatchObject({ code: "TIMEOUT", retryable: true });
      expect(requests).toBe(1);
    } finally {
      await client.close();
      await new Promise((r) => { silent.close(r); });
    }
  });
});

describe("logging", () => {
  it("logs method, route, status and duration, never the token nor a CHAP password", async () => {
    const client = new AgentClient({ url: agent.url, token: TOKEN });
    try {
      await client.connectVolume(connection);
      await raw("POST", "/v1/connections/connect", { body: { connection: { ...connection, protocol: "fc" } } });
      await raw("POST", "/v1/connections/connect", { token: `${TOKEN}-wrong`, body: { connection } });
      FakeConnector.failNext = new BackendError("COMMAND_FAILED", "failed", false);
      await client.disconnectVolume(connection).catch(() => undefined);
    } finally {
      await client.close();
    }
    expect(logLines.length).toBe(4);
    expect(logLines[0]).toMatch(/^POST \/v1\/connections\/connect 200 \d+\.\dms$/);
    expect(logLines[1]).toMatch(/^POST \/v1\/connections\/connect 400 /);
    expect(logLines[2]).toMatch(/^POST unknown 401 /);
    expect(logLines[3]).toMatch(/^POST \/v1\/connections\/disconnect 502 /);
    const all = logLines.join("\n");
    expect(all).not.toContain(TOKEN);
    expect(all).not.toContain(CHAP);
  });
});

describe("TLS", () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-agent-tls-"));
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "ignore" });
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("serves https: a client with caCert (path or PEM) succeeds, one without fails unretried", async () => {
    const certPath = path.join(dir, "cert.pem");
    const tlsAgent = await startAgent({
      host: "127.0.0.1",
      port: 0,
      token: TOKEN,
      version: "9.9.9",
      tls: { cert: fs.readFileSync(certPath), key: fs.readFileSync(path.join(dir, "key.pem")) },
      connectorFor: (p) => new FakeConnector(p, calls, new Map()),
      log: (l) => logLines.push(l),
    });
    const clients = [
      new AgentClient({ url: tlsAgent.url, token: TOKEN, caCert: certPath }),
      new AgentClient({ url: tlsAgent.url, token: TOKEN, caCert: fs.readFileSync(certPath, "utf8") }),
      new AgentClient({ url: tlsAgent.url, token: TOKEN, retryBaseMs: 1 }),
    ];
    try {
      expect(tlsAgent.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      expect(await clients[0].getSearchPath("nbd")).toBe("/search/nbd");
      expect(await clients[1].connectVolume(connection)).toEqual({ path: "/dev/fake0" });
      const err = await clients[2].getSearchPath("nbd").catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "AGENT_UNAVAILABLE", retryable: false });
      expect((err as Error).message).toMatch(/certificate/i);
      expect(calls.filter((c) => c[0] === "getSearchPath")).toHaveLength(1);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await tlsAgent.close();
    }
  });
});

describe("command line", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-agent-cli-"));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("reads a 600 token file and refuses a group/world-readable or empty one", () => {
    const f = path.join(dir, "token");
    fs.writeFileSync(f, `${TOKEN}\n`, { mode: 0o600 });
    expect(readTokenFile(f)).toBe(TOKEN);
    fs.chmodSync(f, 0o640);
    expect(() => readTokenFile(f)).toThrow(/group or others/);
    fs.chmodSync(f, 0o604);
    expect(() => readTokenFile(f)).toThrow(/group or others/);
    const empty = path.join(dir, "empty");
    fs.writeFileSync(empty, "\n", { mode: 0o600 });
    expect(() => readTokenFile(empty)).toThrow(/empty/);
  });

  it("parses --listen", () => {
    expect(parseListen("127.0.0.1:7700")).toEqual({ host: "127.0.0.1", port: 7700 });
    expect(parseListen("[::1]:0")).toEqual({ host: "::1", port: 0 });
    expect(() => parseListen("7700")).toThrow(/host:port/);
    expect(() => parseListen("h:70000")).toThrow(/host:port/);
  });

  it("runAgent starts from flags, announces itself, and never logs the token", async () => {
    const f = path.join(dir, "token");
    fs.writeFileSync(f, TOKEN, { mode: 0o600 });
    const lines: string[] = [];
    const factoryCalls: unknown[] = [];
    const running = await runAgent(["--listen", "127.0.0.1:0", "--token-file", f, "--state-dir", dir], {
      version: "1.2.3",
      log: (l) => lines.push(l),
      factory: (p, o) => {
        factoryCalls.push([p, o]);
        return new FakeConnector(p, calls, new Map());
      },
    });
    try {
      expect(lines[0]).toMatch(/^sds-agent 1\.2\.3 listening on http:\/\/127\.0\.0\.1:\d+$/);
      const client = new AgentClient({ url: running!.url, token: TOKEN });
      expect(await client.getSearchPath("nbd")).toBe("/search/nbd");
      expect(await client.getSearchPath("nbd")).toBe("/search/nbd");
      await client.close();
      expect(factoryCalls).toEqual([["nbd", { stateDir: dir }]]); // one connector per protocol
      expect(lines.join("\n")).not.toContain(TOKEN);
    } finally {
      await running?.close();
    }
    fs.chmodSync(f, 0o644);
    await expect(runAgent(["--token-file", f], { version: "x", factory: () => { throw new Error("unused"); } })).rejects.toThrow(/chmod 600/);
    await expect(runAgent(["--listen", "127.0.0.1:0"], { version: "x", factory: () => { throw new Error("unused"); } })).rejects.toThrow(/--token-file is required/);
  });
});

describe("storage node routes", () => {
  let node: RunningAgent;
  let root: string;
  let targetCalls: unknown[][];
  /** A target factory that records (protocol, address, op, args). */
  const recordingTargets = () =>
    ({
      iscsi: (portal: string) =>
        new Proxy({}, { get: (_t, op) => (op === "then" ? undefined : async (...args: unknown[]) => (targetCalls.push(["iscsi", portal, op, ...args]), op === "ensureTarget" ? 7 : op === "list" ? [] : undefined)) }),
      nbd: (host: string) => new Proxy({}, { get: (_t, op) => (op === "then" ? undefined : async (...args: unknown[]) => (targetCalls.push(["nbd", host, op, ...args]), undefined)) }),
    }) as never;

  beforeEach(async () => {
    targetCalls = [];
    root = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), "sds-node-"));
    const { FileDriver } = await import("../../provider/src/drivers/file-driver");
    node = await startAgent({
      host: "127.0.0.1",
      port: 0,
      token: TOKEN,
      version: "9.9.9",
      connectorFor: (p) => new FakeConnector(p, calls, new Map()),
      log: (l) => logLines.push(l),
      storage: { root, driverFor: () => new FileDriver(), targets: recordingTargets() },
    });
  });
  afterEach(async () => {
    await node.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  const post = async (url: string, p: string, body: unknown) => {
    const res = await request(`${url}${p}`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }, body: JSON.stringify(body) });
    return { status: res.statusCode, body: JSON.parse(await res.body.text()) };
  };

  it("an agent started without --storage-root answers the storage routes with 404", async () => {
    const r = await post(agent.url, "/v1/storage/driver", { driver: "file", call: { op: "getPoolStats", args: [{ name: "p", path: "/tmp/p" }] } });
    expect(r.status).toBe(404);
    expect(r.body.error.message).toMatch(/not a storage node/);
  });

  it("refuses paths outside the storage root, naming the field, and touches nothing", async () => {
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), "sds-outside-"));
    try {
      const cases: Array<[string, unknown, string]> = [
        ["/v1/storage/driver", { driver: "file", call: { op: "createVolume", args: [{ name: "p", path: outside }, "v1", 1024] } }, "call.args[0].path"],
        ["/v1/storage/driver", { driver: "file", call: { op: "createVolume", args: [{ name: "p", path: `${root}/../escape` }, "v1", 1024] } }, "call.args[0].path"],
        ["/v1/storage/driver", { driver: "file", call: { op: "deleteVolume", args: [{ name: "p", path: root }, "v1"] } }, "call.args[0].path"],
        ["/v1/storage/iscsi", { portal: "127.0.0.1:3260", call: { op: "ensureLun", args: [1, 1, "/etc/shadow", false] } }, "call.args[2]"],
        ["/v1/storage/nbd", { host: "127.0.0.1", call: { op: "ensureExport", args: ["s", "e", "relative/file"] } }, "call.args[2]"],
      ];
      for (const [route, body, field] of cases) {
        const r = await post(node.url, route, body);
        expect([route, r.status, r.body.error.field]).toEqual([route, 400, field]);
      }
      expect(fs.readdirSync(outside)).toEqual([]);
      expect(targetCalls).toEqual([]);
    } finally {
      fs.rmSync(outside, { recursive: true, force: true });
    }
  });

  it("malformed calls get 400 naming the argument", async () => {
    const r = await post(node.url, "/v1/storage/iscsi", { portal: "127.0.0.1:3260", call: { op: "ensureLun", args: [1, "one", `${root}/f`, false] } });
    expect(r.status).toBe(400);
    expect(r.body.error.field).toBe("call.args[1]");
    const u = await post(node.url, "/v1/storage/iscsi", { portal: "127.0.0.1:3260", call: { op: "format", args: [] } });
    expect(u.status).toBe(400);
    expect(u.body.error.field).toBe("call.op");
  });

  it("RemoteDriver and remoteTargets drive the node's driver and targets; the CHAP password is never logged", async () => {
    const { RemoteDriver, remoteTargets } = await import("../../provider/src/agent/remote-node");
    const client = new AgentClient({ url: node.url, token: TOKEN });
    try {
      const pool = { name: "p0", path: path.join(root, "p0") } as never;
      const d = new RemoteDriver(client, "file");
      await d.createVolume(pool, "v1", 1 << 20);
      expect(fs.statSync(d.volumePath(pool, "v1")).size).toBe(1 << 20);
      expect(await d.getVolumeSizeBytes(pool, "v2")).toBeUndefined();
      const t = remoteTargets(client).iscsi("10.0.0.5:3260");
      expect(await t.ensureTarget("iqn.2026-11.io.sds:x")).toBe(7);
      await t.ensureChap(7, { username: "u", password: CHAP });
      await t.ensureLun(7, 1, d.volumePath(pool, "v1"), true);
      await remoteTargets(client).nbd("10.0.0.5").refreshExport("s", "volume-v1", d.volumePath(pool, "v1"));
      expect(targetCalls).toEqual([
        ["iscsi", "10.0.0.5:3260", "ensureTarget", "iqn.2026-11.io.sds:x"],
        ["iscsi", "10.0.0.5:3260", "ensureChap", 7, { username: "u", password: CHAP }],
        ["iscsi", "10.0.0.5:3260", "ensureLun", 7, 1, d.volumePath(pool, "v1"), true],
        ["nbd", "10.0.0.5", "refreshExport", "s", "volume-v1", d.volumePath(pool, "v1")],
      ]);
      expect(logLines.join("\n")).not.toContain(CHAP);
    } finally {
      await client.close();
    }
  });
});
