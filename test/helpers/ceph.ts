/**
 * A throwaway single-node Ceph cluster for tests (/work/shared/notes/ceph-single-node.md): one
 * mon, one mgr and one OSD on memstore (data in RAM, capped), everything in a temporary folder,
 * the mon on a free v2/v1 port pair on 127.0.0.1 and every other daemon bound inside a private
 * port range, cephx on. Debian's packages (ceph-mon ceph-mgr ceph-osd ceph-common; scripts/lib.sh
 * installs them as root). Up in 10–15 s on a loaded 2-core machine.
 *
 * What it hands out: the conf file (monitors, keyring, paths: a client given `-c conf --id admin`
 * reaches the cluster with no secret in argv), the admin keyring, `pool(name)` to make an RBD
 * pool, and `stop()`, which ends the OSD and mgr before the mon (an OSD otherwise waits to report
 * itself down), kills only the pids it started, and removes the folder. A process exit that
 * skipped `stop()` still kills them.
 *
 * Pitfalls met (and why the config is as it is): `ceph-osd --mkfs --mkkey` needs
 * `--no-mon-config`; a keyring only in [global] makes `--mkkey` write the OSD key into the admin
 * keyring, so the OSD's keyring is set in [osd]; an `admin socket` in [global] makes concurrent
 * clients (tgtd + CLI) collide, so none is set; `mon cluster log file` would write to
 * /var/log/ceph.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { freeTcpPort, skipReason } from "./daemons";

const BINARIES = ["ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "rbd", "ceph-authtool", "monmaptool"];

export interface CephCluster {
  /** The client conf (monitors, admin keyring, run and log folders inside the cluster's folder). */
  readonly conf: string;
  /** The keyring file holding client.admin (and mon., mgr.x). */
  readonly keyring: string;
  /** The Ceph user of {@link keyring}, without `client.`. */
  readonly user: "admin";
  readonly fsid: string;
  /** The cluster's folder (conf, keyrings, daemon data, logs). */
  readonly dir: string;
  /** `mon host` as written in the conf (`[v2:127.0.0.1:P2,v1:127.0.0.1:P1]`). */
  readonly monHost: string;
  /** Create an RBD pool (size 1, 8 PGs, application rbd) and wait until an image can be made in it and `ceph df` reports its space. Idempotent. */
  pool(name: string): Promise<void>;
  /** Run `ceph <args> --format json` as admin; the parsed output. */
  cephJson(args: string[]): Promise<unknown>;
  /** Run `rbd <args>` as admin; its stdout. */
  rbd(args: string[], timeoutMs?: number): Promise<string>;
  /** Make a Ceph user with `caps` (e.g. `["mon", "profile rbd", "osd", "profile rbd pool=p"]`); its keyring file (0600). */
  makeUser(name: string, caps: string[]): Promise<string>;
  /** Stop the daemons (OSD and mgr, then mon) and remove the folder. Idempotent. */
  stop(): Promise<void>;
}

/** Why a Ceph suite cannot run here (not root, a binary missing), or undefined when it can. */
export function cephSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (a single-node Ceph cluster: ceph-osd and tgt's rbd backing store run as root)";
  const missing = skipReason(BINARIES);
  return missing ? `${missing} (install the Debian packages ceph-mon ceph-mgr ceph-osd ceph-common; scripts/setup.sh does as root)` : undefined;
}

/** Whether tgt's rbd backing store (Debian tgt-rbd) is installed. */
export function tgtRbdSkipReason(): string | undefined {
  const candidates = ["/usr/lib/tgt/backing-store/bs_rbd.so", "/usr/lib/x86_64-linux-gnu/tgt/backing-store/bs_rbd.so"];
  return candidates.some((f) => fs.existsSync(f)) ? undefined : "tgt's rbd backing store is missing (/usr/lib/tgt/backing-store/bs_rbd.so): install the Debian package tgt-rbd";
}

