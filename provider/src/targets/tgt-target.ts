/**
 * iSCSI through Linux tgt: `tgtd` is the daemon, `tgtadm` its management client. One tgtd per
 * control port (`tgtd -C N`, a unix socket `/var/run/tgtd/socket.N`), so several backends and
 * tests run side by side. What tgtd does not say by itself, and how we cope:
 * - a second `tgtd -C N` exits 0 though it could not start, and a tgtd whose portal is taken keeps
 *   running without listening: `start` asks the control port first and checks the portal after;
 * - tgtd ignores SIGTERM: `stop` deletes the targets, then asks tgtd to exit (`--op delete --mode system`);
 * - a LUN cannot be created read-only (`--params` is refused on `new`): it is made read-only right
 *   after, before `ensureLun` returns, and deleted again if that fails;
 * - tgtd reads a LUN's size once, when the LUN is added: `refreshLun` deletes and re-adds it
 *   (same tid/LUN, so the same SCSI id and serial); tgtd refuses to delete a LUN with commands in
 *   flight ("this logical unit is still active"), so the delete is retried briefly;
 * - tgtd never reports a CHAP password, and deleting an account unbinds it everywhere: a scrypt
 *   hash of each password we set is kept in `runDir`, so `ensureChap` knows whether the account
 *   already has the asked password or must be replaced (and re-bound to the targets that had it).
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { promisify } from "node:util";
import { BackendError, invalidInput, UserError } from "../errors";
import { run as defaultRun, type Runner } from "../exec/run";
import { procProcesses, type ProcessTable, waitUntil } from "../exec/processes";
import type { Chap, ExportState, IscsiTarget } from "./target";

const TGTADM_TIMEOUT_MS = 30_000;
/** Backoff between deletes of a LUN tgtd says is busy: six tries over about 3 s. */
const LUN_BUSY_RETRY_MS = [100, 200, 400, 800, 1600];
const DAEMON_TIMEOUT_MS = 10_000;
const scryptAsync = promisify(scrypt) as (password: string, salt: Buffer, keylen: number) => Promise<Buffer>;

/** Options of {@link TgtTarget}. */
export interface TgtTargetOptions {
  /** tgtd's management channel number (`tgtd -C N`, 0-32767); one per daemon. */
  controlPort: number;
  /** `ip:port` initiators log in to. */
  portal: string;
  /** Folder for tgtd's pidfile and the CHAP password hashes (e.g. /run/sds). */
  runDir: string;
  /** Command runner (tests pass a recorder). */
  run?: Runner;
  /** Process table (tests pass a fake). */
  processes?: ProcessTable;
  /** How to wait between retries (tests pass a recorder). Default: setTimeout. */
  sleep?: (ms: number) => Promise<void>;
}

