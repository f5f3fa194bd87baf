/**
 * The iSCSI connector.
 *
 * - kernel (iscsiadm on PATH and /sys/module/iscsi_tcp): discovery, a bounded
 *   `node.session.timeo.replacement_timeout` (I/O fails after it while the target is away,
 *   instead of open-iscsi's 120 s; the session keeps reconnecting), CHAP on the node record
 *   (password masked), login; the device is /dev/disk/by-path/ip-PORTAL-iscsi-IQN-lun-N
 *   (`blockdev --setro` for read-only); logout when no other record uses the same target.
 * - userspace (no kernel initiator): qemu-nbd logs in through libiscsi and serves the LUN on a
 *   unix socket; nbdfuse makes it a file; losetup makes the file a block device:
 *     qemu-nbd --fork --persistent --pid-file <run>/<id>-<mode>.qemu-nbd.pid -k <run>/<id>-<mode>.sock [-r]
 *              [--object secret,id=sdschap,file=<run>/<id>-<mode>.secret] --image-opts
 *              driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=P,file.target=IQN,
 *              file.lun=N,file.initiator-name=I[,file.user=U,file.password-secret=sdschap]
 *     nbdfuse [-r] -P <pidfile> <stateDir>/iscsi/mnt/<id>-<mode>/disk --unix <sock>   (detached)
 *     losetup -f --show [--read-only] <stateDir>/iscsi/mnt/<id>-<mode>/disk
 *   The CHAP password goes to qemu-nbd in a 0600 file removed as soon as qemu-nbd has started
 *   (never in argv, never in a record).
 * A target daemon that crashed and came back: see path-health.ts (checkVolume, fenceVolume, and
 * connectVolume's repair under the same device).
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { BackendError, CommandFailedError, invalidInput } from "../errors";
import type { Connection, PathHealth, VolumePath } from "./connector";
import { BaseConnector, type ConnectorOptions, orphanLoops } from "./base-connector";
import { type DaemonRecord, startDaemon } from "../exec/daemons";
import { attemptName, type FusePaths, fuseLoop, fusePaths, keepOrRepair, refreshFuseLoop, startFuse, teardownFuseLoop } from "./fuse-chain";
import { checkFuseChain, lastLine, PROBE_TIMEOUT_MS, type TargetProbe } from "./path-health";
import { type Host, initiatorName } from "./host";
import { type ConnectionRecord, modeOf, newRecord, pathOf, type Teardown } from "./records";

/**
 * iscsiadm's exit codes sds branches on (open-iscsi include/iscsi_err.h). Why the exit code and
 * not the text: iscsiadm's words change between versions, its codes do not.
 */
const ISCSI_ERR_SESS_EXISTS = 15;
const ISCSI_ERR_NO_OBJS_FOUND = 21;

/** Default `node.session.timeo.replacement_timeout` of the kernel path, in seconds. */
export const REPLACEMENT_TIMEOUT_S = 15;

export interface IscsiConnectorOptions extends ConnectorOptions {
  /** Force the kernel initiator or the userspace path; default: kernel when the probe finds it. */
  mode?: "kernel" | "userspace";
  /** Initiator name; default from /etc/iscsi/initiatorname.iscsi or one of our own. */
  initiator?: string;
  /**
   * Kernel path: seconds a lost session waits for the target before I/O fails with EIO (the
   * session keeps trying and I/O works again once it is back). Default {@link REPLACEMENT_TIMEOUT_S}.
   */
  replacementTimeoutS?: number;
}

export class IscsiConnector extends BaseConnector {
  readonly protocol = "iscsi";
  readonly mode: "kernel" | "userspace";
  private readonly initiator?: string;
  private readonly replacementTimeoutS: number;

  constructor(options: IscsiConnectorOptions = {}) {
    super(options);
    this.mode = options.mode ?? (this.capabilities().iscsiKernel ? "kernel" : "userspace");
    this.initiator = options.initiator;
    this.replacementTimeoutS = options.replacementTimeoutS ?? REPLACEMENT_TIMEOUT_S;
    if (!Number.isInteger(this.replacementTimeoutS) || this.replacementTimeoutS < 1) throw invalidInput("replacementTimeoutS", `must be a whole number of seconds ≥ 1, got ${this.replacementTimeoutS}`);
  }

  getSearchPath(): string {
    return this.mode === "kernel" ? "/dev/disk/by-path" : this.host.stateDir;
  }

  async getConnectorProperties() {
    const p = await super.getConnectorProperties();
    return this.initiator ? { ...p, initiator: this.initiator } : p;
  }

  private initiatorName(): string {
    return this.initiator ?? initiatorName(this.host.fsRoot, this.options.hostname ?? os.hostname());
  }

