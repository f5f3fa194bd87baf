/**
 * getVolumePaths (path discovery) through the plugin process: this machine's connectors for
 * `localhost`, a real sds-agent (with its token, from provider config) for another host.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as pb from "@pulumi/pulumi/proto/provider_pb";
import { freeTcpPort } from "../helpers/daemons";
import { type ProviderProcess, call, repoRoot, startProvider, struct } from "../helpers/provider-process";

const SIG = "4dabf18193072939515e22adb298388d";
const SECRET = "1b47061264138c4ac30d75fd1eb44270";

let dir: string;
let p: ProviderProcess;
let agent: ChildProcess;
let agentPort: number;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-paths-"));
  fs.writeFileSync(path.join(dir, "agent.token"), "agent-token-1234567890", { mode: 0o600 });
  agentPort = await freeTcpPort();
  agent = spawn(path.join(repoRoot, "provider/bin/sds-agent"), ["--listen", `127.0.0.1:${agentPort}`, "--token-file", path.join(dir, "agent.token"), "--state-dir", path.join(dir, "agent-state")], { stdio: ["ignore", "ignore", "pipe"] });
  await new Promise<void>((resolve, reject) => {
    agent.stderr!.on("data", (d) => String(d).includes("listening") && resolve());
    agent.on("exit", (c) => reject(new Error(`sds-agent exited ${c}`)));
  });
  p = await startProvider(dir, { SDS_STATE_URL: "", SDS_BACKENDS_FILE: "" });
  const r = new pb.ConfigureRequest();
  r.setArgs(
    struct({
      hosts: { [SIG]: SECRET, value: JSON.stringify({ hostA: { url: `http://127.0.0.1:${agentPort}` }, hostB: { url: `http://127.0.0.1:${agentPort}`, token: "wrong-token-0000000000" } }) },
      agentToken: { [SIG]: SECRET, value: "agent-token-1234567890" },
    }),
  );
  await call(p.client, "configure", r);
}, 30_000);

afterAll(async () => {
  await p?.stop();
  agent?.kill("SIGTERM");
  fs.rmSync(dir, { recursive: true, force: true });
});

async function invoke(args: Record<string, unknown>) {
  const r = new pb.InvokeRequest();
  r.setTok("sds:index:getVolumePaths");
  r.setArgs(struct(args));
  const res = await call<pb.InvokeRequest, pb.InvokeResponse>(p.client, "invoke", r);
  return { outputs: res.getReturn()?.toJavaScript(), failures: res.getFailuresList().map((f) => [f.getProperty(), f.getReason()]) };
}

test("localhost: this machine's connectors answer (no connections: no paths)", async () => {
  expect(await invoke({ host: "localhost" })).toEqual({ outputs: { paths: [] }, failures: [] });
});

test("a host in the provider's hosts is asked through its sds-agent with the provider's agentToken", async () => {
  expect(await invoke({ host: "hostA", volumeId: "v1" })).toEqual({ outputs: { paths: [] }, failures: [] });
});

test("a wrong agent token and an unknown host are errors naming the problem", async () => {
  const refused = await invoke({ host: "hostB" });
  expect(refused.failures).toEqual([["", expect.stringMatching(/refused the token \(401\)/)]]);
  const unknown = await invoke({ host: "nowhere" });
  expect(unknown.failures).toEqual([["host", expect.stringContaining('no host named "nowhere"')]]);
});
