/**
 * A target daemon SIGKILLed under a connected userspace device, then started again with its
 * exports made again (what the provider does at its next start): the connector sees the broken
 * chain within seconds, I/O on the device fails instead of hanging, `connectVolume` puts the
 * volume back under the SAME device with its data, and one `disconnectVolume` leaves nothing.
 * iSCSI with CHAP (tgtd → qemu-nbd/libiscsi → nbdfuse → loop) and NBD (nbdkit → nbdfuse → loop).
 * Every daemon, process, mount and loop device a test makes is ended by pid / device in afterEach.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Connection, Connector } from "../../provider/src/connectors/connector";
import { connectorFor } from "../../provider/src/connectors/factory";
import { RecordStore } from "../../provider/src/connectors/records";
import { procProcesses } from "../../provider/src/exec/processes";
import { NbdkitTarget } from "../../provider/src/targets/nbdkit-target";
import { TgtTarget } from "../../provider/src/targets/tgt-target";
import { Daemons, freeTcpPort, skipReason } from "../helpers/daemons";
import { bytesAt, sparseFile } from "../helpers/files";
import { alive, loops, mountsUnder, sweepConnections } from "../helpers/host";
import { readBlock, timedRead, writeBlock } from "../helpers/block-io";

jest.setTimeout(240_000);

const BLOCK = 4096;
const IQN = "iqn.2026-11.io.sds:crash-vol1";
const INITIATOR = "iqn.2026-11.io.sds:crash-host";
const CHAP = { username: "sdscrash", password: "Crash-Secret-31" };

/** What each protocol's case hands the shared scenario. */
interface Fixture {
  connector: Connector;
  connection: Connection;
  stateDir: string;
  dir: string;
  backingFile: string;
  /** SIGKILL the target daemon (only the one this test started). */
  crash(): Promise<void>;
  /** Start the daemon again and make the export again (the provider's next start). */
  restore(): Promise<void>;
  /** iSCSI: libiscsi would wait for the target forever; the agent's health loop fences it. */
  fence: boolean;
}

function scenario(fx: () => Fixture): void {
  test("SIGKILL of the target: unhealthy within seconds, reads fail instead of hanging; after the restart connectVolume gives the same device back with its data; one disconnect leaves nothing", async () => {
    const { connector, connection: c, dir } = fx();
    const { path: dev } = await connector.connectVolume(c);
    expect(await connector.checkVolume(c)).toEqual({ path: dev, healthy: true });
    const early = Buffer.alloc(BLOCK, `early:${Math.random()}|`);
    await writeBlock(dev, 7, early, dir);
    expect(bytesAt(fx().backingFile, 7 * BLOCK, BLOCK).equals(early)).toBe(true);

    await fx().crash();
    const started = Date.now();
    const health = await connector.checkVolume(c);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(health).toMatchObject({ path: dev, healthy: false, reason: expect.stringMatching(/does not answer|lost its|exited/) });
    expect(health.reason).not.toContain(CHAP.password);

    // A reader on the device: it must end with an error within ~30 s, not hang.
    const read = timedRead(dev, 7, dir);
    if (fx().fence) expect((await connector.fenceVolume(c)).healthy).toBe(false);
    const r = await read;
    expect(r.ok).toBe(false);
    expect(r.ms).toBeLessThan(30_000);

    await fx().restore();
    const again = await connector.connectVolume(c);
    expect(again.path).toBe(dev);
    expect((await readBlock(dev, 7, dir)).equals(early)).toBe(true);
    const late = Buffer.alloc(BLOCK, `late:${Math.random()}|`);
    await writeBlock(dev, 9, late, dir);
    expect(bytesAt(fx().backingFile, 9 * BLOCK, BLOCK).equals(late)).toBe(true);
    expect(await connector.checkVolume(c)).toEqual({ path: dev, healthy: true });
    expect(new RecordStore(fx().stateDir).read(c.volumeId, "rw")?.extraLayers).toBeUndefined();
    expect(mountsUnder(fx().stateDir)).toHaveLength(1); // the old chain's mount is gone

    await connector.disconnectVolume(c);
    await expectNothingLeft(fx());
  });

  test("the health loop's sweep (from the records alone, no CHAP password) fences a chain broken two passes in a row: a reader fails instead of hanging", async () => {
    const { connector, connection: c, dir } = fx();
    if (!fx().fence) return; // NBD's chain fails fast by itself: the sweep probes only what can hang
    const { path: dev } = await connector.connectVolume(c);
    await writeBlock(dev, 2, Buffer.alloc(BLOCK, 2), dir);
    expect(await connector.sweep!()).toEqual([]); // healthy: nothing to do
    await fx().crash();
    const read = timedRead(dev, 2, dir);
    expect(await connector.sweep!()).toEqual([]); // one strike is not enough: a slow target is not a dead one
    const fenced = await connector.sweep!();
    expect(fenced).toEqual([{ volumeId: c.volumeId, mode: "rw", path: dev, reason: expect.stringMatching(/\S/) }]);
    expect(await connector.sweep!()).toEqual([]); // reported once
    const r = await read;
    expect(r.ok).toBe(false);
    expect(r.ms).toBeLessThan(30_000);
    await connector.disconnectVolume(c);
    await expectNothingLeft(fx());
  });

  test("after a crash, one disconnect (no restart) leaves nothing", async () => {
    const { connector, connection: c, dir } = fx();
    const { path: dev } = await connector.connectVolume(c);
    await writeBlock(dev, 1, Buffer.alloc(BLOCK, 1), dir);
    await fx().crash();
    const rec = new RecordStore(fx().stateDir).read(c.volumeId, "rw");
    await connector.disconnectVolume(c);
    await expectNothingLeft(fx());
    expect(await alive(rec?.nbdfusePid, "nbdfuse")).toBe(false);
    expect(await alive(rec?.qemuNbdPid, "qemu-nbd")).toBe(false);
    expect(await connector.checkVolume(c)).toEqual({ path: null, healthy: false, reason: "not connected" });
  });
}