  async connectVolume(c: Connection): Promise<{ path: string }> {
    const t = iscsiTarget(c);
    const mode = modeOf(c);
    const rec = this.host.records.read(c.volumeId, mode);
    if (rec && (await this.livePaths(rec)).length) {
      // kernel: the session reconnects by itself (replacement_timeout bounds the wait meanwhile)
      if (rec.via === "kernel") return { path: rec.device };
      // the device is there: keep it, and put a whole chain back under it when the old one broke
      return { path: await keepOrRepair(this.host, "iscsi", c, rec, (p, keep) => this.startChain(c, t, p, keep)) };
    }
    if (rec) await this.teardown(rec, true, c.authPassword ? [c.authPassword] : []).catch(() => undefined);
    return this.mode === "kernel" ? this.connectKernel(c, t) : this.connectUserspace(c, t);
  }

  private async connectKernel(c: Connection, t: IscsiTargetInfo): Promise<{ path: string }> {
    const secrets = c.authPassword ? [c.authPassword] : [];
    const node = ["-m", "node", "-T", t.iqn, "-p", t.portal];
    await this.host.run("iscsiadm", ["-m", "discovery", "-t", "sendtargets", "-p", t.portal], { secrets });
    await this.host.run("iscsiadm", [...node, "--op", "update", "-n", "node.session.timeo.replacement_timeout", "-v", String(this.replacementTimeoutS)], { secrets });
    if (c.authMethod === "CHAP") {
      const update = (name: string, value: string) => this.host.run("iscsiadm", [...node, "--op", "update", "-n", name, "-v", value], { secrets });
      await update("node.session.auth.authmethod", "CHAP");
      await update("node.session.auth.username", c.authUsername ?? "");
      await update("node.session.auth.password", c.authPassword ?? "");
    }
    const device = `/dev/disk/by-path/ip-${t.portal}-iscsi-${t.iqn}-lun-${t.lun}`;
    try {
      await this.host.run("iscsiadm", [...node, "--login"], { secrets });
    } catch (err) {
      // A session to this target exists already (another LUN or mode of it).
      if (!(err instanceof CommandFailedError && err.exitCode === ISCSI_ERR_SESS_EXISTS)) throw err;
    }
    await this.host.waitUntil(`${device} to appear`, () => this.host.exists(device));
    if (c.readOnly) await this.host.run("blockdev", ["--setro", device]);
    this.host.records.write(newRecord(c, "kernel", device, { portal: t.portal, targetIqn: t.iqn, targetLun: t.lun }));
    return { path: device };
  }

  private async connectUserspace(c: Connection, t: IscsiTargetInfo): Promise<{ path: string }> {
    const q = await this.startQemuNbd(c, t, fusePaths(this.host, "iscsi", c));
    const device = await fuseLoop(this.host, "iscsi", c, nbdfuseCommand(c, q.socket), { ...q, portal: t.portal, targetIqn: t.iqn, targetLun: t.lun });
    return { path: device };
  }

  /** qemu-nbd logged in to the LUN through libiscsi, serving it on a unix socket in `p`'s run folder. */
  private async startQemuNbd(c: Connection, t: IscsiTargetInfo, p: FusePaths): Promise<{ qemuNbdPid: number; socket: string }> {
    fs.mkdirSync(p.runDir, { recursive: true, mode: 0o700 });
    // Names of this attempt alone: a retry after a crash must not overwrite the pidfile (or
    // socket) of a qemu-nbd the crashed attempt left running, or nothing would name it any more.
    const name = attemptName(p.name);
    const socket = socketPath(p.runDir, name);
    const qemuPidFile = path.join(p.runDir, `${name}.qemu-nbd.pid`);
    const secretFile = path.join(p.runDir, `${name}.secret`);
    const esc = (v: string) => v.replace(/,/g, ",,"); // qemu option values double their commas
    const opts = [
      "driver=raw",
      "file.driver=iscsi",
      "file.transport=tcp",
      `file.portal=${esc(t.portal)}`,
      `file.target=${esc(t.iqn)}`,
      `file.lun=${t.lun}`,
      `file.initiator-name=${esc(this.initiatorName())}`,
    ];
    const args = ["--fork", "--persistent", "--pid-file", qemuPidFile, "-k", socket, ...(c.readOnly ? ["-r"] : [])];
    if (c.authMethod === "CHAP") {
      fs.writeFileSync(secretFile, c.authPassword ?? "", { mode: 0o600 });
      fs.chmodSync(secretFile, 0o600);
      opts.push(`file.user=${esc(c.authUsername ?? "")}`, "file.password-secret=sdschap");
      args.push("--object", `secret,id=sdschap,file=${secretFile}`);
    }
    let record: DaemonRecord;
    try {
      // Recorded first, then in a session of its own (setsid): the device must outlive the provider plugin, the CLI and the agent.
      const daemon = { kind: "qemu-nbd", name, file: "qemu-nbd", args: [...args, "--image-opts", opts.join(",")], pidFile: qemuPidFile, socket };
      record = await startDaemon(this.host.run, this.host.daemons, daemon, { secrets: c.authPassword ? [c.authPassword] : [], timeoutMs: 60_000 });
    } finally {
      fs.rmSync(secretFile, { force: true });
    }
    const qemuNbdPid = Number(fs.readFileSync(qemuPidFile, "utf8").trim());
    this.host.daemons.write({ ...record, pid: qemuNbdPid });
    fs.rmSync(qemuPidFile, { force: true }); // the record and the connection's keep the pid
    return { qemuNbdPid, socket };
  }

