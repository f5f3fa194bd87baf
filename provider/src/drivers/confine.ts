/**
 * Confinement to a storage node's root: the one place that decides whether a path a caller named
 * stays inside `--storage-root` once symbolic links are followed.
 *
 * Why: the storage routes of sds-agent create, grow, delete, serve and replicate files at paths
 * the client names. A lexical check (`/root/..`) is not enough: a symlink inside the root (left by
 * a local user, a restore, a mistake) can lead anywhere, and every open, mkdir, truncate, cp,
 * tgtd and nbdkit follows it.
 *
 * The rules:
 * - A path must be absolute, normalized (no `.`, `..`, `//`, trailing `/`) and strictly under the
 *   root, before anything touches the disk.
 * - Folders are resolved one component at a time from the root's real path: a component that
 *   resolves outside the root (a symlink out, or one that dangles) is refused; symlinks that stay
 *   inside are followed. Missing folders are created (when asked) one level at a time, only inside
 *   a folder already resolved, so nothing is ever created outside.
 * - The last component of a file must not be a symbolic link at all. Our own opens use
 *   O_NOFOLLOW ({@link openNoFollow}), which closes the gap between the check and the open.
 *
 * What is left (documented, not solved): a local user who can rename folders inside the root
 * between the check and the use could still swap a checked folder for a symlink. Node has no
 * openat(2); keep the root owned by root with mode 0700 so that only the agent writes in it.
 *
 * The walks are bounded in time ({@link boundedFsCall}): a folder under the root on a mount that
 * stopped answering fails the call with a {@link FsTimeoutError} instead of holding the agent.
 * The caller is freed, not the call: it stays blocked in a libuv thread (four by default) and
 * finishes when the mount answers, so a walk with `create` may still make the folder then.
 */
import { constants, promises as fs } from "node:fs";
import * as path from "node:path";
import { bounded, PathTimeoutError } from "../domain/user-paths";
import { BackendError, invalidInput, type UserError } from "../errors";

/** How long one walk or call on a folder under a root or a pool may take before it is a hung mount. */
export const FS_CALL_TIMEOUT_MS = 10_000;

/**
 * A file-system call on a pool's or a root's folder did not answer within its bound (a hung NFS
 * or FUSE mount): TIMEOUT, retryable (the mount may come back). A BackendError, so a storage
 * node answers it as one (502 with the message) and the provider names the pool's property.
 */
export class FsTimeoutError extends BackendError {
  constructor(
    readonly path: string,
    readonly timeoutMs: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super("TIMEOUT", message, true, options);
  }
}

/** Why: `fn` on a folder that may be on a dead mount frees its caller at the bound, as a {@link FsTimeoutError}. */
export async function boundedFsCall<T>(p: string, timeoutMs: number, what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await bounded(p, timeoutMs, what, fn);
  } catch (err) {
    if (err instanceof PathTimeoutError) throw new FsTimeoutError(err.path, err.timeoutMs, err.message, { cause: err });
    throw err;
  }
}

/** Why: the same refusal whatever went wrong, one line naming the field. */
function refuse(field: string, p: string, why: string): UserError {
  return invalidInput(field, `${JSON.stringify(p)} ${why}`);
}

const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;

function inside(realRoot: string, real: string): boolean {
  return real === realRoot || real.startsWith(realRoot + path.sep);
}

/** The components of `p` below `root`, or a refusal when `p` is not absolute, normalized and strictly under it. */
export function partsUnder(root: string, p: string, field: string): string[] {
  const top = path.resolve(root);
  const prefix = top.endsWith(path.sep) ? top : top + path.sep;
  if (typeof p !== "string" || p.includes("\0") || !path.isAbsolute(p) || path.resolve(p) !== p || !p.startsWith(prefix) || p === prefix) {
    throw refuse(field, p, `is not an absolute, normalized path under this node's storage root ${root}`);
  }
  return p.slice(prefix.length).split(path.sep);
}

