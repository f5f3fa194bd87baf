/**
 * The `rbd` commands replication needs on one image, named by its RBD volume path
 * (domain/rbd-path.ts). Every command reaches the cluster with `--conf <file> --id <user>`: the
 * conf names the monitors and the keyring file, so nothing secret is in argv.
 */
import { BackendError, CommandFailedError, UserError } from "../errors";
import { parseRbdPath, type RbdPath } from "../domain/rbd-path";
import { run as defaultRun, type Runner } from "../exec/run";
import { spawnStream as defaultSpawn, type StreamSpawner } from "../exec/stream";
import type { ByteRange } from "./sync-sink";

/** Prefix of the snapshots replication makes (`sds-sync-<generation>`, and `sds-sync-token-<n>` of an RbdSource's change token). */
export const SYNC_SNAP_PREFIX = "sds-sync-";
/** Prefix of the snapshot behind an RbdSource's change token. */
export const TOKEN_SNAP_PREFIX = `${SYNC_SNAP_PREFIX}token-`;

/** How `rbd` is run; injected for tests. */
export interface RbdTools {
  run?: Runner;
  spawn?: StreamSpawner;
  /** Timeout of one metadata command (info, snap, diff). Default 120 s. */
  timeoutMs?: number;
  /**
   * Seconds a command may spend reaching the monitors before it gives up (`--client-mount-timeout`;
   * Ceph's own default is 300). Default 30: a cluster that cannot be reached fails a sync or a
   * reachability check in that time, with rbd's "couldn't connect to the cluster".
   */
  mountTimeoutSeconds?: number;
}

/** One snapshot as `rbd snap ls --format json` lists it. */
export interface RbdSnap {
  id: number;
  name: string;
  size: number;
}

/** Why: "No such file or directory" from rbd is the one failure that means "gone", not a fault. */
function isMissing(err: unknown): boolean {
  return err instanceof CommandFailedError && (err.exitCode === 2 || /No such file or directory|error opening image .*: \(2\)/.test(err.stderr));
}

/** An RBD image (or a snapshot of one) and the commands on it. */
export class RbdImage {
  readonly path: RbdPath;
  private readonly run: Runner;
  readonly spawn: StreamSpawner;
  private readonly timeoutMs: number;
  private readonly mountTimeoutSeconds: number;

  constructor(
    volumePath: string | RbdPath,
    tools: RbdTools = {},
  ) {
    const p = typeof volumePath === "string" ? parseRbdPath(volumePath) : volumePath;
    if (!p) throw new UserError("INVALID_INPUT", `not an RBD volume path: ${JSON.stringify(volumePath)}`);
    this.path = p;
    this.run = tools.run ?? defaultRun;
    this.spawn = tools.spawn ?? defaultSpawn;
    this.timeoutMs = tools.timeoutMs ?? 120_000;
    this.mountTimeoutSeconds = tools.mountTimeoutSeconds ?? 30;
  }

  /** `pool/image` */
  get spec(): string {
    return `${this.path.cephPool}/${this.path.image}`;
  }

  /** `pool/image[@snap]`: what reads name. */
  get readSpec(): string {
    return this.path.snap !== undefined ? `${this.spec}@${this.path.snap}` : this.spec;
  }

  get description(): string {
    return `rbd ${this.readSpec}`;
  }

  /** The same image at snapshot `snap` (or its head when `undefined`). */
  at(snap: string | undefined): RbdImage {
    const p: RbdPath = { ...this.path };
    if (snap === undefined) delete p.snap;
    else p.snap = snap;
    return new RbdImage(p, { run: this.run, spawn: this.spawn, timeoutMs: this.timeoutMs, mountTimeoutSeconds: this.mountTimeoutSeconds });
  }

  /** `--conf <file> --id <user> --client-mount-timeout <s>`: how every command reaches the cluster. */
  clusterArgs(): string[] {
    return ["--conf", this.path.conf, "--id", this.path.user, "--client-mount-timeout", String(this.mountTimeoutSeconds)];
  }

  private async rbd(args: string[], timeoutMs = this.timeoutMs): Promise<string> {
    return (await this.run("rbd", [...this.clusterArgs(), ...args], { timeoutMs })).stdout;
  }