  protected async teardownSteps(t: Teardown, rec: ConnectionRecord, force: boolean): Promise<void> {
    if (rec.via === "kernel") {
      const others = this.host.records
        .list("iscsi")
        .filter((r) => r.via === "kernel" && r.portal === rec.portal && r.targetIqn === rec.targetIqn && !(r.volumeId === rec.volumeId && r.mode === rec.mode));
      if (!others.length && rec.portal && rec.targetIqn) {
        const node = ["-m", "node", "-T", rec.targetIqn, "-p", rec.portal];
        await t.step("iscsiadm --logout", async () => {
          try {
            await this.host.run("iscsiadm", [...node, "--logout"]);
          } catch (err) {
            // No session (already logged out).
            if (!(err instanceof CommandFailedError && err.exitCode === ISCSI_ERR_NO_OBJS_FOUND)) throw err;
          }
        });
      }
    } else {
      await teardownFuseLoop(this.host, t, rec, force);
    }
  }

  protected async livePaths(rec: ConnectionRecord): Promise<VolumePath[]> {
    if (rec.via === "kernel") return this.host.exists(rec.device) ? [pathOf(rec)] : [];
    return this.liveLoop(rec);
  }

  protected async orphanPaths(explained: Set<string>): Promise<VolumePath[]> {
    return orphanLoops(this.host, "iscsi", explained, path.join(this.host.stateDir, "iscsi"));
  }

  /**
   * The target must report the new size already (IscsiTarget.refreshLun).
   * - kernel: live, the device may be in use (os-brick's extend_volume): `iscsiadm -m node -T IQN
   *   -p PORTAL --rescan`, then `1` into /sys/block/sdX/device/rescan (sdX behind the by-path
   *   link: the sd driver re-reads the capacity), then the size;
   * - userspace: qemu-nbd, like nbdfuse, reads the size once, at login: a new qemu-nbd and nbdfuse
   *   in the other slot, then the loop device moves to them (see nbd-connector's
   *   refreshFuseLoop). The device must not be in use; the connection info must carry the CHAP
   *   password (a new login).
   */
  async extendVolume(c: Connection): Promise<number> {
    const rec = await this.liveRecord(c);
    if (rec.via === "kernel") {
      await this.host.run("iscsiadm", ["-m", "node", "-T", rec.targetIqn ?? "", "-p", rec.portal ?? "", "--rescan"]);
      fs.writeFileSync(this.scsiRescanFile(rec.device), "1");
      return this.host.deviceSize(rec.device);
    }
    const t = iscsiTarget(c);
    return refreshFuseLoop(this.host, "iscsi", c, rec, (p, keep) => this.startChain(c, t, p, keep));
  }

  /** qemu-nbd, then nbdfuse over its socket, in the slot `p`; each handed to `keep` as it starts. */
  private async startChain(c: Connection, t: IscsiTargetInfo, p: FusePaths, keep: (l: Partial<ConnectionRecord>) => void): Promise<void> {
    const q = await this.startQemuNbd(c, t, p);
    keep(q);
    await startFuse(this.host, p, nbdfuseCommand(c, q.socket), keep);
  }

  /**
   * Kernel: the disk behind the by-path link exists and its SCSI state is `running` (sysfs, no
   * command). Userspace: the chain (path-health.ts), the target probed by a login of its own.
   * Why the kernel path needs no probe of its own: a lost session shows in the SCSI state.
   */
  /** The userspace chain waits forever for a lost target: the health loop probes it from the record. */
  protected connectionOfRecord(rec: ConnectionRecord): Connection | undefined {
    if (!rec.portal || !rec.targetIqn) return undefined;
    // authMethod CHAP without a password: no login probe, the read through the chain judges.
    return { protocol: "iscsi", portals: [rec.portal], targetIqn: rec.targetIqn, targetLun: rec.targetLun, authMethod: "CHAP", readOnly: rec.mode === "ro", volumeId: rec.volumeId };
  }

