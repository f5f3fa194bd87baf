/**
 * NbdkitTarget with a recording Runner and a fake process table: the exact nbdkit argv, when a
 * server counts as running (pidfile → live nbdkit serving that folder), the symlink folder and
 * state file, and what each call skips because it is already done.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import type { RunOptions, Runner } from "../../provider/src/exec/run";
import { NbdkitTarget } from "../../provider/src/targets/nbdkit-target";
import type { ProcessTable } from "../../provider/src/exec/processes";

/** Processes by pid; `kill` ends them and is recorded. */
class FakeProcesses implements ProcessTable {
  readonly procs = new Map<number, string[]>();
  readonly signals: Array<[number, string]> = [];
  async argv(pid: number) {
    return this.procs.get(pid);
  }
  async list() {
    return [...this.procs].map(([pid, argv]) => ({ pid, argv }));
  }
  kill(pid: number, signal: NodeJS.Signals) {
    this.signals.push([pid, signal]);
    this.procs.delete(pid);
  }
}

let runDir: string;
let processes: FakeProcesses;
let calls: Array<{ file: string; args: string[]; options?: RunOptions }>;
let nextPid: number;

/** Records the call; "starts" nbdkit the way the real one does: a live process and its pidfile. */
let portInUse: number | undefined;
const run: Runner = async (file, args, options) => {
  calls.push({ file, args: [...args], options });
  if (file === "nbdkit" && portInUse !== undefined && args[args.indexOf("-p") + 1] === String(portInUse)) {
    throw new Error(`command failed (exit 1): nbdkit -p ${portInUse}: nbdkit: bind: Address already in use`);
  }
  if (file === "nbdkit") {
    const pid = nextPid++;
    processes.procs.set(pid, ["nbdkit", ...args]);
    fs.writeFileSync(args[args.indexOf("-P") + 1]!, `${pid}\n`);
  }
  return { stdout: "", stderr: "", exitCode: 0 };
};

const nbd = () => new NbdkitTarget({ host: "127.0.0.1", runDir, run, processes });
const dirOf = (server: string) => path.join(runDir, "nbd", server);
const pidFileOf = (server: string) => path.join(runDir, "nbd", `${server}.pid`);

function volume(name: string): string {
  const file = path.join(runDir, name);
  fs.writeFileSync(file, "");
  return file;
}

beforeEach(() => {
  runDir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-nbd-unit-"));
  processes = new FakeProcesses();
  calls = [];
  nextPid = 5000;
});
afterEach(() => fs.rmSync(runDir, { recursive: true, force: true }));

describe("ensureServer", () => {
  test("starts nbdkit on the folder of symlinks, with port, address, pidfile; -r for read-only; with a timeout", async () => {
    await nbd().ensureServer("rw", 10809, false);
    await nbd().ensureServer("ro", 10810, true);
    expect(calls.map((c) => [c.file, ...c.args])).toEqual([
      ["nbdkit", "-p", "10809", "-i", "127.0.0.1", "-P", pidFileOf("rw"), "file", `dir=${dirOf("rw")}`],
      ["nbdkit", "-r", "-p", "10810", "-i", "127.0.0.1", "-P", pidFileOf("ro"), "file", `dir=${dirOf("ro")}`],
    ]);
    expect(calls.every((c) => typeof c.options?.timeoutMs === "number")).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(runDir, "nbd", "rw.json"), "utf8"))).toEqual({ port: 10809, readOnly: false });
    expect(JSON.parse(fs.readFileSync(path.join(runDir, "nbd", "ro.json"), "utf8"))).toEqual({ port: 10810, readOnly: true });
    expect(fs.statSync(dirOf("rw")).isDirectory()).toBe(true);
  });

  test("a running server with the same mode is left alone and keeps its port (the port is a wish); another mode is a conflict", async () => {
    await expect(nbd().ensureServer("rw", 10809, false)).resolves.toBe(10809);
    await expect(nbd().ensureServer("rw", 10809, false)).resolves.toBe(10809);
    expect(calls).toHaveLength(1);
    await expect(nbd().ensureServer("rw", 10811, false)).resolves.toBe(10809);
    await expect(nbd().ensureServer("rw", 10809, true)).rejects.toMatchObject({ code: "CONFLICT" });
    expect(calls).toHaveLength(1);
  });

  test("a wished port another program holds is skipped for the next free one", async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen({ host: "127.0.0.1", port: 0 }, () => r()));
    const port = (busy.address() as net.AddressInfo).port;
    portInUse = port;
    try {
      const got = await nbd().ensureServer("rw", port, false);
      expect(got).toBeGreaterThan(port);
      expect(calls.map((c) => c.args[c.args.indexOf("-p") + 1])).toEqual([String(port), String(got)]);
      expect(JSON.parse(fs.readFileSync(path.join(runDir, "nbd", "rw.json"), "utf8"))).toEqual({ port: got, readOnly: false });
    } finally {
      portInUse = undefined;
      busy.close();
    }
  });

  test("a dead server (stale pidfile, or its pid reused by another program) is started again", async () => {
    await nbd().ensureServer("rw", 10809, false);
    processes.procs.set(5000, ["sleep", "1000"]); // pid reused
    await nbd().ensureServer("rw", 10809, false);
    processes.procs.delete(5001); // died (a zombie has no argv)
    await nbd().ensureServer("rw", 10809, false);
    expect(calls).toHaveLength(3);
    expect(fs.readFileSync(pidFileOf("rw"), "utf8").trim()).toBe("5002");
  });

  test("bad names and ports are refused before any command", async () => {
    for (const name of ["", "../x", ".hidden", "a/b", "a.json", "-r"]) await expect(nbd().ensureServer(name, 10809, false)).rejects.toMatchObject({ code: "INVALID_INPUT" });
    await expect(nbd().ensureServer("rw", 0, false)).rejects.toMatchObject({ code: "INVALID_INPUT", property: "port" });
    await expect(nbd().ensureServer("rw", 70000, false)).rejects.toMatchObject({ code: "INVALID_INPUT", property: "port" });
    expect(calls).toEqual([]);
  });
});

