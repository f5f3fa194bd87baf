/**
 * A throwaway PostgreSQL cluster for tests: Debian's server binaries (package `postgresql`,
 * installed by scripts/setup.sh when root), a cluster made by initdb in a temporary folder,
 * listening on a free TCP port on 127.0.0.1 only, with a random password for its one
 * superuser. As root, the server runs as the unprivileged `postgres` user the package creates
 * (or `nobody`) through `runuser` (initdb and postgres refuse root); otherwise as ourselves.
 * The password reaches initdb through a 0600 file owned by that user, removed once read; it is
 * never on a command line. `stop()` ends the server (and only it) and removes the folder; a
 * process exit that skipped `stop()` still stops the server. `crash()` and `start()` stop the
 * server as a crash would and bring the same cluster back (same data folder, same port), for
 * tests of runners that lose their state database mid-run.
 */
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import pg from "pg";
import { freeTcpPort } from "./daemons";

/** The newest PostgreSQL server's bin folder (/usr/lib/postgresql/<major>/bin), if one is installed. */
export function postgresBinDir(): string | undefined {
  const root = "/usr/lib/postgresql";
  const majors = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  return majors.map((v) => path.join(root, v, "bin")).find((d) => ["initdb", "pg_ctl", "postgres"].every((b) => fs.existsSync(path.join(d, b))));
}

/**
 * Why a PostgreSQL suite cannot run here, or undefined when it can. Missing binaries skip the
 * suite only when they cannot be installed (not root, or no apt-get); as root they are a
 * setup fault, reported by {@link startPostgres} as a failure rather than hidden by a skip.
 */
export function postgresSkipReason(): string | undefined {
  if (postgresBinDir()) return undefined;
  const canInstall = process.getuid?.() === 0 && fs.existsSync("/usr/bin/apt-get");
  return canInstall ? undefined : "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb) and not root to install them: install the Debian package postgresql";
}

export interface PostgresCluster {
  /** A URL for `database` (with the password), for clients in this process only. */
  url(database: string): string;
  /** A new, empty database on the cluster; its URL. */
  createDatabase(): Promise<string>;
  /** How many advisory locks sessions on the database of `url` are waiting for (tests of who waits for whom). */
  waitingAdvisoryLocks(url: string): Promise<number>;
  /** The superuser's password (tests check it never shows in messages). */
  readonly password: string;
  /** The TCP port the server listens on (127.0.0.1), the same across {@link crash} and {@link start}. */
  readonly port: number;
  /**
   * Stop the server at once, as a crash would (`pg_ctl stop -m immediate`: sessions are cut, no
   * checkpoint), keeping its data folder: {@link start} brings the same cluster back. Commits
   * with `synchronous_commit` off (this cluster's default, for speed) may be lost, as in a real
   * crash; a test that needs every commit to survive turns it on for its database
   * (`ALTER DATABASE … SET synchronous_commit = on`). Idempotent.
   */
  crash(): Promise<void>;
  /** Start the server again after {@link crash}, on the same data folder and port; resolves once it accepts connections. Idempotent. */
  start(): Promise<void>;
  /** Stop the server and remove its folder. Idempotent. */
  stop(): Promise<void>;
}

interface RunAs {
  /** argv prefix that runs a command as the server's user. */
  prefix: string[];
  uid: number;
  gid: number;
}

