/**
 * The Ceph RBD driver: one instance per `driver: rbd` backend (its cluster, user and key); each
 * sds pool is a Ceph pool (the pool's `path`), each volume an RBD image named by the volume id.
 * Every call is an `rbd` or `ceph` command with `--format json` through exec/, given
 * `-c <conf> --id <user>` and nothing secret.
 *
 * The client conf: sds writes its own, per backend, in its run folder (`<dir>/<backend>.conf`,
 * 0600 in a 0700 folder): the monitors (`rbd.monHost`, else the `mon host` of `rbd.conf` or
 * /etc/ceph/<cluster>.conf) and the keyring file (`rbd.keyringFile`; an inline `rbd.key` is
 * written to `<dir>/<backend>.client.<user>.keyring`, 0600, next to it; else Ceph's defaults
 * /etc/ceph/<cluster>.client.<user>.keyring and /etc/ceph/<cluster>.keyring). The same conf is in
 * every volume path (domain/rbd-path.ts), so tgtd and qemu-nbd reach the image with `conf=` +
 * `id=` too. Written on first use, rewritten only when its content changes. Why not the user's
 * conf: it may name a keyring the provider cannot read, an admin socket concurrent clients
 * collide on, or lack the keyring line entirely.
 *
 * Choices, per the VolumeDriver contract (volume-driver.ts):
 * - Thin by nature: `rbd create` allocates nothing; capacity is the Ceph pool's (`ceph df`:
 *   stored + max_avail, or the pool's `totalCapacityGib`; free is max_avail, which already
 *   accounts for the pool's replication).
 * - Clones are snapshot + clone (format 2) + flatten, then the snapshot is removed: the clone
 *   owns all its data, so its source can be deleted any time after (a kept parent would make the
 *   source's delete fail while clones live). The source is looked for on this backend's cluster
 *   (any Ceph pool of it); a clone across Ceph clusters or from another driver is refused here
 *   (the pool catalog routes those to a copy, drivers/rbd-copy.ts, before they reach a driver).
 * - Delete purges the image's snapshots first (sds's own, and any left by an interrupted clone or
 *   a replication); an image a client still has open ("still has watchers": an export's tgtd or
 *   qemu-nbd) is a BackendError that names the watchers and what to do, and nothing is removed.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { PoolConfig, RbdOptions } from "../domain/backend";
import type { ProgressListener } from "../domain/progress";
import { formatRbdPath } from "../domain/rbd-path";
import { BackendError, CommandFailedError, UserError } from "../errors";
import { type RunOptions, type Runner, run as defaultRun } from "../exec/run";
import type { PoolStats, VolumeAllocation, VolumeDriver } from "./volume-driver";

const GiB = 1024 ** 3;
/** A Ceph pool name as a pool's `path` (domain/backend.ts checks the same when loading). */
const CEPH_POOL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export interface RbdDriverOptions {
  /** The backend's name: names its conf and keyring files, and is named in errors. */
  backend: string;
  /** The backend's `rbd` options, without the key. */
  rbd: Omit<RbdOptions, "key">;
  /** The user's cephx key (an inline `rbd.key`), written to a 0600 keyring file; never in argv. */
  key?: string;
  /** sds's folder for client confs and keyrings (made 0700). */
  dir: string;
  /** Injected for unit tests (recorded argv); default exec/run. */
  runner?: Runner;
  /** Bound on each command; default 120 s (a clone's flatten gets an hour). */
  timeoutMs?: number;
}

interface CephDfPool {
  name: string;
  stats: { stored?: number; bytes_used?: number; max_avail: number };
}

export class RbdDriver implements VolumeDriver {
  readonly kind = "rbd";
  private readonly runner: Runner;
  private readonly timeoutMs: number;
  private written?: string;

  constructor(private readonly o: RbdDriverOptions) {
    this.runner = o.runner ?? defaultRun;
    this.timeoutMs = o.timeoutMs ?? 120_000;
  }

