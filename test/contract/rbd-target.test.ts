/**
 * The iSCSI target contract on RBD volumes: TgtTarget with tgt's rbd backing store (Debian
 * tgt-rbd) against a real single-node Ceph (test/helpers/ceph.ts) and a real tgtd, as root. Data
 * goes through a real initiator (qemu-io over libiscsi) and is checked through librbd
 * (`qemu-io -f raw rbd:…`, the volume path itself: the conf names the monitors and the keyring).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { formatRbdPath } from "../../provider/src/domain/rbd-path";
import { run } from "../../provider/src/exec/run";
import { TgtTarget } from "../../provider/src/targets/tgt-target";
import { describeTgtadmRequest, encodeTgtadmRequest, TGTADM_REQ_SIZE, TgtadmClient, type TgtadmRequest } from "../../provider/src/targets/tgtadm-client";
import { type CephCluster, cephSkipReason, startCeph, tgtRbdSkipReason } from "../helpers/ceph";
import { Daemons, freeTcpPort, skipReason } from "../helpers/daemons";

jest.setTimeout(120_000);

const MiB = 1024 * 1024;
const IQN = "iqn.2024-01.io.sds:rbd-contract";
const HOST = "iqn.2024-01.io.sds:rbd-host";
const CHAP = { username: "sdsrbd", password: "Rbd-Contract-Secret-42" };
const POOL = "sds";

const skip = cephSkipReason() ?? tgtRbdSkipReason() ?? skipReason(["tgtd", "qemu-io", "qemu-img"]);

interface Login {
  portal: string;
  lun: number;
  readOnly?: boolean;
}

/** qemu's block options for LUN `lun` of {@link IQN} through libiscsi, with CHAP. */
function libiscsi(login: Login): string[] {
  const opts = ["driver=raw", "file.driver=iscsi", "file.transport=tcp", `file.portal=${login.portal}`, `file.target=${IQN}`, `file.lun=${login.lun}`, `file.initiator-name=${HOST}`, `file.user=${CHAP.username}`, "file.password-secret=s0"];
  return ["--object", `secret,id=s0,data=${CHAP.password}`, "--image-opts", opts.join(",")];
}

function iscsiIo(login: Login, ...commands: string[]) {
  return run("qemu-io", [...(login.readOnly ? ["-r"] : []), ...libiscsi(login), ...commands.flatMap((c) => ["-c", c])], { timeoutMs: 60_000 });
}

async function iscsiSize(login: Login): Promise<number> {
  const r = await run("qemu-img", ["info", "--output=json", ...libiscsi(login)], { timeoutMs: 60_000 });
  return (JSON.parse(r.stdout) as { "virtual-size": number })["virtual-size"];
}

/** qemu-io on the RBD image through librbd, the volume path as qemu's filename. */
function rbdIo(rbdPath: string, ...commands: string[]) {
  return run("qemu-io", ["-f", "raw", rbdPath, ...commands.flatMap((c) => ["-c", c])], { timeoutMs: 60_000 });
}

test("an rbd LUN's request reads as tgtadm's --bstype rbd --backing-store --bsopts (bytes of tgtadm 1.0.85)", () => {
  const req = encodeTgtadmRequest({ op: "new", mode: "logicalunit", tid: 1, lun: 1, backingStore: "p/i", bstype: "rbd", bsopts: "conf=/a/b.conf;id=admin" }, "LE");
  // what `tgtadm ... --bstype rbd --backing-store p/i --bsopts "conf=/a/b.conf;id=admin"` sends
  expect(req.subarray(TGTADM_REQ_SIZE).toString()).toBe("path=p/i,bstype=rbd,bsopts=conf=/a/b.conf;id=admin\0");
});