describe("exports are symlinks in the server's folder", () => {
  test("ensureExport links the volume once; another file under the same name is a conflict", async () => {
    const a = volume("a.img");
    await nbd().ensureServer("rw", 10809, false);
    await nbd().ensureExport("rw", "vol-a", a);
    await nbd().ensureExport("rw", "vol-a", path.join(runDir, ".", "a.img"));
    expect(fs.readlinkSync(path.join(dirOf("rw"), "vol-a"))).toBe(a);
    await expect(nbd().ensureExport("rw", "vol-a", volume("b.img"))).rejects.toMatchObject({ code: "CONFLICT" });
    expect(calls).toHaveLength(1); // no restart
  });

  test("ensureExport refuses an unknown server, a missing volume and names nbdkit would serve oddly", async () => {
    await expect(nbd().ensureExport("nope", "vol-a", volume("a.img"))).rejects.toMatchObject({ code: "NOT_FOUND", property: "server" });
    await nbd().ensureServer("rw", 10809, false);
    await expect(nbd().ensureExport("rw", "vol-a", path.join(runDir, "missing.img"))).rejects.toMatchObject({ code: "NOT_FOUND", property: "path" });
    for (const name of [".hidden", "a/b", "..", ""]) await expect(nbd().ensureExport("rw", name, volume("a.img"))).rejects.toMatchObject({ code: "INVALID_INPUT" });
    expect(fs.readdirSync(dirOf("rw"))).toEqual([]);
  });

  test("refreshExport runs nothing and restarts nothing (nbdkit reads the size per connection); it checks the export", async () => {
    const a = volume("a.img");
    await nbd().ensureServer("rw", 10809, false);
    await nbd().ensureExport("rw", "vol-a", a);
    const link = fs.lstatSync(path.join(dirOf("rw"), "vol-a"));
    await nbd().refreshExport("rw", "vol-a", a);
    await nbd().refreshExport("rw", "vol-a", path.join(runDir, ".", "a.img"));
    expect(calls).toHaveLength(1); // the ensureServer start only
    expect(processes.signals).toEqual([]);
    expect(fs.lstatSync(path.join(dirOf("rw"), "vol-a")).ino).toBe(link.ino);
    await expect(nbd().refreshExport("rw", "vol-a", volume("b.img"))).rejects.toMatchObject({ code: "CONFLICT", property: "path" });
    await expect(nbd().refreshExport("rw", "vol-b", a)).rejects.toMatchObject({ code: "NOT_FOUND", property: "exportName" });
    await expect(nbd().refreshExport("nope", "vol-a", a)).rejects.toMatchObject({ code: "NOT_FOUND", property: "server" });
    await expect(nbd().refreshExport("rw", "../vol-a", a)).rejects.toMatchObject({ code: "INVALID_INPUT" });
  });

  test("removeExport unlinks, and removing again is success; the volume stays", async () => {
    const a = volume("a.img");
    await nbd().ensureServer("rw", 10809, false);
    await nbd().ensureExport("rw", "vol-a", a);
    await nbd().removeExport("rw", "vol-a");
    await nbd().removeExport("rw", "vol-a");
    await nbd().removeExport("gone", "vol-a");
    expect(fs.readdirSync(dirOf("rw"))).toEqual([]);
    expect(fs.existsSync(a)).toBe(true);
  });
});

describe("removeServer and list", () => {
  test("list reports running servers from their state, pidfile and folder, across instances", async () => {
    const a = volume("a.img");
    await nbd().ensureServer("rw", 10809, false);
    await nbd().ensureServer("ro", 10810, true);
    await nbd().ensureExport("rw", "vol-a", a);
    await nbd().ensureExport("ro", "vol-a", a);
    expect(await nbd().list()).toEqual([
      { server: "ro", port: 10810, readOnly: true, pid: 5001, exports: [{ name: "vol-a", path: a }] },
      { server: "rw", port: 10809, readOnly: false, pid: 5000, exports: [{ name: "vol-a", path: a }] },
    ]);
    processes.procs.delete(5001); // the read-only server died
    expect((await nbd().list()).map((s) => s.server)).toEqual(["rw"]);
  });

  test("removeServer sends SIGTERM, waits, forgets the server; again is success", async () => {
    const a = volume("a.img");
    await nbd().ensureServer("rw", 10809, false);
    await nbd().ensureExport("rw", "vol-a", a);
    await nbd().removeServer("rw");
    await nbd().removeServer("rw");
    expect(processes.signals).toEqual([[5000, "SIGTERM"]]);
    expect(fs.readdirSync(path.join(runDir, "nbd"))).toEqual([]);
    expect(await nbd().list()).toEqual([]);
    expect(fs.existsSync(a)).toBe(true);
  });

  test("removeServer never signals a pid that is no longer our nbdkit", async () => {
    await nbd().ensureServer("rw", 10809, false);
    processes.procs.set(5000, ["nbdkit", "file", `dir=${dirOf("other")}`]);
    await nbd().removeServer("rw");
    expect(processes.signals).toEqual([]);
    expect(processes.procs.has(5000)).toBe(true);
  });
});
