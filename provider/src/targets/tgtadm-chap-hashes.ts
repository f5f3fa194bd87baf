/**
 * What tgtd cannot say: the password of a CHAP account (tgtd shows account names only). A scrypt
 * hash of each password set through one tgtd is kept in a root-only JSON file, so `ensureChap`
 * can tell "the account already has this password" (adopt it) from "it has another or an
 * unknown one" (replace it). The file never holds a password.
 *
 * Cost: scrypt with N = 2^10 (1 MiB, ~3 ms), not Node's default 2^14 (16 MiB, ~45 ms of CPU).
 * With one CHAP account per target, every attach on a unique-target backend makes an account
 * and hashes its password: at 2^14 that was three quarters of the attach's CPU (bench:attach,
 * 37 ms of 48) and held 50 concurrent attaches near 10/s (26/s at 2^10). A costlier hash would
 * guard against someone reading this root-only file and guessing passwords offline; but
 * whoever can read it (root where tgtd runs) can read tgtd's memory, which holds the passwords,
 * and the passwords sds sets are 96 random bits, beyond guessing at any cost. Entries written
 * with the old cost (`salt:hash`) are still read; new ones say their cost (`N:salt:hash`).
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { promisify } from "node:util";
import type { Chap } from "./target";

const scryptAsync = promisify(scrypt) as (password: string, salt: Buffer, keylen: number, options: { N: number }) => Promise<Buffer>;
/** scrypt's cost of new entries (see the file comment), and that of entries without one (round 1). */
const COST = 1024;
const OLD_COST = 16384;

/** The password hashes of one tgtd's CHAP accounts, in `file`. */
export class ChapHashes {
  /** Serializes read-modify-write of the file: concurrent attaches would otherwise lose entries. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(readonly file: string) {}

  /** True when the remembered hash of `chap.username` is that of `chap.password`. */
  async matches(chap: Chap): Promise<boolean> {
    const stored = (await this.read())[chap.username];
    if (!stored) return false;
    const parts = stored.split(":");
    const cost = parts.length === 3 ? Number(parts.shift()) : OLD_COST;
    const [salt, hash] = parts.map((h) => Buffer.from(h, "hex"));
    if (!salt || !hash || hash.length !== 32 || !Number.isInteger(Math.log2(cost)) || cost < 2 || cost > OLD_COST) return false;
    return timingSafeEqual(hash, await scryptAsync(chap.password, salt, 32, { N: cost }));
  }

  /** Remember `chap.password` (as a salted hash) for `chap.username`. */
  async remember(chap: Chap): Promise<void> {
    const salt = randomBytes(16);
    const hash = await scryptAsync(chap.password, salt, 32, { N: COST });
    await this.update((hashes) => ({ ...hashes, [chap.username]: `${COST}:${salt.toString("hex")}:${hash.toString("hex")}` }));
  }

  /** Forget `username`; forgetting what is not remembered is success. */
  async forget(username: string): Promise<void> {
    await this.update((hashes) => {
      if (!(username in hashes)) return undefined;
      delete hashes[username];
      return hashes;
    });
  }

  private async read(): Promise<Record<string, string>> {
    try {
      return JSON.parse(await fs.readFile(this.file, "utf8")) as Record<string, string>;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
      throw err;
    }
  }

  private update(change: (hashes: Record<string, string>) => Record<string, string> | undefined): Promise<void> {
    const next = this.queue.then(async () => {
      const updated = change(await this.read());
      if (updated) await this.write(updated);
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Why the rename: a reader in another process sees the old file or the new one, never half of one. */
  private async write(hashes: Record<string, string>): Promise<void> {
    await fs.mkdir(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    await fs.writeFile(tmp, JSON.stringify(hashes), { mode: 0o600 });
    await fs.rename(tmp, this.file);
  }
}
