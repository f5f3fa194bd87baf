/**
 * tgtadm's management protocol, spoken directly over tgtd's unix socket
 * (`/var/run/tgtd/socket.<control port>`), so that no tgtadm process is started: a CHAP password
 * never reaches any process's argv (tgtadm takes it only as an argument, readable by every local
 * user in /proc/<pid>/cmdline), and an attach costs no process start per management operation.
 *
 * The protocol, as tgt 1.0.85 (Debian 12's `tgt`) speaks it, unchanged through 1.0.97
 * (usr/tgtadm.h, usr/tgtadm.c, usr/mgmt.c):
 * - one request per connection; tgtd answers, then closes;
 * - request: a fixed 120-byte header in host byte order (`struct tgtadm_req`), then `len - 120`
 *   bytes of text: `key=value` pairs joined by `,`, NUL-terminated (tgtd reads it with strstr);
 * - answer: `{err: u32, len: u32}` (`struct tgtadm_rsp`), then `len - 8` bytes of text ending in
 *   a NUL when `err` is 0 and there is something to show.
 * test/unit/tgtadm-client.test.ts pins the bytes; test/contract/tgtadm-client.test.ts compares
 * every operation with the tgtadm binary on a real tgtd.
 */
import * as net from "node:net";
import * as os from "node:os";
import { BackendError } from "../errors";

/** tgtadm's `--op` values sds uses. */
export type TgtadmOp = "new" | "delete" | "show" | "bind" | "unbind" | "update";
/** tgtadm's `--mode` values sds uses. */
export type TgtadmMode = "system" | "target" | "logicalunit" | "portal" | "account";

/** One management request, named after tgtadm's options (always `--lld iscsi`). */
export interface TgtadmRequest {
  op: TgtadmOp;
  mode: TgtadmMode;
  tid?: number;
  lun?: number;
  targetname?: string;
  /** `--backing-store`: a file, or for `bstype: "rbd"` `pool/image[@snap]`. */
  backingStore?: string;
  /** `--bstype`: the backing store type (`rbd` for tgt-rbd; tgtd's default is `rdwr`, a file). */
  bstype?: string;
  /** `--bsopts`: options of the backing store, `;`-separated (rbd: `conf=FILE;id=USER`). */
  bsopts?: string;
  /** `--initiator-name`: an ACL entry. */
  initiatorName?: string;
  user?: string;
  /** CHAP secret: sent over the socket only, masked in every message. */
  password?: string;
  /** `--name`/`--value`: a target (iSCSI session) parameter. */
  name?: string;
  value?: string;
  /** `--params` of `update --mode logicalunit`, e.g. `readonly=1`. */
  params?: string;
  force?: boolean;
}

/** Something that answers tgtadm requests: {@link TgtadmClient}, or a recorder in tests. */
export interface TgtadmChannel {
  /** Send `req`; resolves with tgtd's text answer (empty when none), rejects with a {@link TgtadmError}. */
  request(req: TgtadmRequest): Promise<string>;
}

/** tgtd's error numbers (`enum tgtadm_errno`, usr/tgtadm_error.h) and tgtadm's words for them. */
export const TGTADM_ERRORS = [
  ["SUCCESS", "success"],
  ["UNKNOWN_ERR", "unknown error"],
  ["NOMEM", "out of memory"],
  ["NO_DRIVER", "can't find the driver"],
  ["NO_TARGET", "can't find the target"],
  ["NO_LUN", "can't find the logical unit"],
  ["NO_SESSION", "can't find the session"],
  ["NO_CONNECTION", "can't find the connection"],
  ["NO_BINDING", "can't find the binding"],
  ["TARGET_EXIST", "this target already exists"],
  ["LUN_EXIST", "this logical unit number already exists"],
  ["BINDING_EXIST", "this binding already exists"],
  ["ACL_EXIST", "this access control rule already exists"],
  ["ACL_NOEXIST", "this access control rule does not exist"],
  ["USER_EXIST", "this account already exists"],
  ["NO_USER", "can't find the account"],
  ["TOO_MANY_USER", "too many accounts"],
  ["INVALID_REQUEST", "invalid request"],
  ["OUTACCOUNT_EXIST", "this target already has an outgoing account"],
  ["TARGET_ACTIVE", "this target is still active"],
  ["LUN_ACTIVE", "this logical unit is still active"],
  ["DRIVER_ACTIVE", "this driver is busy"],
  ["UNSUPPORTED_OPERATION", "this operation isn't supported"],
  ["UNKNOWN_PARAM", "unknown parameter"],
  ["PREVENT_REMOVAL", "this device has Prevent Removal set"],
] as const;

