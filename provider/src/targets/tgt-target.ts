/**
 * iSCSI through Linux tgt: `tgtd` is the daemon; we manage it the way `tgtadm` does, but over its
 * unix socket ourselves ({@link TgtadmClient}): no process per operation, and no CHAP password in
 * any process's argv. One tgtd per control port (`tgtd -C N`, a unix socket
 * `/var/run/tgtd/socket.N`), so several backends and tests run side by side. What tgtd does not
 * say by itself, and how we cope:
 * - a second `tgtd -C N` exits 0 though it could not start, and a tgtd whose portal is taken keeps
 *   running without listening: `start` asks the control port first and checks the portal after;
 * - tgtd ignores SIGTERM: `stop` deletes the targets, then asks tgtd to exit (`delete --mode system`);
 * - a LUN cannot be created read-only (`--params` is refused on `new`): it is made read-only right
 *   after, before `ensureLun` returns, and deleted again if that fails;
 * - tgtd reads a LUN's size once, when the LUN is added: `refreshLun` deletes and re-adds it
 *   (same tid/LUN, so the same SCSI id and serial); tgtd refuses to delete a LUN with commands in
 *   flight ("this logical unit is still active"), so the delete is retried briefly;
 * - tgtd never reports a CHAP password, and deleting an account unbinds it everywhere: a hash of
 *   each password we set is kept in `runDir` ({@link ChapHashes}), so `ensureChap` knows whether
 *   the account already has the asked password or must be replaced (and re-bound where it was);
 * - tgtd lists every target it has, whole, for each `show`: an attach lists once
 *   ({@link TgtTarget.ensureExport}) and does only what is missing; a remove sends its op and
 *   takes tgtd's "already gone" for success, without listing first;
 * - checking a password against its hash costs a scrypt (~50 ms of CPU): a password this
 *   object set or checked is remembered (in memory, for this tgtd) and not checked again while
 *   its account stays bound where it was;
 * - other processes (another provider, another stack's state, an agent) manage the same tgtd at
 *   the same moment, and tgtd runs one request at a time: every `ensure*` that loses a race
 *   ("already exists") looks again and adopts what it finds when it is the same thing (same name,
 *   same backing file, same password), and is a CONFLICT when it is not; tids are picked free
 *   and picked again when taken meanwhile.
 *
 * RBD volumes (a path `rbd:pool/image:id=user:conf=file`, domain/rbd-path.ts) are LUNs on tgt's
 * rbd backing store (Debian `tgt-rbd`): `--bstype rbd --backing-store pool/image --bsopts
 * "conf=FILE;id=USER"`; librbd inside tgtd reads the keyring the conf names, nothing secret goes
 * over the socket. tgtd shows such a LUN's `pool/image` but never its bsopts, so the full path
 * each LUN was added with is kept in `runDir` (`tgtd-<port>-rbd/<tid>-<lun>.json`), and `list`
 * reports it, so `ensureLun` stays idempotent and the controller matches LUNs with volumes. A
 * LUN whose record is lost is listed as `rbd:pool/image` and adopted by a path naming the same
 * image. Read-only: as for files, the LUN is made read-only right after it is added, before
 * `ensureExport` puts the initiator in the ACL; tgt has no way to add a LUN read-only, so on a
 * target whose initiators are already logged in (a second ro volume on a shared ro target) the
 * new LUN is writable between two tgtd requests (no initiator sees a LUN it has not rescanned for).
 * Deleting the LUN closes the image in tgtd (its watch goes), so `rbd rm` works after
 * `removeLun`/`removeTarget`.
 */
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { isRbdPath, parseRbdPath, type RbdPath, tgtRbdBacking } from "../domain/rbd-path";
import { BackendError, invalidInput, UserError } from "../errors";
import { DaemonRecords, startDaemon } from "../exec/daemons";
import { run as defaultRun, type Runner } from "../exec/run";
import { procProcesses, type ProcessTable, waitUntil } from "../exec/processes";
import type { Chap, ExportState, IscsiExport, IscsiTarget } from "./target";
import { ChapHashes } from "./tgtadm-chap-hashes";
import { isTgtdError, TgtadmClient, type TgtadmChannel, type TgtadmRequest } from "./tgtadm-client";
import { parseTgtAccounts, parseTgtPortals, parseTgtTargets, type TgtLun, type TgtTargetState } from "./tgtadm-parse";

