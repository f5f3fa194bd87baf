/**
 * A small network of namespaces for multi-host tests: one bridge (in its own namespace) and, for
 * each named node, a namespace joined to it by a veth pair; the test's own (root) namespace is
 * joined too, so the provider running here reaches every node. Addresses are 10.<net>.0.<n>/24.
 * Processes started in a node run under `ip netns exec`, which also gives them their own mount
 * namespace (FUSE mounts made there are seen only there) and, with `hostname`, their own UTS
 * namespace (so each host has its own default iSCSI initiator name).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as path from "node:path";
import { AgentClient } from "../../provider/src/agent/client";
import { repoRoot } from "./provider-process";

export interface NetNode {
  name: string;
  ns: string;
  ip: string;
}

export class NetLab {
  readonly nodes = new Map<string, NetNode>();
  private readonly tag = randomBytes(3).toString("hex");
  private readonly fabric: string;
  private readonly links: string[] = [];
  readonly rootIp: string;
  private readonly net: number;
  private readonly children: ChildProcess[] = [];

  constructor(names: string[]) {
    this.net = 100 + (parseInt(this.tag, 16) % 100);
    this.fabric = `sdsfab-${this.tag}`;
    this.rootIp = `10.${this.net}.0.1`;
    names.forEach((name, i) => this.nodes.set(name, { name, ns: `sds${name}-${this.tag}`, ip: `10.${this.net}.0.${i + 2}` }));
  }

  private ip(args: string[], ns?: string): void {
    execFileSync("ip", ns ? ["netns", "exec", ns, "ip", ...args] : args, { stdio: "pipe" });
  }

  /** Make the namespaces, the bridge and the links. */
  up(): void {
    this.ip(["netns", "add", this.fabric]);
    this.ip(["link", "add", "br0", "type", "bridge"], this.fabric);
    this.ip(["link", "set", "br0", "up"], this.fabric);
    this.ip(["link", "set", "lo", "up"], this.fabric);
    const join = (local: string, ns: string | undefined, ip: string, i: number) => {
      const peer = `sdsp${i}-${this.tag}`;
      this.ip(["link", "add", local, "type", "veth", "peer", "name", peer]);
      this.links.push(local);
      this.ip(["link", "set", peer, "netns", this.fabric]);
      this.ip(["link", "set", peer, "master", "br0", "up"], this.fabric);
      if (ns) this.ip(["link", "set", local, "netns", ns]);
      this.ip(["addr", "add", `${ip}/24`, "dev", local], ns);
      this.ip(["link", "set", local, "up"], ns);
    };
    join(`sdsr-${this.tag}`, undefined, this.rootIp, 0);
    let i = 1;
    for (const n of this.nodes.values()) {
      this.ip(["netns", "add", n.ns]);
      this.ip(["link", "set", "lo", "up"], n.ns);
      join(`sdsv${i}-${this.tag}`, n.ns, n.ip, i);
      i++;
    }
  }

  node(name: string): NetNode {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  /** Run a command in a node (its network, mount and UTS namespaces) and return stdout. */
  exec(name: string, argv: string[], input?: Buffer): Buffer {
    return execFileSync("ip", ["netns", "exec", this.node(name).ns, ...argv], { input, stdio: ["pipe", "pipe", "pipe"], maxBuffer: 1 << 28 });
  }

  /** Start a long-running process in a node, with its own host name. */
  spawn(name: string, argv: string[]): ChildProcess {
    const n = this.node(name);
    const script = 'hostname "$0" && exec "$@"';
    const child = spawn("ip", ["netns", "exec", n.ns, "unshare", "--uts", "sh", "-c", script, `${name.toLowerCase()}.sds.test`, ...argv], { stdio: ["ignore", "ignore", "pipe"] });
    this.children.push(child);
    return child;
  }

  /** Stop what was spawned, then remove links and namespaces (what is gone is fine). */
  down(): void {
    for (const c of this.children) if (c.exitCode === null) c.kill("SIGKILL");
    for (const l of this.links) {
      try {
        this.ip(["link", "del", l]);
      } catch {
        // moved into a namespace that goes below
      }
    }
    for (const ns of [...[...this.nodes.values()].map((n) => n.ns), this.fabric]) {
      try {
        this.ip(["netns", "del", ns]);
      } catch {
        // not made
      }
    }
  }
}

/**
 * Start the real sds-agent in a node of `lab` on `<node ip>:7700`, its token in `<work>/token` and
 * its state in `<work>/<name>-state`; resolves once it listens, with a client for it. `bin` is the
 * agent to run: this checkout's provider/bin/sds-agent by default, or e.g. the `sds-agent`
 * launcher of an extracted plugin tarball (as deploy/ installs it on a host).
 */
export async function startLabAgent(lab: NetLab, name: string, o: { work: string; token: string; extra?: string[]; bin?: string }): Promise<{ child: ChildProcess; stateDir: string; client: AgentClient }> {
  const stateDir = path.join(o.work, `${name}-state`);
  const n = lab.node(name);
  // Plain http on the lab's private network: a non-loopback address without TLS needs --insecure.
  const child = lab.spawn(name, [o.bin ?? path.join(repoRoot, "provider/bin/sds-agent"), "--listen", `${n.ip}:7700`, "--insecure", "--token-file", path.join(o.work, "token"), "--state-dir", stateDir, ...(o.extra ?? [])]);
  let err = "";
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on("data", (d) => {
      err += String(d);
      if (err.includes("listening")) resolve();
    });
    child.on("exit", (c) => reject(new Error(`sds-agent on ${name} exited ${c}: ${err}`)));
  });
  return { child, stateDir, client: new AgentClient({ url: `http://${n.ip}:7700`, token: o.token, retries: 0 }) };
}