/** A tgtd error name, e.g. `TARGET_EXIST` (tgtd's `TGTADM_TARGET_EXIST`). */
export type TgtdErrorName = (typeof TGTADM_ERRORS)[number][0];

/**
 * tgtd refused a request. `tgtdError` is its number, `tgtdErrorName` a stable name to branch on;
 * the message reads like tgtadm's (`… : this target already exists`) and names the op, never a password.
 */
export class TgtadmError extends BackendError {
  readonly tgtdErrorName: TgtdErrorName | undefined;

  constructor(
    readonly request: TgtadmRequest,
    readonly tgtdError: number,
    readonly controlPort?: number,
  ) {
    const known = TGTADM_ERRORS[tgtdError];
    super("COMMAND_FAILED", `tgtd${controlPort === undefined ? "" : ` (control port ${controlPort})`} refused ${describeTgtadmRequest(request)}: ${known ? known[1] : "(unknown tgtadm_errno)"} (tgtd error ${tgtdError})`, false);
    this.tgtdErrorName = known?.[0];
  }
}

/** True when `err` is tgtd refusing with `name` (e.g. `TARGET_EXIST`). */
export function isTgtdError(err: unknown, name: TgtdErrorName): err is TgtadmError {
  return err instanceof TgtadmError && err.tgtdErrorName === name;
}

const OP = { new: 0, delete: 1, show: 2, bind: 3, unbind: 4, update: 5 } as const;
const MODE = { system: 0, target: 1, logicalunit: 2, portal: 3, account: 7 } as const;
/** sizeof(struct tgtadm_req): mode, op, lld[64], len, tid, sid, lun, cid, host_no, device_type, ac_dir, pack, force. */
export const TGTADM_REQ_SIZE = 120;
const TGTADM_RSP_SIZE = 8;
/** tgtd drops a request whose text exceeds this (MAX_MGT_BUFSIZE in usr/mgmt.c). */
const MAX_PARAMS_BYTES = 8 * 1024;
const NO_LUN = 0xffff_ffff_ffff_ffffn;
const DEFAULT_TIMEOUT_MS = 30_000;

/** The tgtadm options (after `-C N --lld iscsi`) equivalent to `req`, password included: for tests and comparisons. */
export function tgtadmArgs(req: TgtadmRequest): string[] {
  const out = ["--op", req.op, "--mode", req.mode];
  const opt = (flag: string, v: string | number | undefined) => {
    if (v !== undefined) out.push(flag, String(v));
  };
  opt("--tid", req.tid);
  opt("--lun", req.lun);
  opt("--targetname", req.targetname);
  opt("--backing-store", req.backingStore);
  opt("--bstype", req.bstype);
  opt("--bsopts", req.bsopts);
  opt("--initiator-name", req.initiatorName);
  opt("--user", req.user);
  opt("--password", req.password);
  opt("--name", req.name);
  opt("--value", req.value);
  opt("--params", req.params);
  if (req.force) out.push("--force");
  return out;
}

/** `req` as a tgtadm command line with the password masked: what errors and logs show. */
export function describeTgtadmRequest(req: TgtadmRequest): string {
  return ["tgtadm", ...tgtadmArgs(req.password === undefined ? req : { ...req, password: "***" })].join(" ");
}

