/**
 * TgtadmClient against a fake tgtd on a unix socket: the exact bytes of each request (tgt's
 * `struct tgtadm_req` then the NUL-terminated params), how answers and refusals are read, and
 * what happens when tgtd is missing, silent or slow to write. The real tgtd is in
 * test/contract/tgtadm-client.test.ts.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { BackendError } from "../../provider/src/errors";
import {
  describeTgtadmRequest,
  encodeTgtadmRequest,
  isTgtdError,
  TGTADM_REQ_SIZE,
  TgtadmClient,
  TgtadmError,
  tgtadmArgs,
  type TgtadmRequest,
} from "../../provider/src/targets/tgtadm-client";

const PASSWORD = "Unit-Secret-9";

/** The header fields of an encoded request (little-endian host, as on x86-64 and arm64). */
function header(b: Buffer) {
  return {
    mode: b.readUInt32LE(0),
    op: b.readUInt32LE(4),
    lld: b.subarray(8, 72).toString("ascii").replace(/\0+$/, ""),
    len: b.readUInt32LE(72),
    tid: b.readInt32LE(76),
    sid: b.readBigUInt64LE(80),
    lun: b.readBigUInt64LE(88),
    rest: [96, 100, 104, 108, 112].map((at) => b.readUInt32LE(at)), // cid host_no device_type ac_dir pack
    force: b.readUInt32LE(116),
  };
}
const body = (b: Buffer) => b.subarray(TGTADM_REQ_SIZE).toString("utf8");
const ALL_ONES = 0xffff_ffff_ffff_ffffn;

