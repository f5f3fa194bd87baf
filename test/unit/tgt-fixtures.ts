/**
 * What the TgtTarget unit tests share: tgtd's `show` answers captured from tgt 1.0.85, and a
 * recorder standing in for tgtd's socket (every request, as the equivalent tgtadm argv) and for
 * the command runner (tgtd itself), with canned answers and injected refusals.
 */
import type { RunOptions, Runner } from "../../provider/src/exec/run";
import type { ProcessTable } from "../../provider/src/exec/processes";
import { BackendError } from "../../provider/src/errors";
import { TgtTarget } from "../../provider/src/targets/tgt-target";
import { TGTADM_ERRORS, TgtadmError, tgtadmArgs, type TgtadmChannel, type TgtadmRequest, type TgtdErrorName } from "../../provider/src/targets/tgtadm-client";

/** `tgtadm -C 901 --lld iscsi --op show --mode target` captured from tgt 1.0.85 with one logged-in session. */
export const SHOW_TARGETS = `Target 1: iqn.2024-01.io.sds:t1
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
export const SHOW_ACCOUNTS = "Account list:\n    alice\n    bob\n";
export const PORTAL = "127.0.0.1:3260";
export const SHOW_PORTAL = `Portal: ${PORTAL},1\n`;
export const T1 = "iqn.2024-01.io.sds:t1";
export const VOL_A = "/var/lib/sds/pools/default/volume-a.img";
export const VOL_B = "/var/lib/sds/pools/default/volume-b.img";
/** What tgtadm would take before the op (`-C <control port> --lld iscsi`): recorded requests read like tgtadm argv. */
export const TGTADM = ["-C", "901", "--lld", "iscsi"];

/** One recorded call: a tgtadm request (`file` "tgtadm", `request` set) or a command run (tgtd). */
export interface Call {
  file: string;
  args: string[];
  options?: RunOptions;
  request?: TgtadmRequest;
}

/** Canned answers: text or a function (state that changes), a refusal per call, a hook after each success. */
export interface Answers {
  targets?: string | (() => string);
  accounts?: string | (() => string);
  portal?: string | Error;
  fail?: (call: Call) => Error | undefined;
  after?: (call: Call) => void;
}

/** A recording tgtd socket and runner answering `show` with canned text. */
export function recorder(answers: Answers = {}) {
  const calls: Call[] = [];
  const text = (t: string | (() => string) | undefined) => (typeof t === "function" ? t() : (t ?? ""));
  const tgtadm: TgtadmChannel = {
    async request(req) {
      const call: Call = { file: "tgtadm", args: [...TGTADM, ...tgtadmArgs(req)], request: { ...req } };
      calls.push(call);
      const failure = answers.fail?.(call);
      if (failure) throw failure;
      let out = "";
      if (req.op === "show" && req.mode === "target") out = text(answers.targets);
      else if (req.op === "show" && req.mode === "account") out = text(answers.accounts);
      else if (req.op === "show" && req.mode === "portal") {
        if (answers.portal instanceof Error) throw answers.portal;
        out = answers.portal ?? SHOW_PORTAL;
      }
      answers.after?.(call);
      return out;
    },
  };
  const run: Runner = async (file, args, options) => {
    const call: Call = { file, args: [...args], options };
    calls.push(call);
    const failure = answers.fail?.(call);
    if (failure) throw failure;
    answers.after?.(call);
    return { stdout: "", stderr: "", exitCode: 0 };
  };
  /** The calls that change something (everything but `--op show`), as argv. */
  const changes = () => calls.filter((c) => c.request?.op !== "show").map((c) => [c.file, ...c.args]);
  /** The processes started (the runner's calls). */
  const processes = () => calls.filter((c) => !c.request);
  return { calls, run, tgtadm, changes, processes };
}

/** tgtd refusing `call`'s request with `name`, as TgtadmClient reports it. */
export function refused(call: Call, name: TgtdErrorName): TgtadmError {
  return new TgtadmError(call.request!, TGTADM_ERRORS.findIndex(([n]) => n === name), 901);
}

export const noProcesses: ProcessTable = { argv: async () => undefined, list: async () => [], kill: () => undefined };
/** What TgtadmClient says when no tgtd listens on the control port. */
export const down = new BackendError("COMMAND_FAILED", "tgtadm --op show --mode portal (control port 901): can't connect to tgt daemon on /var/run/tgtd/socket.901 (ENOENT)", false);

/** A TgtTarget on control port 901 wired to `r`. */
export function tgtOf(r: ReturnType<typeof recorder>, runDir: string, more: { processes?: ProcessTable; sleep?: (ms: number) => Promise<void> } = {}): TgtTarget {
  return new TgtTarget({ controlPort: 901, portal: PORTAL, runDir, run: r.run, tgtadm: r.tgtadm, processes: more.processes ?? noProcesses, sleep: more.sleep });
}