/** The request's text, in tgtadm's order; tgtd splits on `,` (a password may hold one: tgtd takes the rest). */
function paramsText(req: TgtadmRequest): string {
  const parts: string[] = [];
  const check = (key: string, v: string) => {
    if (v.includes("\0") || (key !== "password" && v.includes(","))) throw new BackendError("COMMAND_FAILED", `tgtadm request ${describeTgtadmRequest(req)}: ${key} must not contain "," or NUL`, false);
  };
  const add = (key: string, v: string | undefined) => {
    if (v === undefined) return;
    check(key, v);
    parts.push(`${key}=${v}`);
  };
  if (req.name !== undefined) {
    check("name", req.name);
    add(req.name, req.value ?? "");
  }
  add("path", req.backingStore);
  add("bstype", req.bstype); // tgtadm's order: path, bstype, bsopts
  add("bsopts", req.bsopts);
  add("targetname", req.targetname);
  add("initiator-name", req.initiatorName);
  add("user", req.user);
  add("password", req.password);
  if (req.params !== undefined) {
    check("params", req.params.replace(/,/g, "")); // --params may list several key=value
    parts.push(`targetOps ${req.params},`); // tgtd's LUN config parser wants the trailing ","
  }
  return parts.join(",");
}

/** The bytes tgtd reads for `req`: header then NUL-terminated text (nothing when there is no text). */
export function encodeTgtadmRequest(req: TgtadmRequest, endian: "LE" | "BE" = os.endianness()): Buffer {
  const text = paramsText(req);
  const body = text ? Buffer.from(`${text}\0`, "utf8") : Buffer.alloc(0);
  if (body.length > MAX_PARAMS_BYTES) throw new BackendError("COMMAND_FAILED", `tgtadm request ${describeTgtadmRequest(req)} is over tgtd's ${MAX_PARAMS_BYTES} bytes`, false);
  const h = Buffer.alloc(TGTADM_REQ_SIZE);
  const u32 = (v: number, at: number) => (endian === "LE" ? h.writeUInt32LE(v, at) : h.writeUInt32BE(v, at));
  const i32 = (v: number, at: number) => (endian === "LE" ? h.writeInt32LE(v, at) : h.writeInt32BE(v, at));
  const u64 = (v: bigint, at: number) => (endian === "LE" ? h.writeBigUInt64LE(v, at) : h.writeBigUInt64BE(v, at));
  u32(MODE[req.mode], 0);
  u32(OP[req.op], 4);
  h.write("iscsi", 8, "ascii"); // lld[64], NUL-padded
  u32(TGTADM_REQ_SIZE + body.length, 72);
  i32(req.tid ?? -1, 76); // tgtadm's "no --tid": show all targets
  u64(0n, 80); // sid
  u64(req.lun === undefined ? NO_LUN : BigInt(req.lun), 88);
  // cid, host_no, device_type (0: disk), ac_dir (0: incoming), pack stay 0
  u32(req.force ? 1 : 0, 116);
  return Buffer.concat([h, body]);
}

/** Options of {@link TgtadmClient}. */
export interface TgtadmClientOptions {
  controlPort: number;
  /** Default `/var/run/tgtd/socket` (or `$TGT_IPC_SOCKET`, as tgtadm); `.<control port>` is appended. */
  socketBase?: string;
  /** Per request, connect to answer. Default 30 s. */
  timeoutMs?: number;
}

/**
 * How many requests one client keeps open on tgtd's socket at once. Why a bound: tgtd answers
 * one request at a time and its socket's backlog is short; 50 attaches on unique targets asking
 * together filled it, and connect(2) on a full unix socket fails at once (EAGAIN).
 */
const MAX_IN_FLIGHT = 4;
/** Backoff when the backlog is full anyway (other processes on the same tgtd): about 3 s in all. */
const BACKLOG_FULL_RETRY_MS = [5, 10, 20, 40, 80, 160, 320, 640, 640, 640];