export { parseTgtAccounts, parseTgtPortals, parseTgtTargets } from "./tgtadm-parse";

const TGTADM_TIMEOUT_MS = 30_000;
/** Backoff between deletes of a LUN tgtd says is busy: six tries over about 3 s. */
const LUN_BUSY_RETRY_MS = [100, 200, 400, 800, 1600];
/** How often `ensureTarget` picks another tid when the one it picked was taken meanwhile. */
const TID_TRIES = 8;
/**
 * Why wait: a process that just created a CHAP account remembers its password's hash right
 * after; a racer that lost waits this long (about 1.5 s) to see whether the password is ours.
 */
const CHAP_RACE_WAIT_MS = [50, 100, 200, 400, 800];
const DAEMON_TIMEOUT_MS = 10_000;

/** Options of {@link TgtTarget}. */
export interface TgtTargetOptions {
  /** tgtd's management channel number (`tgtd -C N`, 0-32767); one per daemon. */
  controlPort: number;
  /** `ip:port` initiators log in to. */
  portal: string;
  /** Folder for tgtd's pidfile, its daemon record (`daemons/`) and the CHAP password hashes (e.g. /run/sds). */
  runDir: string;
  /** Command runner: starts tgtd, nothing else (tests pass a recorder). */
  run?: Runner;
  /** tgtd's management channel (tests pass a recorder). Default: a {@link TgtadmClient} on `controlPort`. */
  tgtadm?: TgtadmChannel;
  /** Process table (tests pass a fake). */
  processes?: ProcessTable;
  /** How to wait between retries (tests pass a recorder). Default: setTimeout. */
  sleep?: (ms: number) => Promise<void>;
}

