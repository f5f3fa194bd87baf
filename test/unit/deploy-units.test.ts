/**
 * deploy/'s systemd units: `systemd-analyze verify` on them (in a throwaway root holding this
 * machine's system units, the units, and stand-ins for the packaged launchers at /opt/sds),
 * with no warning at all (verify exits 0 on an unknown key, so its output must be empty), and
 * the settings that matter read from the files: the agent's KillMode=process (exports and
 * devices outlive an agent restart), ExecStart on the launchers the packaged tarball has at its
 * root (scripts/package.mjs: extracted to /opt/sds), the timer's Unit= and Persistent=, and a
 * failing replicate run failing its unit. Without systemd-analyze only the settings are checked
 * (said in the skipped test's name).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { repoRoot } from "../helpers/provider-process";

const deploy = path.join(repoRoot, "deploy");
const units = ["sds-agent.service", "sds-replicate.service", "sds-replicate.timer"];

/** `Key=value` lines of a unit file by section (a key given twice keeps each value). */
function parseUnit(file: string): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {};
  let section = "";
  for (const raw of fs.readFileSync(file, "utf8").split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1];
      out[section] ??= {};
      continue;
    }
    const eq = line.indexOf("=");
    (out[section][line.slice(0, eq)] ??= []).push(line.slice(eq + 1));
  }
  return out;
}

/** The launchers the packaged tarball has at its root, as scripts/package.mjs names them. */
function packagedLaunchers(): string[] {
  const text = fs.readFileSync(path.join(repoRoot, "scripts/package.mjs"), "utf8");
  const block = /const launchers = \{([\s\S]*?)\};/.exec(text)?.[1] ?? "";
  return [...block.matchAll(/^\s*"?([\w-]+)"?:\s*launcher\(/gm)].map((m) => m[1]);
}

test("the tarball's launchers are what the units run: /opt/sds/sds and /opt/sds/sds-agent", () => {
  expect(packagedLaunchers()).toEqual(expect.arrayContaining(["sds", "sds-agent"]));
  const agent = parseUnit(path.join(deploy, "sds-agent.service"));
  expect(agent.Service.ExecStart).toEqual([expect.stringMatching(/^\/opt\/sds\/sds-agent --listen /)]);
  const replicate = parseUnit(path.join(deploy, "sds-replicate.service"));
  expect(replicate.Service.ExecStart).toEqual(["/opt/sds/sds replicate --project ${SDS_PROJECT} --stack ${SDS_STACK}"]);
});

test("the agent's unit stops the agent alone (KillMode=process): the exports and devices it started outlive a restart", () => {
  const agent = parseUnit(path.join(deploy, "sds-agent.service"));
  expect(agent.Service.KillMode).toEqual(["process"]);
  expect(agent.Service.Restart).toEqual(["on-failure"]);
  expect(agent.Install.WantedBy).toEqual(["multi-user.target"]);
});

test("the replicate timer starts the replicate service every minute, catching up after downtime; a failed run fails the unit", () => {
  const timer = parseUnit(path.join(deploy, "sds-replicate.timer"));
  expect(timer.Timer).toMatchObject({ Unit: ["sds-replicate.service"], OnCalendar: ["minutely"], Persistent: ["true"] });
  expect(fs.existsSync(path.join(deploy, timer.Timer.Unit[0]))).toBe(true);
  expect(timer.Install.WantedBy).toEqual(["timers.target"]);
  const service = parseUnit(path.join(deploy, "sds-replicate.service"));
  // oneshot, and no SuccessExitStatus or "-" prefix that would let exit 1 or 2 pass as success.
  expect(service.Service.Type).toEqual(["oneshot"]);
  expect(service.Service.SuccessExitStatus).toBeUndefined();
  expect(service.Service.ExecStart[0].startsWith("-")).toBe(false);
  // The env file is required: without it the run fails instead of syncing the wrong folder.
  expect(service.Service.EnvironmentFile).toEqual(["/etc/sds/replicate.env"]);
  const env = fs.readFileSync(path.join(deploy, "sds-replicate.example.env"), "utf8");
  expect(env).toMatch(/^SDS_PROJECT=\S+$/m);
  expect(env).toMatch(/^SDS_STACK=\S+$/m);
});

const analyze = spawnSync("systemd-analyze", ["--version"]).status === 0;
(analyze ? test : test.skip)(`systemd-analyze verify passes on every unit with no warning${analyze ? "" : " (skipped: no systemd-analyze on this machine)"}`, () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "sds-units-"));
  try {
    // The machine's own system units (sysinit.target, timers.target, …), then ours, then the
    // launchers the units name, as stand-ins (verify checks that ExecStart is executable).
    const system = ["/usr/lib/systemd/system", "/lib/systemd/system"].find((d) => fs.existsSync(path.join(d, "sysinit.target")))!;
    fs.cpSync(system, path.join(root, "usr/lib/systemd/system"), { recursive: true, verbatimSymlinks: true });
    fs.mkdirSync(path.join(root, "etc/systemd/system"), { recursive: true });
    for (const u of units) fs.copyFileSync(path.join(deploy, u), path.join(root, "etc/systemd/system", u));
    fs.mkdirSync(path.join(root, "opt/sds"), { recursive: true });
    for (const l of packagedLaunchers()) fs.writeFileSync(path.join(root, "opt/sds", l), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const r = spawnSync("systemd-analyze", ["verify", `--root=${root}`, ...units], { encoding: "utf8" });
    expect({ status: r.status, output: `${r.stdout}${r.stderr}` }).toEqual({ status: 0, output: "" });
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
