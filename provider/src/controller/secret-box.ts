/**
 * Secrets at rest (CHAP passwords): AES-256-GCM, so the controller's database never holds them in
 * plain text. The key is the team's (`sds:secretKey` or `SDS_SECRET_KEY`, base64, 32 bytes), or,
 * for a SQLite state without one, a key file beside the database (`<state dir>/secret.key`, mode
 * 0600), made on the first seal (a preview seals nothing, so it makes no file).
 *
 * A state remembers a check value sealed with its key (`key_check`): a runner with another key is
 * told so in one line naming `secretKey`, instead of failing on (or worse, re-sealing with) a key
 * that cannot open what the others sealed.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { UserError } from "../errors";

/** Where the key comes from. */
export type KeySource = { key: string } | { file: string } | { missing: string };

const CHECK_PLAIN = "sds key check";

export class SecretBox {
  private keyBytes?: Buffer;

  constructor(private readonly source: KeySource) {}

  /**
   * The box of a state: the configured key (base64) when there is one; else the key file beside a
   * SQLite database (`:memory:` gets a key that lives as long as the process); else none, and
   * sealing or opening says what to set (`why`).
   */
  static forState(o: { secretKey?: string; sqliteFile?: string; why?: string }): SecretBox {
    if (o.secretKey !== undefined) return new SecretBox({ key: o.secretKey });
    if (o.sqliteFile === ":memory:") return new SecretBox({ key: randomBytes(32).toString("base64") });
    if (o.sqliteFile !== undefined) return new SecretBox({ file: path.join(path.dirname(o.sqliteFile), "secret.key") });
    return new SecretBox({ missing: o.why ?? "secretKey: no key to seal secrets with: set sds:secretKey (as a secret) or SDS_SECRET_KEY" });
  }

  /** Whether a key can be had without making one (configured, or its file exists). */
  get hasKey(): boolean {
    return "key" in this.source || ("file" in this.source && fs.existsSync(this.source.file));
  }

  seal(plain: string): string {
    const key = this.key(true);
    const iv = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", key, iv);
    const body = Buffer.concat([c.update(plain, "utf8"), c.final()]);
    return `v1:${iv.toString("base64")}:${c.getAuthTag().toString("base64")}:${body.toString("base64")}`;
  }

  open(sealed: string): string {
    const [v, iv, tag, body] = sealed.split(":");
    if (v !== "v1" || !iv || !tag || body === undefined) throw new Error("sds internal error: not a sealed secret");
    const d = createDecipheriv("aes-256-gcm", this.key(false), Buffer.from(iv, "base64"));
    d.setAuthTag(Buffer.from(tag, "base64"));
    try {
      return Buffer.concat([d.update(Buffer.from(body, "base64")), d.final()]).toString("utf8");
    } catch {
      throw this.wrongKey();
    }
  }

  /** A value to keep with the state, so that another key is recognised ({@link verify}). */
  checkValue(): string {
    return this.seal(CHECK_PLAIN);
  }

  /** Throws the one-line error naming the key when this box cannot open `check`. */
  verify(check: string): void {
    if (this.open(check) !== CHECK_PLAIN) throw this.wrongKey();
  }

  private wrongKey(): UserError {
    const which = "key" in this.source ? "sds:secretKey (or SDS_SECRET_KEY)" : "file" in this.source ? this.source.file : "the key";
    return new UserError("INVALID_INPUT", `secretKey: ${which} does not open this state's secrets: they were sealed with another key; use the key the state was made with (every runner sharing a state needs the same one)`, "secretKey");
  }

  private key(create: boolean): Buffer {
    if (this.keyBytes) return this.keyBytes;
    const s = this.source;
    if ("missing" in s) throw new UserError("INVALID_INPUT", s.missing, "secretKey");
    let text: string;
    if ("key" in s) {
      text = s.key;
    } else {
      if (create) {
        fs.mkdirSync(path.dirname(s.file), { recursive: true });
        try {
          fs.writeFileSync(s.file, randomBytes(32).toString("base64"), { flag: "wx", mode: 0o600 });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        }
      }
      try {
        text = fs.readFileSync(s.file, "utf8").trim();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        throw new UserError("INVALID_INPUT", `secretKey: ${s.file} is missing, and this state has secrets sealed with it; restore the file, or set sds:secretKey to the key it held`, "secretKey");
      }
    }
    const key = Buffer.from(text, "base64");
    if (key.length !== 32) throw new UserError("INVALID_INPUT", `secretKey: ${"file" in s ? s.file : "the key"} is not a 32-byte base64 key`, "secretKey");
    this.keyBytes = key;
    return key;
  }
}