describe("encoding: tgtadm's header and params", () => {
  test("the header is 120 bytes; no --tid is -1 and no --lun all ones, as tgtadm sends them", () => {
    const show = encodeTgtadmRequest({ op: "show", mode: "target" }, "LE");
    expect(show.length).toBe(120);
    expect(header(show)).toEqual({ mode: 1, op: 2, lld: "iscsi", len: 120, tid: -1, sid: 0n, lun: ALL_ONES, rest: [0, 0, 0, 0, 0], force: 0 });
    expect(show.subarray(8 + 5, 72).every((x) => x === 0)).toBe(true); // lld NUL-padded
  });

  test("each op's modes, numbers and params text (NUL-terminated, in tgtadm's order)", () => {
    const cases: Array<[TgtadmRequest, Partial<ReturnType<typeof header>>, string]> = [
      [{ op: "new", mode: "target", tid: 3, targetname: "iqn.2024-01.io.sds:t3" }, { mode: 1, op: 0, tid: 3 }, "targetname=iqn.2024-01.io.sds:t3\0"],
      [{ op: "update", mode: "target", tid: 3, name: "InitialR2T", value: "No" }, { mode: 1, op: 5, tid: 3 }, "InitialR2T=No\0"],
      [{ op: "delete", mode: "target", tid: 3, force: true }, { mode: 1, op: 1, tid: 3, force: 1 }, ""],
      [{ op: "bind", mode: "target", tid: 3, initiatorName: "iqn.2024-01.io.sds:h" }, { mode: 1, op: 3 }, "initiator-name=iqn.2024-01.io.sds:h\0"],
      [{ op: "unbind", mode: "target", tid: 3, initiatorName: "iqn.2024-01.io.sds:h" }, { mode: 1, op: 4 }, "initiator-name=iqn.2024-01.io.sds:h\0"],
      [{ op: "new", mode: "logicalunit", tid: 3, lun: 1, backingStore: "/v/a.img" }, { mode: 2, op: 0, lun: 1n }, "path=/v/a.img\0"],
      [{ op: "update", mode: "logicalunit", tid: 3, lun: 1, params: "readonly=1" }, { mode: 2, op: 5, lun: 1n }, "targetOps readonly=1,\0"],
      [{ op: "delete", mode: "logicalunit", tid: 3, lun: 1 }, { mode: 2, op: 1, lun: 1n }, ""],
      [{ op: "new", mode: "account", user: "carol", password: PASSWORD }, { mode: 7, op: 0, tid: -1 }, `user=carol,password=${PASSWORD}\0`],
      [{ op: "bind", mode: "account", tid: 3, user: "carol" }, { mode: 7, op: 3, tid: 3 }, "user=carol\0"],
      [{ op: "delete", mode: "account", user: "carol" }, { mode: 7, op: 1 }, "user=carol\0"],
      [{ op: "show", mode: "portal" }, { mode: 3, op: 2 }, ""],
      [{ op: "delete", mode: "system" }, { mode: 0, op: 1 }, ""],
    ];
    for (const [req, fields, text] of cases) {
      const b = encodeTgtadmRequest(req, "LE");
      expect({ ...header(b), ...fields }).toEqual(header(b));
      expect(header(b).len).toBe(b.length);
      expect(body(b)).toBe(text);
    }
    // The same request on a big-endian host.
    const be = encodeTgtadmRequest({ op: "new", mode: "logicalunit", tid: 3, lun: 1, backingStore: "/v" }, "BE");
    expect([be.readUInt32BE(0), be.readUInt32BE(72), be.readInt32BE(76), be.readBigUInt64BE(88)]).toEqual([2, 120 + 8, 3, 1n]); // "path=/v" and its NUL
  });

  test("a value tgtd would split or cut is refused before anything is sent; a password may hold a comma", () => {
    expect(() => encodeTgtadmRequest({ op: "bind", mode: "account", tid: 1, user: "a,b" })).toThrow(/must not contain/);
    expect(() => encodeTgtadmRequest({ op: "new", mode: "logicalunit", tid: 1, lun: 1, backingStore: "/v\0x" })).toThrow(/must not contain/);
    expect(() => encodeTgtadmRequest({ op: "new", mode: "account", user: "a", password: "p\0" })).toThrow(/must not contain/);
    expect(body(encodeTgtadmRequest({ op: "new", mode: "account", user: "a", password: "p,q" }))).toBe("user=a,password=p,q\0");
    expect(() => encodeTgtadmRequest({ op: "new", mode: "logicalunit", tid: 1, lun: 1, backingStore: `/${"x".repeat(9000)}` })).toThrow(/8192 bytes/);
  });

  test("the equivalent tgtadm options, and a description that masks the password", () => {
    const req: TgtadmRequest = { op: "new", mode: "account", user: "carol", password: PASSWORD };
    expect(tgtadmArgs(req)).toEqual(["--op", "new", "--mode", "account", "--user", "carol", "--password", PASSWORD]);
    expect(describeTgtadmRequest(req)).toBe("tgtadm --op new --mode account --user carol --password ***");
    expect(tgtadmArgs({ op: "delete", mode: "target", tid: 2, force: true })).toEqual(["--op", "delete", "--mode", "target", "--tid", "2", "--force"]);
  });
});