  /** The client conf of this backend (written on first use). */
  get confFile(): string {
    return path.join(this.o.dir, `${this.o.backend}.conf`);
  }

  /** The keyring file of an inline key (only when `key` was given). */
  get keyFile(): string {
    return path.join(this.o.dir, `${this.o.backend}.client.${this.o.rbd.user}.keyring`);
  }

  /**
   * Write the client conf (and the key's keyring) when missing or different; idempotent, and
   * synchronous because {@link volumePath} needs the file to exist before a target reads it.
   */
  ensureConf(): string {
    const keyrings = this.o.key !== undefined ? [this.keyFile] : this.o.rbd.keyringFile !== undefined ? [this.o.rbd.keyringFile] : [`/etc/ceph/${this.o.rbd.cluster}.client.${this.o.rbd.user}.keyring`, `/etc/ceph/${this.o.rbd.cluster}.keyring`];
    const text = [
      `# Written by sds for backend ${this.o.backend} (driver: rbd): the monitors and client.${this.o.rbd.user}'s keyring.`,
      "# Rewritten from the backend's rbd options; edits here are lost.",
      "[global]",
      `mon host = ${this.monHost()}`,
      `keyring = ${keyrings.join(",")}`,
      // A cluster that does not answer fails a command (and a preview's discovery) in 30 s, not Ceph's 300.
      "client mount timeout = 30",
      "",
    ].join("\n");
    if (this.written === text && fs.existsSync(this.confFile)) return this.confFile;
    fs.mkdirSync(this.o.dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(this.o.dir, 0o700);
    if (this.o.key !== undefined) writePrivate(this.keyFile, `[client.${this.o.rbd.user}]\n\tkey = ${this.o.key}\n`);
    writePrivate(this.confFile, text);
    this.written = text;
    return this.confFile;
  }

  /** `mon host`: the option, else the conf's (rbd.conf or /etc/ceph/<cluster>.conf). */
  private monHost(): string {
    if (this.o.rbd.monHost !== undefined) return this.o.rbd.monHost;
    const conf = this.o.rbd.conf ?? `/etc/ceph/${this.o.rbd.cluster}.conf`;
    let text: string;
    try {
      text = fs.readFileSync(conf, "utf8");
    } catch (err) {
      throw new UserError("INVALID_INPUT", `backend ${this.o.backend}: cannot read the Ceph conf ${conf} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): set rbd.conf to a readable conf, or rbd.monHost`, undefined, { cause: err });
    }
    const m = text.match(/^\s*mon[ _]host\s*=\s*(.+?)\s*$/m);
    if (!m) throw new UserError("INVALID_INPUT", `backend ${this.o.backend}: the Ceph conf ${conf} names no "mon host": add it there, or set rbd.monHost`);
    return m[1];
  }

  private base(): string[] {
    return ["-c", this.ensureConf(), "--id", this.o.rbd.user];
  }

  private rbd(args: string[], options: RunOptions = {}) {
    return this.runner("rbd", [...this.base(), ...args], { timeoutMs: this.timeoutMs, ...options, env: { LC_ALL: "C" } });
  }

  private async rbdJson<T>(args: string[]): Promise<T> {
    return JSON.parse((await this.rbd([...args, "--format", "json"])).stdout) as T;
  }

  private cephPool(pool: PoolConfig): string {
    if (!CEPH_POOL.test(pool.path)) throw new UserError("INVALID_INPUT", `backend ${this.o.backend}: pool ${pool.name}: path ${JSON.stringify(pool.path)} is not a Ceph pool name`);
    return pool.path;
  }

  private spec(pool: PoolConfig, volumeId: string): string[] {
    return ["--pool", this.cephPool(pool), "--image", volumeId];
  }

  async getPoolStats(pool: PoolConfig): Promise<PoolStats> {
    const name = this.cephPool(pool);
    const r = await this.runner("ceph", [...this.base(), "--connect-timeout", "30", "df", "--format", "json"], { timeoutMs: this.timeoutMs, env: { LC_ALL: "C" } });
    const df = JSON.parse(r.stdout) as { pools?: CephDfPool[] };
    const p = df.pools?.find((x) => x.name === name);
    if (!p) throw new UserError("INVALID_INPUT", `backend ${this.o.backend}: pool ${pool.name}: Ceph pool "${name}" does not exist (a Ceph admin makes it: ceph osd pool create ${name}; rbd pool init ${name})`);
    const stored = p.stats.stored ?? p.stats.bytes_used ?? 0;
    const fsBytes = stored + p.stats.max_avail;
    const totalBytes = pool.totalCapacityGib !== undefined ? pool.totalCapacityGib * GiB : fsBytes;
    return { totalBytes, freeBytes: Math.min(p.stats.max_avail, totalBytes), fsBytes, fsFreeBytes: p.stats.max_avail };
  }

  async createVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    try {
      await this.rbd(["create", ...this.spec(pool, volumeId), "--size", `${sizeBytes}B`]);
    } catch (err) {
      if (!(err instanceof CommandFailedError && /\(17\) File exists/.test(err.stderr))) throw err;
      const size = await this.getVolumeSizeBytes(pool, volumeId);
      if (size !== sizeBytes) throw new UserError("CONFLICT", `volume ${volumeId} already exists in Ceph pool ${pool.path} with ${size ?? "no"} bytes, not ${sizeBytes}`, undefined, { cause: err });
    }
  }