const IQN = /^(iqn\.\d{4}-\d{2}\.[^\s,]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$/;
const CHAP_USER = /^[A-Za-z0-9._@:-]{1,255}$/;

/** iSCSI session parameters set on every new target (negotiated at login; RFC 7143 names). */
export const SESSION_PARAMS: ReadonlyArray<[string, string]> = [
  ["MaxRecvDataSegmentLength", "1048576"],
  ["MaxXmitDataSegmentLength", "1048576"],
  ["FirstBurstLength", "1048576"],
  ["MaxBurstLength", "16776192"],
  ["InitialR2T", "No"],
];

/** The {@link IscsiTarget} of one tgtd, managed over its socket. */
export class TgtTarget implements IscsiTarget {
  readonly protocol = "iscsi";
  readonly portal: string;
  readonly controlPort: number;
  private readonly runDir: string;
  private readonly run: Runner;
  private readonly channel: TgtadmChannel;
  private readonly processes: ProcessTable;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly records: DaemonRecords;
  private readonly chapHashes: ChapHashes;
  /** The RBD path each rbd LUN was added with (tgtd never shows its bsopts). */
  private readonly rbdLuns: RbdLunRecords;
  /** The start in flight: concurrent callers (50 attaches on unique targets) share it and launch ONE tgtd. */
  private starting?: Promise<void>;
  /** CHAP passwords known to match the remembered hash of their account (set or checked by this object), by account. */
  private readonly chapVerified = new Map<string, string>();

  constructor(options: TgtTargetOptions) {
    // tgtd and tgtadm take -C as a signed short.
    if (!Number.isInteger(options.controlPort) || options.controlPort < 0 || options.controlPort > 32767) throw invalidInput("controlPort", `must be 0-32767, got ${options.controlPort}`);
    if (!/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$/.test(options.portal)) throw invalidInput("portal", `must be ip:port, got "${options.portal}"`);
    this.controlPort = options.controlPort;
    this.portal = options.portal;
    this.runDir = options.runDir;
    this.run = options.run ?? defaultRun;
    this.channel = options.tgtadm ?? new TgtadmClient({ controlPort: options.controlPort, timeoutMs: TGTADM_TIMEOUT_MS });
    this.processes = options.processes ?? procProcesses;
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.records = new DaemonRecords(path.join(this.runDir, "daemons"));
    this.chapHashes = new ChapHashes(path.join(this.runDir, `tgtd-${this.controlPort}-chap.json`));
    this.rbdLuns = new RbdLunRecords(path.join(this.runDir, `tgtd-${this.controlPort}-rbd`));
  }

  /** tgtd's pidfile. */
  get pidFile(): string {
    return path.join(this.runDir, `tgtd-${this.controlPort}.pid`);
  }

  /** One ask (`show portal`) when tgtd runs: it says both that tgtd answers and where it listens. */
  start(): Promise<void> {
    this.starting ??= this.startOnce().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async startOnce(): Promise<void> {
    const portals = await this.portals();
    if (portals) return this.checkPortal(portals, false);
    await fs.mkdir(this.runDir, { recursive: true });
    const args = ["-C", String(this.controlPort), "--iscsi", `portal=${this.portal}`, "-p", this.pidFile];
    await startDaemon(this.run, this.records, { kind: "tgtd", name: String(this.controlPort), file: "tgtd", args, pidFile: this.pidFile }, { timeoutMs: DAEMON_TIMEOUT_MS });
    let answer: string[] | undefined;
    await waitUntil(`tgtd on control port ${this.controlPort} to answer`, async () => (answer = await this.portals()) !== undefined);
    await this.checkPortal(answer!, true);
  }

  async stop(): Promise<void> {
    if (await this.answering()) {
      for (const t of await this.list()) await this.tgtadm({ op: "delete", mode: "target", tid: t.tid!, force: true }).catch(ignoreTgtd("NO_TARGET"));
      await this.tgtadm({ op: "delete", mode: "system" });
    }
    const ours = async () => (await this.processes.list()).filter((p) => this.isOurDaemon(p.argv));
    try {
      await waitUntil(`tgtd on control port ${this.controlPort} to exit`, async () => (await ours()).length === 0);
    } catch {
      // Hung or not answering: end it the hard way (it ignores SIGTERM).
      for (const p of await ours()) this.processes.kill(p.pid, "SIGKILL");
      await waitUntil(`tgtd on control port ${this.controlPort} to exit after SIGKILL`, async () => (await ours()).length === 0);
    }
    await fs.rm(this.pidFile, { force: true });
    await this.rbdLuns.clear();
    this.records.remove("tgtd", String(this.controlPort));
  }

  /**
   * The target named `iqn`, found or made. `tid` is a hint (the tid a caller stored earlier): used
   * when free, otherwise another free tid is picked. Always returns the target's real tid.
   */
  async ensureTarget(iqn: string, tid?: number): Promise<number> {
    return (await this.targetFound(iqn, tid)).target.tid!;
  }

  /**
   * The target named `iqn`, found or made, as listed (a new one: empty), with the listing of
   * every target it was found in (undefined when made: the caller has nothing else to learn).
   */
  private async targetFound(iqn: string, tid?: number): Promise<{ target: ExportState; all?: ExportState[] }> {
    checkIqn("iqn", iqn);
    if (tid !== undefined) checkPositive("tid", tid);
    let hint = tid;
    for (let attempt = 1; ; attempt++) {
      const targets = await this.list();
      const same = targets.find((t) => t.name === iqn);
      if (same) return { target: same, all: targets };
      const used = new Set(targets.map((t) => t.tid!));
      const newTid = hint !== undefined && !used.has(hint) ? hint : Math.max(0, ...used) + 1;
      try {
        await this.tgtadm({ op: "new", mode: "target", tid: newTid, targetname: iqn });
      } catch (err) {
        // tgtd says the same for a taken tid and a taken name: look again (the name may be ours now).
        if (!isTgtdError(err, "TARGET_EXIST")) throw err;
        if (attempt >= TID_TRIES) throw new BackendError("COMMAND_FAILED", `target ${iqn}: each of ${TID_TRIES} free tids picked was taken before it could be used`, true, { cause: err });
        hint = undefined;
        continue;
      }
      // Before any login: tgtd's defaults (8 KiB data segments, 64 KiB first burst, InitialR2T)
      // cut a 1 MiB write into ~128 PDUs with R2T round trips; these made libiscsi writes ~3x
      // faster and halved tgtd's CPU per GiB (bench/datapath).
      for (const [name, value] of SESSION_PARAMS) await this.tgtadm({ op: "update", mode: "target", tid: newTid, name, value });
      return { target: { name: iqn, tid: newTid, luns: [], initiators: [], chapUsers: [], sessions: 0 } };
    }
  }

  /**
   * One attachment's export from one listing: the target found or made, then only what it
   * lacks (LUN, ACL entry, CHAP binding), each step as its `ensure*` does it, races included.
   */
  async ensureExport(e: IscsiExport): Promise<number> {
    checkPositive("lun", e.lun);
    checkIqn("initiatorIqn", e.initiator);
    if (e.chap) checkChap(e.chap);
    const { target, all } = await this.targetFound(e.iqn, e.tid);
    const tid = target.tid!;
    await e.onTarget?.(tid);
    await this.ensureLunIn(target, e.lun, backingOf(e.path), e.readOnly);
    if (!target.initiators.includes(e.initiator)) await this.bindInitiator(tid, e.initiator);
    if (e.chap) await this.ensureChapIn(tid, e.chap, target, all);
    return tid;
  }

  async ensureLun(tid: number, lun: number, backingPath: string, readOnly: boolean): Promise<void> {
    checkPositive("lun", lun); // LUN 0 is tgt's controller
    await this.ensureLunIn(await this.mustFind(tid), lun, backingOf(backingPath), readOnly);
  }

  /** {@link ensureLun} on `target` as just listed. */
  private async ensureLunIn(target: ExportState, lun: number, backing: Backing, readOnly: boolean): Promise<void> {
    const tid = target.tid!;
    const have = target.luns.find((l) => l.lun === lun);
    if (have) return this.adoptLun(target, have, backing, readOnly);
    await mustExist(backing);
    try {
      if (backing.rbd) {
        await this.tgtadm({ op: "new", mode: "logicalunit", tid, lun, ...tgtBacking(backing.rbd) }).catch((err: unknown) => {
          if (isTgtdError(err, "LUN_EXIST")) throw err;
          throw new BackendError("COMMAND_FAILED", `tgtd could not open RBD image ${tgtBacking(backing.rbd!).backingStore} as user ${backing.rbd!.user} with ${backing.rbd!.conf} (does the image exist, and does the conf reach the cluster?): ${(err as Error).message}`, false, { cause: err });
        });
        // After, not before: a racer's LUN on the same number must keep its record. Until this is
        // written, a listing shows the LUN as `rbd:pool/image`, which the same path still adopts.
        await this.rbdLuns.remember(target.name, tid, lun, backing.path);
      } else {
        await this.tgtadm({ op: "new", mode: "logicalunit", tid, lun, backingStore: backing.path });
      }
    } catch (err) {
      if (!isTgtdError(err, "LUN_EXIST")) throw err;
      // Added by another process meanwhile: ours if it is the same file.
      const raced = (await this.mustFind(tid)).luns.find((l) => l.lun === lun);
      if (!raced) throw err;
      return this.adoptLun(target, raced, backing, readOnly);
    }
    if (!readOnly) return;
    try {
      await this.setReadOnly(tid, lun, true);
    } catch (err) {
      // Never leave writable a LUN that was asked read-only.
      await this.removeLun(tid, lun).catch(() => undefined);
      throw err;
    }
  }

  private async adoptLun(target: ExportState, have: ExportState["luns"][number], backing: Backing, readOnly: boolean): Promise<void> {
    const tid = target.tid!;
    if (!sameBacking(have.path, backing)) throw new UserError("CONFLICT", `tid ${tid} lun ${have.lun} is backed by ${have.path}, not ${backing.path}`, "path");
    // An RBD LUN whose record was lost (listed as `rbd:pool/image`): the same image, recorded again.
    if (backing.rbd && have.path !== backing.path) await this.rbdLuns.remember(target.name, tid, have.lun, backing.path);
    if (have.readOnly !== readOnly) await this.setReadOnly(tid, have.lun, readOnly);
  }

  async refreshLun(tid: number, lun: number, backingPath: string, readOnly: boolean): Promise<void> {
    checkPositive("lun", lun);
    const backing = backingOf(backingPath);
    const have = (await this.mustFind(tid)).luns.find((l) => l.lun === lun);
    if (have) {
      if (!sameBacking(have.path, backing)) throw new UserError("CONFLICT", `tid ${tid} lun ${lun} is backed by ${have.path}, not ${backing.path}`, "path");
      await mustExist(backing); // never delete a LUN that could not be added back
      await this.deleteLunWhenIdle(tid, lun);
    }
    await this.ensureLun(tid, lun, backing.path, readOnly);
  }

  /** Why the retries: tgtd deletes a LUN only between commands; an initiator's I/O makes it wait. */
  private async deleteLunWhenIdle(tid: number, lun: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.tgtadm({ op: "delete", mode: "logicalunit", tid, lun }).catch(ignoreTgtd("NO_LUN"));
        return;
      } catch (err) {
        if (attempt >= LUN_BUSY_RETRY_MS.length || !isTgtdError(err, "LUN_ACTIVE")) throw err;
        await this.sleep(LUN_BUSY_RETRY_MS[attempt]!);
      }
    }
  }

  async ensureInitiator(tid: number, initiatorIqn: string): Promise<void> {
    checkIqn("initiatorIqn", initiatorIqn);
    const target = await this.mustFind(tid);
    if (target.initiators.includes(initiatorIqn)) return;
    await this.bindInitiator(tid, initiatorIqn);
  }

  /** An ACL entry is just the name: one bound meanwhile by another process is the same thing. */
  private bindInitiator(tid: number, initiatorIqn: string): Promise<unknown> {
    return this.tgtadm({ op: "bind", mode: "target", tid, initiatorName: initiatorIqn }).catch(ignoreTgtd("ACL_EXIST"));
  }

  async ensureChap(tid: number, chap: Chap): Promise<void> {
    checkChap(chap);
    await this.ensureChapIn(tid, chap);
  }

  /**
   * {@link ensureChap} on target `tid`; `known` is that target as the caller just listed (or
   * made) it, `listed` every target of that listing (undefined when the target was just made).
   */
  private async ensureChapIn(tid: number, chap: Chap, known?: ExportState, listed?: ExportState[]): Promise<void> {
    let targets = listed ?? (known ? undefined : await this.list());
    const target = known ?? targets!.find((t) => t.tid === tid);
    if (!target) throw new UserError("NOT_FOUND", `iSCSI target tid ${tid} does not exist`, "tid");
    let bound = target.chapUsers.includes(chap.username);
    // Bound here with a password this object set or checked: nothing to ask, nothing to hash.
    if (bound && this.chapVerified.get(chap.username) === chap.password) return;
    const exists = bound || (await this.accounts()).includes(chap.username);
    if (!exists || !(await this.passwordMatchesSoon(chap))) {
      if (exists) {
        // The account has another (or an unknown) password: replace it. Deleting unbinds it
        // from every target, so bind it back where it was.
        targets ??= await this.list();
        const boundTo = targets.filter((t) => t.chapUsers.includes(chap.username)).map((t) => t.tid!);
        await this.tgtadm({ op: "delete", mode: "account", user: chap.username }).catch(ignoreTgtd("NO_USER"));
        await this.newAccount(chap);
        for (const other of boundTo) await this.bindAccount(other, chap.username).catch(ignoreTgtd("NO_TARGET"));
        bound = boundTo.includes(tid);
      } else {
        await this.newAccount(chap);
      }
    }
    if (bound) return;
    await this.bindAccount(tid, chap.username);
  }

  /**
   * {@link passwordMatches}, asked again over {@link CHAP_RACE_WAIT_MS} before answering no: an
   * account another process has just made is in tgtd before its hash is in the file, and
   * replacing it then unbinds it under that process (its bind failed with "can't find the
   * account" when four callers ensured one export at once). Only a real password change waits.
   */
  private async passwordMatchesSoon(chap: Chap): Promise<boolean> {
    for (const ms of [0, ...CHAP_RACE_WAIT_MS]) {
      if (ms) await this.sleep(ms);
      if (await this.passwordMatches(chap)) return true;
    }
    return false;
  }

  /** The remembered hash's verdict, remembered in turn when it says yes (see the file comment). */
  private async passwordMatches(chap: Chap): Promise<boolean> {
    if (this.chapVerified.get(chap.username) === chap.password) return true;
    if (!(await this.chapHashes.matches(chap))) return false;
    this.chapVerified.set(chap.username, chap.password);
    return true;
  }

  /** Create the account (the password travels over tgtd's socket only), or adopt one just made with the same password. */
  private async newAccount(chap: Chap): Promise<void> {
    try {
      await this.tgtadm({ op: "new", mode: "account", user: chap.username, password: chap.password });
    } catch (err) {
      if (!isTgtdError(err, "USER_EXIST")) throw err;
      // Another process made it between our look and our create. Replacing it could unbind it
      // from the target that process is binding it to (a target without CHAP): adopt it only
      // when its password is known to be ours, else leave it and say so.
      if (await this.passwordMatchesSoon(chap)) return;
      throw new UserError("CONFLICT", `CHAP account ${chap.username} was created meanwhile by another process with a password not known to be the asked one; left as is (retry to replace it)`, "chap.username");
    }
    await this.chapHashes.remember(chap);
    this.chapVerified.set(chap.username, chap.password);
  }

  /** Bind an incoming account; tgtd's "this account already exists" here means already bound. */
  private bindAccount(tid: number, user: string): Promise<unknown> {
    return this.tgtadm({ op: "bind", mode: "account", tid, user }).catch(ignoreTgtd("USER_EXIST"));
  }

  async removeInitiator(tid: number, initiatorIqn: string): Promise<void> {
    await this.tgtadm({ op: "unbind", mode: "target", tid, initiatorName: initiatorIqn }).catch(ignoreTgtd("ACL_NOEXIST", "NO_TARGET"));
  }

  async removeLun(tid: number, lun: number): Promise<void> {
    await this.tgtadm({ op: "delete", mode: "logicalunit", tid, lun }).catch(ignoreTgtd("NO_LUN", "NO_TARGET"));
    await this.rbdLuns.forget(tid, lun);
  }

  async removeTarget(tid: number): Promise<void> {
    await this.tgtadm({ op: "delete", mode: "target", tid, force: true }).catch(ignoreTgtd("NO_TARGET"));
    await this.rbdLuns.forget(tid);
  }

  async removeChapAccount(username: string): Promise<void> {
    this.chapVerified.delete(username);
    await this.tgtadm({ op: "delete", mode: "account", user: username }).catch(ignoreTgtd("NO_USER"));
    await this.chapHashes.forget(username);
  }

  /** Every target tgtd has, with its LUNs, ACL, CHAP users and live sessions. */
  async list(): Promise<ExportState[]> {
    const shown = parseTgtTargets(await this.tgtadm({ op: "show", mode: "target" }));
    if (!shown.some((t) => t.luns.some((l) => l.bstype !== undefined))) return shown;
    const records = await this.rbdLuns.read();
    return shown.map((t: TgtTargetState) => ({ ...t, luns: t.luns.map((l) => lunPath(t, l, records)) }));
  }

  /** CHAP account names tgtd knows (bound or not). */
  async accounts(): Promise<string[]> {
    return parseTgtAccounts(await this.tgtadm({ op: "show", mode: "account" }));
  }

  private tgtadm(req: TgtadmRequest): Promise<string> {
    return this.channel.request(req);
  }

  private async answering(): Promise<boolean> {
    return (await this.portals()) !== undefined;
  }

  /** Where tgtd listens, or undefined when it does not answer. */
  private async portals(): Promise<string[] | undefined> {
    try {
      return parseTgtPortals(await this.tgtadm({ op: "show", mode: "portal" }));
    } catch {
      return undefined;
    }
  }

  /** Why: a tgtd whose portal is taken still starts and answers, listening nowhere useful. */
  private async checkPortal(portals: string[], justStarted: boolean): Promise<void> {
    if (portals.includes(this.portal)) return;
    if (justStarted) {
      await this.stop();
      throw new BackendError("COMMAND_FAILED", `tgtd on control port ${this.controlPort} could not listen on ${this.portal} (address in use?)`, false);
    }
    throw new UserError("CONFLICT", `tgtd on control port ${this.controlPort} already runs with portal(s) ${portals.join(", ") || "none"}, not ${this.portal}`, "portal");
  }

  private isOurDaemon(argv: string[]): boolean {
    if (path.basename(argv[0] ?? "") !== "tgtd") return false;
    const i = argv.findIndex((a) => a === "-C" || a === "--control-port");
    return i >= 0 && argv[i + 1] === String(this.controlPort);
  }

  private async mustFind(tid: number): Promise<ExportState> {
    const target = (await this.list()).find((t) => t.tid === tid);
    if (!target) throw new UserError("NOT_FOUND", `iSCSI target tid ${tid} does not exist`, "tid");
    return target;
  }

  private setReadOnly(tid: number, lun: number, readOnly: boolean) {
    return this.tgtadm({ op: "update", mode: "logicalunit", tid, lun, params: `readonly=${readOnly ? 1 : 0}` });
  }
}

