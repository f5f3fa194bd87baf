/**
 * Who holds a store lock, written into the lock's `holder` text (issue 12) so that another
 * process can tell whether that holder still lives, and say who it is while it waits:
 *   sds-lock {"op":…,"pid":4242,"start":"98765","boot":"…","host":"h","cmd":"node …","since":"…"}
 * - `op`: the operation (unique per withStoreLock call: two operations of one process exclude
 *   each other too);
 * - `pid` + `start` (the process's start time, field 22 of /proc/<pid>/stat): a pid reused by
 *   another process since does not pass for the holder;
 * - `boot` (/proc/sys/kernel/random/boot_id) + `host`: a holder on this host whose boot is over
 *   is dead; `ns` (its pid namespace): a holder in another container of this host, whose pids
 *   this process cannot look up, is judged like one on another host; a holder on another host (a state on a network file system, or copied between
 *   machines) cannot be judged from here, and keeps its lock until the TTL, which live holders
 *   renew (see store/lock.ts).
 * Why in the text and not in columns: the `locks` table needs no migration, a holder written by
 * an older sds (a bare id) is simply one that cannot be judged (TTL only), and the PostgreSQL
 * store, whose locks end with their session, ignores the text.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { processStart } from "../exec/processes";

const PREFIX = "sds-lock ";

/** What a holder says of itself. */
export interface LockHolder {
  op: string;
  pid: number;
  /** Its start time in clock ticks since boot (/proc/<pid>/stat); "" where unknown. */
  start: string;
  /** The boot id of its host; "" where unknown. */
  boot: string;
  /** Its pid namespace (/proc/self/ns/pid): two containers may share a host name and a boot, not their pids. */
  ns?: string;
  host: string;
  /** Its command, short: `node pulumi-resource-sds`. */
  cmd: string;
  /** When it took the lock (ISO-8601 UTC). */
  since: string;
}

/** Why: read once; the answer does not change while this process runs. */
let thisPidNamespace: string | undefined;
function pidNamespace(): string {
  if (thisPidNamespace === undefined) {
    try {
      thisPidNamespace = fs.readlinkSync("/proc/self/ns/pid"); // pid:[4026531836]
    } catch {
      thisPidNamespace = "";
    }
  }
  return thisPidNamespace;
}

/** Why: read once; the answer does not change while this process runs. */
let thisBoot: string | undefined;
function bootId(): string {
  if (thisBoot === undefined) {
    try {
      thisBoot = fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    } catch {
      thisBoot = ""; // not Linux: no holder here can be judged dead by its boot
    }
  }
  return thisBoot;
}

/** The holder text of operation `op` of this process, taking its lock now. */
export function holderText(op: string): string {
  const cmd = [path.basename(process.argv0 || "node"), process.argv[1] ? path.basename(process.argv[1]) : ""].filter(Boolean).join(" ");
  const h: LockHolder = { op, pid: process.pid, start: processStart(process.pid) ?? "", boot: bootId(), ns: pidNamespace(), host: os.hostname(), cmd, since: new Date().toISOString() };
  return PREFIX + JSON.stringify(h);
}

/** The holder a text names; undefined for a text not written by {@link holderText} (an older sds, a test's bare name). */
export function parseHolder(text: string): LockHolder | undefined {
  if (!text.startsWith(PREFIX)) return undefined;
  try {
    const h = JSON.parse(text.slice(PREFIX.length)) as Partial<LockHolder>;
    if (typeof h.pid !== "number" || typeof h.host !== "string" || typeof h.boot !== "string" || typeof h.start !== "string") return undefined;
    return { op: String(h.op), pid: h.pid, start: h.start, boot: h.boot, ns: typeof h.ns === "string" ? h.ns : undefined, host: h.host, cmd: String(h.cmd ?? ""), since: String(h.since ?? "") };
  } catch {
    return undefined;
  }
}

/**
 * Whether the holder a text names is certainly dead: on this host (same host name) and either
 * from a boot that is over, or, in this pid namespace, its process gone or replaced (another
 * start time under its pid). False when it lives or cannot be judged (another host or pid
 * namespace, an unparsable text, no /proc).
 */
export function holderIsDead(text: string): boolean {
  const h = parseHolder(text);
  if (!h || h.host !== os.hostname() || !h.boot || !bootId()) return false;
  if (h.boot !== bootId()) return true;
  if (!h.ns || h.ns !== pidNamespace()) return false; // its pids are not ours to look up
  const start = processStart(h.pid);
  if (start === null) return true;
  return start !== "" && h.start !== "" && start !== h.start;
}

/** One phrase for messages: `pid 4242 (node pulumi-resource-sds) on host h since 12:00:03 UTC`; another text as it is. */
export function describeHolder(text: string): string {
  const h = parseHolder(text);
  if (!h) return text;
  const since = /T(\d\d:\d\d:\d\d)/.exec(h.since)?.[1];
  return `pid ${h.pid}${h.cmd ? ` (${h.cmd})` : ""} on host ${h.host}${since ? ` since ${since} UTC` : ""}`;
}
