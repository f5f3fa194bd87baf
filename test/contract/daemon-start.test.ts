/**
 * startDaemon against a real qemu-nbd --fork: its parent exits 1 whenever the child wrote
 * anything to stderr before detaching, a warning too, while the child serves. A fresh-clone CI
 * saw an attachment fail that way ("qemu-nbd: iSCSI: Failed MODE_SENSE(6), LUN assumed
 * writable", exit 1) and the daemon's record dropped while it went on running. Here the warning
 * is qemu's "probing guessed raw" (an image given without -f), which the same code path prints.
 * Needs root and qemu-nbd.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CommandFailedError } from "../../provider/src/errors";
import { DaemonRecords, readPid, startDaemon } from "../../provider/src/exec/daemons";
import { procProcesses } from "../../provider/src/exec/processes";
import { run } from "../../provider/src/exec/run";
import { skipReason } from "../helpers/daemons";

const skip = skipReason(["qemu-nbd"]);
const suite = skip ? describe.skip : describe;
if (skip) test.skip(`daemon start skipped: ${skip}`, () => undefined);

suite("startDaemon with a real qemu-nbd --fork", () => {
  let dir: string;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-daemon-start-"));
  });
  afterAll(async () => {
    // Every qemu-nbd this suite started names its folder, also one a failed assertion left unnamed.
    for (const p of await procProcesses.list()) if (p.argv.some((a) => a.startsWith(dir))) procProcesses.kill(p.pid, "SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function qemuNbd(name: string, image: string, format: string[]) {
    const pidFile = path.join(dir, `${name}.pid`);
    const socket = path.join(dir, `${name}.sock`);
    return { kind: "qemu-nbd", name, file: "qemu-nbd", args: ["--fork", "--persistent", "--pid-file", pidFile, "-k", socket, ...format, image], pidFile, socket };
  }

  test("a start that warned and runs is a start: the record stays, with the warning", async () => {
    const image = path.join(dir, "warns.img");
    fs.writeFileSync(image, "");
    fs.truncateSync(image, 1 << 20);
    const daemons = new DaemonRecords(path.join(dir, "daemons"));
    const d = qemuNbd("warns", image, []);
    // What the fix is about: qemu-nbd itself calls this start a failure.
    const raw = await run("qemu-nbd", qemuNbd("raw-check", image, []).args, { detached: true, timeoutMs: 30_000 }).catch((e: unknown) => e);
    expect(raw).toBeInstanceOf(CommandFailedError);
    const rawPid = readPid(path.join(dir, "raw-check.pid"));
    expect(rawPid).toBeDefined();

    const record = await startDaemon(run, daemons, d, { timeoutMs: 30_000 });
    const pid = readPid(d.pidFile)!;
    expect((await procProcesses.argv(pid))?.slice(1)).toEqual(d.args);
    expect(record.startWarning).toMatch(/probing guessed raw/);
    expect(daemons.list("qemu-nbd").map((r) => r.name)).toEqual(["warns"]);
    expect(fs.existsSync(d.socket)).toBe(true);
  });

  test("a start that failed and left nothing running throws and leaves no record", async () => {
    const daemons = new DaemonRecords(path.join(dir, "daemons-failed"));
    const d = qemuNbd("fails", path.join(dir, "no-such.img"), ["-f", "raw"]);
    await expect(startDaemon(run, daemons, d, { timeoutMs: 30_000 })).rejects.toThrow(/no-such\.img/);
    expect(daemons.list()).toEqual([]);
    expect(readPid(d.pidFile)).toBeUndefined();
  });

  test("a pidfile of another command does not make a failed start a success", async () => {
    const daemons = new DaemonRecords(path.join(dir, "daemons-stale"));
    const d = qemuNbd("stale", path.join(dir, "no-such.img"), ["-f", "raw"]);
    fs.writeFileSync(d.pidFile, `${process.pid}\n`); // a live process, but not this qemu-nbd
    await expect(startDaemon(run, daemons, d, { timeoutMs: 30_000 })).rejects.toThrow(CommandFailedError);
    expect(daemons.list()).toEqual([]);
  });
});
