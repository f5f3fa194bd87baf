/**
 * A restarted sds-agent finds the connections of the one before it (connectors/connector.ts: every
 * connection leaves a record under the state folder "so a restarted agent finds its paths
 * again"). The real agent process (provider/bin/sds-agent, the compiled provider: `npm run
 * build`) connects a volume through its HTTP API, dies by SIGKILL (no chance to tidy up), and a
 * new agent on the same --state-dir reports the path with its volume id and disconnects it.
 * Local (a loop device over a sparse file) always; NBD userspace (a real nbdkit, nbdfuse + loop)
 * when its tools are here. As root: loop devices and FUSE mounts.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { AgentClient } from "../../provider/src/agent/client";
import type { Connection } from "../../provider/src/connectors/connector";
import { probe } from "../../provider/src/connectors/host";
import { RecordStore } from "../../provider/src/connectors/records";
import { NbdkitTarget } from "../../provider/src/targets/nbdkit-target";
import { freeTcpPort, skipReason } from "../helpers/daemons";
import { alive, loops, mountsUnder, sweepConnections } from "../helpers/host";
import { repoRoot } from "../helpers/provider-process";
import { sparseFile } from "../helpers/files";

jest.setTimeout(120_000);

const TOKEN = "agent-restart-token-0123456789";
const agentBin = path.join(repoRoot, "provider/bin/sds-agent");
const agentJs = path.join(repoRoot, "provider/dist/agent-main.js");

/** One running agent: its process, a client, and what it said on stderr. */
interface RunningAgent {
  child: ChildProcess;
  client: AgentClient;
  stderr: string[];
}

const started: RunningAgent[] = [];

/** Starts provider/bin/sds-agent on a free port and `stateDir`; resolves once it listens. */
async function startAgent(dir: string, stateDir: string): Promise<RunningAgent> {
  const port = await freeTcpPort();
  const child = spawn(agentBin, ["--listen", `127.0.0.1:${port}`, "--token-file", path.join(dir, "agent.token"), "--state-dir", stateDir], { stdio: ["ignore", "ignore", "pipe"] });
  const stderr: string[] = [];
  const agent: RunningAgent = { child, client: new AgentClient({ url: `http://127.0.0.1:${port}`, token: TOKEN, timeoutMs: 60_000 }), stderr };
  started.push(agent);
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on("data", (d) => {
      stderr.push(String(d));
      if (stderr.join("").includes("listening")) resolve();
    });
    child.once("exit", (code, signal) => reject(new Error(`sds-agent exited (${code ?? signal}) before listening: ${stderr.join("")}`)));
  });
  return agent;
}

/** SIGKILL: the agent gets no chance to write, close or tidy anything. */
async function killAgent(a: RunningAgent): Promise<void> {
  await a.client.close();
  if (a.child.exitCode !== null || a.child.signalCode !== null) return;
  const exited = new Promise((r) => a.child.once("exit", r));
  a.child.kill("SIGKILL");
  await exited;
}

const rootSkip = process.getuid?.() !== 0 ? "needs root (the agent makes loop devices and FUSE mounts)" : undefined;

