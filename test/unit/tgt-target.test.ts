/**
 * TgtTarget with a recording Runner: the exact tgtadm argv of each operation, what is skipped
 * because `tgtadm --op show` already lists it, parsing of real show output, and secrets masked.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { BackendError, UserError } from "../../provider/src/errors";
import { run as realRun, type RunOptions, type Runner } from "../../provider/src/exec/run";
import type { ProcessTable } from "../../provider/src/exec/processes";
import { parseTgtAccounts, parseTgtPortals, parseTgtTargets, TgtTarget } from "../../provider/src/targets/tgt-target";

/** `tgtadm -C 901 --lld iscsi --op show --mode target` captured from tgt 1.0.85 with one logged-in session. */
const SHOW_TARGETS = `Target 1: iqn.2024-01.io.sds:t1
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 1
            Initiator: iqn.2024-01.io.sds:host1 alias: none
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            SCSI SN: beaf10
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            SCSI ID: IET     00010001
            SCSI SN: beaf11
            Size: 17 MB, Block size: 512
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: rdwr
            Backing store path: /var/lib/sds/pools/default/volume-a.img
            Backing store flags: 
        LUN: 2
            Type: disk
            SCSI ID: IET     00010002
            SCSI SN: beaf12
            Size: 17 MB, Block size: 512
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: Yes
            SWP: No
            Thin-provisioning: No
            Backing store type: rdwr
            Backing store path: /var/lib/sds/pools/default/volume-b.img
            Backing store flags: 
    Account information:
        alice
        bob (outgoing)
    ACL information:
        iqn.2024-01.io.sds:host1
        iqn.2024-01.io.sds:host2
Target 2: iqn.2024-01.io.sds:t2
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00020000
            SCSI SN: beaf20
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags: 
    Account information:
    ACL information:
`;
const SHOW_ACCOUNTS = "Account list:\n    alice\n    bob\n";
const PORTAL = "127.0.0.1:3260";
const SHOW_PORTAL = `Portal: ${PORTAL},1\n`;
const T1 = "iqn.2024-01.io.sds:t1";
const VOL_A = "/var/lib/sds/pools/default/volume-a.img";
const VOL_B = "/var/lib/sds/pools/default/volume-b.img";
const TGTADM = ["-C", "901", "--lld", "iscsi"];

interface Call {
  file: string;
  args: string[];
  options?: RunOptions;
}

/** A Runner that records every call and answers tgtadm's show ops with canned text. */
function recorder(answers: { targets?: string; accounts?: string; portal?: string | Error; fail?: (args: string[]) => Error | undefined } = {}) {
  const calls: Call[] = [];
  const run: Runner = async (file, args, options) => {
    calls.push({ file, args: [...args], options });
    const failure = answers.fail?.([...args]);
    if (failure) throw failure;
    const op = args.slice(4).join(" ");
    let stdout = "";
    if (op === "--op show --mode target") stdout = answers.targets ?? "";
    else if (op === "--op show --mode account") stdout = answers.accounts ?? "";
    else if (op === "--op show --mode portal") {
      if (answers.portal instanceof Error) throw answers.portal;
      stdout = answers.portal ?? SHOW_PORTAL;
    }
    return { stdout, stderr: "", exitCode: 0 };
  };
  /** The calls that change something (everything but `--op show`). */
  const changes = () => calls.filter((c) => !(c.args[4] === "--op" && c.args[5] === "show")).map((c) => [c.file, ...c.args]);
  return { calls, run, changes };
}

const noProcesses: ProcessTable = { argv: async () => undefined, list: async () => [], kill: () => undefined };
const down = new BackendError("COMMAND_FAILED", "command failed (exit 107): tgtadm …: tgtadm: failed to send request hdr to tgt daemon", false);

let runDir: string;
beforeEach(() => {
  runDir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-tgt-unit-"));
});
afterEach(() => fs.rmSync(runDir, { recursive: true, force: true }));

function tgt(r: ReturnType<typeof recorder>, processes: ProcessTable = noProcesses) {
  return new TgtTarget({ controlPort: 901, portal: PORTAL, runDir, run: r.run, processes });
}

