/**
 * Paths a user gives (a pool's `path`, a `stateUrl` file): checked before anything is made there,
 * and folders made with a bound.
 *
 * Why: the kernel's own file systems are no place for files. Under /proc, mkdir answers ENOENT for
 * a folder whose parent exists, and Node's recursive mkdir retries that forever at full CPU; /sys
 * and cgroup answer EPERM, devtmpfs holds device nodes. Such a path is refused at config time, in
 * one line naming the property, decided by the file system the path would land on (the nearest
 * existing ancestor, symbolic links followed, looked up in /proc/self/mountinfo; statfs f_type when
 * that cannot be read), not by its spelling alone: /dev/shm is a tmpfs and fine, /sys/fs/cgroup/x
 * is refused even when a tmpfs is mounted there.
 *
 * Folders are made one level at a time (never Node's recursive mkdir, which is what spins) and,
 * by {@link makeFolder}, within a time bound: a hung NFS or FUSE mount answers with an error
 * after `timeoutMs` instead of holding the run forever (the system call itself stays blocked in
 * libuv's thread pool; only the caller is freed).
 *
 * What is left: the check's own lstat/realpath of the nearest existing ancestor is synchronous
 * (config resolution is); it is skipped on network and FUSE mounts, where it could hang.
 */
import * as fs from "node:fs";
import * as path from "node:path";

/** File systems of the kernel's own, where sds never keeps a state or a pool. */
export const SPECIAL_FILE_SYSTEMS: ReadonlySet<string> = new Set([
  "proc",
  "sysfs",
  "devtmpfs",
  "devpts",
  "cgroup",
  "cgroup2",
  "debugfs",
  "tracefs",
  "securityfs",
  "pstore",
  "bpf",
  "configfs",
  "fusectl",
  "efivarfs",
  "mqueue",
  "binfmt_misc",
  "selinuxfs",
  "nsfs",
  "rpc_pipefs",
  "hugetlbfs",
]);

/** A special file system whose whole tree is off limits, tmpfs mounts inside it included. */
const SPECIAL_TREES = new Set(["proc", "sysfs"]);

/** Where a stat could block: nothing is stat'ed there at config time. */
const NETWORK_OR_FUSE = /^(nfs\d?|cifs|smb3?|9p|ceph|glusterfs|lustre|afs|fuse(\..*)?|sshfs)$/;

/** statfs f_type of the special file systems, for a machine whose mountinfo cannot be read. */
const MAGIC: ReadonlyMap<number, string> = new Map([
  [0x9fa0, "proc"],
  [0x62656572, "sysfs"],
  [0x1cd1, "devpts"],
  [0x27e0eb, "cgroup"],
  [0x63677270, "cgroup2"],
  [0x64626720, "debugfs"],
  [0x74726163, "tracefs"],
  [0x73636673, "securityfs"],
  [0x6165676c, "pstore"],
  [0xcafe4a11, "bpf"],
  [0x62656570, "configfs"],
  [0xde5e81e4, "efivarfs"],
  [0x6e736673, "nsfs"],
]);

/** One mount of /proc/self/mountinfo. */
export interface Mount {
  mountPoint: string;
  fsType: string;
}

/** Parse /proc/self/mountinfo text (mount points unescaped: `\040` is a space). */
export function parseMountInfo(text: string): Mount[] {
  const out: Mount[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    const dash = f.indexOf("-");
    if (f.length < 5 || dash < 0 || dash + 1 >= f.length) continue;
    out.push({ mountPoint: f[4].replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))), fsType: f[dash + 1] });
  }
  return out;
}

function readMounts(): Mount[] | undefined {
  try {
    const m = parseMountInfo(fs.readFileSync("/proc/self/mountinfo", "utf8"));
    return m.length > 0 ? m : undefined;
  } catch {
    return undefined;
  }
}

function under(p: string, mountPoint: string): boolean {
  return mountPoint === "/" || p === mountPoint || p.startsWith(mountPoint + "/");
}

/** The mounts `p` lies in, innermost last (the later of two mounts on one point wins, as in the kernel). */
function mountChain(mounts: readonly Mount[], p: string): Mount[] {
  const chain = new Map<string, Mount>();
  for (const m of mounts) if (under(p, m.mountPoint)) chain.set(m.mountPoint, m);
  return [...chain.values()].sort((a, b) => a.mountPoint.length - b.mountPoint.length);
}