  /** Size in bytes of the image (or of its snapshot), `undefined` when the image is gone. */
  async sizeBytes(): Promise<number | undefined> {
    try {
      const info = JSON.parse(await this.rbd(["info", "--format", "json", this.readSpec])) as { size: number };
      return info.size;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  /** Make the head `bytes` long (grow only), creating the image when missing (thin, as the driver does). */
  async resize(bytes: number): Promise<void> {
    const size = await this.sizeBytes();
    if (size === undefined) {
      await this.rbd(["create", "--size", `${bytes}B`, this.spec]);
      return;
    }
    if (bytes < size) throw new UserError("INVALID_STATE", `replication destination ${this.description} is ${size} bytes; it cannot shrink to ${bytes}`);
    if (bytes > size) await this.rbd(["resize", "--size", `${bytes}B`, this.spec]);
  }

  /**
   * Allocated extents of the head (or snapshot), sorted; with `fromSnap`, only extents written
   * since that snapshot (`exists: false` ones included: they were discarded since).
   */
  async extents(fromSnap?: string): Promise<Array<ByteRange & { exists: boolean }>> {
    const out = await this.rbd(["diff", "--format", "json", ...(fromSnap !== undefined ? ["--from-snap", fromSnap] : []), this.readSpec]);
    const list = JSON.parse(out || "[]") as Array<{ offset: number; length: number; exists: string | boolean }>;
    return list.map((e) => ({ offset: e.offset, length: e.length, exists: e.exists === true || e.exists === "true" })).sort((a, b) => a.offset - b.offset);
  }

  /** Snapshots of the image, `[]` when it is gone. */
  async snaps(): Promise<RbdSnap[]> {
    try {
      return JSON.parse((await this.rbd(["snap", "ls", "--format", "json", this.spec])) || "[]") as RbdSnap[];
    } catch (err) {
      if (isMissing(err)) return [];
      throw err;
    }
  }

  /** Generations of the image's `sds-sync-<n>` snapshots, ascending. */
  async syncGenerations(): Promise<number[]> {
    const out: number[] = [];
    for (const s of await this.snaps()) {
      const m = new RegExp(`^${SYNC_SNAP_PREFIX}(\\d+)$`).exec(s.name);
      if (m) out.push(Number(m[1]));
    }
    return out.sort((a, b) => a - b);
  }

  async createSnap(name: string): Promise<void> {
    await this.rbd(["snap", "create", `${this.spec}@${name}`]);
  }

  /** Remove a snapshot; a snapshot (or image) that is gone is success. */
  async removeSnap(name: string): Promise<void> {
    try {
      await this.rbd(["snap", "rm", "--no-progress", `${this.spec}@${name}`]);
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
  }

  /**
   * Remove every `sds-sync-<n>` snapshot whose n is not in `keep`. `known`: the generations the
   * caller listed already (saves an `rbd snap ls`; one that is gone meanwhile is fine).
   */
  async removeSyncSnaps(keep: readonly number[] = [], known?: readonly number[]): Promise<void> {
    for (const g of known ?? (await this.syncGenerations())) if (!keep.includes(g)) await this.removeSnap(`${SYNC_SNAP_PREFIX}${g}`);
  }

  /** Remove every snapshot replication made (sync and token snapshots): the pair is gone. */
  async removeReplicationSnaps(): Promise<void> {
    for (const s of await this.snaps()) if (s.name.startsWith(SYNC_SNAP_PREFIX)) await this.removeSnap(s.name);
  }

  /** Roll the head back to snapshot `name` (server-side; the head's writes since are lost). */
  async rollback(name: string, timeoutMs = 3_600_000): Promise<void> {
    await this.rbd(["snap", "rollback", "--no-progress", `${this.spec}@${name}`], timeoutMs);
  }

  /** Whether the image can be reached now (its conf is readable and the cluster answers within 10 s). */
  async reachable(): Promise<boolean> {
    const quick = new RbdImage(this.path, { run: this.run, spawn: this.spawn, timeoutMs: 30_000, mountTimeoutSeconds: 10 });
    try {
      return (await quick.sizeBytes()) !== undefined;
    } catch (err) {
      if (err instanceof BackendError) return false;
      throw err;
    }
  }
}