/** A catch handler for tgtd errors that mean "already as asked" (removing what is gone, adding what is there). */
function ignoreTgtd(...names: Parameters<typeof isTgtdError>[1][]): (err: unknown) => void {
  return (err) => {
    if (!names.some((n) => isTgtdError(err, n))) throw err;
  };
}

function checkIqn(property: string, iqn: string): void {
  if (!IQN.test(iqn)) throw invalidInput(property, `not an iSCSI name (iqn.YYYY-MM.…, eui.…, naa.…): "${iqn}"`);
}

function checkChap(chap: Chap): void {
  if (!CHAP_USER.test(chap.username)) throw invalidInput("chap.username", `must be 1-255 of [A-Za-z0-9._@:-]`);
  if (!chap.password || /[\s\0]/.test(chap.password)) throw invalidInput("chap.password", "must be non-empty, without spaces");
}

function checkPositive(property: string, n: number): void {
  if (!Number.isInteger(n) || n < 1) throw invalidInput(property, `must be an integer ≥ 1, got ${n}`);
}

/** A LUN's backing: a file (its absolute path), or an RBD image (its volume path and parts). */
interface Backing {
  path: string;
  rbd?: RbdPath;
}

function backingOf(p: string): Backing {
  if (!isRbdPath(p)) return { path: path.resolve(p) };
  const rbd = parseRbdPath(p);
  if (!rbd) throw invalidInput("path", `not an RBD volume path (rbd:pool/image[@snap]:id=user:conf=file): "${p}"`);
  if ([rbd.cephPool, rbd.image, rbd.snap ?? "", rbd.user, rbd.conf].some((x) => /[,;\0]/.test(x))) {
    throw invalidInput("path", `RBD pool, image, snapshot, user and conf must not contain "," or ";" (tgtd's separators): "${p}"`);
  }
  return { path: p, rbd };
}