/** `p` with the nearest existing ancestor's symbolic links resolved (the missing rest appended as given). */
function resolveExisting(p: string): string {
  let at = p;
  const rest: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(at), ...rest);
    } catch {
      const up = path.dirname(at);
      if (up === at) return p;
      rest.unshift(path.basename(at));
      at = up;
    }
  }
}

function nearestExisting(p: string): string {
  let at = p;
  while (!fs.existsSync(at) && path.dirname(at) !== at) at = path.dirname(at);
  return at;
}

/**
 * Why `p` (absolute) cannot hold sds's files, in a phrase ("is on /proc, a proc file system, …"),
 * or undefined when it can. `mounts` is for tests; default /proc/self/mountinfo.
 */
export function specialPathReason(p: string, mounts: readonly Mount[] | undefined = readMounts()): string | undefined {
  const lexical = path.resolve(p);
  if (!mounts) {
    // No mountinfo (not Linux, or /proc hidden): ask the nearest existing folder's f_type.
    try {
      const type = MAGIC.get(Number(fs.statfsSync(nearestExisting(lexical)).type));
      if (type) return `is on a ${type} file system, the kernel's own, where sds cannot keep files; choose a folder on a disk`;
    } catch {
      // Nothing to say: the use of the path will say what is wrong.
    }
    return undefined;
  }
  const lexicalChain = mountChain(mounts, lexical);
  const inner = lexicalChain[lexicalChain.length - 1];
  const real = inner && NETWORK_OR_FUSE.test(inner.fsType) ? lexical : resolveExisting(lexical);
  const chain = mountChain(mounts, real);
  const own = chain[chain.length - 1];
  const bad = own && SPECIAL_FILE_SYSTEMS.has(own.fsType) ? own : chain.find((m) => SPECIAL_TREES.has(m.fsType));
  if (!bad) return undefined;
  const via = !under(lexical, bad.mountPoint) ? ` (through symbolic links: ${real})` : "";
  return `is on ${bad.mountPoint}${via}, a ${bad.fsType} file system, the kernel's own, where sds cannot keep files; choose a folder on a disk`;
}

const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;

/**
 * Make `dir` and its missing parents, one level at a time (never a recursive mkdir that can spin),
 * synchronously. New folders get `mode`; existing ones are left as they are. Returns the topmost
 * folder made, if any.
 */
export function makeFolderSync(dir: string, mode = 0o700): string | undefined {
  const missing: string[] = [];
  let at = path.resolve(dir);
  while (!fs.existsSync(at)) {
    missing.unshift(at);
    const up = path.dirname(at);
    if (up === at) break;
    at = up;
  }
  for (const d of missing) {
    try {
      fs.mkdirSync(d, { mode });
    } catch (err) {
      if (errno(err) !== "EEXIST") throw err;
    }
  }
  return missing[0];
}

/** A file-system call took longer than its bound (a hung mount): `code` is ETIMEDOUT. */
export class PathTimeoutError extends Error {
  readonly code = "ETIMEDOUT";
  constructor(
    readonly path: string,
    readonly timeoutMs: number,
    what: string,
    options?: { cause?: unknown },
  ) {
    super(`${what} ${path} did not answer within ${timeoutMs} ms (a hung mount?)`, options);
  }
}

/** Why: a stuck system call must free its caller; `fn`'s late answer is dropped. */
export function bounded<T>(p: string, timeoutMs: number, what: string, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => reject(new PathTimeoutError(p, timeoutMs, what)), timeoutMs);
    timer.unref();
  });
  const work = fn();
  work.catch(() => undefined);
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Make `dir` and its missing parents one level at a time, new ones with `mode`, within
 * `timeoutMs` (default 10 s): a hung mount rejects with {@link PathTimeoutError}.
 */
export function makeFolder(dir: string, o: { mode?: number; timeoutMs?: number } = {}): Promise<void> {
  const mode = o.mode ?? 0o700;
  return bounded(dir, o.timeoutMs ?? 10_000, "making the folder", async () => {
    const missing: string[] = [];
    let at = path.resolve(dir);
    while (!(await fs.promises.stat(at).then(() => true, (e: unknown) => (errno(e) === "ENOENT" ? false : Promise.reject(e))))) {
      missing.unshift(at);
      const up = path.dirname(at);
      if (up === at) break;
      at = up;
    }
    for (const d of missing) await fs.promises.mkdir(d, { mode }).catch((e: unknown) => (errno(e) === "EEXIST" ? undefined : Promise.reject(e)));
  });
}
