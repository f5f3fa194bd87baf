/**
 * TgtTarget when another process (another provider, another stack's state, an agent) manages
 * the same tgtd at the same moment: what it made between our `show` and our `new` is adopted when
 * it is the same thing and a CONFLICT when it is not; tids are picked again when taken; removing
 * what someone else removed first is success. Also: an attach starts no process.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ChapHashes } from "../../provider/src/targets/tgtadm-chap-hashes";
import { type Call, recorder, refused, SHOW_ACCOUNTS, SHOW_TARGETS, TGTADM, tgtOf } from "./tgt-fixtures";

const T3 = "iqn.2024-01.io.sds:t3";
const PASSWORD = "Race-Secret-5";

let runDir: string;
beforeEach(() => {
  runDir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-tgt-race-"));
});
afterEach(() => fs.rmSync(runDir, { recursive: true, force: true }));

/** SHOW_TARGETS plus `extra` (a `Target N: iqn` block) once `made()` says so. */
function targetsAfter(made: () => boolean, extra: string) {
  return () => (made() ? `${SHOW_TARGETS}${extra}` : SHOW_TARGETS);
}
const block = (tid: number, iqn: string, lun?: string) =>
  `Target ${tid}: ${iqn}\n    I_T nexus information:\n    LUN information:\n${lun ? `        LUN: 1\n            Type: disk\n            Readonly: No\n            Backing store path: ${lun}\n` : ""}    Account information:\n    ACL information:\n`;
const isNew = (c: Call, mode: string) => c.request?.op === "new" && c.request.mode === mode;

describe("ensureTarget under races", () => {
  test("our IQN made meanwhile by another process (under any tid): adopted, its tid returned, no parameters re-set", async () => {
    let raced = false;
    const r = recorder({
      targets: targetsAfter(() => raced, block(7, T3)),
      fail: (c) => (isNew(c, "target") ? ((raced = true), refused(c, "TARGET_EXIST")) : undefined),
    });
    expect(await tgtOf(r, runDir).ensureTarget(T3)).toBe(7);
    expect(r.changes()).toEqual([["tgtadm", ...TGTADM, "--op", "new", "--mode", "target", "--tid", "3", "--targetname", T3]]);
  });

  test("the tid we picked taken meanwhile by another target: a free one is picked and used", async () => {
    let raced = false;
    const r = recorder({
      targets: targetsAfter(() => raced, block(3, "iqn.2024-01.io.sds:other")),
      fail: (c) => (isNew(c, "target") && c.request!.tid === 3 ? ((raced = true), refused(c, "TARGET_EXIST")) : undefined),
    });
    expect(await tgtOf(r, runDir).ensureTarget(T3, 3)).toBe(4);
    const made = r.changes().filter((c) => c[6] === "new");
    expect(made.map((c) => c[10])).toEqual(["3", "4"]);
    expect(r.changes().filter((c) => c[6] === "update" && c[10] === "4")).toHaveLength(5); // the session parameters, on the tid used
  });

  test("tids taken again and again: bounded, then a retryable error", async () => {
    const r = recorder({ targets: SHOW_TARGETS, fail: (c) => (isNew(c, "target") ? refused(c, "TARGET_EXIST") : undefined) });
    await expect(tgtOf(r, runDir).ensureTarget(T3)).rejects.toMatchObject({ code: "COMMAND_FAILED", retryable: true, message: expect.stringMatching(/8 free tids/) });
    expect(r.changes()).toHaveLength(8);
    const other = recorder({ targets: SHOW_TARGETS, fail: (c) => (isNew(c, "target") ? refused(c, "INVALID_REQUEST") : undefined) });
    await expect(tgtOf(other, runDir).ensureTarget(T3)).rejects.toThrow(/invalid request/);
    expect(other.changes()).toHaveLength(1); // only "already exists" is worth another look
  });
});