function tgtBacking(rbd: RbdPath): { backingStore: string; bstype: "rbd"; bsopts: string } {
  return { ...tgtRbdBacking(rbd), bstype: "rbd" };
}

/** How {@link TgtTarget.list} shows an rbd LUN whose record is lost: the image, user and conf unknown. */
function unrecordedRbdPath(backingStore: string): string {
  return `rbd:${backingStore}`;
}

/** Whether a LUN listed with `listed` is backed by `backing` (an unrecorded rbd LUN: by the same image). */
function sameBacking(listed: string, backing: Backing): boolean {
  if (listed === backing.path) return true;
  return backing.rbd !== undefined && listed === unrecordedRbdPath(tgtRbdBacking(backing.rbd).backingStore);
}

/** Why: a LUN cannot be added for a missing file; for RBD, tgtd needs the conf (the image it checks itself). */
async function mustExist(backing: Backing): Promise<void> {
  const file = backing.rbd ? backing.rbd.conf : backing.path;
  try {
    await fs.access(file);
  } catch {
    throw new UserError("NOT_FOUND", backing.rbd ? `Ceph client conf ${file} of ${backing.path} does not exist` : `backing file ${file} does not exist`, "path");
  }
}

/** A listed LUN with its path as sds gave it: an rbd LUN's recorded RBD path (see the file comment). */
function lunPath(target: TgtTargetState, lun: TgtLun, records: Map<string, RbdLunRecord>): ExportState["luns"][number] {
  const { bstype, ...out } = lun;
  if (bstype !== "rbd") return out;
  const rec = records.get(`${target.tid}-${lun.lun}`);
  const parsed = rec && rec.target === target.name ? parseRbdPath(rec.path) : undefined;
  out.path = parsed && tgtRbdBacking(parsed).backingStore === lun.path ? rec!.path : unrecordedRbdPath(lun.path);
  return out;
}

