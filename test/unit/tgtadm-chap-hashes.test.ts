/**
 * ChapHashes: the file of CHAP password hashes of one tgtd. New entries say their scrypt cost
 * (2^10, see the file comment); entries of round 1 (`salt:hash`, cost 2^14) are still read.
 */
import { randomBytes, scryptSync } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ChapHashes } from "../../provider/src/targets/tgtadm-chap-hashes";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-chap-hashes-"));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

test("a remembered password matches, another does not; the entry says its cost and holds no password", async () => {
  const file = path.join(dir, "chap.json");
  const h = new ChapHashes(file);
  await h.remember({ username: "carol", password: "Pa55word-1" });
  expect(await h.matches({ username: "carol", password: "Pa55word-1" })).toBe(true);
  expect(await h.matches({ username: "carol", password: "Pa55word-2" })).toBe(false);
  expect(await h.matches({ username: "dave", password: "Pa55word-1" })).toBe(false);
  const entry = (JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, string>).carol!;
  expect(entry).toMatch(/^1024:[0-9a-f]{32}:[0-9a-f]{64}$/);
  expect(fs.readFileSync(file, "utf8")).not.toContain("Pa55word");
});

test("an entry written by round 1 (salt:hash at scrypt's default cost 2^14) still matches its password", async () => {
  const file = path.join(dir, "chap.json");
  const salt = randomBytes(16);
  const hash = scryptSync("Old-Secret-9", salt, 32); // Node's default N = 16384
  fs.writeFileSync(file, JSON.stringify({ alice: `${salt.toString("hex")}:${hash.toString("hex")}` }));
  const h = new ChapHashes(file);
  expect(await h.matches({ username: "alice", password: "Old-Secret-9" })).toBe(true);
  expect(await h.matches({ username: "alice", password: "Old-Secret-8" })).toBe(false);
  // A cost that is not a power of two, or above the old one, is not trusted.
  fs.writeFileSync(file, JSON.stringify({ alice: `1000:${salt.toString("hex")}:${hash.toString("hex")}` }));
  expect(await h.matches({ username: "alice", password: "Old-Secret-9" })).toBe(false);
});