if (skip) {
  test.skip(`IscsiTarget on RBD skipped: ${skip}`, () => undefined);
} else {
  describe("IscsiTarget: TgtTarget on tgt's rbd backing store", () => {
    let ceph: CephCluster;
    let daemons: Daemons;
    let target: TgtTarget;
    let portal: string;
    let dir: string;
    let n = 0;
    let image: string;
    let vol: string;

    beforeAll(async () => {
      ceph = await startCeph();
      await ceph.pool(POOL);
    }, 180_000);
    afterAll(async () => await ceph?.stop(), 120_000);

    beforeEach(async () => {
      daemons = new Daemons();
      dir = daemons.runDir("sds-rbd-target-");
      portal = `127.0.0.1:${await freeTcpPort()}`;
      target = new TgtTarget({ controlPort: await daemons.tgtControlPort(), portal, runDir: dir });
      await target.start();
      image = `vol-${++n}`;
      await ceph.rbd(["create", `${POOL}/${image}`, "--size", "16M"]);
      vol = formatRbdPath({ cephPool: POOL, image, user: ceph.user, conf: ceph.conf });
    });
    afterEach(async () => {
      await target.stop().catch(() => undefined);
      await daemons.cleanup();
    });

    /** The whole export of `vol` as LUN 1 (rw), as the controller makes it. */
    function exported(readOnly = false, lun = 1): Promise<number> {
      return target.ensureExport({ iqn: IQN, lun, path: vol, readOnly, initiator: HOST, chap: CHAP });
    }

    test("ensure twice is idempotent; list reports the RBD path it was given, also to a new instance and after its record is lost", async () => {
      const tid = await exported();
      expect(await exported()).toBe(tid);
      await target.ensureLun(tid, 1, vol, false);
      const want = [{ name: IQN, tid, luns: [{ lun: 1, path: vol, readOnly: false }], initiators: [HOST], chapUsers: [CHAP.username], sessions: 0 }];
      expect(await target.list()).toEqual(want);
      // tgtd itself serves it from librbd: its own words.
      const show = (await run("tgtadm", ["-C", String(target.controlPort), "--lld", "iscsi", "--op", "show", "--mode", "target"])).stdout;
      expect(show).toMatch(/Backing store type: rbd/);
      expect(show).toContain(`Backing store path: ${POOL}/${image}`);
      expect(show).toMatch(/Size: 17 MB/);
      const again = new TgtTarget({ controlPort: target.controlPort, portal, runDir: dir });
      expect(await again.list()).toEqual(want);
      // The record is lost (another run folder): the image is still known, and the same path adopts it.
      fs.rmSync(path.join(dir, `tgtd-${target.controlPort}-rbd`), { recursive: true });
      expect((await target.list())[0]!.luns).toEqual([{ lun: 1, path: `rbd:${POOL}/${image}`, readOnly: false }]);
      await target.ensureLun(tid, 1, vol, false);
      expect(await target.list()).toEqual(want);
      // Another image on the same LUN is a conflict, not a silent switch.
      await ceph.rbd(["create", `${POOL}/other`, "--size", "16M"]);
      const other = formatRbdPath({ cephPool: POOL, image: "other", user: ceph.user, conf: ceph.conf });
      await expect(target.ensureLun(tid, 1, other, false)).rejects.toThrow(/is backed by/);
      await ceph.rbd(["rm", `${POOL}/other`]);
    });

    test("a missing image or conf is a clear error and leaves no LUN", async () => {
      const tid = await target.ensureTarget(IQN);
      const missing = formatRbdPath({ cephPool: POOL, image: "nope", user: ceph.user, conf: ceph.conf });
      await expect(target.ensureLun(tid, 1, missing, false)).rejects.toThrow(/could not open RBD image sds\/nope/);
      await expect(target.ensureLun(tid, 1, formatRbdPath({ cephPool: POOL, image, user: ceph.user, conf: path.join(dir, "none.conf") }), false)).rejects.toThrow(/conf .* does not exist/);
      expect((await target.list())[0]!.luns).toEqual([]);
    });

    test("data written through iSCSI reads back through librbd, and back again", async () => {
      await exported();
      const login = { portal, lun: 1 };
      await iscsiIo(login, "write -P 0xab 0 1M");
      expect((await rbdIo(vol, "read -P 0xab 0 1M")).stdout).toMatch(/read 1048576\/1048576 bytes/);
      expect((await rbdIo(vol, `read -P 0x00 ${MiB} 1M`)).stdout).toMatch(/read 1048576\/1048576 bytes/);
      await rbdIo(vol, `write -P 0xcd ${2 * MiB} 64k`);
      expect((await iscsiIo(login, `read -P 0xcd ${2 * MiB} 64k`)).stdout).toMatch(/read 65536\/65536 bytes/);
    });

    test("a read-only LUN of the same image serves what the rw LUN wrote and refuses writes", async () => {
      const tid = await exported();
      await target.ensureLun(tid, 2, vol, true);
      await target.ensureLun(tid, 2, vol, true);
      expect((await target.list())[0]!.luns).toEqual([
        { lun: 1, path: vol, readOnly: false },
        { lun: 2, path: vol, readOnly: true },
      ]);
      await iscsiIo({ portal, lun: 1 }, "write -P 0x5a 0 1M");
      expect((await iscsiIo({ portal, lun: 2, readOnly: true }, "read -P 0x5a 0 1M")).stdout).toMatch(/read 1048576\/1048576 bytes/);
      await expect(iscsiIo({ portal, lun: 2 }, "write -P 0x11 0 4k")).rejects.toThrow(/write protected/i);
      expect((await rbdIo(vol, "read -P 0x5a 0 4k")).stdout).toMatch(/read 4096\/4096 bytes/);
    });

    test("refreshLun after rbd resize: the next login sees the new size; data, LUN, mode and path stay", async () => {
      const tid = await exported();
      await target.ensureLun(tid, 2, vol, true);
      const login = { portal, lun: 1 };
      await iscsiIo(login, "write -P 0xcd 0 64k");
      const listed = await target.list();
      expect(await iscsiSize(login)).toBe(16 * MiB);
      await ceph.rbd(["resize", `${POOL}/${image}`, "--size", "32M"]);
      // why refreshLun exists: tgtd still reports the size it read when the LUN was added
      expect(await iscsiSize(login)).toBe(16 * MiB);
      await target.refreshLun(tid, 1, vol, false);
      await target.refreshLun(tid, 2, vol, true);
      expect(await iscsiSize(login)).toBe(32 * MiB);
      expect(await iscsiSize({ portal, lun: 2 })).toBe(32 * MiB);
      expect(await target.list()).toEqual(listed);
      expect((await iscsiIo(login, "read -P 0xcd 0 64k")).stdout).toMatch(/read 65536\/65536 bytes/);
      await iscsiIo(login, `write -P 0xef ${31 * MiB} 64k`);
      expect((await rbdIo(vol, `read -P 0xef ${31 * MiB} 64k`)).stdout).toMatch(/read 65536\/65536 bytes/);
      await expect(iscsiIo({ portal, lun: 2 }, `write -P 0x11 ${20 * MiB} 4k`)).rejects.toThrow(/write protected/i);
      // a LUN missing (a refresh cut short) is added back
      await target.removeLun(tid, 2);
      await target.refreshLun(tid, 2, vol, true);
      expect(await target.list()).toEqual(listed);
    });

    test("a read-only export: the LUN is read-only before the initiator enters the ACL (tgt cannot add a LUN read-only)", async () => {
      const sent: TgtadmRequest[] = [];
      const client = new TgtadmClient({ controlPort: target.controlPort });
      const recorded = new TgtTarget({ controlPort: target.controlPort, portal, runDir: dir, tgtadm: { request: (req) => (sent.push(req), client.request(req)) } });
      const tid = await recorded.ensureExport({ iqn: IQN, lun: 1, path: vol, readOnly: true, initiator: HOST, chap: CHAP });
      const changes = sent.filter((r) => r.op !== "show" && !(r.mode === "target" && r.op === "update")).map(describeTgtadmRequest);
      expect(changes).toEqual([
        `tgtadm --op new --mode target --tid ${tid} --targetname ${IQN}`,
        `tgtadm --op new --mode logicalunit --tid ${tid} --lun 1 --backing-store ${POOL}/${image} --bstype rbd --bsopts conf=${ceph.conf};id=${ceph.user}`,
        `tgtadm --op update --mode logicalunit --tid ${tid} --lun 1 --params readonly=1`,
        `tgtadm --op bind --mode target --tid ${tid} --initiator-name ${HOST}`,
        `tgtadm --op new --mode account --user ${CHAP.username} --password ***`,
        `tgtadm --op bind --mode account --tid ${tid} --user ${CHAP.username}`,
      ]);
      await expect(iscsiIo({ portal, lun: 1 }, "write -P 0x11 0 4k")).rejects.toThrow(/write protected/i);
    });

    test("tgt holds the image while the LUN lives (rbd rm refused: watchers); removes twice are success and let rbd rm work", async () => {
      const tid = await exported();
      await target.ensureLun(tid, 2, vol, true);
      await expect(ceph.rbd(["rm", `${POOL}/${image}`])).rejects.toThrow(/watchers/);
      for (let i = 0; i < 2; i++) {
        await target.removeInitiator(tid, HOST);
        await target.removeLun(tid, 2);
      }
      expect((await target.list())[0]!.luns).toEqual([{ lun: 1, path: vol, readOnly: false }]);
      for (let i = 0; i < 2; i++) {
        await target.removeTarget(tid);
        await target.removeChapAccount(CHAP.username);
      }
      expect(await target.list()).toEqual([]);
      expect(fs.readdirSync(path.join(dir, `tgtd-${target.controlPort}-rbd`))).toEqual([]);
      await ceph.rbd(["rm", `${POOL}/${image}`]);
      expect(JSON.parse(await ceph.rbd(["ls", POOL, "--format", "json"]))).not.toContain(image);
    });
  });
}
