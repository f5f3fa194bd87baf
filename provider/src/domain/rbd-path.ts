/**
 * The volume path of an RBD volume: qemu's rbd filename syntax,
 * `rbd:<cephPool>/<image>[@<snap>]:id=<user>:conf=<confFile>`.
 *
 * Why this form: `VolumeDriver.volumePath` is one string, and every consumer of an RBD volume
 * (tgt's rbd backing store, qemu-nbd, qemu-img, the replication engine) must learn the same four
 * facts from it: which pool and image, which Ceph user, which client conf. qemu and qemu-nbd take
 * the string as it is; tgt takes `pool/image` and `conf=…;id=…` (see {@link parseRbdPath}). The
 * conf file names the monitors and the keyring file, so nothing secret is ever in the path, in
 * argv or in the state.
 *
 * Escaping follows qemu (block/rbd.c, qemu_rbd_next_tok): a backslash makes the next character
 * literal. `:` and `\` are escaped everywhere, `/` and `@` in the pool, image and snapshot names.
 * qemu finds a snapshot with strchr(`@`) before it unescapes, so an `@` in a pool or image name
 * can never round-trip through qemu: it is refused here.
 *
 * Bottom layer: imports nothing of ours.
 */

/** The parts of an RBD volume path. */
export interface RbdPath {
  /** The Ceph pool (not the sds pool name: the sds pool's `path`). */
  cephPool: string;
  /** The RBD image (for a volume: the sds volume id). */
  image: string;
  /** A snapshot of the image, for read-only views. */
  snap?: string;
  /** The Ceph user without `client.` (`admin`, `sds`). */
  user: string;
  /** The client conf file naming the monitors and the keyring file. */
  conf: string;
}

const PREFIX = "rbd:";

/** Whether `p` is an RBD volume path (a target or the replication engine chooses its way in by this). */
export function isRbdPath(p: string): boolean {
  return p.startsWith(PREFIX);
}

function escapeName(s: string, what: string): string {
  if (s.length === 0) throw new Error(`rbd path: empty ${what}`);
  if (s.includes("@")) throw new Error(`rbd path: ${what} ${JSON.stringify(s)} contains "@", which qemu reads as a snapshot`);
  return s.replace(/[\\:/]/g, (c) => `\\${c}`);
}

function escapeValue(s: string, what: string): string {
  if (s.length === 0) throw new Error(`rbd path: empty ${what}`);
  return s.replace(/[\\:]/g, (c) => `\\${c}`);
}

/** The RBD volume path of `p` (throws on an empty part or an `@` in a name: a bug in the caller). */
export function formatRbdPath(p: RbdPath): string {
  const snap = p.snap !== undefined ? `@${escapeName(p.snap, "snapshot")}` : "";
  return `${PREFIX}${escapeName(p.cephPool, "pool")}/${escapeName(p.image, "image")}${snap}:id=${escapeValue(p.user, "user")}:conf=${escapeValue(p.conf, "conf")}`;
}

/** Split `s` at the first unescaped `delim`: [token (still escaped), rest or undefined]. */
function nextToken(s: string, delim: string): [string, string | undefined] {
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "\\" && i + 1 < s.length) i++;
    else if (s[i] === delim) return [s.slice(0, i), s.slice(i + 1)];
  }
  return [s, undefined];
}

function unescape(s: string): string {
  return s.replace(/\\(.)/g, "$1");
}

/**
 * The parts of an RBD volume path, or undefined when `s` is not one (not `rbd:`, no pool, no
 * `id=` or `conf=`, an option without a value). Options other than `id` and `conf` are refused:
 * sds writes only those two.
 */
export function parseRbdPath(s: string): RbdPath | undefined {
  if (!isRbdPath(s)) return undefined;
  const [poolTok, afterPool] = nextToken(s.slice(PREFIX.length), "/");
  if (afterPool === undefined || poolTok === "") return undefined;
  const [beforeOpts, optsTok] = nextToken(afterPool, ":");
  let opts = optsTok;
  const [imageTok, snapTok] = nextToken(beforeOpts, "@");
  if (imageTok === "" || snapTok === "") return undefined;
  let user: string | undefined;
  let conf: string | undefined;
  while (opts !== undefined) {
    const [key, afterKey] = nextToken(opts, "=");
    if (afterKey === undefined) return undefined;
    const [value, rest] = nextToken(afterKey, ":");
    opts = rest;
    const k = unescape(key);
    if (k === "id") user = unescape(value);
    else if (k === "conf") conf = unescape(value);
    else return undefined;
  }
  if (!user || !conf) return undefined;
  const out: RbdPath = { cephPool: unescape(poolTok), image: unescape(imageTok), user, conf };
  if (snapTok !== undefined) out.snap = unescape(snapTok);
  return out;
}

/**
 * tgt's view of an RBD path (`tgtadm --bstype rbd`): the backing store `pool/image[@snap]` and
 * the bsopts `conf=<file>;id=<user>`. Why here: targets and tests build the same two strings.
 */
export function tgtRbdBacking(p: RbdPath): { backingStore: string; bsopts: string } {
  return { backingStore: `${p.cephPool}/${p.image}${p.snap !== undefined ? `@${p.snap}` : ""}`, bsopts: `conf=${p.conf};id=${p.user}` };
}