/** A tgtadm that speaks to tgtd's socket itself: one request per connection, as tgtadm does. */
export class TgtadmClient implements TgtadmChannel {
  readonly socketPath: string;
  private readonly timeoutMs: number;
  private inFlight = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly options: TgtadmClientOptions) {
    this.socketPath = `${options.socketBase ?? process.env.TGT_IPC_SOCKET ?? "/var/run/tgtd/socket"}.${options.controlPort}`;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  async request(req: TgtadmRequest): Promise<string> {
    const bytes = encodeTgtadmRequest(req);
    if (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((r) => this.waiting.push(r));
    else this.inFlight++;
    let answer: Buffer;
    try {
      answer = await this.exchangeRetrying(req, bytes);
    } finally {
      // Hand the slot to the next waiter, if any (inFlight stays the same), else free it.
      const next = this.waiting.shift();
      if (next) next();
      else this.inFlight--;
    }
    if (answer.length < TGTADM_RSP_SIZE) throw this.fault(req, `tgtd closed the connection after ${answer.length} bytes of its answer`);
    const endian = os.endianness();
    const err = endian === "LE" ? answer.readUInt32LE(0) : answer.readUInt32BE(0);
    const len = endian === "LE" ? answer.readUInt32LE(4) : answer.readUInt32BE(4);
    if (err !== 0) throw new TgtadmError(req, err, this.options.controlPort);
    if (answer.length < len) throw this.fault(req, `tgtd's answer was cut short (${answer.length} of ${len} bytes)`);
    if (req.mode === "system" && req.op === "delete") await this.untilRefused(req);
    return answer.subarray(TGTADM_RSP_SIZE, len).toString("utf8").replace(/\0+$/, "");
  }

  /** {@link exchange}, again after a short wait while tgtd's backlog is full (nothing was sent then). */
  private async exchangeRetrying(req: TgtadmRequest, bytes: Buffer): Promise<Buffer> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.exchange(req, bytes);
      } catch (err) {
        const full = (err as { cause?: NodeJS.ErrnoException }).cause?.code === "EAGAIN";
        if (!full || attempt >= BACKLOG_FULL_RETRY_MS.length) throw err;
        await new Promise((r) => setTimeout(r, BACKLOG_FULL_RETRY_MS[attempt]));
      }
    }
  }

  /** Send, then read until tgtd closes (it answers once, then closes). */
  private exchange(req: TgtadmRequest, bytes: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      const socket = net.createConnection(this.socketPath);
      let settled = false;
      const done = (err: Error | undefined, out?: Buffer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        if (err) reject(err);
        else resolve(out!);
      };
      const timer = setTimeout(() => done(new BackendError("TIMEOUT", `tgtd on ${this.socketPath} did not answer ${describeTgtadmRequest(req)} within ${this.timeoutMs} ms`, true)), this.timeoutMs);
      socket.on("connect", () => socket.write(bytes)); // no half-close: tgtadm never does, tgtd need not expect it
      socket.on("data", (d) => chunks.push(d));
      socket.on("end", () => done(undefined, Buffer.concat(chunks)));
      socket.on("error", (e: NodeJS.ErrnoException) => {
        const down = e.code === "ENOENT" || e.code === "ECONNREFUSED";
        done(this.fault(req, down ? `can't connect to tgt daemon on ${this.socketPath} (${e.code}): is tgtd running with -C ${this.options.controlPort}?` : `${e.code ?? ""} ${e.message}`.trim(), down, e));
      });
    });
  }

  /** Why: tgtadm's `delete --mode system` returns once tgtd stopped accepting, so callers can start another. */
  private async untilRefused(req: TgtadmRequest): Promise<void> {
    const deadline = Date.now() + this.timeoutMs;
    while (Date.now() < deadline) {
      const refused = await new Promise<boolean>((resolve) => {
        const s = net.createConnection(this.socketPath);
        s.on("connect", () => {
          s.destroy();
          resolve(false);
        });
        s.on("error", () => resolve(true));
      });
      if (refused) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new BackendError("TIMEOUT", `tgtd on ${this.socketPath} still accepts ${this.timeoutMs} ms after ${describeTgtadmRequest(req)}`, true);
  }

  private fault(req: TgtadmRequest, why: string, retryable = false, cause?: unknown): BackendError {
    return new BackendError("COMMAND_FAILED", `${describeTgtadmRequest(req)} (control port ${this.options.controlPort}): ${why}`, retryable, { cause });
  }
}
