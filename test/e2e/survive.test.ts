/**
 * Exports and devices outlive `pulumi up` (root, real CLI, real tgtd/nbdkit, real loop devices):
 * for iSCSI (CHAP) and NBD, a multiAttach volume with an rw and an ro attachment connected on this
 * machine. After `up` has returned, the CLI has exited and the engine has stopped the provider
 * plugin, both devices still write and read (round 1's nbdkit servers were in the plugin's process
 * group and died with it). During `up`, no process's argv carries the CHAP password: not the
 * daemons (a /proc watcher) and not the short commands sds runs (logging wrappers on the PATH).
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { cannotRun } from "../datapath/harness";
import { commandShims, watchArgv } from "../helpers/argv-watch";
import { ddRead, ddWrite, type LocalBackendProject, localBackendProject } from "../helpers/local-backend";
import { isPluginArgv } from "../helpers/provider-process";
import type { PulumiProject } from "../helpers/pulumi";

jest.setTimeout(900_000);
const why = cannotRun();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

/** Live processes whose working folder is `dir` (the provider plugin runs in the project folder). */
/** The provider plugins running in `dir` (see isPluginArgv: since the bundle, node's argv names no launcher). */
function pluginsIn(dir: string): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/cwd`) !== dir) continue;
      if (isPluginArgv(fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean))) out.push(Number(pid));
    } catch {
      // gone
    }
  }
  return out;
}

async function until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Write a pattern at MiB `at` through `dev`, read it back through `readDev`. */
function writeThenRead(dir: string, dev: string, readDev: string, fill: number, at: number): void {
  const pattern = ddWrite(dir, dev, fill, at);
  expect(Buffer.compare(ddRead(readDev, at), pattern)).toBe(0);
}

suite.each([
  ["iscsi", true],
  ["nbd", false],
] as const)("%s exports outlive pulumi up", (protocol, chap) => {
  let p: PulumiProject;
  let stack: LocalBackendProject;

  beforeAll(async () => {
    stack = await localBackendProject("survive", `survive-${protocol}`, protocol, chap);
    p = stack.p;
  });
  afterAll(async () => stack?.teardown());

  test("after up returns and the CLI and the plugin are gone, the rw and ro devices still write and read", async () => {
    const watch = watchArgv();
    // Not nbdfuse: it is spawned and watched by name, which a wrapper would hide for a moment (the /proc watcher sees it).
    const shims = commandShims(["tgtadm", "tgtd", "qemu-nbd", "nbdkit", "losetup", "iscsiadm", "nbdinfo", "iscsi-readcapacity16", "qemu-io", "iscsi-ls", "umount", "mount"]);
    const path0 = p.env.PATH;
    p.env.PATH = `${shims.dir}:${path0}`;
    let seen: string[];
    try {
      await p.ok(["up", "--yes"]);
    } finally {
      p.env.PATH = path0;
      seen = [...(await watch.stop()), ...shims.seen()];
      shims.remove();
    }
    // The engine stops its plugin when `up` returns: wait until it is gone, then a little more.
    await until("the provider plugin to exit", () => pluginsIn(p.dir).length === 0);
    await new Promise((r) => setTimeout(r, 2_000));
    const out = JSON.parse((await p.ok(["stack", "output", "--json", "--show-secrets"])).stdout);
    const w = out.writerDevice as string;
    const r = out.readerDevice as string;
    expect(w).toMatch(/^\/dev\/loop\d+$/);
    expect(r).toMatch(/^\/dev\/loop\d+$/);
    writeThenRead(p.dir, w, r, 0x5a, 3);
    if (protocol === "nbd") {
      // The server itself answers a new client too.
      const info = out.writerInfo as { portals: string[]; exportName: string };
      execFileSync("nbdinfo", ["--size", `nbd://${info.portals[0]}/${info.exportName}`], { timeout: 20_000 });
    } else {
      const password = out.writerInfo.authPassword as string;
      expect(password.length).toBeGreaterThan(8);
      expect(seen.some((argv) => /qemu-nbd /.test(argv))).toBe(true); // the wrappers saw the run
      expect(seen.filter((argv) => argv.includes(password))).toEqual([]);
    }
    await p.ok(["refresh", "--yes", "--expect-no-changes"]);
    await p.ok(["preview", "--expect-no-changes"]);
    // A second run (a new plugin) still finds and keeps everything; the devices keep working.
    await p.ok(["up", "--yes", "--expect-no-changes"]);
    writeThenRead(p.dir, w, r, 0x6b, 5);
  });
});
