/**
 * bench/datapath's world: one controller with three file backends whose pools share one folder
 * (so one disk): `local` (export local), `nbd` (nbdkit, shared server) and `iscsi` (tgtd, shared
 * target, CHAP on), one profile per backend (`backendName`), one volume on each plus an unattached
 * `raw` volume, and one `connect: true` attachment per protocol made by the product's Attachments
 * with the product's connectors (factory.ts, userspace mode) — exactly what `pulumi up` does for
 * an attachment on `localhost`. Like test/datapath/harness.ts's makeEnv, plus connectorFor (which
 * makeEnv does not take). With a Ceph cluster given, a fourth backend `rbd` (driver rbd, iSCSI
 * through tgt's rbd backing store on its own tgtd, CHAP on) and a volume on it, attached the same way.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Attachments, type ConnectionInfo } from "../../provider/src/controller/attachments";
import { backendsSchema } from "../../provider/src/domain/backend";
import { Controller } from "../../provider/src/controller/controller";
import { SecretBox } from "../../provider/src/controller/secret-box";
import type { Connector } from "../../provider/src/connectors/connector";
import { connectorFor } from "../../provider/src/connectors/factory";
import { type ConnectionRecord, RecordStore } from "../../provider/src/connectors/records";
import type { AttachmentRow, VolumeRow } from "../../provider/src/store/store";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import { localTargets } from "../../provider/src/targets/local-targets";
import type { TgtTarget } from "../../provider/src/targets/tgt-target";
import { freeTcpPort } from "../../test/helpers/daemons";
import type { Cleanup } from "./tools";

export type Protocol = "local" | "nbd" | "iscsi";
export const PROTOCOLS: Protocol[] = ["local", "nbd", "iscsi"];

export interface Attached {
  volume: VolumeRow;
  row: AttachmentRow;
  info: ConnectionInfo;
  /** The block device the connector made (loop device). */
  device: string;
  /** The connector's record (nbdfuse file, qemu-nbd socket, pids). */
  record: ConnectionRecord;
}

/** A Ceph cluster for the RBD row: its client conf, a user and that user's keyring, and an RBD pool. */
export interface RbdBench {
  conf: string;
  user: string;
  keyringFile: string;
  cephPool: string;
}

export interface DatapathEnv {
  dir: string;
  runDir: string;
  poolsDir: string;
  /** The unattached volume the raw rows use (same pool folder, same driver, same disk). */
  raw: VolumeRow;
  rawPath: string;
  volumes: Record<Protocol, VolumeRow>;
  controller: Controller;
  /** Attach all three (after the volume files are filled). */
  attachAll(): Promise<Record<Protocol, Attached>>;
  /**
   * A second rw attachment of the iSCSI volume for another initiator, without connecting (as for a
   * remote host): the product adds the initiator to the target's ACL. For the direct-client rows.
   */
  attachIscsiClient(initiator: string): Promise<ConnectionInfo>;
  /** tgtd's control port (tgtadm -C) and the tid of the volume's target. */
  tgt(): Promise<{ controlPort: number; tid: number }>;
  /** The target daemons' pids (for CPU accounting). */
  daemonPids(): Promise<{ nbdkit?: number; tgtd?: number }>;
  /** The RBD volume (when a cluster was given): its volume path, and its attachment like the others'. */
  rbd?: { volume: VolumeRow; path: string; attach(): Promise<Attached>; tgtdPid(): number | undefined };
}