  protected async checkRecord(rec: ConnectionRecord, c: Connection): Promise<PathHealth> {
    if (rec.via !== "kernel") {
      // CHAP without the password (a caller that does not hold it): the read through the chain judges the target alone
      const canLogIn = c.authMethod !== "CHAP" || !!c.authPassword;
      return checkFuseChain(this.host, rec, canLogIn ? targetProbe(this.host, iscsiTarget(c), c, this.initiatorName()) : async () => undefined);
    }
    const bad = (reason: string): PathHealth => ({ path: rec.device, healthy: false, reason });
    if (!this.host.exists(rec.device)) return bad(`${rec.device} is gone (no iSCSI session for it)`);
    let state: string;
    try {
      state = fs.readFileSync(this.host.sys(`/sys/block/${path.basename(fs.realpathSync(this.host.sys(rec.device)))}/device/state`), "utf8").trim();
    } catch {
      return { path: rec.device, healthy: true }; // no SCSI state to read: the device is all we know
    }
    return state === "running" ? { path: rec.device, healthy: true } : bad(`the SCSI disk behind ${rec.device} is ${state} (the iSCSI session to ${rec.portal} is down)`);
  }

  /** /sys/block/sdX/device/rescan of the SCSI disk behind a by-path link. */
  private scsiRescanFile(device: string): string {
    let disk: string;
    try {
      disk = path.basename(fs.realpathSync(this.host.sys(device)));
    } catch (err) {
      throw new BackendError("COMMAND_FAILED", `cannot find the SCSI disk behind ${device}: ${(err as Error).message}`, true);
    }
    const file = this.host.sys(`/sys/block/${disk}/device/rescan`);
    if (!fs.existsSync(file)) throw new BackendError("COMMAND_FAILED", `${device} is ${disk}, which has no SCSI rescan file (${file})`, false);
    return file;
  }
}

/**
 * A login of its own to the LUN (`iscsi-readcapacity16 -s -i INITIATOR iscsi://PORTAL/IQN/LUN`,
 * bounded): CHAP user and password reach libiscsi through LIBISCSI_CHAP_USERNAME/PASSWORD in
 * its environment, never in argv. Why not through qemu-nbd's socket: qemu-nbd serves one client,
 * nbdfuse.
 */
function targetProbe(host: Host, t: IscsiTargetInfo, c: Connection, initiator: string): TargetProbe {
  const env: Record<string, string> = c.authMethod === "CHAP" ? { LIBISCSI_CHAP_USERNAME: c.authUsername ?? "", LIBISCSI_CHAP_PASSWORD: c.authPassword ?? "" } : {};
  const secrets = c.authPassword ? [c.authPassword] : [];
  return async () => {
    try {
      await host.run("iscsi-readcapacity16", ["-s", "-i", initiator, `iscsi://${t.portal}/${t.iqn}/${t.lun}`], { timeoutMs: PROBE_TIMEOUT_MS, env, secrets });
      return undefined;
    } catch (err) {
      return `iSCSI target ${t.iqn} at ${t.portal} does not answer: ${lastLine((err as Error).message)}`;
    }
  };
}

/** nbdfuse's argv over qemu-nbd's unix socket (what startFuse runs). */
function nbdfuseCommand(c: Connection, socket: string) {
  return (file: string, pidFile: string): [string, string[]] => ["nbdfuse", [...(c.readOnly ? ["-r"] : []), "-P", pidFile, file, "--unix", socket]];
}

interface IscsiTargetInfo {
  portal: string;
  iqn: string;
  lun: number;
}

function iscsiTarget(c: Connection): IscsiTargetInfo {
  if (c.protocol !== "iscsi") throw invalidInput("protocol", `the iSCSI connector cannot connect ${c.protocol}`);
  const portal = c.portals[0];
  if (!portal || !/^.+:\d+$/.test(portal)) throw invalidInput("portals", `an iSCSI connection needs a portal "ip:port", got ${JSON.stringify(portal)}`);
  if (!c.targetIqn) throw invalidInput("targetIqn", "an iSCSI connection needs the target IQN");
  if (c.authMethod === "CHAP" && (!c.authUsername || !c.authPassword)) throw invalidInput("authUsername", "CHAP needs a user name and a password");
  return { portal, iqn: c.targetIqn, lun: c.targetLun ?? 0 };
}

/**
 * A unix socket path must fit in sun_path (108 bytes with its NUL): under a deep state folder the
 * natural name does not, so it becomes a short name in /run/sds-sockets, unique per (folder, name).
 */
export function socketPath(runDir: string, name: string): string {
  const natural = path.join(runDir, `${name}.sock`);
  if (Buffer.byteLength(natural) <= 100) return natural;
  const dir = "/run/sds-sockets";
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return path.join(dir, `${createHash("sha256").update(natural).digest("hex").slice(0, 24)}.sock`);
}
