/**
 * TgtadmClient against the tgtadm binary, on real tgtd daemons, as root: two daemons get the same
 * requests, one through the client (its socket), one through `tgtadm` (same options, from
 * `tgtadmArgs`). After every step both daemons must show the same targets, accounts and portals,
 * the client must read the same text tgtadm prints, and a refusal must be the same words tgtadm
 * prints on stderr. The installed tgt's version is in the suite name.
 */
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { TgtTarget } from "../../provider/src/targets/tgt-target";
import { TGTADM_ERRORS, TgtadmClient, TgtadmError, tgtadmArgs, type TgtadmRequest } from "../../provider/src/targets/tgtadm-client";
import { Daemons, freeTcpPort, skipReason } from "../helpers/daemons";
import { sparseFile } from "../helpers/files";

jest.setTimeout(60_000);

const IQN = "iqn.2024-01.io.sds:compare";
const HOST = "iqn.2024-01.io.sds:compare-host";
const PASSWORD = "Compare,Secret-1"; // a comma: tgtd takes the rest of the params as the password

/** `tgtadm -C port --lld iscsi <req>`: stdout, or the stderr and exit code of a refusal. */
function tgtadm(controlPort: number, req: TgtadmRequest): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile("tgtadm", ["-C", String(controlPort), "--lld", "iscsi", ...tgtadmArgs(req)], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stdout, stderr });
    });
  });
}

function tgtVersion(): string {
  try {
    return execFileSync("dpkg-query", ["-W", "-f", "${Version}", "tgt"], { encoding: "utf8" });
  } catch {
    return "unknown version";
  }
}

const skip = skipReason(["tgtd", "tgtadm"]);

if (skip) {
  test.skip(`tgtadm comparison skipped: ${skip}`, () => undefined);
} else {
  describe(`TgtadmClient and tgtadm (tgt ${tgtVersion()}) on real tgtd`, () => {
    let daemons: Daemons;
    let viaClient: TgtTarget;
    let viaBinary: TgtTarget;
    let client: TgtadmClient;
    let file: string;

    beforeEach(async () => {
      daemons = new Daemons();
      const dir = daemons.runDir("tgtsock-compare-");
      file = sparseFile(path.join(dir, "vol.img"));
      viaClient = new TgtTarget({ controlPort: await daemons.tgtControlPort(), portal: `127.0.0.1:${await freeTcpPort()}`, runDir: path.join(dir, "a") });
      viaBinary = new TgtTarget({ controlPort: await daemons.tgtControlPort(), portal: `127.0.0.1:${await freeTcpPort()}`, runDir: path.join(dir, "b") });
      await viaClient.start();
      await viaBinary.start();
      client = new TgtadmClient({ controlPort: viaClient.controlPort, timeoutMs: 10_000 });
    });
    afterEach(async () => {
      await viaClient.stop().catch(() => undefined);
      await viaBinary.stop().catch(() => undefined);
      await daemons.cleanup();
    });

    /** Both daemons, as tgtadm shows them, with each daemon's own portal port written as PORT. */
    async function shown(controlPort: number, portal: string): Promise<string[]> {
      const out: string[] = [];
      for (const req of [{ op: "show", mode: "target" }, { op: "show", mode: "account" }, { op: "show", mode: "portal" }, { op: "show", mode: "target", tid: 1 }] as TgtadmRequest[]) {
        const r = await tgtadm(controlPort, req);
        out.push(`${r.code} ${r.stdout.split(portal.split(":")[1]!).join("PORT")}`);
      }
      return out;
    }

    /** One step: the same request both ways; the same answer or the same refusal; then the same state. */
    async function step(req: TgtadmRequest): Promise<void> {
      const binary = await tgtadm(viaBinary.controlPort, req);
      const socket = await client.request(req).then(
        (text) => ({ code: 0, stdout: text, stderr: "" }),
        (err: unknown) => {
          if (!(err instanceof TgtadmError)) throw err;
          return { code: 22, stdout: "", stderr: `tgtadm: ${TGTADM_ERRORS[err.tgtdError]![1]}\n` };
        },
      );
      const label = tgtadmArgs(req).join(" ");
      const norm = (r: typeof binary, portal: string) => ({ label, code: r.code, stdout: r.stdout.split(portal.split(":")[1]!).join("PORT"), stderr: r.stderr });
      expect(norm(socket, viaClient.portal)).toEqual(norm(binary, viaBinary.portal));
      expect(await shown(viaClient.controlPort, viaClient.portal)).toEqual(await shown(viaBinary.controlPort, viaBinary.portal));
    }

    test("every op TgtTarget uses: same effect, same output, same refusals", async () => {
      const steps: TgtadmRequest[] = [
        { op: "show", mode: "portal" },
        { op: "show", mode: "target" },
        { op: "new", mode: "target", tid: 1, targetname: IQN },
        { op: "new", mode: "target", tid: 1, targetname: `${IQN}-b` }, // tid taken
        { op: "new", mode: "target", tid: 2, targetname: IQN }, // name taken
        { op: "update", mode: "target", tid: 1, name: "MaxRecvDataSegmentLength", value: "1048576" },
        { op: "update", mode: "target", tid: 1, name: "InitialR2T", value: "No" },
        { op: "new", mode: "logicalunit", tid: 1, lun: 1, backingStore: file },
        { op: "new", mode: "logicalunit", tid: 1, lun: 1, backingStore: file },
        { op: "update", mode: "logicalunit", tid: 1, lun: 1, params: "readonly=1" },
        { op: "bind", mode: "target", tid: 1, initiatorName: HOST },
        { op: "bind", mode: "target", tid: 1, initiatorName: HOST },
        { op: "new", mode: "account", user: "compare", password: PASSWORD },
        { op: "new", mode: "account", user: "compare", password: PASSWORD },
        { op: "bind", mode: "account", tid: 1, user: "compare" },
        { op: "bind", mode: "account", tid: 1, user: "compare" },
        { op: "bind", mode: "account", tid: 9, user: "compare" },
        { op: "show", mode: "account" },
        { op: "show", mode: "target" },
        { op: "unbind", mode: "target", tid: 1, initiatorName: HOST },
        { op: "unbind", mode: "target", tid: 1, initiatorName: HOST },
        { op: "delete", mode: "logicalunit", tid: 1, lun: 1 },
        { op: "delete", mode: "logicalunit", tid: 1, lun: 1 },
        { op: "delete", mode: "account", user: "compare" },
        { op: "delete", mode: "account", user: "compare" },
        { op: "delete", mode: "target", tid: 1, force: true },
        { op: "delete", mode: "target", tid: 1, force: true },
      ];
      for (const req of steps) await step(req);
    });

    test("delete --mode system: both daemons exit, and the client returns once tgtd no longer accepts", async () => {
      await client.request({ op: "delete", mode: "system" });
      expect(fs.existsSync(client.socketPath) ? await client.request({ op: "show", mode: "portal" }).then(() => "answers", () => "refused") : "gone").not.toBe("answers");
      const binary = await tgtadm(viaBinary.controlPort, { op: "delete", mode: "system" });
      expect(binary.code).toBe(0);
      for (let i = 0; i < 100 && (await daemons.processes()).length; i++) await new Promise((r) => setTimeout(r, 50));
      expect(await daemons.processes()).toEqual([]);
    });
  });
}