interface RbdLunRecord {
  target: string;
  path: string;
}

/**
 * One small file per rbd LUN, `<tid>-<lun>.json` = `{target, path}`: no read-modify-write shared
 * by concurrent attaches. A record outlives its LUN when a process dies between the two; it is
 * believed only while the target name and the image tgtd shows agree with it.
 */
class RbdLunRecords {
  constructor(readonly dir: string) {}

  async remember(target: string, tid: number, lun: number, rbdPath: string): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const file = path.join(this.dir, `${tid}-${lun}.json`);
    const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await fs.writeFile(tmp, JSON.stringify({ target, path: rbdPath }), { mode: 0o600 });
    await fs.rename(tmp, file);
  }

  /** Forget LUN `lun` of `tid`, or every LUN of `tid`. */
  async forget(tid: number, lun?: number): Promise<void> {
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    for (const n of names) if (lun === undefined ? n.startsWith(`${tid}-`) : n === `${tid}-${lun}.json`) await fs.rm(path.join(this.dir, n), { force: true });
  }

  async clear(): Promise<void> {
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  /** Every record, by `<tid>-<lun>`. */
  async read(): Promise<Map<string, RbdLunRecord>> {
    const out = new Map<string, RbdLunRecord>();
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    for (const n of names.filter((x) => x.endsWith(".json"))) {
      try {
        const rec = JSON.parse(await fs.readFile(path.join(this.dir, n), "utf8")) as RbdLunRecord;
        if (typeof rec.target === "string" && typeof rec.path === "string") out.set(n.slice(0, -".json".length), rec);
      } catch {
        // removed meanwhile, or half-written by a process that died: as if absent
      }
    }
    return out;
  }
}