  async cloneVolume(source: { pool: PoolConfig; volumeId: string }, pool: PoolConfig, volumeId: string, sizeBytes: number, onProgress?: ProgressListener): Promise<void> {
    if (!CEPH_POOL.test(source.pool.path)) {
      throw new UserError("INVALID_INPUT", `volume ${source.volumeId} is on pool ${source.pool.name}, not a Ceph pool: backend ${this.o.backend} (driver: rbd) clones only volumes of its own Ceph cluster`, "sourceVolumeId");
    }
    const sourceSize = await this.getVolumeSizeBytes(source.pool, source.volumeId);
    if (sourceSize === undefined) {
      throw new UserError("NOT_FOUND", `volume ${source.volumeId}: no image ${source.pool.path}/${source.volumeId} on backend ${this.o.backend}'s Ceph cluster (a clone across Ceph clusters is not supported)`, "sourceVolumeId");
    }
    const snap = `sds-clone-${volumeId}`.replace(/[^A-Za-z0-9_.-]/g, "_");
    const src = [...this.spec(source.pool, source.volumeId), "--snap", snap];
    await this.rbd(["snap", "rm", ...src, "--no-progress"]).catch(() => undefined); // a left-over of an interrupted clone
    await this.rbd(["snap", "create", ...src, "--no-progress"]);
    try {
      await this.rbd(["clone", "--rbd-default-clone-format", "2", ...src, "--dest-pool", this.cephPool(pool), "--dest", volumeId]);
      await this.rbd(["flatten", ...this.spec(pool, volumeId), "--no-progress"], { timeoutMs: 3_600_000 });
      onProgress?.({ doneBytes: sourceSize, totalBytes: sourceSize });
    } finally {
      await this.rbd(["snap", "rm", ...src, "--no-progress"]).catch(() => undefined);
    }
    if (sizeBytes > sourceSize) await this.rbd(["resize", ...this.spec(pool, volumeId), "--size", `${sizeBytes}B`, "--no-progress"]);
  }

  async extendVolume(pool: PoolConfig, volumeId: string, sizeBytes: number): Promise<void> {
    const size = await this.getVolumeSizeBytes(pool, volumeId);
    if (size === undefined) throw new UserError("NOT_FOUND", `volume ${volumeId}: no image ${pool.path}/${volumeId} in backend ${this.o.backend}'s Ceph cluster`);
    if (sizeBytes < size) throw new UserError("INVALID_INPUT", `volume ${volumeId}: cannot shrink from ${size} to ${sizeBytes} bytes`, "sizeGib");
    if (sizeBytes === size) return;
    await this.rbd(["resize", ...this.spec(pool, volumeId), "--size", `${sizeBytes}B`, "--no-progress"]);
  }