// Why: initdb and postgres refuse to run as root; runuser drops to an unprivileged user without a password or a login shell.
function runAs(): RunAs {
  if (process.getuid?.() !== 0) return { prefix: [], uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
  const passwd = fs.readFileSync("/etc/passwd", "utf8").split("\n").map((l) => l.split(":"));
  const user = passwd.find((f) => f[0] === "postgres") ?? passwd.find((f) => f[0] === "nobody");
  if (!user) throw new Error("test setup: neither a postgres nor a nobody user exists to run the PostgreSQL server as");
  return { prefix: ["runuser", "-u", user[0], "--"], uid: Number(user[2]), gid: Number(user[3]) };
}

/** Run `argv` as the server's user; rejects with its output when it fails or outlives `timeoutMs`. */
function run(as: RunAs, argv: string[], timeoutMs: number): Promise<string> {
  const full = [...as.prefix, ...argv];
  return new Promise((resolve, reject) => {
    execFile(full[0], full.slice(1), { timeout: timeoutMs, killSignal: "SIGKILL", env: { ...process.env, LC_ALL: "C" } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(argv[0])} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Start a cluster (about 1–3 s: initdb, then pg_ctl waits until the server accepts connections). */
export async function startPostgres(): Promise<PostgresCluster> {
  const bin = postgresBinDir();
  if (!bin) throw new Error("test setup: PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); run scripts/setup.sh as root, which installs the Debian package postgresql");
  const pgCtl = path.join(bin, "pg_ctl");
  const as = runAs();
  // As root, under /tmp: the server's user must be able to reach its folder, and TMPDIR may be root's own.
  const dir = fs.mkdtempSync(path.join(as.prefix.length ? "/tmp" : os.tmpdir(), "sds-pg-"));
  const data = path.join(dir, "data");
  const user = "sds";
  const password = randomBytes(18).toString("hex");
  let port = 0;
  let stopped = false;
  let admin: pg.Client | undefined;

  const stopSync = () => {
    if (stopped) return;
    try {
      const argv = [...as.prefix, path.join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"];
      execFileSync(argv[0], argv.slice(1), { stdio: "ignore", timeout: 10_000 });
    } catch {
      // nothing running (it never started, or was stopped already)
    }
  };
  process.once("exit", stopSync);

  try {
    fs.chmodSync(dir, 0o700);
    fs.chownSync(dir, as.uid, as.gid);
    const pwfile = path.join(dir, "pwfile");
    fs.writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    fs.chownSync(pwfile, as.uid, as.gid);
    await run(as, [path.join(bin, "initdb"), "-D", data, "-U", user, `--pwfile=${pwfile}`, "-A", "scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"], 60_000);
    fs.rmSync(pwfile, { force: true });
    // The port is free when picked but could be taken before the server binds it: try another.
    for (let attempt = 1; ; attempt++) {
      port = await freeTcpPort();
      try {
        await serverStart();
        break;
      } catch (err) {
        if (attempt >= 3 || !/could not bind|Address already in use/.test((err as Error).message)) throw err;
      }
    }
    admin = await adminClient();
  } catch (err) {
    stopSync();
    stopped = true;
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  // Why: the first start and a start after crash() must run the server exactly alike (same options, same port).
  async function serverStart(): Promise<void> {
    const opts = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50`;
    try {
      await run(as, [pgCtl, "-D", data, "-l", path.join(dir, "server.log"), "-o", opts, "-w", "-t", "60", "start"], 70_000);
    } catch (err) {
      const log = fs.existsSync(path.join(dir, "server.log")) ? fs.readFileSync(path.join(dir, "server.log"), "utf8") : "";
      throw new Error(`${(err as Error).message}\nserver log:\n${log}`, { cause: err });
    }
  }
  async function adminClient(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: url("postgres") });
    // Why: a session the server cuts emits 'error'; unheard, it would end the test process.
    c.on("error", () => undefined);
    await c.connect();
    return c;
  }
  function url(database: string): string {
    return `postgres://${user}:${password}@127.0.0.1:${port}/${database}`;
  }
  let crashed = false;
  let databases = 0;
  return {
    password,
    url,
    async createDatabase() {
      const name = `sds_test_${++databases}`;
      await admin!.query(`CREATE DATABASE ${name}`);
      return url(name);
    },
    async waitingAdvisoryLocks(of: string) {
      const { rows } = await admin!.query(
        "SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = $1",
        [new URL(of).pathname.slice(1)],
      );
      return rows[0].n as number;
    },
    get port() {
      return port;
    },
    async crash() {
      if (stopped || crashed) return;
      const a = admin;
      admin = undefined;
      await a?.end().catch(() => undefined);
      await run(as, [pgCtl, "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"], 40_000);
      crashed = true;
    },
    async start() {
      if (stopped) throw new Error("test setup: this PostgreSQL cluster was stopped and removed; it cannot start again");
      if (!crashed) return;
      await serverStart();
      crashed = false;
      admin = await adminClient();
    },
    async stop() {
      if (stopped) return;
      await admin?.end().catch(() => undefined);
      await run(as, [path.join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"], 40_000).catch(() => stopSync());
      stopped = true;
      process.removeListener("exit", stopSync);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