describe("parsing tgtadm show output", () => {
  test("targets: LUN 0 (controller) and outgoing accounts are left out, sessions ignored", () => {
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
      },
      { name: "iqn.2024-01.io.sds:t2", tid: 2, luns: [], initiators: [], chapUsers: [] },
    ]);
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

  test("no daemon: tgtd with its control port, portal and pidfile, then it must answer", async () => {
    let started = false;
    const r = recorder({ fail: (args) => (!started && args.includes("show") ? down : undefined) });
    const run: Runner = async (file, args, o) => {
      const out = await r.run(file, args, o);
      if (file === "tgtd") started = true;
      return out;
    };
    await new TgtTarget({ controlPort: 901, portal: PORTAL, runDir, run, processes: noProcesses }).start();
    expect(r.changes()).toEqual([["tgtd", "-C", "901", "--iscsi", `portal=${PORTAL}`, "-p", path.join(runDir, "tgtd-901.pid")]]);
    expect(r.calls.at(-1)!.args).toEqual([...TGTADM, "--op", "show", "--mode", "portal"]);
    expect(r.calls.every((c) => c.options?.timeoutMs !== undefined)).toBe(true);
  });

  test("a new daemon that could not take the portal is stopped and the start fails", async () => {
    let started = false;
    const r = recorder({ portal: "Portal: [::]:3260,1\nPortal: 0.0.0.0:3260,1\n", fail: (args) => (!started && args.includes("show") ? down : undefined) });
    const run: Runner = async (file, args, o) => {
      const out = await r.run(file, args, o);
      if (file === "tgtd") started = true;
      return out;
    };
    await expect(new TgtTarget({ controlPort: 901, portal: PORTAL, runDir, run, processes: noProcesses }).start()).rejects.toThrow(/could not listen on 127.0.0.1:3260/);
    expect(r.changes().at(-1)).toEqual(["tgtadm", ...TGTADM, "--op", "delete", "--mode", "system"]);
  });

  test("stop deletes every target (tgtd will not exit with targets), then the system, and waits", async () => {
    const alive = new Map([[4242, ["tgtd", "-C", "901", "--iscsi", `portal=${PORTAL}`]], [4300, ["tgtd", "-C", "77"]]]);
    const processes: ProcessTable = {
      argv: async (pid) => alive.get(pid),
      list: async () => [...alive].map(([pid, argv]) => ({ pid, argv })),
      kill: () => undefined,
    };
    const r = recorder({ targets: SHOW_TARGETS });
    const run: Runner = async (file, args, o) => {
      const out = await r.run(file, args, o);
      if (args.includes("system")) alive.delete(4242); // tgtd exits; the daemon on -C 77 is not ours
      return out;
    };
    await new TgtTarget({ controlPort: 901, portal: PORTAL, runDir, run, processes }).stop();
    expect(r.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "target", "--tid", "1", "--force"],
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "target", "--tid", "2", "--force"],
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "system"],
    ]);
    expect(alive.has(4300)).toBe(true);
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

  test("ensureTarget conflicts: the IQN under another tid, the tid under another IQN; bad IQN", async () => {
    const r = recorder({ targets: SHOW_TARGETS });
    await expect(tgt(r).ensureTarget(T1, 2)).rejects.toMatchObject({ code: "CONFLICT" });
    await expect(tgt(r).ensureTarget("iqn.2024-01.io.sds:t3", 2)).rejects.toMatchObject({ code: "CONFLICT" });
    await expect(tgt(r).ensureTarget("not an iqn")).rejects.toMatchObject({ code: "INVALID_INPUT", property: "iqn" });
    expect(r.changes()).toEqual([]);
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
    const r = recorder({ fail: (args) => (args.includes("update") ? new BackendError("COMMAND_FAILED", "update failed", false) : undefined) });
    const run: Runner = async (f, args, o) => {
      if (args.includes("new")) created = true;
      if (args.join(" ").endsWith("--op show --mode target")) {
        r.calls.push({ file: f, args: [...args], options: o });
        return { stdout: created ? withLun : SHOW_TARGETS, stderr: "", exitCode: 0 };
      }
      return r.run(f, args, o);
    };
    await expect(new TgtTarget({ controlPort: 901, portal: PORTAL, runDir, run, processes: noProcesses }).ensureLun(2, 1, file, true)).rejects.toThrow("update failed");
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
  function lunRecorder(file: string, readOnly: boolean, busy: string[] = []) {
    let present = true;
    const slept: number[] = [];
    const r = recorder({
      fail: (args) => {
        if (args.includes("delete") && busy.length) return new BackendError("COMMAND_FAILED", `command failed (exit 22): tgtadm ${args.join(" ")}: ${busy.shift()}`, false);
        return undefined;
      },
    });
    const run: Runner = async (f, args, o) => {
      if (args.join(" ").endsWith("--op show --mode target")) {
        r.calls.push({ file: f, args: [...args], options: o });
        return { stdout: showWith(file, readOnly, () => present), stderr: "", exitCode: 0 };
      }
      const out = await r.run(f, args, o);
      if (args.includes("delete")) present = false;
      if (args.includes("new")) present = true;
      return out;
    };
    const target = new TgtTarget({ controlPort: 901, portal: PORTAL, runDir, run, processes: noProcesses, sleep: async (ms) => void slept.push(ms) });
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
    const busy = "tgtadm: this logical unit is still active";
    const { r, target, slept } = lunRecorder(file, false, [busy, busy]);
    await target.refreshLun(1, 1, file, false);
    expect(r.changes().map((c) => c[6])).toEqual(["delete", "delete", "delete", "new"]);
    expect(slept).toEqual([100, 200]);
    const stuck = lunRecorder(file, false, Array(9).fill(busy));
    await expect(stuck.target.refreshLun(1, 1, file, false)).rejects.toThrow(/still active/);
    expect(stuck.r.changes()).toHaveLength(6);
    expect(stuck.slept).toEqual([100, 200, 400, 800, 1600]);
    const broken = lunRecorder(file, false, ["tgtadm: can't find the logical unit"]);
    await expect(broken.target.refreshLun(1, 1, file, false)).rejects.toThrow(/can't find/);
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

  test("a new account is created with the password as a secret, then bound; the same call again changes nothing", async () => {
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS });
    await tgt(r).ensureChap(2, { username: "carol", password: PASSWORD });
    expect(r.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "new", "--mode", "account", "--user", "carol", "--password", PASSWORD],
      ["tgtadm", ...TGTADM, "--op", "bind", "--mode", "account", "--tid", "2", "--user", "carol"],
    ]);
    // Every call that carries the password hands it to exec as a secret.
    for (const c of r.calls.filter((c) => c.args.includes(PASSWORD))) expect(c.options?.secrets).toContain(PASSWORD);
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

  test("a failing tgtadm names the command but never the password (real exec, fake tgtadm)", async () => {
    // A stand-in tgtadm that echoes its argv to stderr and fails, run through the real exec.
    const fakeTgtadm = "console.error('tgtadm: refused ' + process.argv.slice(1).join(' ')); process.exit(22)";
    const run: Runner = (file, args, options) =>
      file === "tgtadm" && args.includes("account") && !args.includes("show")
        ? realRun(process.execPath, ["-e", fakeTgtadm, "--", ...args], options)
        : recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS }).run(file, args, options);
    const target = new TgtTarget({ controlPort: 901, portal: PORTAL, runDir, run, processes: noProcesses });
    const err = await target.ensureChap(2, { username: "carol", password: PASSWORD }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendError);
    expect((err as Error).message).toMatch(/exit 22/);
    expect((err as Error).message).toMatch(/--user carol --password \*\*\*/);
    expect((err as Error).message).not.toContain(PASSWORD);
  });
});