function run(argv: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0], argv.slice(1), { timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 64 * 1024 * 1024, env: { ...process.env, LC_ALL: "C" } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${argv.join(" ")} failed: ${err.message.split("\n")[0]}\n${stderr.trim()}`));
      else resolve(stdout);
    });
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** A range of `n` ports all free on 127.0.0.1 now, from a random start in 20000–59999 (other clusters pick other ranges). */
async function freePortRange(n: number): Promise<[number, number]> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const start = 20_000 + Math.floor(Math.random() * 40_000);
    let ok = true;
    for (let p = start; p < start + n && ok; p++) ok = await portFree(p);
    if (ok) return [start, start + n - 1];
  }
  throw new Error("test setup: no free range of ports for Ceph's daemons");
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`test setup: Ceph: ${what} not within ${timeoutMs / 1000} s${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

export interface StartCephOptions {
  /** Parent folder of the cluster's folder (default: /tmp). */
  dir?: string;
  /** memstore's cap on the OSD's data (default 2 GiB). */
  osdBytes?: number;
}

/** Start a cluster; resolves once a pool can be made and used (`rbd create` works). */
export async function startCeph(options: StartCephOptions = {}): Promise<CephCluster> {
  const why = cephSkipReason();
  if (why) throw new Error(`test setup: ${why}`);
  const dir = fs.mkdtempSync(path.join(options.dir ?? os.tmpdir(), "sds-ceph-"));
  fs.chmodSync(dir, 0o700);
  const fsid = randomUUID();
  const conf = path.join(dir, "ceph.conf");
  const keyring = path.join(dir, "keyring");
  const children: ChildProcess[] = [];
  let stopped = false;

  const killAll = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid) {
      try {
        process.kill(c.pid, "SIGKILL");
      } catch {
        // gone already
      }
    }
  };
  process.once("exit", killAll);

  const ceph = (args: string[], timeoutMs = 30_000) => run(["ceph", "-c", conf, "--id", "admin", "--connect-timeout", "20", ...args], timeoutMs);
  const rbd = (args: string[], timeoutMs = 30_000) => run(["rbd", "-c", conf, "--id", "admin", ...args], timeoutMs);
  const cephJson = async (args: string[]) => JSON.parse(await ceph([...args, "--format", "json"])) as unknown;

  const daemon = (argv: string[], name: string) => {
    const out = fs.openSync(path.join(dir, "log", `${name}.out`), "a");
    const c = spawn(argv[0], argv.slice(1), { stdio: ["ignore", out, out], env: { ...process.env, LC_ALL: "C" } });
    fs.closeSync(out);
    c.on("error", () => undefined);
    children.push(c);
    return c;
  };

  const stopChild = async (c: ChildProcess | undefined, graceMs: number) => {
    if (!c || c.exitCode !== null || c.signalCode !== null || !c.pid) return;
    const exited = new Promise<void>((r) => c.once("exit", () => r()));
    try {
      process.kill(c.pid, "SIGTERM");
    } catch {
      return;
    }
    const t = setTimeout(() => {
      try {
        if (c.pid) process.kill(c.pid, "SIGKILL");
      } catch {
        // gone
      }
    }, graceMs);
    await exited;
    clearTimeout(t);
  };

  let mon: ChildProcess | undefined;
  let mgr: ChildProcess | undefined;
  let osd: ChildProcess | undefined;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await Promise.all([stopChild(osd, 5_000), stopChild(mgr, 5_000)]);
    await stopChild(mon, 5_000);
    killAll();
    process.removeListener("exit", killAll);
    fs.rmSync(dir, { recursive: true, force: true });
  };

  try {
    for (const d of ["log", "run", "mon/a", "mgr/x", "osd/0"]) fs.mkdirSync(path.join(dir, d), { recursive: true, mode: 0o700 });
    const v2 = await freeTcpPort();
    let v1 = await freeTcpPort();
    while (v1 === v2) v1 = await freeTcpPort();
    const [min, max] = await freePortRange(40);
    const monHost = `[v2:127.0.0.1:${v2},v1:127.0.0.1:${v1}]`;
    fs.writeFileSync(
      conf,
      [
        "[global]",
        `fsid = ${fsid}`,
        `mon host = ${monHost}`,
        "mon initial members = a",
        "public network = 127.0.0.0/8",
        `ms bind port min = ${min}`,
        `ms bind port max = ${max}`,
        "auth cluster required = cephx",
        "auth service required = cephx",
        "auth client required = cephx",
        `keyring = ${keyring}`,
        `run dir = ${dir}/run`,
        `log file = ${dir}/log/$name.log`,
        `mon cluster log file = ${dir}/log/cluster.log`,
        "osd pool default size = 1",
        "osd pool default min size = 1",
        "osd pool default pg num = 8",
        "osd pool default pgp num = 8",
        "osd pool default pg autoscale mode = off",
        "mon allow pool size one = true",
        "mon allow pool delete = true",
        "osd crush chooseleaf type = 0",
        "mon warn on pool no redundancy = false",
        "mgr stats period = 1",
        "osd mon report interval = 1",
        "mon osd full ratio = 0.97",
        "mon osd backfillfull ratio = 0.96",
        "mon osd nearfull ratio = 0.95",
        "",
        "[mon.a]",
        `mon data = ${dir}/mon/a`,
        "",
        "[mgr.x]",
        `mgr data = ${dir}/mgr/x`,
        "",
        "[osd]",
        `osd data = ${dir}/osd/$id`,
        `keyring = ${dir}/osd/$id/keyring`,
        "osd objectstore = memstore",
        `memstore device bytes = ${options.osdBytes ?? 2 * 1024 ** 3}`,
        "osd max object name len = 256",
        "osd max object namespace len = 64",
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    await run(["ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"], 10_000);
    await run(["ceph-authtool", keyring, "--gen-key", "-n", "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *", "--cap", "mds", "allow *"], 10_000);
    await run(["ceph-authtool", keyring, "--gen-key", "-n", "mgr.x", "--cap", "mon", "allow profile mgr", "--cap", "osd", "allow *", "--cap", "mds", "allow *"], 10_000);
    fs.chmodSync(keyring, 0o600);
    const monmap = path.join(dir, "monmap");
    await run(["monmaptool", "--create", "--addv", "a", monHost, "--fsid", fsid, monmap], 10_000);
    await run(["ceph-mon", "-c", conf, "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", keyring], 30_000);
    mon = daemon(["ceph-mon", "-c", conf, "-i", "a", "-f"], "mon.a");
    await until("the mon answering", 30_000, async () => ((await cephJson(["mon", "stat"])) ? true : undefined));

    mgr = daemon(["ceph-mgr", "-c", conf, "-i", "x", "-f"], "mgr.x");

    const osdUuid = randomUUID();
    const id = (await ceph(["osd", "new", osdUuid, "0"])).trim();
    if (id !== "0") throw new Error(`test setup: ceph osd new gave id ${id}, expected 0`);
    await run(["ceph-osd", "-c", conf, "-i", "0", "--mkfs", "--mkkey", "--osd-uuid", osdUuid, "--no-mon-config"], 60_000);
    await ceph(["auth", "add", "osd.0", "osd", "allow *", "mon", "allow profile osd", "mgr", "allow profile osd", "-i", path.join(dir, "osd/0/keyring")]);
    osd = daemon(["ceph-osd", "-c", conf, "-i", "0", "-f"], "osd.0");
    await until("the OSD up and in", 60_000, async () => {
      const s = (await cephJson(["osd", "stat"])) as { num_up_osds?: number; num_in_osds?: number };
      return s.num_up_osds === 1 && s.num_in_osds === 1 ? true : undefined;
    });
  } catch (err) {
    const logs = ["mon.a.out", "mgr.x.out", "osd.0.out", "osd.0.log"]
      .map((f) => path.join(dir, "log", f))
      .filter((f) => fs.existsSync(f))
      .map((f) => `--- ${path.basename(f)}:\n${fs.readFileSync(f, "utf8").split("\n").slice(-15).join("\n")}`)
      .join("\n");
    await stop();
    throw new Error(`${(err as Error).message}\n${logs}`, { cause: err });
  }

  const pools = new Set<string>();
  return {
    conf,
    keyring,
    user: "admin",
    fsid,
    dir,
    monHost: fs.readFileSync(conf, "utf8").match(/^mon host = (.*)$/m)?.[1] ?? "",
    cephJson,
    rbd,
    async pool(name: string) {
      if (pools.has(name)) return;
      await ceph(["osd", "pool", "create", name, "8", "8"]);
      await ceph(["osd", "pool", "application", "enable", name, "rbd"]);
      const probe = `sds-probe-${randomUUID().slice(0, 8)}`;
      await until(`pool ${name} usable`, 60_000, async () => {
        await rbd(["create", `${name}/${probe}`, "--size", "1M"], 20_000);
        return true;
      });
      await rbd(["rm", `${name}/${probe}`, "--no-progress"]);
      // ceph df lags the pool's creation by a second or two (max_avail 0 until the mgr reports it): a
      // driver measuring capacity right away would see an empty pool.
      await until(`pool ${name} in ceph df`, 60_000, async () => {
        const df = (await cephJson(["df"])) as { pools?: Array<{ name: string; stats: { max_avail: number } }> };
        return (df.pools?.find((p) => p.name === name)?.stats.max_avail ?? 0) > 0 ? true : undefined;
      });
      pools.add(name);
    },
    async makeUser(name: string, caps: string[]) {
      const file = path.join(dir, `client.${name}.keyring`);
      const out = await ceph(["auth", "get-or-create", `client.${name}`, ...caps]);
      fs.writeFileSync(file, out, { mode: 0o600 });
      return file;
    },
    stop,
  };
}