async function expectNothingLeft(f: Fixture): Promise<void> {
  expect(await f.connector.getVolumePaths(f.connection)).toEqual([]);
  expect((await loops()).filter((l) => l.backFile.startsWith(`${f.dir}/`))).toEqual([]);
  expect(mountsUnder(f.dir)).toEqual([]);
  expect(new RecordStore(f.stateDir).list()).toEqual([]);
}

const rootSkip = process.getuid?.() !== 0 ? "needs root (loop devices, FUSE mounts, daemons)" : undefined;

// ---------------------------------------------------------------------------------------------
// iSCSI with CHAP, userspace

const iscsiSkip = rootSkip ?? skipReason(["tgtd", "tgtadm", "qemu-nbd", "nbdfuse", "losetup", "umount", "dd", "iscsi-readcapacity16"]);
if (iscsiSkip) {
  test.skip(`target crash (iSCSI) skipped: ${iscsiSkip}`, () => undefined);
} else {
  describe("iSCSI (tgtd → qemu-nbd/libiscsi → nbdfuse → loop), CHAP on", () => {
    let daemons: Daemons;
    let fixture: Fixture;
    let tgt: TgtTarget;
    beforeEach(async () => {
      daemons = new Daemons();
      const dir = daemons.runDir("restart-iscsi-");
      const stateDir = path.join(dir, "state");
      const file = sparseFile(path.join(dir, "vol.img"));
      const portal = `127.0.0.1:${await freeTcpPort()}`;
      tgt = new TgtTarget({ controlPort: await daemons.tgtControlPort(), portal, runDir: path.join(dir, "run") });
      const exportVolume = async () => {
        await tgt.start();
        const tid = await tgt.ensureTarget(IQN);
        await tgt.ensureLun(tid, 1, file, false);
        await tgt.ensureInitiator(tid, INITIATOR);
        await tgt.ensureChap(tid, CHAP);
      };
      await exportVolume();
      fixture = {
        connector: connectorFor("iscsi", { stateDir, mode: "userspace", initiator: INITIATOR }),
        connection: { volumeId: "vol-crash", protocol: "iscsi", portals: [portal], targetIqn: IQN, targetLun: 1, authMethod: "CHAP", authUsername: CHAP.username, authPassword: CHAP.password, readOnly: false },
        stateDir,
        dir,
        backingFile: file,
        fence: true,
        crash: async () => {
          for (const p of await daemons.processes()) procProcesses.kill(p.pid, "SIGKILL");
          await waitGone(async () => (await daemons.processes()).length === 0);
        },
        restore: exportVolume,
      };
    });
    afterEach(async () => {
      await sweepConnections(fixture.dir, fixture.stateDir);
      await tgt.stop().catch(() => undefined);
      await daemons.cleanup(); // SIGKILLs a tgtd of this test that did not exit, removes the run folder
    });
    scenario(() => fixture);
  });
}

// ---------------------------------------------------------------------------------------------
// NBD, userspace

const nbdSkip = rootSkip ?? skipReason(["nbdkit", "nbdfuse", "nbdinfo", "losetup", "umount", "dd"]);
if (nbdSkip) {
  test.skip(`target crash (NBD) skipped: ${nbdSkip}`, () => undefined);
} else {
  describe("NBD (nbdkit → nbdfuse → loop)", () => {
    let daemons: Daemons;
    let fixture: Fixture;
    let nbd: NbdkitTarget;
    beforeEach(async () => {
      daemons = new Daemons();
      const dir = daemons.runDir("restart-nbd-");
      const stateDir = path.join(dir, "state");
      const file = sparseFile(path.join(dir, "vol.img"));
      const port = await freeTcpPort();
      nbd = new NbdkitTarget({ host: "127.0.0.1", runDir: path.join(dir, "run") });
      const exportVolume = async () => {
        await nbd.ensureServer("crash", port, false);
        await nbd.ensureExport("crash", "vol-crash", file);
      };
      await exportVolume();
      fixture = {
        connector: connectorFor("nbd", { stateDir, mode: "userspace" }),
        connection: { volumeId: "vol-crash", protocol: "nbd", portals: [`127.0.0.1:${port}`], exportName: "vol-crash", readOnly: false },
        stateDir,
        dir,
        backingFile: file,
        fence: false, // nbdfuse fails the I/O by itself: its connections see EOF
        crash: async () => {
          const pid = Number(fs.readFileSync(nbd.pidFile("crash"), "utf8").trim());
          expect(await alive(pid, "nbdkit")).toBe(true);
          procProcesses.kill(pid, "SIGKILL");
          await waitGone(async () => !(await alive(pid, "nbdkit")));
        },
        restore: exportVolume,
      };
    });
    afterEach(async () => {
      await sweepConnections(fixture.dir, fixture.stateDir);
      await nbd.removeServer("crash").catch(() => undefined);
      await daemons.cleanup(); // SIGKILLs an nbdkit serving this test's folder, removes it
    });
    scenario(() => fixture);
  });
}

async function waitGone(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 100 && !(await check()); i++) await new Promise((r) => setTimeout(r, 50));
  expect(await check()).toBe(true);
}