export async function makeDatapathEnv(dir: string, sizeGib: number, cleanup: Cleanup, ceph?: RbdBench): Promise<DatapathEnv> {
  const store = new SqliteStore(path.join(dir, "state.db"));
  cleanup.add("close the state database", () => store.close());
  const runDir = path.join(dir, "run");
  const poolsDir = path.join(dir, "pools");
  const iscsiPortal = `127.0.0.1:${await freeTcpPort()}`;
  const nbdPortal = `127.0.0.1:${await freeTcpPort()}`;
  const rbdPortal = `127.0.0.1:${await freeTcpPort()}`;
  const pool = (name: string) => ({ name: "p", path: path.join(poolsDir, name), totalCapacityGib: 100, multiAttach: true });
  const backends = backendsSchema.parse([
    { name: "local", driver: "file", sharedTargets: true, export: { protocol: "local" }, pools: [pool("local")] },
    { name: "nbd", driver: "file", sharedTargets: true, export: { protocol: "nbd", portal: nbdPortal }, pools: [pool("nbd")] },
    { name: "iscsi", driver: "file", sharedTargets: true, export: { protocol: "iscsi", portal: iscsiPortal, chap: true }, pools: [pool("iscsi")] },
    ...(ceph
      ? [{ name: "rbd", driver: "rbd", sharedTargets: true, rbd: { conf: ceph.conf, user: ceph.user, keyringFile: ceph.keyringFile }, export: { protocol: "iscsi", portal: rbdPortal, chap: true }, pools: [{ name: "p", path: ceph.cephPool, multiAttach: true }] }]
      : []),
  ]);
  const controller = new Controller({ store, backends, rbdDir: path.join(dir, "rbd") });
  await controller.discover();
  const targets = localTargets(runDir);
  // tgtd and nbdkit outlive their attachments: stop them after every detach (cleanup runs in reverse).
  cleanup.add("stop tgtd", () => targets.iscsi(iscsiPortal).stop());
  if (ceph) cleanup.add("stop the rbd backend's tgtd", () => targets.iscsi(rbdPortal).stop());
  cleanup.add("stop nbdkit", async () => {
    const nbd = targets.nbd("127.0.0.1");
    for (const s of await nbd.list()) await nbd.removeServer(s.server);
  });
  const connectors = new Map<string, Connector>();
  const connectorOf = (p: ConnectionInfo["protocol"]): Connector => {
    const c = connectors.get(p) ?? connectorFor(p, { stateDir: runDir, mode: "userspace" });
    connectors.set(p, c);
    return c;
  };
  const box = SecretBox.forState({ sqliteFile: path.join(dir, "state.db") });
  const attachments = new Attachments({ store, controller, targets, box, connectorFor: connectorOf });

  const newVolume = async (name: string, backend: string) => {
    const profile = await controller.createProfile(`urn:bench:profile:${name}`, { name: `on-${name}`, description: "", storageType: "block", extraSpecs: { backendName: backend } });
    // multiAttach: the iSCSI volume also takes the direct-client attachment (attachIscsiClient).
    return controller.createVolume(`urn:bench:volume:${name}`, { name, sizeGib, profile: profile.name, multiAttach: true, description: "", metadata: {} });
  };
  const raw = await newVolume("raw", "local");
  const volumes = {} as Record<Protocol, VolumeRow>;
  for (const p of PROTOCOLS) volumes[p] = await newVolume(`vol-${p}`, p);
  const rbdVolume = ceph ? await newVolume("vol-rbd", "rbd") : undefined;
  const records = new RecordStore(runDir);
  /** Attach `volume` rw on localhost with connect: true, as `pulumi up` does; detached by the cleanup. */
  const attachHere = async (key: string, volume: VolumeRow): Promise<Attached> => {
    const { row, connectionInfo } = await attachments.attach(`urn:bench:attachment:${key}`, { volumeId: volume.id, host: "localhost", mode: "rw", connect: true });
    // Detach disconnects (losetup -d, umount, qemu-nbd) and checks no path is left, then unexports.
    cleanup.add(`detach ${key}`, () => attachments.detach(row.id, { force: true }));
    const attached = (await attachments.get(row.id))!;
    const record = records.read(volume.id, "rw");
    if (!attached.devicePath || !record) throw new Error(`the ${key} attachment has no device`);
    return { volume, row: attached, info: connectionInfo, device: attached.devicePath, record };
  };

  return {
    dir,
    runDir,
    poolsDir,
    raw,
    rawPath: controller.volumePath(raw),
    volumes,
    controller,
    async attachAll() {
      const out = {} as Record<Protocol, Attached>;
      for (const p of PROTOCOLS) out[p] = await attachHere(p, volumes[p]);
      return out;
    },
    async attachIscsiClient(initiator) {
      const { row, connectionInfo } = await attachments.attach("urn:bench:attachment:iscsi-client", { volumeId: volumes.iscsi.id, host: "bench-client", mode: "rw", connector: { initiator }, connect: false });
      cleanup.add("detach the iSCSI client attachment", () => attachments.detach(row.id, { force: true }));
      return connectionInfo;
    },
    async tgt() {
      const t = targets.iscsi(iscsiPortal) as TgtTarget;
      const iqn = (await store.listAttachments({ volumeId: volumes.iscsi.id }))[0]?.targetName;
      const tid = (await t.list()).find((x) => x.name === iqn)?.tid;
      if (tid === undefined) throw new Error(`no tgtd target for the iSCSI volume (${iqn})`);
      return { controlPort: t.controlPort, tid };
    },
    async daemonPids() {
      const nbdkit = (await targets.nbd("127.0.0.1").list())[0]?.pid;
      let tgtd: number | undefined;
      try {
        tgtd = Number(fs.readFileSync((targets.iscsi(iscsiPortal) as TgtTarget).pidFile, "utf8").trim()) || undefined;
      } catch {
        // no pidfile
      }
      return { nbdkit, tgtd };
    },
    rbd: rbdVolume && {
      volume: rbdVolume,
      path: controller.volumePath(rbdVolume),
      attach: () => attachHere("rbd", rbdVolume),
      tgtdPid() {
        try {
          return Number(fs.readFileSync((targets.iscsi(rbdPortal) as TgtTarget).pidFile, "utf8").trim()) || undefined;
        } catch {
          return undefined;
        }
      },
    },
  };
}

/** The unix socket path is limited (108 bytes): keep the work folder short. */
export function checkSocketRoom(runDir: string): void {
  const longest = path.join(runDir, "iscsi", "run", `${"x".repeat(36)}-rw.sock`);
  if (Buffer.byteLength(longest) > 100) throw new Error(`work folder ${runDir} is too deep for qemu-nbd's unix socket; set SDS_BENCH_DIR to a shorter folder`);
  fs.mkdirSync(runDir, { recursive: true });
}