const IQN = /^(iqn\.\d{4}-\d{2}\.[^\s,]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$/;
const CHAP_USER = /^[A-Za-z0-9._@:-]{1,255}$/;

/** The {@link IscsiTarget} of one tgtd, driven through tgtadm. */
/** iSCSI session parameters set on every new target (negotiated at login; RFC 7143 names). */
export const SESSION_PARAMS: ReadonlyArray<[string, string]> = [
  ["MaxRecvDataSegmentLength", "1048576"],
  ["MaxXmitDataSegmentLength", "1048576"],
  ["FirstBurstLength", "1048576"],
  ["MaxBurstLength", "16776192"],
  ["InitialR2T", "No"],
];

export class TgtTarget implements IscsiTarget {
  readonly protocol = "iscsi";
  readonly portal: string;
  readonly controlPort: number;
  private readonly runDir: string;
  private readonly run: Runner;
  private readonly processes: ProcessTable;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(options: TgtTargetOptions) {
    // tgtd and tgtadm take -C as a signed short.
    if (!Number.isInteger(options.controlPort) || options.controlPort < 0 || options.controlPort > 32767) throw invalidInput("controlPort", `must be 0-32767, got ${options.controlPort}`);
    if (!/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$/.test(options.portal)) throw invalidInput("portal", `must be ip:port, got "${options.portal}"`);
    this.controlPort = options.controlPort;
    this.portal = options.portal;
    this.runDir = options.runDir;
    this.run = options.run ?? defaultRun;
    this.processes = options.processes ?? procProcesses;
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  /** tgtd's pidfile. */
  get pidFile(): string {
    return path.join(this.runDir, `tgtd-${this.controlPort}.pid`);
  }

  private get chapFile(): string {
    return path.join(this.runDir, `tgtd-${this.controlPort}-chap.json`);
  }

  async start(): Promise<void> {
    if (await this.answering()) return this.checkPortal(false);
    await fs.mkdir(this.runDir, { recursive: true });
    await this.run("tgtd", ["-C", String(this.controlPort), "--iscsi", `portal=${this.portal}`, "-p", this.pidFile], { timeoutMs: DAEMON_TIMEOUT_MS });
    await waitUntil(`tgtd on control port ${this.controlPort} to answer`, () => this.answering());
    await this.checkPortal(true);
  }

  async stop(): Promise<void> {
    if (await this.answering()) {
      for (const t of await this.list()) await this.tgtadm(["--op", "delete", "--mode", "target", "--tid", String(t.tid), "--force"]);
      await this.tgtadm(["--op", "delete", "--mode", "system"]);
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
  }

  async ensureTarget(iqn: string, tid?: number): Promise<number> {
    checkIqn("iqn", iqn);
    if (tid !== undefined) checkPositive("tid", tid);
    const targets = await this.list();
    const same = targets.find((t) => t.name === iqn);
    if (same) {
      if (tid !== undefined && same.tid !== tid) throw new UserError("CONFLICT", `target ${iqn} exists with tid ${same.tid}, tid ${tid} asked`, "tid");
      return same.tid!;
    }
    const taken = tid !== undefined ? targets.find((t) => t.tid === tid) : undefined;
    if (taken) throw new UserError("CONFLICT", `tid ${tid} is already target ${taken.name}`, "tid");
    const newTid = tid ?? Math.max(0, ...targets.map((t) => t.tid!)) + 1;
    await this.tgtadm(["--op", "new", "--mode", "target", "--tid", String(newTid), "--targetname", iqn]);
    // Before any login: tgtd's defaults (8 KiB data segments, 64 KiB first burst, InitialR2T)
    // cut a 1 MiB write into ~128 PDUs with R2T round trips; these made libiscsi writes ~3x
    // faster and halved tgtd's CPU per GiB (bench/datapath).
    for (const [name, value] of SESSION_PARAMS) await this.tgtadm(["--op", "update", "--mode", "target", "--tid", String(newTid), "--name", name, "--value", value]);
    return newTid;
  }

  async ensureLun(tid: number, lun: number, backingPath: string, readOnly: boolean): Promise<void> {
    checkPositive("lun", lun); // LUN 0 is tgt's controller
    const file = path.resolve(backingPath);
    const target = await this.mustFind(tid);
    const have = target.luns.find((l) => l.lun === lun);
    if (have) {
      if (have.path !== file) throw new UserError("CONFLICT", `tid ${tid} lun ${lun} is backed by ${have.path}, not ${file}`, "path");
      if (have.readOnly !== readOnly) await this.setReadOnly(tid, lun, readOnly);
      return;
    }
    try {
      await fs.access(file);
    } catch {
      throw new UserError("NOT_FOUND", `backing file ${file} does not exist`, "path");
    }
    await this.tgtadm(["--op", "new", "--mode", "logicalunit", "--tid", String(tid), "--lun", String(lun), "--backing-store", file]);
    if (!readOnly) return;
    try {
      await this.setReadOnly(tid, lun, true);
    } catch (err) {
      // Never leave writable a LUN that was asked read-only.
      await this.removeLun(tid, lun).catch(() => undefined);
      throw err;
    }
  }

  async refreshLun(tid: number, lun: number, backingPath: string, readOnly: boolean): Promise<void> {
    checkPositive("lun", lun);
    const file = path.resolve(backingPath);
    const have = (await this.mustFind(tid)).luns.find((l) => l.lun === lun);
    if (have) {
      if (have.path !== file) throw new UserError("CONFLICT", `tid ${tid} lun ${lun} is backed by ${have.path}, not ${file}`, "path");
      try {
        await fs.access(file); // never delete a LUN that could not be added back
      } catch {
        throw new UserError("NOT_FOUND", `backing file ${file} does not exist`, "path");
      }
      await this.deleteLunWhenIdle(tid, lun);
    }
    await this.ensureLun(tid, lun, file, readOnly);
  }

  /** Why the retries: tgtd deletes a LUN only between commands; an initiator's I/O makes it wait. */
  private async deleteLunWhenIdle(tid: number, lun: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.tgtadm(["--op", "delete", "--mode", "logicalunit", "--tid", String(tid), "--lun", String(lun)]);
        return;
      } catch (err) {
        if (attempt >= LUN_BUSY_RETRY_MS.length || !/still active/.test((err as Error).message)) throw err;
        await this.sleep(LUN_BUSY_RETRY_MS[attempt]!);
      }
    }
  }

  async ensureInitiator(tid: number, initiatorIqn: string): Promise<void> {
    checkIqn("initiatorIqn", initiatorIqn);
    const target = await this.mustFind(tid);
    if (target.initiators.includes(initiatorIqn)) return;
    await this.tgtadm(["--op", "bind", "--mode", "target", "--tid", String(tid), "--initiator-name", initiatorIqn]);
  }

  async ensureChap(tid: number, chap: Chap): Promise<void> {
    if (!CHAP_USER.test(chap.username)) throw invalidInput("chap.username", `must be 1-255 of [A-Za-z0-9._@:-]`);
    if (!chap.password || /[\s\0]/.test(chap.password)) throw invalidInput("chap.password", "must be non-empty, without spaces");
    let targets = await this.list();
    if (!targets.some((t) => t.tid === tid)) throw new UserError("NOT_FOUND", `iSCSI target tid ${tid} does not exist`, "tid");
    const secrets = [chap.password];
    const exists = (await this.accounts()).includes(chap.username);
    if (!exists || !(await this.passwordMatches(chap))) {
      if (exists) {
        // The account has another (or an unknown) password: replace it. Deleting unbinds it
        // from every target, so bind it back where it was.
        const boundTo = targets.filter((t) => t.chapUsers.includes(chap.username)).map((t) => t.tid!);
        await this.tgtadm(["--op", "delete", "--mode", "account", "--user", chap.username]);
        await this.tgtadm(["--op", "new", "--mode", "account", "--user", chap.username, "--password", chap.password], secrets);
        for (const other of boundTo) await this.tgtadm(["--op", "bind", "--mode", "account", "--tid", String(other), "--user", chap.username]);
        targets = await this.list();
      } else {
        // tgtadm takes the password only as an argument; exec masks it in errors and logs.
        await this.tgtadm(["--op", "new", "--mode", "account", "--user", chap.username, "--password", chap.password], secrets);
      }
      await this.rememberPassword(chap);
    }
    if (targets.find((t) => t.tid === tid)!.chapUsers.includes(chap.username)) return;
    await this.tgtadm(["--op", "bind", "--mode", "account", "--tid", String(tid), "--user", chap.username]);
  }

  async removeInitiator(tid: number, initiatorIqn: string): Promise<void> {
    const target = (await this.list()).find((t) => t.tid === tid);
    if (!target?.initiators.includes(initiatorIqn)) return;
    await this.tgtadm(["--op", "unbind", "--mode", "target", "--tid", String(tid), "--initiator-name", initiatorIqn]);
  }

  async removeLun(tid: number, lun: number): Promise<void> {
    const target = (await this.list()).find((t) => t.tid === tid);
    if (!target?.luns.some((l) => l.lun === lun)) return;
    await this.tgtadm(["--op", "delete", "--mode", "logicalunit", "--tid", String(tid), "--lun", String(lun)]);
  }

  async removeTarget(tid: number): Promise<void> {
    if (!(await this.list()).some((t) => t.tid === tid)) return;
    await this.tgtadm(["--op", "delete", "--mode", "target", "--tid", String(tid), "--force"]);
  }

  async removeChapAccount(username: string): Promise<void> {
    if ((await this.accounts()).includes(username)) {
      await this.tgtadm(["--op", "delete", "--mode", "account", "--user", username]);
    }
    await this.forgetPassword(username);
  }

  async list(): Promise<ExportState[]> {
    return parseTgtTargets((await this.tgtadm(["--op", "show", "--mode", "target"])).stdout);
  }

  /** CHAP account names tgtd knows (bound or not). */
  async accounts(): Promise<string[]> {
    return parseTgtAccounts((await this.tgtadm(["--op", "show", "--mode", "account"])).stdout);
  }

  private tgtadm(args: string[], secrets: string[] = []) {
    return this.run("tgtadm", ["-C", String(this.controlPort), "--lld", "iscsi", ...args], { timeoutMs: TGTADM_TIMEOUT_MS, secrets });
  }

  private async answering(): Promise<boolean> {
    try {
      await this.tgtadm(["--op", "show", "--mode", "portal"]);
      return true;
    } catch {
      return false;
    }
  }

  /** Why: a tgtd whose portal is taken still starts and answers, listening nowhere useful. */
  private async checkPortal(justStarted: boolean): Promise<void> {
    const portals = parseTgtPortals((await this.tgtadm(["--op", "show", "--mode", "portal"])).stdout);
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
    return this.tgtadm(["--op", "update", "--mode", "logicalunit", "--tid", String(tid), "--lun", String(lun), "--params", `readonly=${readOnly ? 1 : 0}`]);
  }

  private async readChapFile(): Promise<Record<string, string>> {
    try {
      return JSON.parse(await fs.readFile(this.chapFile, "utf8")) as Record<string, string>;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
      throw err;
    }
  }

  /** Serializes read-modify-write of the CHAP file: concurrent attaches would otherwise lose entries. */
  private chapFileQueue: Promise<unknown> = Promise.resolve();

  private updateChapFile(change: (hashes: Record<string, string>) => Record<string, string> | undefined): Promise<void> {
    const next = this.chapFileQueue.then(async () => {
      const updated = change(await this.readChapFile());
      if (updated) await this.writeChapFile(updated);
    });
    this.chapFileQueue = next.catch(() => undefined);
    return next;
  }

  private async writeChapFile(hashes: Record<string, string>): Promise<void> {
    await fs.mkdir(this.runDir, { recursive: true });
    const tmp = `${this.chapFile}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    await fs.writeFile(tmp, JSON.stringify(hashes), { mode: 0o600 });
    await fs.rename(tmp, this.chapFile);
  }

  private async passwordMatches(chap: Chap): Promise<boolean> {
    const stored = (await this.readChapFile())[chap.username];
    if (!stored) return false;
    const [salt, hash] = stored.split(":").map((h) => Buffer.from(h, "hex"));
    if (!salt || !hash || hash.length !== 32) return false;
    return timingSafeEqual(hash, await scryptAsync(chap.password, salt, 32));
  }

  private async rememberPassword(chap: Chap): Promise<void> {
    const salt = randomBytes(16);
    const hash = await scryptAsync(chap.password, salt, 32);
    await this.updateChapFile((hashes) => ({ ...hashes, [chap.username]: `${salt.toString("hex")}:${hash.toString("hex")}` }));
  }

  private async forgetPassword(username: string): Promise<void> {
    await this.updateChapFile((hashes) => {
      if (!(username in hashes)) return undefined;
      delete hashes[username];
      return hashes;
    });
  }
}

/**
 * Parse `tgtadm --op show --mode target`: one {@link ExportState} per target, without LUN 0
 * (tgt's controller LUN) and without outgoing CHAP accounts.
 */
export function parseTgtTargets(text: string): ExportState[] {
  const out: ExportState[] = [];
  let target: ExportState | undefined;
  let section = "";
  let lun: ExportState["luns"][number] | undefined;
  let lunIsDisk = false;
  const endLun = () => {
    if (target && lun && lunIsDisk) target.luns.push(lun);
    lun = undefined;
  };
  for (const line of text.split("\n")) {
    const head = /^Target (\d+): (.+)$/.exec(line);
    if (head) {
      endLun();
      target = { name: head[2]!.trim(), tid: Number(head[1]), luns: [], initiators: [], chapUsers: [] };
      out.push(target);
      section = "";
      continue;
    }
    if (!target || !line.trim()) continue;
    const indent = line.length - line.trimStart().length;
    const item = line.trim();
    if (indent === 4) {
      endLun();
      section = item;
      continue;
    }
    if (section === "LUN information:") {
      const start = /^LUN: (\d+)$/.exec(item);
      if (start) {
        endLun();
        lun = { lun: Number(start[1]), path: "", readOnly: false };
        lunIsDisk = true;
        continue;
      }
      if (!lun) continue;
      const colon = item.indexOf(": ");
      const key = colon < 0 ? item.replace(/:$/, "") : item.slice(0, colon);
      const value = colon < 0 ? "" : item.slice(colon + 2);
      if (key === "Type") lunIsDisk = value !== "controller";
      else if (key === "Backing store path") lun.path = value;
      else if (key === "Readonly") lun.readOnly = value === "Yes";
    } else if (section === "Account information:" && indent === 8) {
      if (!item.endsWith(" (outgoing)")) target.chapUsers.push(item);
    } else if (section === "ACL information:" && indent === 8) {
      target.initiators.push(item);
    }
  }
  endLun();
  return out;
}

/** Parse `tgtadm --op show --mode account` ("Account list:" then one name a line). */
export function parseTgtAccounts(text: string): string[] {
  return text
    .split("\n")
    .filter((l) => /^\s+\S/.test(l))
    .map((l) => l.trim());
}

/** Parse `tgtadm --op show --mode portal` ("Portal: 127.0.0.1:3260,1" a line) into `ip:port`s. */
export function parseTgtPortals(text: string): string[] {
  return text
    .split("\n")
    .map((l) => /^Portal: (.+),\d+$/.exec(l.trim())?.[1])
    .filter((p): p is string => p !== undefined);
}

function checkIqn(property: string, iqn: string): void {
  if (!IQN.test(iqn)) throw invalidInput(property, `not an iSCSI name (iqn.YYYY-MM.…, eui.…, naa.…): "${iqn}"`);
}

function checkPositive(property: string, n: number): void {
  if (!Number.isInteger(n) || n < 1) throw invalidInput(property, `must be an integer ≥ 1, got ${n}`);
}
