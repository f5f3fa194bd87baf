/**
 * TgtTarget on a real tgtd shared with others, as root: several TgtTarget instances (standing for
 * other providers, states or agents on the same host) ensure the same exports at the same
 * moment, and `list()` counts the sessions of an initiator that stays logged in.
 */
import { spawn } from "node:child_process";
import * as path from "node:path";
import { TgtTarget } from "../../provider/src/targets/tgt-target";
import { Daemons, freeTcpPort, skipReason } from "../helpers/daemons";
import { sparseFile } from "../helpers/files";

jest.setTimeout(60_000);

const HOST = "iqn.2024-01.io.sds:host-live";
const CHAP = { username: "liveuser", password: "Live-Secret-8" };
const skip = skipReason(["tgtd", "qemu-io"]);

if (skip) {
  test.skip(`TgtTarget live tests skipped: ${skip}`, () => undefined);
} else {
  describe("TgtTarget: several callers on one tgtd", () => {
    let daemons: Daemons;
    let dir: string;
    let portal: string;
    let controlPort: number;
    let first: TgtTarget;
    /** Another caller on the same tgtd and run folder (another provider on this host). */
    const another = () => new TgtTarget({ controlPort, portal, runDir: dir });

    beforeEach(async () => {
      daemons = new Daemons();
      dir = daemons.runDir("tgtsock-live-");
      portal = `127.0.0.1:${await freeTcpPort()}`;
      controlPort = await daemons.tgtControlPort();
      first = another();
      await first.start();
    });
    afterEach(async () => {
      await first.stop().catch(() => undefined);
      await daemons.cleanup();
    });

    /** What an attach asks of a target; returns the tid it got. */
    async function attach(t: TgtTarget, iqn: string, file: string, tidHint?: number): Promise<number> {
      const tid = await t.ensureTarget(iqn, tidHint);
      await t.ensureLun(tid, 1, file, false);
      await t.ensureInitiator(tid, HOST);
      await t.ensureChap(tid, CHAP);
      return tid;
    }

    test("the same export ensured by four callers at once: one target, LUN, ACL entry and account; one tid for all", async () => {
      for (let round = 0; round < 3; round++) {
        const iqn = `iqn.2024-01.io.sds:live-${round}`;
        const file = sparseFile(path.join(dir, `vol-${round}.img`));
        const tids = await Promise.all([first, another(), another(), another()].map((t) => attach(t, iqn, file)));
        expect(new Set(tids).size).toBe(1);
        const listed = (await first.list()).filter((t) => t.name === iqn);
        expect(listed).toEqual([{ name: iqn, tid: tids[0], luns: [{ lun: 1, path: file, readOnly: false }], initiators: [HOST], chapUsers: [CHAP.username], sessions: 0 }]);
      }
      expect(await first.accounts()).toEqual([CHAP.username]);
    });

    test("six new targets at once, all hinting the same tid: six distinct tids, each the one its caller got", async () => {
      const iqns = Array.from({ length: 6 }, (_, i) => `iqn.2024-01.io.sds:many-${i}`);
      const tids = await Promise.all(iqns.map((iqn) => another().ensureTarget(iqn, 1)));
      expect(new Set(tids).size).toBe(6);
      const listed = await first.list();
      for (const [i, iqn] of iqns.entries()) expect(listed.find((t) => t.name === iqn)?.tid).toBe(tids[i]);
    });

    test("a stored tid another target holds now is only a hint: the target gets a free one, and says which", async () => {
      const file = sparseFile(path.join(dir, "vol.img"));
      const taken = await first.ensureTarget("iqn.2024-01.io.sds:holder");
      const tid = await attach(first, "iqn.2024-01.io.sds:moved", file, taken);
      expect(tid).not.toBe(taken);
      expect(await first.ensureTarget("iqn.2024-01.io.sds:moved", taken)).toBe(tid);
    });

    test("list() counts a logged-in initiator's session while it lasts", async () => {
      const iqn = "iqn.2024-01.io.sds:live-session";
      const file = sparseFile(path.join(dir, "vol.img"));
      const tid = await first.ensureTarget(iqn);
      await first.ensureLun(tid, 1, file, false);
      await first.ensureInitiator(tid, HOST);
      const opts = ["driver=raw", "file.driver=iscsi", "file.transport=tcp", `file.portal=${portal}`, `file.target=${iqn}`, "file.lun=1", `file.initiator-name=${HOST}`];
      const qemu = spawn("qemu-io", ["-r", "--image-opts", opts.join(","), "-c", "sleep 4000"], { stdio: "ignore" });
      const exited = new Promise((r) => qemu.once("exit", r));
      try {
        const sessions = async () => (await first.list()).find((t) => t.tid === tid)!.sessions;
        let seen = 0;
        for (let i = 0; i < 60 && seen === 0; i++) {
          seen = (await sessions()) ?? 0;
          if (!seen) await new Promise((r) => setTimeout(r, 50));
        }
        expect(seen).toBe(1);
        await exited;
        for (let i = 0; i < 60 && (await sessions()) !== 0; i++) await new Promise((r) => setTimeout(r, 50));
        expect(await sessions()).toBe(0);
      } finally {
        qemu.kill("SIGKILL");
      }
    });
  });
}
