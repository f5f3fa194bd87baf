/**
 * TgtTarget with a recording tgtd socket (requests shown as the equivalent tgtadm argv) and a
 * recording runner: the exact request of each operation, what is skipped because `show` already
 * lists it, parsing of real show output, and passwords kept out of every argv and message.
 * Races with other processes are in tgt-target-races.test.ts.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { BackendError, UserError } from "../../provider/src/errors";
import { DaemonRecords } from "../../provider/src/exec/daemons";
import type { ProcessTable } from "../../provider/src/exec/processes";
import { parseTgtAccounts, parseTgtPortals, parseTgtTargets, TgtTarget } from "../../provider/src/targets/tgt-target";
import { ChapHashes } from "../../provider/src/targets/tgtadm-chap-hashes";
import type { TgtdErrorName } from "../../provider/src/targets/tgtadm-client";
import { down, noProcesses, PORTAL, recorder, refused, SHOW_ACCOUNTS, SHOW_TARGETS, T1, TGTADM, tgtOf, VOL_A, VOL_B } from "./tgt-fixtures";

let runDir: string;
beforeEach(() => {
  runDir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-tgt-unit-"));
});
afterEach(() => fs.rmSync(runDir, { recursive: true, force: true }));

function tgt(r: ReturnType<typeof recorder>, processes: ProcessTable = noProcesses) {
  return tgtOf(r, runDir, { processes });
}

describe("parsing tgtadm show output", () => {
  test("targets: LUN 0 (controller) and outgoing accounts are left out, sessions counted", () => {
    expect(parseTgtTargets(SHOW_TARGETS)).toEqual([
      {
        name: T1,
        tid: 1,
        luns: [
          { lun: 1, path: VOL_A, readOnly: false },
          { lun: 2, path: VOL_B, readOnly: true },
        ],
        initiators: ["iqn.2024-01.io.sds:host1", "iqn.2024-01.io.sds:host2"],
        chapUsers: ["alice"],
        sessions: 1,
      },
      { name: "iqn.2024-01.io.sds:t2", tid: 2, luns: [], initiators: [], chapUsers: [], sessions: 0 },
    ]);
    const two = SHOW_TARGETS.replace("    LUN information:\n", "        I_T nexus: 7\n            Initiator: iqn.2024-01.io.sds:host2 alias: none\n            Connection: 0\n                IP Address: 127.0.0.2\n    LUN information:\n");
    expect(parseTgtTargets(two)[0]!.sessions).toBe(2);
    expect(parseTgtTargets("")).toEqual([]);
  });

  test("accounts and portals", () => {
    expect(parseTgtAccounts(SHOW_ACCOUNTS)).toEqual(["alice", "bob"]);
    expect(parseTgtAccounts("Account list:\n")).toEqual([]);
    expect(parseTgtPortals("Portal: 127.0.0.1:3260,1\nPortal: [::]:3260,1\n")).toEqual(["127.0.0.1:3260", "[::]:3260"]);
  });
});

describe("start and stop", () => {
  test("a daemon already answering with our portal is left alone", async () => {
    const r = recorder();
    await tgt(r).start();
    expect(r.changes()).toEqual([]);
  });

  test("a daemon on our control port with another portal is a conflict", async () => {
    const r = recorder({ portal: "Portal: 0.0.0.0:3260,1\n" });
    await expect(tgt(r).start()).rejects.toMatchObject({ code: "CONFLICT" });
    expect(r.changes()).toEqual([]);
  });

  test("no daemon: tgtd with its control port, portal and pidfile, recorded first, in a session of its own; then it must answer", async () => {
    let started = false;
    const records = new DaemonRecords(path.join(runDir, "daemons"));
    const r = recorder({
      fail: (c) => (!started && c.request?.op === "show" ? down : undefined),
      after: (c) => {
        if (c.file !== "tgtd") return;
        expect(records.list("tgtd")).toMatchObject([{ kind: "tgtd", name: "901", argv: ["tgtd", ...c.args], pidFile: path.join(runDir, "tgtd-901.pid") }]);
        started = true;
      },
    });
    await tgt(r).start();
    expect(r.changes()).toEqual([["tgtd", "-C", "901", "--iscsi", `portal=${PORTAL}`, "-p", path.join(runDir, "tgtd-901.pid")]]);
    expect(r.calls.at(-1)!.args).toEqual([...TGTADM, "--op", "show", "--mode", "portal"]);
    expect(r.processes().every((c) => c.options?.timeoutMs !== undefined && c.options.detached === true)).toBe(true);
    expect(records.list("tgtd")).toHaveLength(1);
  });

  test("a new daemon that could not take the portal is stopped and the start fails", async () => {
    let started = false;
    const r = recorder({
      portal: "Portal: [::]:3260,1\nPortal: 0.0.0.0:3260,1\n",
      fail: (c) => (!started && c.request?.op === "show" ? down : undefined),
      after: (c) => void (c.file === "tgtd" && (started = true)),
    });
    await expect(tgt(r).start()).rejects.toThrow(/could not listen on 127.0.0.1:3260/);
    expect(r.changes().at(-1)).toEqual(["tgtadm", ...TGTADM, "--op", "delete", "--mode", "system"]);
    expect(new DaemonRecords(path.join(runDir, "daemons")).list()).toEqual([]);
  });

  test("stop deletes every target (tgtd will not exit with targets), then the system, and waits", async () => {
    const alive = new Map([[4242, ["tgtd", "-C", "901", "--iscsi", `portal=${PORTAL}`]], [4300, ["tgtd", "-C", "77"]]]);
    const processes: ProcessTable = {
      argv: async (pid) => alive.get(pid),
      list: async () => [...alive].map(([pid, argv]) => ({ pid, argv })),
      kill: () => undefined,
    };
    new DaemonRecords(path.join(runDir, "daemons")).write({ kind: "tgtd", name: "901", argv: ["tgtd"], startedBy: 1, startedAt: "" });
    // tgtd exits on `delete --mode system`; the daemon on -C 77 is not ours
    const r = recorder({ targets: SHOW_TARGETS, after: (c) => void (c.request?.mode === "system" && alive.delete(4242)) });
    await tgt(r, processes).stop();
    expect(r.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "target", "--tid", "1", "--force"],
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "target", "--tid", "2", "--force"],
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "system"],
    ]);
    expect(alive.has(4300)).toBe(true);
    expect(new DaemonRecords(path.join(runDir, "daemons")).list()).toEqual([]); // stop forgets it
  });

  test("stop of a daemon that is not running runs nothing", async () => {
    const r = recorder({ portal: down });
    await tgt(r).stop();
    expect(r.changes()).toEqual([]);
  });
});

describe("ensure: only what show does not already list", () => {
  test("ensureTarget returns the listed tid, or creates the next one", async () => {
    const r = recorder({ targets: SHOW_TARGETS });
    expect(await tgt(r).ensureTarget(T1)).toBe(1);
    expect(await tgt(r).ensureTarget(T1, 1)).toBe(1);
    expect(r.changes()).toEqual([]);
    expect(await tgt(r).ensureTarget("iqn.2024-01.io.sds:t3")).toBe(3);
    expect(await tgt(r).ensureTarget("iqn.2024-01.io.sds:t9", 9)).toBe(9);
    // A new target gets the session parameters before anyone logs in (bench/datapath: ~3x libiscsi writes).
    const params = (tid: string) => [
      ["tgtadm", ...TGTADM, "--op", "update", "--mode", "target", "--tid", tid, "--name", "MaxRecvDataSegmentLength", "--value", "1048576"],
      ["tgtadm", ...TGTADM, "--op", "update", "--mode", "target", "--tid", tid, "--name", "MaxXmitDataSegmentLength", "--value", "1048576"],
      ["tgtadm", ...TGTADM, "--op", "update", "--mode", "target", "--tid", tid, "--name", "FirstBurstLength", "--value", "1048576"],
      ["tgtadm", ...TGTADM, "--op", "update", "--mode", "target", "--tid", tid, "--name", "MaxBurstLength", "--value", "16776192"],
      ["tgtadm", ...TGTADM, "--op", "update", "--mode", "target", "--tid", tid, "--name", "InitialR2T", "--value", "No"],
    ];
    expect(r.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "new", "--mode", "target", "--tid", "3", "--targetname", "iqn.2024-01.io.sds:t3"],
      ...params("3"),
      ["tgtadm", ...TGTADM, "--op", "new", "--mode", "target", "--tid", "9", "--targetname", "iqn.2024-01.io.sds:t9"],
      ...params("9"),
    ]);
  });

  test("ensureTarget: a tid is a hint: the IQN under another tid returns that tid, a tid another IQN holds is skipped; bad IQN", async () => {
    const r = recorder({ targets: SHOW_TARGETS });
    expect(await tgt(r).ensureTarget(T1, 2)).toBe(1);
    expect(r.changes()).toEqual([]);
    expect(await tgt(r).ensureTarget("iqn.2024-01.io.sds:t3", 2)).toBe(3);
    expect(r.changes()[0]).toEqual(["tgtadm", ...TGTADM, "--op", "new", "--mode", "target", "--tid", "3", "--targetname", "iqn.2024-01.io.sds:t3"]);
    await expect(tgt(r).ensureTarget("not an iqn")).rejects.toMatchObject({ code: "INVALID_INPUT", property: "iqn" });
    await expect(tgt(r).ensureTarget(T1, 0)).rejects.toMatchObject({ code: "INVALID_INPUT", property: "tid" });
  });

  test("ensureLun: listed with the same file and mode does nothing; another mode is updated; another file conflicts", async () => {
    const r = recorder({ targets: SHOW_TARGETS });
    await tgt(r).ensureLun(1, 1, VOL_A, false);
    await tgt(r).ensureLun(1, 2, VOL_B, true);
    expect(r.changes()).toEqual([]);
    await tgt(r).ensureLun(1, 1, VOL_A, true);
    expect(r.changes()).toEqual([["tgtadm", ...TGTADM, "--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "--params", "readonly=1"]]);
    await expect(tgt(r).ensureLun(1, 1, VOL_B, false)).rejects.toMatchObject({ code: "CONFLICT" });
    await expect(tgt(r).ensureLun(7, 1, VOL_A, false)).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(tgt(r).ensureLun(1, 0, VOL_A, false)).rejects.toMatchObject({ code: "INVALID_INPUT" });
  });

  test("ensureLun: a new read-only LUN is created, then made read-only (tgtadm refuses --params on new)", async () => {
    const file = path.join(runDir, "vol.img");
    fs.writeFileSync(file, "");
    const r = recorder({ targets: SHOW_TARGETS });
    await tgt(r).ensureLun(2, 1, file, true);
    await tgt(r).ensureLun(2, 2, file, false);
    expect(r.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "new", "--mode", "logicalunit", "--tid", "2", "--lun", "1", "--backing-store", file],
      ["tgtadm", ...TGTADM, "--op", "update", "--mode", "logicalunit", "--tid", "2", "--lun", "1", "--params", "readonly=1"],
      ["tgtadm", ...TGTADM, "--op", "new", "--mode", "logicalunit", "--tid", "2", "--lun", "2", "--backing-store", file],
    ]);
    await expect(tgt(r).ensureLun(2, 3, path.join(runDir, "missing.img"), false)).rejects.toMatchObject({ code: "NOT_FOUND", property: "path" });
  });

  test("ensureLun: when read-only cannot be set, the writable LUN is deleted again", async () => {
    const file = path.join(runDir, "vol.img");
    fs.writeFileSync(file, "");
    let created = false;
    const withLun = SHOW_TARGETS.replace("Target 2: iqn.2024-01.io.sds:t2\n", `Target 2: iqn.2024-01.io.sds:t2\n    LUN information:\n        LUN: 1\n            Type: disk\n            Readonly: No\n            Backing store path: ${file}\n`);
    const r = recorder({
      targets: () => (created ? withLun : SHOW_TARGETS),
      fail: (c) => (c.request?.op === "update" ? new BackendError("COMMAND_FAILED", "update failed", false) : undefined),
      after: (c) => void (c.request?.op === "new" && (created = true)),
    });
    await expect(tgt(r).ensureLun(2, 1, file, true)).rejects.toThrow("update failed");
    expect(r.changes().at(-1)).toEqual(["tgtadm", ...TGTADM, "--op", "delete", "--mode", "logicalunit", "--tid", "2", "--lun", "1"]);
  });

  test("ensureInitiator binds only an initiator the ACL does not list", async () => {
    const r = recorder({ targets: SHOW_TARGETS });
    await tgt(r).ensureInitiator(1, "iqn.2024-01.io.sds:host1");
    expect(r.changes()).toEqual([]);
    await tgt(r).ensureInitiator(1, "iqn.2024-01.io.sds:host3");
    expect(r.changes()).toEqual([["tgtadm", ...TGTADM, "--op", "bind", "--mode", "target", "--tid", "1", "--initiator-name", "iqn.2024-01.io.sds:host3"]]);
  });
});

describe("refreshLun: delete and re-add, so tgtd reads the file's size again", () => {
  /** `show target` of tid 1 with LUN 1 on `file` while `present()`, as tgtadm prints it. */
  function showWith(file: string, readOnly: boolean, present: () => boolean): string {
    const lun = `        LUN: 1\n            Type: disk\n            Readonly: ${readOnly ? "Yes" : "No"}\n            Backing store path: ${file}\n`;
    return `Target 1: ${T1}\n    LUN information:\n        LUN: 0\n            Type: controller\n${present() ? lun : ""}    Account information:\n    ACL information:\n`;
  }

  /** A recorder whose LUN 1 goes away on delete and comes back on new; `busy` deletes fail first. */
  function lunRecorder(file: string, readOnly: boolean, busy: TgtdErrorName[] = []) {
    let present = true;
    const slept: number[] = [];
    const r = recorder({
      targets: () => showWith(file, readOnly, () => present),
      fail: (c) => (c.request?.op === "delete" && busy.length ? refused(c, busy.shift()!) : undefined),
      after: (c) => {
        if (c.request?.op === "delete") present = false;
        if (c.request?.op === "new") present = true;
      },
    });
    const target = tgtOf(r, runDir, { sleep: async (ms) => void slept.push(ms) });
    return { r, target, slept, gone: () => (present = false) };
  }

  test("a rw LUN: delete, then new with the same tid, LUN and backing file", async () => {
    const file = path.join(runDir, "vol.img");
    fs.writeFileSync(file, "");
    const { r, target } = lunRecorder(file, false);
    await target.refreshLun(1, 1, file, false);
    expect(r.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "logicalunit", "--tid", "1", "--lun", "1"],
      ["tgtadm", ...TGTADM, "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "--backing-store", file],
    ]);
  });

  test("a read-only LUN comes back read-only", async () => {
    const file = path.join(runDir, "vol.img");
    fs.writeFileSync(file, "");
    const { r, target } = lunRecorder(file, true);
    await target.refreshLun(1, 1, file, true);
    expect(r.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "logicalunit", "--tid", "1", "--lun", "1"],
      ["tgtadm", ...TGTADM, "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "--backing-store", file],
      ["tgtadm", ...TGTADM, "--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "--params", "readonly=1"],
    ]);
  });

  test("a LUN tgtd says is still active is deleted again after a backoff; other errors are not retried", async () => {
    const file = path.join(runDir, "vol.img");
    fs.writeFileSync(file, "");
    const busy = "LUN_ACTIVE" as const;
    const { r, target, slept } = lunRecorder(file, false, [busy, busy]);
    await target.refreshLun(1, 1, file, false);
    expect(r.changes().map((c) => c[6])).toEqual(["delete", "delete", "delete", "new"]);
    expect(slept).toEqual([100, 200]);
    const stuck = lunRecorder(file, false, Array(9).fill(busy));
    await expect(stuck.target.refreshLun(1, 1, file, false)).rejects.toThrow(/still active/);
    expect(stuck.r.changes()).toHaveLength(6);
    expect(stuck.slept).toEqual([100, 200, 400, 800, 1600]);
    const broken = lunRecorder(file, false, ["NO_TARGET"]);
    await expect(broken.target.refreshLun(1, 1, file, false)).rejects.toThrow(/can't find the target/);
    expect(broken.slept).toEqual([]);
  });

  test("idempotent: a missing LUN (a refresh cut short) is added; another file, a missing file or target change nothing", async () => {
    const file = path.join(runDir, "vol.img");
    fs.writeFileSync(file, "");
    const missing = lunRecorder(file, false);
    missing.gone();
    await missing.target.refreshLun(1, 1, file, false);
    expect(missing.r.changes()).toEqual([["tgtadm", ...TGTADM, "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "--backing-store", file]]);
    const other = lunRecorder(file, false);
    await expect(other.target.refreshLun(1, 1, path.join(runDir, "other.img"), false)).rejects.toMatchObject({ code: "CONFLICT" });
    await expect(other.target.refreshLun(7, 1, file, false)).rejects.toMatchObject({ code: "NOT_FOUND", property: "tid" });
    await expect(other.target.refreshLun(1, 0, file, false)).rejects.toMatchObject({ code: "INVALID_INPUT" });
    fs.rmSync(file);
    await expect(other.target.refreshLun(1, 1, file, false)).rejects.toMatchObject({ code: "NOT_FOUND", property: "path" });
    expect(other.r.changes()).toEqual([]);
  });
});

describe("CHAP", () => {
  const PASSWORD = "Pa55word-Unit-1";

  test("a new account is created (the password over tgtd's socket, in no process's argv), then bound; the same call again changes nothing", async () => {
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS });
    await tgt(r).ensureChap(2, { username: "carol", password: PASSWORD });
    expect(r.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "new", "--mode", "account", "--user", "carol", "--password", PASSWORD],
      ["tgtadm", ...TGTADM, "--op", "bind", "--mode", "account", "--tid", "2", "--user", "carol"],
    ]);
    // The password travels in the socket request only: no process is started at all.
    expect(r.processes()).toEqual([]);
    expect(r.calls.filter((c) => c.request?.password === PASSWORD).map((c) => c.request!.op)).toEqual(["new"]);
    // The daemon now lists the account, bound; the remembered hash says the password is the same.
    const bound = SHOW_TARGETS.replace("    Account information:\n    ACL information:", "    Account information:\n        carol\n    ACL information:");
    const again = recorder({ targets: bound, accounts: `${SHOW_ACCOUNTS}    carol\n` });
    await tgt(again).ensureChap(2, { username: "carol", password: PASSWORD });
    expect(again.changes()).toEqual([]);
    expect(fs.readFileSync(path.join(runDir, "tgtd-901-chap.json"), "utf8")).not.toContain(PASSWORD);
  });

  test("an account with another or an unknown password is replaced and bound back where it was", async () => {
    // alice is bound to target 1 and tgtd cannot tell us her password.
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS });
    await tgt(r).ensureChap(2, { username: "alice", password: PASSWORD });
    expect(r.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "account", "--user", "alice"],
      ["tgtadm", ...TGTADM, "--op", "new", "--mode", "account", "--user", "alice", "--password", PASSWORD],
      ["tgtadm", ...TGTADM, "--op", "bind", "--mode", "account", "--tid", "1", "--user", "alice"],
      ["tgtadm", ...TGTADM, "--op", "bind", "--mode", "account", "--tid", "2", "--user", "alice"],
    ]);
    // Now known: the same password again on target 1 changes nothing; another one replaces it.
    const known = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS });
    await tgt(known).ensureChap(1, { username: "alice", password: PASSWORD });
    expect(known.changes()).toEqual([]);
    await tgt(known).ensureChap(1, { username: "alice", password: "Another-Pass-2" });
    expect(known.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "account", "--user", "alice"],
      ["tgtadm", ...TGTADM, "--op", "new", "--mode", "account", "--user", "alice", "--password", "Another-Pass-2"],
      ["tgtadm", ...TGTADM, "--op", "bind", "--mode", "account", "--tid", "1", "--user", "alice"],
    ]);
  });

  test("bad credentials and unknown targets are refused before any command", async () => {
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS });
    await expect(tgt(r).ensureChap(1, { username: "has space", password: PASSWORD })).rejects.toMatchObject({ code: "INVALID_INPUT" });
    await expect(tgt(r).ensureChap(1, { username: "carol", password: "" })).rejects.toMatchObject({ code: "INVALID_INPUT" });
    await expect(tgt(r).ensureChap(5, { username: "carol", password: PASSWORD })).rejects.toBeInstanceOf(UserError);
    expect(r.changes()).toEqual([]);
  });

  test("a refused account op names the op but never the password", async () => {
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS, fail: (c) => (c.request?.mode === "account" && c.request.op === "new" ? refused(c, "TOO_MANY_USER") : undefined) });
    const err = await tgt(r).ensureChap(2, { username: "carol", password: PASSWORD }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendError);
    expect((err as Error).message).toMatch(/tgtadm --op new --mode account --user carol --password \*\*\*: too many accounts \(tgtd error 16\)/);
    expect((err as Error).message).not.toContain(PASSWORD);
  });
});

