/**
 * Data-path harness: a real controller with real tgtd/nbdkit on free ports, and the initiator
 * side done with real tools (qemu-io with libiscsi, qemu-io over NBD). Root only.
 */
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Attachments, type ConnectionInfo } from "../../provider/src/controller/attachments";
import { type BackendConfig, backendsSchema } from "../../provider/src/domain/backend";
import { Controller } from "../../provider/src/controller/controller";
import { SecretBox } from "../../provider/src/controller/secret-box";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import type { Store } from "../../provider/src/store/store";
import { localTargets } from "../../provider/src/targets/local-targets";
import { freeTcpPort } from "../helpers/daemons";

/** Why the data-path tests cannot run here, or undefined when they can. */
export function cannotRun(): string | undefined {
  if (process.getuid?.() !== 0) return "data-path tests need root (tgtd, nbdkit)";
  for (const c of ["tgtd", "tgtadm", "nbdkit", "qemu-io", "iscsi-ls"]) {
    try {
      execFileSync("which", [c], { stdio: "ignore" });
    } catch {
      return `data-path tests need ${c} (Debian packages: npm test installs them as root)`;
    }
  }
  return undefined;
}


export interface Env {
  dir: string;
  store: Store;
  controller: Controller;
  attachments: Attachments;
  portal: string;
  /** Attachments on the env's store; `lockScope` "host" or "none" only for the races' negative runs. */
  make(lockScope?: "target" | "host" | "none"): Attachments;
  /** The tgtd of the env's portal (iSCSI envs). */
  targets: ReturnType<typeof localTargets>;
  close(): Promise<void>;
}

export interface EnvOptions {
  protocol: "iscsi" | "nbd";
  sharedTargets: boolean;
  chap?: boolean;
  /**
   * The state, when not the default SQLite file in the env's folder (a PostgresStore shared with
   * other processes); the env closes it. `secretKey` (base64) then seals CHAP passwords.
   */
  store?: Store;
  secretKey?: string;
}

/** The env's one backend "b1" (a file pool in `dir`, exported on `portal`): what a second process on the same env loads too. */
export function envBackends(dir: string, portal: string, o: Pick<EnvOptions, "protocol" | "sharedTargets" | "chap">): BackendConfig[] {
  return backendsSchema.parse([
    {
      name: "b1",
      driver: "file",
      sharedTargets: o.sharedTargets,
      export: { protocol: o.protocol, portal, chap: o.chap ?? false },
      pools: [{ name: "p1", path: path.join(dir, "pool"), totalCapacityGib: 100, multiAttach: true }],
    },
  ]);
}

export async function makeEnv(o: EnvOptions): Promise<Env> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-datapath-"));
  const store = o.store ?? new SqliteStore(path.join(dir, "state.db"));
  const port = await freeTcpPort();
  const portal = `127.0.0.1:${port}`;
  const backends = envBackends(dir, portal, o);
  const controller = new Controller({ store, backends });
  await controller.discover();
  const runDir = path.join(dir, "run");
  const box = SecretBox.forState(o.secretKey !== undefined ? { secretKey: o.secretKey } : { sqliteFile: path.join(dir, "state.db") });
  const targets = localTargets(runDir);
  const make = (lockScope: "target" | "host" | "none" = "target") => new Attachments({ store, controller, targets, box, exportLockScope: lockScope });
  const attachments = make();
  return {
    dir,
    store,
    controller,
    attachments,
    portal,
    make,
    targets,
    async close() {
      for (const a of await store.listAttachments()) await attachments.detach(a.id).catch(() => undefined);
      if (o.protocol === "iscsi") await targets.iscsi(portal).stop().catch(() => undefined);
      else for (const s of await targets.nbd("127.0.0.1").list()) await targets.nbd("127.0.0.1").removeServer(s.server).catch(() => undefined);
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface IoResult {
  ok: boolean;
  output: string;
}

/** Run qemu-io against a connection (as the initiator `initiator`), e.g. `write -P 0xab 0 1M`. */
export function qemuIo(info: ConnectionInfo, command: string, o: { initiator?: string; readOnly?: boolean; password?: string; user?: string } = {}): Promise<IoResult> {
  const args: string[] = [];
  let opts: string;
  if (info.protocol === "iscsi") {
    opts = `driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=${info.portals[0]},file.target=${info.targetIqn},file.lun=${info.targetLun}`;
    if (o.initiator) opts += `,file.initiator-name=${o.initiator}`;
    const user = o.user ?? info.authUsername;
    const password = o.password ?? info.authPassword;
    if (user && password) {
      args.push("--object", `secret,id=chap0,data=${password}`);
      opts += `,file.user=${user},file.password-secret=chap0`;
    }
  } else {
    const [host, port] = info.portals[0].split(":");
    opts = `driver=raw,file.driver=nbd,file.host=${host},file.port=${port},file.export=${info.exportName}`;
  }
  if (o.readOnly) args.push("-r");
  args.push("--image-opts", opts, "-c", command);
  return new Promise((resolve) => {
    execFile("qemu-io", args, { timeout: 30_000 }, (err, stdout, stderr) => {
      const output = `${stdout}${stderr}`;
      resolve({ ok: !err && !/error|fail|can't|Pattern verification failed/i.test(output), output });
    });
  });
}

/** nbdkit, tgtd, qemu-nbd and nbdfuse processes still running whose command line mentions `needle`. */
export function processesMentioning(needle: string): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      if (cmd.includes(needle) && /nbdkit|tgtd|qemu-nbd|nbdfuse/.test(cmd)) out.push(`${pid}: ${cmd}`);
    } catch {
      // gone
    }
  }
  return out;
}