describe("remove: what show no longer lists is already gone", () => {
  test("each remove runs its tgtadm op only when the thing is listed", async () => {
    const r = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS });
    const t = tgt(r);
    await t.removeInitiator(1, "iqn.2024-01.io.sds:host2");
    await t.removeLun(1, 2);
    await t.removeTarget(2);
    await t.removeChapAccount("bob");
    expect(r.changes()).toEqual([
      ["tgtadm", ...TGTADM, "--op", "unbind", "--mode", "target", "--tid", "1", "--initiator-name", "iqn.2024-01.io.sds:host2"],
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "logicalunit", "--tid", "1", "--lun", "2"],
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "target", "--tid", "2", "--force"],
      ["tgtadm", ...TGTADM, "--op", "delete", "--mode", "account", "--user", "bob"],
    ]);
    const gone = recorder({ targets: SHOW_TARGETS, accounts: SHOW_ACCOUNTS });
    await tgt(gone).removeInitiator(1, "iqn.2024-01.io.sds:host9");
    await tgt(gone).removeInitiator(7, "iqn.2024-01.io.sds:host1");
    await tgt(gone).removeLun(1, 5);
    await tgt(gone).removeLun(7, 1);
    await tgt(gone).removeTarget(7);
    await tgt(gone).removeChapAccount("nobody");
    expect(gone.changes()).toEqual([]);
  });
});

test("the constructor refuses a control port tgtd cannot take and a portal that is not ip:port", () => {
  expect(() => new TgtTarget({ controlPort: 40000, portal: PORTAL, runDir })).toThrow(/0-32767/);
  expect(() => new TgtTarget({ controlPort: 1, portal: "localhost", runDir })).toThrow(/ip:port/);
});
