/**
 * For tests that run real target daemons (tgtd, nbdkit): free ports, temporary run folders, why
 * a suite must skip, and a cleanup that ends what the test started (and only that), even when a
 * test failed before its own teardown.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { procProcesses } from "../../provider/src/exec/processes";

/** A TCP port free on 127.0.0.1 right now (the kernel picks it). */
export function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Why a daemon suite cannot run here (not root, a binary missing), or undefined when it can. */
export function skipReason(binaries: string[]): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (tgtd and nbdkit tests run real daemons)";
  const dirs = (process.env.PATH ?? "").split(path.delimiter).concat(["/usr/sbin", "/sbin"]);
  const missing = binaries.filter((b) => !dirs.some((d) => isExecutable(path.join(d, b))));
  return missing.length ? `missing binaries: ${missing.join(", ")}` : undefined;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** What one test started: create in beforeEach, `cleanup()` in afterEach. */
export class Daemons {
  private readonly dirs: string[] = [];
  private readonly controlPorts: number[] = [];

  /** A fresh temporary run folder, removed by {@link cleanup}. */
  runDir(prefix = "sds-target-"): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    this.dirs.push(dir);
    return dir;
  }

  /**
   * A tgtd control port no tgtd uses: tgtd's management channel is the unix socket
   * /var/run/tgtd/socket.N, not a TCP port (N ≤ 32767: tgtd parses it as a short), so pick N
   * whose socket does not exist and no tgtd names.
   */
  async tgtControlPort(): Promise<number> {
    const used = new Set((await procProcesses.list()).filter((p) => path.basename(p.argv[0] ?? "") === "tgtd").map((p) => p.argv[p.argv.indexOf("-C") + 1]));
    for (;;) {
      const n = 10_000 + Math.floor(Math.random() * 22_000);
      if (!used.has(String(n)) && !fs.existsSync(`/var/run/tgtd/socket.${n}`)) {
        this.controlPorts.push(n);
        return n;
      }
    }
  }

  /** tgtd and nbdkit processes this test started (matched by control port or run folder). */
  async processes(): Promise<Array<{ pid: number; argv: string[] }>> {
    return (await procProcesses.list()).filter((p) => this.owns(p.argv));
  }

  /** SIGKILL what is left of this test's daemons, remove their sockets and run folders. */
  async cleanup(): Promise<void> {
    for (const p of await this.processes()) procProcesses.kill(p.pid, "SIGKILL");
    for (const n of this.controlPorts) {
      fs.rmSync(`/var/run/tgtd/socket.${n}`, { force: true });
      fs.rmSync(`/var/run/tgtd/socket.${n}.lock`, { force: true });
    }
    for (const d of this.dirs) fs.rmSync(d, { recursive: true, force: true });
    this.dirs.length = 0;
    this.controlPorts.length = 0;
  }

  private owns(argv: string[]): boolean {
    const name = path.basename(argv[0] ?? "");
    if (name === "tgtd") {
      const i = argv.findIndex((a) => a === "-C" || a === "--control-port");
      return i >= 0 && this.controlPorts.includes(Number(argv[i + 1]));
    }
    if (name === "nbdkit") return argv.some((a) => this.dirs.some((d) => a.startsWith(`dir=${d}/`)));
    return false;
  }
}

/**
 * SIGSTOP `pid` and resolve once every one of its threads is stopped. kill() returns before the
 * stop has happened: the signal wakes one thread, which stops the others when it next runs, so on
 * a loaded machine another thread (a FUSE daemon's worker) may still answer a request sent right
 * after kill(). A test that needs "this daemon answers nothing now" waits for this.
 */
export async function stopProcess(pid: number, timeoutMs = 10_000): Promise<void> {
  process.kill(pid, "SIGSTOP");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
      try {
        // state is the field after the parenthesised command, which may itself hold spaces or ')'
        const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
        return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      } catch {
        return "T"; // that thread exited
      }
    });
    if (states.every((s) => s === "T" || s === "t")) return;
    if (Date.now() > deadline) throw new Error(`pid ${pid} not stopped within ${timeoutMs} ms (thread states ${states.join("")})`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