  async deleteVolume(pool: PoolConfig, volumeId: string): Promise<void> {
    if ((await this.getVolumeSizeBytes(pool, volumeId)) === undefined) return;
    try {
      await this.rbd(["snap", "purge", ...this.spec(pool, volumeId), "--no-progress"]);
      await this.rbd(["rm", ...this.spec(pool, volumeId), "--no-progress"]);
    } catch (err) {
      if (err instanceof CommandFailedError && /No such file or directory/.test(err.stderr) && (await this.getVolumeSizeBytes(pool, volumeId)) === undefined) return;
      if (err instanceof CommandFailedError && /still has watchers/.test(err.stderr)) throw new BackendError("COMMAND_FAILED", await this.watchersMessage(pool, volumeId), true, { cause: err });
      throw err;
    }
  }

  /** Who holds an image open, for the error of a delete that cannot go on. */
  private async watchersMessage(pool: PoolConfig, volumeId: string): Promise<string> {
    let who = "";
    try {
      const s = await this.rbdJson<{ watchers?: Array<{ address?: string; client?: number }> }>(["status", ...this.spec(pool, volumeId)]);
      who = (s.watchers ?? []).map((w) => `client.${w.client} at ${w.address}`).join(", ");
    } catch {
      // the status is only for the message
    }
    return (
      `volume ${volumeId}: image ${pool.path}/${volumeId} is still open (watchers: ${who || "unknown"}): an export still serves it ` +
      `(a tgt LUN or a qemu-nbd server of this volume; see \`sds exports\` or tgtadm --op show), or a client that crashed holds it for up to 30 s; ` +
      `detach every attachment of the volume, then retry`
    );
  }

  async getVolumeSizeBytes(pool: PoolConfig, volumeId: string): Promise<number | undefined> {
    try {
      return (await this.rbdJson<{ size: number }>(["info", ...this.spec(pool, volumeId)])).size;
    } catch (err) {
      if (isImageMissing(err)) return undefined;
      throw err;
    }
  }

  async getVolumeAllocation(pool: PoolConfig, volumeId: string): Promise<VolumeAllocation | undefined> {
    try {
      const du = await this.rbdJson<{ images?: Array<{ name: string; snapshot?: string; provisioned_size: number; used_size: number }> }>(["du", ...this.spec(pool, volumeId)]);
      const head = du.images?.find((i) => i.name === volumeId && i.snapshot === undefined);
      return head ? { sizeBytes: head.provisioned_size, allocatedBytes: head.used_size } : undefined;
    } catch (err) {
      if (isImageMissing(err)) return undefined;
      throw err;
    }
  }

  volumePath(pool: PoolConfig, volumeId: string): string {
    return formatRbdPath({ cephPool: this.cephPool(pool), image: volumeId, user: this.o.rbd.user, conf: this.ensureConf() });
  }
}

/**
 * An image that is not there: ENOENT ("error opening image X: (2) No such file or directory",
 * `du`: "specified image X is not found"), but not a missing pool ("error opening pool 'p'"),
 * which is a fault of the configuration, not a gone volume.
 */
function isImageMissing(err: unknown): boolean {
  return err instanceof CommandFailedError && /\(2\) No such file or directory/.test(err.stderr) && !/error opening pool/.test(err.stderr);
}

/** Why: a conf or keyring file must never be readable by others, not even for a moment (written 0600, renamed into place). */
function writePrivate(file: string, text: string): void {
  try {
    if (fs.readFileSync(file, "utf8") === text) {
      fs.chmodSync(file, 0o600);
      return;
    }
  } catch {
    // missing: written below
  }
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
}
