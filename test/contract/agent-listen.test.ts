/**
 * The agent's listen address (issue 12): plain http only on loopback. The real agent entry
 * (provider/src/agent-main.ts under ts-node, so the source is what is tested, not a stale build)
 * is run with flags: a non-loopback `--listen` without TLS is refused in one line with exit code
 * 2 (usage); loopback without TLS, `--insecure`, and TLS each start and announce themselves.
 */
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const repoRoot = path.resolve(__dirname, "../..");
const agentMain = path.join(repoRoot, "provider/src/agent-main.ts");
const TOKEN = "agent-listen-token-0123456789";

let dir: string;
let tokenFile: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-agent-listen-"));
  tokenFile = path.join(dir, "token");
  fs.writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "ignore" });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

interface Outcome {
  /** Exit code, or "listening" once it announced itself (then it was stopped with SIGTERM). */
  result: number | "listening";
  stderr: string;
}

/** Run the agent with `args` (plus token, state folder, no health loop) until it exits or listens. */
function runAgent(args: string[]): Promise<Outcome> {
  const argv = ["-r", "ts-node/register/transpile-only", agentMain, ...args, "--token-file", tokenFile, "--state-dir", path.join(dir, "state"), "--health-interval", "0"];
  const child = spawn(process.execPath, argv, { cwd: repoRoot, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, TS_NODE_PROJECT: path.join(repoRoot, "tsconfig.json") } });
  let stderr = "";
  return new Promise<Outcome>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`sds-agent ${args.join(" ")}: neither exited nor listened in 30 s: ${stderr}`));
    }, 30_000);
    child.stderr!.on("data", (d) => {
      stderr += String(d);
      if (/listening on/.test(stderr)) {
        clearTimeout(timer);
        child.once("exit", () => resolve({ result: "listening", stderr }));
        child.kill("SIGTERM");
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      if (!/listening on/.test(stderr)) resolve({ result: code ?? (signal as unknown as number), stderr });
    });
  });
}

jest.setTimeout(60_000);

describe("a non-loopback --listen without TLS is refused, in one line, exit 2", () => {
  test.each(["0.0.0.0:0", "[::]:0", "10.0.0.11:7700", "[fd00::1]:7700", "storage1.example:7700", "[::ffff:10.0.0.1]:7700"])("%s", async (listen) => {
    const out = await runAgent(["--listen", listen]);
    expect(out.result).toBe(2);
    const lines = out.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toBe(
      `sds-agent: --listen ${listen} is not a loopback address and TLS is off: the token and secrets would cross the network in clear; give --tls-cert and --tls-key, or --insecure to accept that`,
    );
  });
});

describe("what starts", () => {
  test.each([
    ["loopback IPv4 without TLS", ["--listen", "127.0.0.1:0"], /listening on http:\/\/127\.0\.0\.1:\d+/],
    ["another 127/8 address without TLS", ["--listen", "127.0.0.2:0"], /listening on http:\/\/127\.0\.0\.2:\d+/],
    ["loopback IPv6 without TLS", ["--listen", "[::1]:0"], /listening on http:\/\/\[::1\]:\d+/],
    ["localhost without TLS", ["--listen", "localhost:0"], /listening on http:\/\//],
    ["every interface with --insecure", ["--listen", "0.0.0.0:0", "--insecure"], /listening on http:\/\/0\.0\.0\.0:\d+/],
  ])("%s", async (_what, args, announced) => {
    const out = await runAgent(args as string[]);
    expect(out).toMatchObject({ result: "listening" });
    expect(out.stderr).toMatch(announced as RegExp);
  });

  test("every interface with TLS", async () => {
    const out = await runAgent(["--listen", "0.0.0.0:0", "--tls-cert", path.join(dir, "cert.pem"), "--tls-key", path.join(dir, "key.pem")]);
    expect(out).toMatchObject({ result: "listening" });
    expect(out.stderr).toMatch(/listening on https:\/\/0\.0\.0\.0:\d+/);
  });
});

test("other flag mistakes are usage errors too (exit 2, one line)", async () => {
  const out = await runAgent(["--listen", "127.0.0.1:0", "--no-such-flag"]);
  expect(out.result).toBe(2);
  expect(out.stderr.trimEnd().split("\n")).toEqual([expect.stringMatching(/^sds-agent: Unknown option '--no-such-flag'/)]);
});