if (rootSkip) {
  test.skip(`sds-agent restart skipped: ${rootSkip}`, () => undefined);
} else {
  let dir: string;
  let stateDir: string;
  let nbd: NbdkitTarget | undefined;

  beforeAll(() => {
    if (!fs.existsSync(agentJs)) throw new Error(`${agentJs} is missing: build the provider first (npm run build)`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-agent-restart-"));
    stateDir = path.join(dir, "state");
    fs.writeFileSync(path.join(dir, "agent.token"), `${TOKEN}\n`, { mode: 0o600 });
  });

  afterAll(async () => {
    // What a failed test may have left, ended by name: agents we started, loop devices over files
    // in our folder, mounts in it, the helpers our records name, our nbdkit servers.
    for (const a of started) await killAgent(a).catch(() => undefined);
    if (!dir) return;
    await sweepConnections(dir, stateDir);
    for (const s of (await nbd?.list().catch(() => [])) ?? []) await nbd?.removeServer(s.server).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Connect through one agent, SIGKILL it, and check a new agent on the same state folder sees
   * the path (by volume and among all paths), connects idempotently, and disconnects it fully.
   * Returns what was recorded, for protocol-specific checks.
   */
  async function connectKillRestart(c: Connection, via: "loop" | "userspace") {
    const first = await startAgent(dir, stateDir);
    const { path: dev } = await first.client.connectVolume(c);
    expect(dev).toMatch(/^\/dev\/loop\d+$/);
    const expected = { volumeId: c.volumeId, path: dev, protocol: c.protocol, via };
    expect(await first.client.getAllVolumePaths(c.protocol)).toEqual([expected]);
    const rec = new RecordStore(stateDir).read(c.volumeId, c.readOnly ? "ro" : "rw");
    expect(rec?.device).toBe(dev);

    await killAgent(first);
    expect(first.child.signalCode).toBe("SIGKILL");
    // the device (and nbdfuse under it) outlive the agent
    expect((await loops()).filter((l) => l.name === dev)).toEqual([expect.objectContaining({ backFile: rec?.backingFile })]);
    if (rec?.nbdfusePid) expect(await alive(rec.nbdfusePid, "nbdfuse")).toBe(true);

    const second = await startAgent(dir, stateDir);
    expect(await second.client.getAllVolumePaths()).toEqual([expected]);
    expect(await second.client.getAllVolumePaths(c.protocol)).toEqual([expected]);
    expect(await second.client.getVolumePaths(c)).toEqual([expected]);
    expect((await second.client.connectVolume(c)).path).toBe(dev); // still connected: the same path, nothing new
    expect((await loops()).filter((l) => l.backFile === rec?.backingFile)).toHaveLength(1);

    await second.client.disconnectVolume(c);
    expect((await loops()).filter((l) => l.name === dev && l.backFile === rec?.backingFile)).toEqual([]);
    expect((await loops()).filter((l) => l.backFile.startsWith(`${dir}/`))).toEqual([]);
    expect(await second.client.getVolumePaths(c)).toEqual([]);
    expect(await second.client.getAllVolumePaths()).toEqual([]);
    expect(new RecordStore(stateDir).list()).toEqual([]);
    await killAgent(second);
    return rec!;
  }

  test("local: a new agent on the same state folder reports the loop device with its volume id and disconnects it", async () => {
    const file = sparseFile(path.join(dir, "vol-local.img"));
    await connectKillRestart({ volumeId: "vol-restart-local", protocol: "local", portals: [], exportName: file, readOnly: false }, "loop");
  });

  // The agent picks the kernel client when the host has one; this test covers the userspace path.
  const nbdSkip = probe().nbdKernel ? "this host has kernel NBD (the agent would use nbd-client, not nbdfuse)" : skipReason(["nbdkit", "nbdfuse", "umount"]);
  (nbdSkip ? test.skip : test)(`NBD${nbdSkip ? ` (skipped: ${nbdSkip})` : ""}: nbdfuse outlives the killed agent; the new agent finds it and tears it all down`, async () => {
    nbd = new NbdkitTarget({ host: "127.0.0.1", runDir: path.join(dir, "targets") });
    const port = await freeTcpPort();
    await nbd.ensureServer("rw", port, false);
    await nbd.ensureExport("rw", "vol-restart-nbd", sparseFile(path.join(dir, "vol-nbd.img")));
    const c: Connection = { volumeId: "vol-restart-nbd", protocol: "nbd", portals: [`127.0.0.1:${port}`], exportName: "vol-restart-nbd", readOnly: false };
    const rec = await connectKillRestart(c, "userspace");
    expect(rec.nbdfusePid).toBeGreaterThan(0);
    expect(await alive(rec.nbdfusePid, "nbdfuse")).toBe(false);
    expect(mountsUnder(dir)).toEqual([]);
    await nbd.removeServer("rw");
  });
}
