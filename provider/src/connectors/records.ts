/**
 * The connection records (one JSON file per connection, so a restarted agent finds its paths
 * again), the teardown that keeps going, and the small helpers on records. What really exists on
 * the host (loop devices, FUSE mounts, live processes) is host.ts.
 *
 * Records live at `<stateDir>/connections/<volumeId>-<mode>.json` (mode `rw` or `ro`), written
 * atomically (tmp + rename). A record never holds a secret (no CHAP password).
 *
 * Locking rule: a connector assumes one caller per (volumeId, mode) at a time (the agent
 * serialises attach/detach of one attachment); records of different connections never collide.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { BackendError, invalidInput } from "../errors";
import { maskSecrets } from "../exec/run";
import type { Connection, VolumePath } from "./connector";

/** Default state folder of the connectors. */
export const DEFAULT_STATE_DIR = "/run/sds";

/** What one connection made on this host. */
export interface ConnectionRecord {
  volumeId: string;
  protocol: "iscsi" | "nbd" | "local";
  mode: "rw" | "ro";
  via: VolumePath["via"];
  /** The block device handed out (loop device, /dev/nbdX or /dev/disk/by-path/…). */
  device: string;
  /** The file the loop device maps (the volume file, or the nbdfuse file). */
  backingFile?: string;
  /** The FUSE mount folder of nbdfuse. */
  mountDir?: string;
  nbdfusePid?: number;
  qemuNbdPid?: number;
  /** qemu-nbd's unix socket. */
  socket?: string;
  /** Kernel iSCSI: the portal and target logged in to. */
  portal?: string;
  targetIqn?: string;
  targetLun?: number;
  /**
   * Lower layers this connection owns besides the live ones above: the replacement
   * `extendVolume` is making, or replaced ones whose teardown failed. Torn down with the
   * connection (and first thing by the next `extendVolume`).
   */
  extraLayers?: LowerLayers[];
  createdAt: string;
}

/** What lies under the loop device on a userspace path: one generation of helpers, mount and socket. */
export type LowerLayers = Pick<ConnectionRecord, "backingFile" | "mountDir" | "nbdfusePid" | "qemuNbdPid" | "socket">;

/** The record's own lower layers. */
export function layersOf(rec: ConnectionRecord): LowerLayers {
  return { backingFile: rec.backingFile, mountDir: rec.mountDir, nbdfusePid: rec.nbdfusePid, qemuNbdPid: rec.qemuNbdPid, socket: rec.socket };
}

/** Record file name part: volume ids become file names. */
const VOLUME_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,200}$/;

export function modeOf(c: { readOnly: boolean }): "rw" | "ro" {
  return c.readOnly ? "ro" : "rw";
}

/** Checks a volume id before it becomes part of a file name. */
export function checkVolumeId(volumeId: string): void {
  if (!VOLUME_ID.test(volumeId) || volumeId.includes("..")) {
    throw invalidInput("volumeId", `${JSON.stringify(volumeId)} is not a valid volume id (letters, digits, _ . : -)`);
  }
}

/** The record store of one state folder. */
export class RecordStore {
  readonly dir: string;

  constructor(readonly stateDir: string) {
    this.dir = path.join(stateDir, "connections");
  }

  file(volumeId: string, mode: "rw" | "ro"): string {
    checkVolumeId(volumeId);
    return path.join(this.dir, `${volumeId}-${mode}.json`);
  }

  read(volumeId: string, mode: "rw" | "ro"): ConnectionRecord | undefined {
    return readRecord(this.file(volumeId, mode));
  }

  /** Atomic: a reader sees the old record or the new one, never half of one. */
  write(rec: ConnectionRecord): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const file = this.file(rec.volumeId, rec.mode);
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(rec, null, 2) + "\n", { mode: 0o600 });
    fs.renameSync(tmp, file);
  }

  remove(volumeId: string, mode: "rw" | "ro"): void {
    fs.rmSync(this.file(volumeId, mode), { force: true });
  }

  /** Every record (of `protocol` when given); unreadable files are skipped. */
  list(protocol?: ConnectionRecord["protocol"]): ConnectionRecord[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    const out: ConnectionRecord[] = [];
    for (const n of names.sort()) {
      if (!n.endsWith(".json")) continue;
      const r = readRecord(path.join(this.dir, n));
      if (r && (!protocol || r.protocol === protocol)) out.push(r);
    }
    return out;
  }
}

function readRecord(file: string): ConnectionRecord | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as ConnectionRecord;
  } catch {
    return undefined;
  }
}

/**
 * Teardown that keeps going: each step runs even when an earlier one failed; at the end one
 * error names every failed step (secrets masked). os-brick's ExceptionChainer, smaller.
 */
export class Teardown {
  private readonly errors: string[] = [];

  constructor(private readonly secrets: string[] = []) {}

  async step(what: string, fn: () => Promise<unknown> | unknown): Promise<boolean> {
    try {
      await fn();
      return true;
    } catch (err) {
      this.errors.push(`${what}: ${maskSecrets((err as Error).message, this.secrets)}`);
      return false;
    }
  }

  get failed(): boolean {
    return this.errors.length > 0;
  }

  throwIfFailed(subject: string, action = "disconnect"): void {
    if (this.errors.length) throw new BackendError("COMMAND_FAILED", `${action} of ${subject} left work undone: ${this.errors.join("; ")}`, true);
  }
}

/** The record's path as a {@link VolumePath}. */
export function pathOf(rec: ConnectionRecord, device = rec.device): VolumePath {
  return { volumeId: rec.volumeId, path: device, protocol: rec.protocol, via: rec.via };
}

/** A new record for `c`. */
export function newRecord(c: Connection, via: VolumePath["via"], device: string, extra: Partial<ConnectionRecord> = {}): ConnectionRecord {
  return { volumeId: c.volumeId, protocol: c.protocol, mode: modeOf(c), via, device, ...extra, createdAt: new Date().toISOString() };
}