describe("ensureLun, ensureInitiator, ensureChap under races", () => {
  const file = () => {
    const f = path.join(runDir, "vol.img");
    fs.writeFileSync(f, "");
    return f;
  };

  test("a LUN added meanwhile on the same file is adopted (made read-only when asked); on another file it is a CONFLICT", async () => {
    const f = file();
    let raced = false;
    const withLun = (lunFile: string) =>
      recorder({
        targets: () => (raced ? SHOW_TARGETS.replace(/Target 2: .*\n(.*\n)*/, block(2, "iqn.2024-01.io.sds:t2", lunFile)) : SHOW_TARGETS),
        fail: (c) => (isNew(c, "logicalunit") ? ((raced = true), refused(c, "LUN_EXIST")) : undefined),
      });
    const same = withLun(f);
    await tgtOf(same, runDir).ensureLun(2, 1, f, true);
    expect(same.changes().slice(1)).toEqual([["tgtadm", ...TGTADM, "--op", "update", "--mode", "logicalunit", "--tid", "2", "--lun", "1", "--params", "readonly=1"]]);
    raced = false;
    const other = withLun("/var/lib/sds/other.img");
    await expect(tgtOf(other, runDir).ensureLun(2, 1, f, false)).rejects.toMatchObject({ code: "CONFLICT", property: "path" });
    expect(other.changes().filter((c) => c[6] === "delete")).toEqual([]); // never removes what another process made
  });

  test("an ACL entry or an account binding made meanwhile is the same thing: success", async () => {
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS, fail: (c) => (c.request?.op === "bind" ? refused(c, c.request.mode === "target" ? "ACL_EXIST" : "USER_EXIST") : undefined) });
    await tgtOf(r, runDir).ensureInitiator(2, "iqn.2024-01.io.sds:host9");
    await new ChapHashes(path.join(runDir, "tgtd-901-chap.json")).remember({ username: "bob", password: PASSWORD });
    await tgtOf(r, runDir).ensureChap(2, { username: "bob", password: PASSWORD });
    expect(r.changes().map((c) => c.slice(6, 9))).toEqual([
      ["bind", "--mode", "target"],
      ["bind", "--mode", "account"],
    ]);
  });

  test("a CHAP account made meanwhile with our password (its hash appears) is adopted and bound", async () => {
    const slept: number[] = [];
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS, fail: (c) => (isNew(c, "account") ? refused(c, "USER_EXIST") : undefined) });
    // The other process remembers the hash a moment after its create.
    const sleep = async (ms: number) => {
      slept.push(ms);
      if (slept.length === 2) await new ChapHashes(path.join(runDir, "tgtd-901-chap.json")).remember({ username: "carol", password: PASSWORD });
    };
    await tgtOf(r, runDir, { sleep }).ensureChap(2, { username: "carol", password: PASSWORD });
    expect(slept).toEqual([50, 100]);
    expect(r.changes().map((c) => c.slice(6, 9))).toEqual([
      ["new", "--mode", "account"],
      ["bind", "--mode", "account"],
    ]);
  });

  test("a CHAP account made meanwhile with a password not known to be ours: CONFLICT, left as is (not deleted, not bound)", async () => {
    const slept: number[] = [];
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS, fail: (c) => (isNew(c, "account") ? refused(c, "USER_EXIST") : undefined) });
    await new ChapHashes(path.join(runDir, "tgtd-901-chap.json")).remember({ username: "carol", password: "Theirs-1" });
    const err = await tgtOf(r, runDir, { sleep: async (ms) => void slept.push(ms) })
      .ensureChap(2, { username: "carol", password: PASSWORD })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "CONFLICT", property: "chap.username" });
    expect((err as Error).message).not.toContain(PASSWORD);
    expect(slept).toEqual([50, 100, 200, 400, 800]);
    expect(r.changes().map((c) => c[6])).toEqual(["new"]);
  });
});

describe("removes racing other removes", () => {
  test("tgtd saying it is already gone is success", async () => {
    const r = recorder({
      targets: SHOW_TARGETS,
      accounts: SHOW_ACCOUNTS,
      fail: (c) => {
        const q = c.request!;
        if (q.op === "show") return undefined;
        if (q.mode === "target") return refused(c, q.op === "unbind" ? "ACL_NOEXIST" : "NO_TARGET");
        return refused(c, q.mode === "logicalunit" ? "NO_LUN" : "NO_USER");
      },
    });
    const t = tgtOf(r, runDir);
    await t.removeInitiator(1, "iqn.2024-01.io.sds:host2");
    await t.removeLun(1, 2);
    await t.removeTarget(2);
    await t.removeChapAccount("bob");
    expect(r.changes()).toHaveLength(4);
    const broken = recorder({ targets: SHOW_TARGETS, fail: (c) => (c.request?.op === "delete" ? refused(c, "TARGET_ACTIVE") : undefined) });
    await expect(tgtOf(broken, runDir).removeTarget(1)).rejects.toThrow(/this target is still active/);
  });
});

test("an attach (ensureTarget, ensureLun, ensureInitiator, ensureChap) starts no process", async () => {
  const f = path.join(runDir, "vol.img");
  fs.writeFileSync(f, "");
  let made = false;
  const r = recorder({ targets: targetsAfter(() => made, block(3, T3)), accounts: SHOW_ACCOUNTS, after: (c) => void (isNew(c, "target") && (made = true)) });
  const t = tgtOf(r, runDir);
  const tid = await t.ensureTarget(T3);
  await t.ensureLun(tid, 1, f, true);
  await t.ensureInitiator(tid, "iqn.2024-01.io.sds:host1");
  await t.ensureChap(tid, { username: "carol", password: PASSWORD });
  expect(r.processes()).toEqual([]);
  expect(r.calls.length).toBeGreaterThan(10); // the same work, over tgtd's socket
});