describe("remove: one op each, no listing first (tgtd's \"already gone\" is success: tgt-target-races)", () => {
  test("each remove sends only its op", async () => {
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS });
    const t = tgt(r);
    await t.removeInitiator(1, "iqn.2024-01.io.sds:host2");
    await t.removeLun(1, 2);
    await t.removeTarget(2);
    await t.removeChapAccount("bob");
    expect(r.calls.map((c) => [c.file, ...c.args])).toEqual([
      ["tgtadm", ...TGTADM, "--op", "unbind", "--mode", "target", "--tid", "1", "--initiator-name", "iqn.2024-01.io.sds:host2"],
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "logicalunit", "--tid", "1", "--lun", "2"],
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "target", "--tid", "2", "--force"],
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "account", "--user", "bob"],
    ]);
  });
});

describe("ensureExport: one listing per attach, steps only for what is missing", () => {
  const PASSWORD = "Pa55word-Unit-1";
  const shows = (r: ReturnType<typeof recorder>) => r.calls.filter((c) => c.request?.op === "show").map((c) => c.request!.mode);

  test("a new target: listed once, then made with its LUN, ACL entry and CHAP account; the tid is told before the LUN is added", async () => {
    const f = path.join(runDir, "vol.img");
    fs.writeFileSync(f, "");
    const told: string[] = [];
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS, after: (c) => void (c.request?.op === "new" && c.request.mode === "logicalunit" && told.push("lun")) });
    const tid = await tgt(r).ensureExport({ iqn: "iqn.2024-01.io.sds:t3", lun: 1, path: f, readOnly: false, initiator: "iqn.2024-01.io.sds:host1", chap: { username: "carol", password: PASSWORD }, onTarget: async (t) => void told.push(`tid ${t}`) });
    expect(tid).toBe(3);
    expect(told).toEqual(["tid 3", "lun"]);
    expect(shows(r)).toEqual(["target", "account"]);
    expect(r.changes().map((c) => c.slice(6, 9).join(" "))).toEqual([
      "new --mode target",
      ...Array(5).fill("update --mode target"),
      "new --mode logicalunit",
      "bind --mode target",
      "new --mode account",
      "bind --mode account",
    ]);
  });

  test("an existing target: one show, then only the missing LUN; a bound account whose password this object set is not looked up again", async () => {
    const f = path.join(runDir, "vol.img");
    fs.writeFileSync(f, "");
    const chap = { username: "carol", password: PASSWORD };
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS });
    const t = tgt(r);
    await t.ensureChap(2, chap); // creates and binds carol (remembered as set by this object)
    const bound = SHOW_TARGETS.replace("    Account information:\n    ACL information:", "    Account information:\n        carol\n    ACL information:\n        iqn.2024-01.io.sds:host1");
    const again = recorder({ targets: bound, accounts: `${SHOW_ACCOUNTS}    carol\n` });
    const t2 = tgtOf(again, runDir, {});
    // A new object knows nothing yet: it checks the hash once (show account is not needed: bound).
    await t2.ensureExport({ iqn: "iqn.2024-01.io.sds:t2", lun: 1, path: f, readOnly: false, initiator: "iqn.2024-01.io.sds:host1", chap });
    expect(shows(again)).toEqual(["target"]);
    expect(again.changes()).toEqual([["tgtadm", ...TGTADM, "--op", "new", "--mode", "logicalunit", "--tid", "2", "--lun", "1", "--backing-store", f]]);
  });

  test("CHAP verification is remembered: the scrypt check runs once per account and password, not once per attach", async () => {
    const f = path.join(runDir, "vol.img");
    fs.writeFileSync(f, "");
    const chap = { username: "alice", password: PASSWORD };
    // alice is bound to target 1 with a password whose hash is on file (set by another process).
    await new ChapHashes(path.join(runDir, "tgtd-901-chap.json")).remember(chap);
    const matches = jest.spyOn(ChapHashes.prototype, "matches");
    try {
      const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS });
      const t = tgt(r);
      for (let i = 0; i < 3; i++) await t.ensureExport({ iqn: T1, lun: 1, path: VOL_A, readOnly: false, initiator: "iqn.2024-01.io.sds:host1", chap });
      expect(matches).toHaveBeenCalledTimes(1);
      expect(shows(r)).toEqual(["target", "target", "target"]);
      expect(r.changes()).toEqual([]);
      // Another password for the same account is not taken on trust: checked (and found wrong: replaced),
      // asked again over the race wait first (an account just made by another process has no hash yet).
      await t.ensureExport({ iqn: T1, lun: 1, path: VOL_A, readOnly: false, initiator: "iqn.2024-01.io.sds:host1", chap: { ...chap, password: "Other-Pass-3" } });
      expect(matches).toHaveBeenCalledTimes(7);
      expect(r.changes().map((c) => c.slice(6, 9).join(" "))).toEqual(["delete --mode account", "new --mode account", "bind --mode account"]);
    } finally {
      matches.mockRestore();
    }
  });
});

describe("start: one in flight, one ask", () => {
  test("concurrent starts with no daemon launch ONE tgtd; a start while it runs asks once (show portal) and checks the portal from that answer", async () => {
    let started = false;
    const r = recorder({ fail: (c) => (!started && c.request?.op === "show" ? down : undefined), after: (c) => void (c.file === "tgtd" && (started = true)) });
    const t = tgt(r);
    await Promise.all(Array.from({ length: 50 }, () => t.start()));
    expect(r.processes()).toHaveLength(1);
    const before = r.calls.length;
    await t.start();
    expect(r.calls.slice(before).map((c) => `${c.request!.op} ${c.request!.mode}`)).toEqual(["show portal"]);
  });
});

test("the constructor refuses a control port tgtd cannot take and a portal that is not ip:port", () => {
  expect(() => new TgtTarget({ controlPort: 40000, portal: PORTAL, runDir })).toThrow(/0-32767/);
  expect(() => new TgtTarget({ controlPort: 1, portal: "localhost", runDir })).toThrow(/ip:port/);
});