/**
 * Walk `parts` from the root's real path. Returns the real path reached, plus the components
 * not found when `create` is false (nothing is created then).
 */
async function walk(root: string, p: string, parts: readonly string[], field: string, create: boolean): Promise<{ real: string; missing: string[] }> {
  const realRoot = await fs.realpath(root);
  let at = realRoot;
  for (let i = 0; i < parts.length; i++) {
    const next = path.join(at, parts[i]);
    let real: string;
    try {
      real = await fs.realpath(next);
    } catch (err) {
      if (errno(err) === "ENOTDIR") throw refuse(field, p, `goes through ${at}, which is not a folder`);
      if (errno(err) !== "ENOENT") throw err;
      // realpath cannot resolve a dangling symlink, but lstat still sees it: its target is unknown.
      if (await isSymlink(next)) throw refuse(field, p, `goes through ${next}, a symbolic link to nothing; a storage node does not follow it`);
      if (!create) return { real: at, missing: parts.slice(i) };
      await fs.mkdir(next).catch((e) => {
        if (errno(e) !== "EEXIST") throw e;
      });
      real = await fs.realpath(next);
    }
    if (!inside(realRoot, real)) throw refuse(field, p, `leaves this node's storage root ${root} through the symbolic link ${next}`);
    at = real;
  }
  return { real: at, missing: [] };
}

async function isSymlink(p: string): Promise<boolean> {
  try {
    return (await fs.lstat(p)).isSymbolicLink();
  } catch (err) {
    if (errno(err) === "ENOENT") return false;
    throw err;
  }
}

/**
 * The real path of a folder under the root (a pool). With `create`, missing folders are made, one
 * level at a time and only inside the root; without it, a missing folder answers undefined.
 */
export async function confinedFolder(root: string, p: string, field: string, o: { create: boolean; timeoutMs?: number }): Promise<string | undefined> {
  const parts = partsUnder(root, p, field);
  return boundedFsCall(p, o.timeoutMs ?? FS_CALL_TIMEOUT_MS, "resolving the folder", async () => {
    const { real, missing } = await walk(root, p, parts, field, o.create);
    if (missing.length > 0) return undefined;
    const st = await fs.stat(real);
    if (!st.isDirectory()) throw refuse(field, p, "is not a folder");
    return real;
  });
}

/**
 * A file under the root: its folder resolved inside the root (never created), and the file
 * itself, when it exists, not a symbolic link. Returns the path to use (the real folder + the
 * name); when the folder is missing, the path as given (nothing can be opened there, and
 * nothing is created).
 */
export async function confinedFile(root: string, p: string, field: string, timeoutMs = FS_CALL_TIMEOUT_MS): Promise<string> {
  const parts = partsUnder(root, p, field);
  return boundedFsCall(p, timeoutMs, "resolving the file", async () => {
    const { real, missing } = await walk(root, p, parts.slice(0, -1), field, false);
    if (missing.length > 0) return p;
    const file = path.join(real, parts[parts.length - 1]);
    await refuseSymlink(file, field, p);
    return file;
  });
}

/** Refuse a file that is a symbolic link (a storage node serves and writes only regular files). */
export async function refuseSymlink(file: string, field: string, shown: string = file): Promise<void> {
  if (await isSymlink(file)) throw refuse(field, shown, "is a symbolic link; a storage node serves and writes only regular files");
}

/**
 * Open a file without following a symbolic link as its last component (O_NOFOLLOW), so a link
 * made after a check still cannot redirect the open. A link is an INVALID_INPUT naming `field`.
 */
export async function openNoFollow(file: string, flags: number, field: string, mode?: number): Promise<fs.FileHandle> {
  try {
    return await fs.open(file, flags | constants.O_NOFOLLOW, mode);
  } catch (err) {
    if (errno(err) === "ELOOP") throw refuse(field, file, "is a symbolic link; a storage node serves and writes only regular files");
    throw err;
  }
}