describe("a fake tgtd on a unix socket", () => {
  let dir: string;
  let server: net.Server | undefined;
  const received: Buffer[] = [];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "tgtsock-unit-"));
    received.length = 0;
  });
  afterEach(async () => {
    await closeServer();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function closeServer(): Promise<void> {
    if (server?.listening) await new Promise((r) => server!.close(r));
    server = undefined;
  }

  /** Listen on `<dir>/socket.7`; `answer` gets the request bytes and the socket. */
  async function fakeTgtd(answer: (req: Buffer, sock: net.Socket) => void): Promise<TgtadmClient> {
    await closeServer();
    server = net.createServer((sock) => {
      let got = Buffer.alloc(0);
      sock.on("data", (d) => {
        got = Buffer.concat([got, d]);
        if (got.length >= TGTADM_REQ_SIZE && got.length >= got.readUInt32LE(72)) {
          received.push(got);
          answer(got, sock);
        }
      });
    });
    return new Promise((resolve) => server!.listen(path.join(dir, "socket.7"), () => resolve(new TgtadmClient({ controlPort: 7, socketBase: path.join(dir, "socket"), timeoutMs: 500 }))));
  }

  const rsp = (err: number, text = "") => {
    const t = text ? Buffer.from(`${text}\0`) : Buffer.alloc(0);
    const h = Buffer.alloc(8);
    h.writeUInt32LE(err, 0);
    h.writeUInt32LE(8 + t.length, 4);
    return Buffer.concat([h, t]);
  };

  test("an answer's text comes back without its NUL, even written in pieces", async () => {
    const client = await fakeTgtd((_req, sock) => {
      const all = rsp(0, "Account list:\n    alice\n");
      sock.write(all.subarray(0, 5));
      setTimeout(() => sock.end(all.subarray(5)), 20);
    });
    expect(await client.request({ op: "show", mode: "account" })).toBe("Account list:\n    alice\n");
    expect(header(received[0]!)).toMatchObject({ mode: 7, op: 2, len: 120 });
  });

  test("a refusal is a TgtadmError: op, tgtd's number and tgtadm's words, never the password", async () => {
    const client = await fakeTgtd((_req, sock) => sock.end(rsp(14)));
    const err = await client.request({ op: "new", mode: "account", user: "carol", password: PASSWORD }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TgtadmError);
    expect(err).toBeInstanceOf(BackendError);
    expect(err).toMatchObject({ code: "COMMAND_FAILED", tgtdError: 14, tgtdErrorName: "USER_EXIST", retryable: false });
    expect(isTgtdError(err, "USER_EXIST")).toBe(true);
    expect((err as Error).message).toBe("tgtd (control port 7) refused tgtadm --op new --mode account --user carol --password ***: this account already exists (tgtd error 14)");
    expect(body(received[0]!)).toContain(PASSWORD); // it did travel, over the socket only
    const odd = await fakeTgtd((_req, sock) => sock.end(rsp(99)));
    await expect(odd.request({ op: "show", mode: "target" })).rejects.toThrow(/unknown tgtadm_errno.*error 99/);
  });

  test("no daemon, a cut answer, a silent daemon: errors that say which", async () => {
    const none = new TgtadmClient({ controlPort: 7, socketBase: path.join(dir, "nothing"), timeoutMs: 500 });
    await expect(none.request({ op: "show", mode: "portal" })).rejects.toThrow(/can't connect to tgt daemon.*ENOENT/);
    const cut = await fakeTgtd((_req, sock) => sock.end(rsp(0, "Target 1: x\n").subarray(0, 10)));
    await expect(cut.request({ op: "show", mode: "target" })).rejects.toThrow(/cut short/);
    const silent = await fakeTgtd(() => undefined);
    await expect(silent.request({ op: "show", mode: "target" })).rejects.toMatchObject({ code: "TIMEOUT", retryable: true });
  });

  test("50 requests at once: at most 4 connections open on tgtd's socket at a time (its backlog is short), every one answered", async () => {
    let open = 0;
    let most = 0;
    const client = await fakeTgtd((_req, sock) => {
      open++;
      most = Math.max(most, open);
      setTimeout(() => {
        open--;
        sock.end(rsp(0, "Portal: 127.0.0.1:3260,1\n"));
      }, 5);
    });
    const answers = await Promise.all(Array.from({ length: 50 }, () => client.request({ op: "show", mode: "portal" })));
    expect(answers).toHaveLength(50);
    expect(received).toHaveLength(50);
    expect(most).toBeLessThanOrEqual(4);
    expect(most).toBeGreaterThan(1);
  });

  test("delete --mode system returns once tgtd no longer accepts, as tgtadm does", async () => {
    const client = await fakeTgtd((_req, sock) => {
      sock.end(rsp(0));
      setTimeout(() => server!.close(), 150); // tgtd exits a little after it answered
    });
    const started = Date.now();
    await client.request({ op: "delete", mode: "system" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(fs.existsSync(path.join(dir, "socket.7"))).toBe(false);
  });
});
