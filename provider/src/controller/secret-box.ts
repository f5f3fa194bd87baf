/**
 * Secrets at rest (CHAP passwords): AES-256-GCM, so the controller's database never holds them in
 * plain text. The key comes from `SDS_SECRET_KEY` (base64, 32 bytes) or from a key file beside the
 * database, made on first use with mode 0600 (`<state dir>/secret.key`).
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { UserError } from "../errors";

export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /** The box for a database file (`:memory:` gets a key that lives as long as the process). */
  static forDatabase(dbFile: string, env: NodeJS.ProcessEnv = process.env): SecretBox {
    if (env.SDS_SECRET_KEY) {
      const key = Buffer.from(env.SDS_SECRET_KEY, "base64");
      if (key.length !== 32) throw new UserError("INVALID_INPUT", "SDS_SECRET_KEY must be 32 bytes, base64-encoded");
      return new SecretBox(key);
    }
    if (dbFile === ":memory:") return new SecretBox(randomBytes(32));
    const file = path.join(path.dirname(dbFile), "secret.key");
    try {
      fs.writeFileSync(file, randomBytes(32).toString("base64"), { flag: "wx", mode: 0o600 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const key = Buffer.from(fs.readFileSync(file, "utf8").trim(), "base64");
    if (key.length !== 32) throw new UserError("INVALID_INPUT", `${file}: not a 32-byte base64 key`);
    return new SecretBox(key);
  }

  seal(plain: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", this.key, iv);
    const body = Buffer.concat([c.update(plain, "utf8"), c.final()]);
    return `v1:${iv.toString("base64")}:${c.getAuthTag().toString("base64")}:${body.toString("base64")}`;
  }

  open(sealed: string): string {
    const [v, iv, tag, body] = sealed.split(":");
    if (v !== "v1" || !iv || !tag || body === undefined) throw new Error("sds internal error: not a sealed secret");
    const d = createDecipheriv("aes-256-gcm", this.key, Buffer.from(iv, "base64"));
    d.setAuthTag(Buffer.from(tag, "base64"));
    return Buffer.concat([d.update(Buffer.from(body, "base64")), d.final()]).toString("utf8");
  }
}
