/**
 * bench/datapath: sequential write and read MiB/s through the block devices the connectors make
 * on this host (userspace paths: no kernel iSCSI/NBD client), next to the raw volume file on the
 * same disk, and their ratios (issue 14's goals at 1 MiB: local ≥ 0.9, NBD ≥ 0.8, iSCSI ≥ 0.6).
 * Extra rows measure the layers of each chain separately (where the time goes) and other setups
 * the connectors could use (rows only: the local loop with direct I/O, and qemu-storage-daemon's
 * FUSE export in place of qemu-nbd + nbdfuse or nbdfuse, when that daemon is there). Root only. Prints a table,
 * writes bench/results/datapath.json.
 *
 *   npm run bench:datapath -- [MiB=512] [rounds=3]
 *
 * Method (the same for every dd row, raw and paths): each write is `dd bs=B count=N oflag=direct
 * conv=fsync` from a random source in tmpfs, so no page cache sits on top of the device or file
 * being measured and the final fsync pushes every layer's cache (loop, FUSE, NBD/iSCSI flush,
 * nbdkit/tgtd fdatasync) to the disk; each read is `dd iflag=direct` after `sync; echo 3 >
 * /proc/sys/vm/drop_caches`, so it starts cold in every layer (also the page cache that nbdkit and
 * tgtd read the volume file through). Caches are dropped before every write too. Each row's
 * operation is paired with a raw operation of the same kind right before or after it (alternating
 * by round), and ratio = raw seconds / row seconds of that pair; rows run in a rotated order each
 * round; medians over the rounds. Each operation also records the CPU seconds of the chain's
 * daemons (/proc/PID/stat) and of the whole host (/proc/stat), per GiB moved.
 *
 * Setup is the product's: Controller + Attachments (`connect: true` on localhost) with the
 * connectors of connectors/factory.ts (userspace mode) and the targets of targets/local-targets.ts
 * (TgtTarget, NbdkitTarget). Everything made is undone at the end, also on failure or Ctrl-C.
 *
 * RBD rows (when Ceph and tgt-rbd are installed; SDS_BENCH_RBD=0 leaves them out): a throwaway
 * single-node cluster (test/helpers/ceph.ts: one OSD on memstore, so its data sits in RAM, not on
 * the raw file's disk), an rbd backend exporting over iSCSI through tgt's rbd backing store, and
 * its volume attached like the others; plus librbd alone (qemu-img bench on the volume path).
 * Their ratio compares a RAM-backed cluster with a file on disk: it shows what tgt-rbd and the
 * initiator chain cost over librbd (the breakdown), not what a real cluster would give.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { onPath } from "../../provider/src/connectors/host";
import { cannotRun } from "../../test/datapath/harness";
import { type CephCluster, cephSkipReason, startCeph, tgtRbdSkipReason } from "../../test/helpers/ceph";
import { type Attached, checkSocketRoom, makeDatapathEnv, type Protocol, type RbdBench } from "./env";
import {
  canDropCaches,
  Cleanup,
  ddRead,
  ddWrite,
  dropCaches,
  loopInfo,
  makeLoop,
  makeQemuNbd,
  makeQsdFuse,
  makeSource,
  hostBusy,
  median,
  MiB,
  processCpu,
  qemuBench,
  sameBytes,
  version,
} from "./tools";

const sizeMiB = Number(process.argv[2] ?? 512);
const rounds = Number(process.argv[3] ?? 3);
const repoRoot = path.resolve(__dirname, "../..");

/** qemu-img's default iSCSI initiator name (qemu-img bench has no option to set another). */
const QEMU_INITIATOR = "iqn.2008-11.org.linux-kvm";

type Group = "baseline" | "product" | "rbd" | "other" | "layer";

interface Case {
  key: string;
  group: Group;
  protocol: "raw" | Protocol;
  label: string;
  bs: number;
  /** The raw row this row's ratio is taken against (same block size). */
  baseline: string;
  write(): Promise<number>;
  read(): Promise<number>;
  /** What the last write left there must read back as the source (checked once, at the end). */
  verify?: string;
  /** The chain's processes (name → pid) whose CPU time is counted. */
  procs: Record<string, number>;
}

/** One timed operation: the tool's seconds, the wall time, CPU seconds per process and of the host. */
interface Sample {
  seconds: number;
  wall: number;
  cpu: Record<string, number>;
  hostBusy: number;
}

interface CaseResult {
  key: string;
  group: Group;
  protocol: Case["protocol"];
  label: string;
  bs: number;
  baseline: string;
  writeSeconds: number[];
  readSeconds: number[];
  /** The raw sample paired with each of this row's samples. */
  rawWriteSeconds: number[];
  rawReadSeconds: number[];
  write: Sample[];
  read: Sample[];
}

const fmtBs = (bs: number) => `${bs / MiB}M`;
const mibps = (s: number) => sizeMiB / s;

async function main(): Promise<void> {
  const why = cannotRun();
  if (why) throw new Error(`bench/datapath cannot run: ${why}`);
  for (const c of ["nbdfuse", "losetup", "qemu-nbd", "qemu-img", "dd", "cmp", "umount"]) {
    if (!onPath(c)) throw new Error(`bench/datapath needs ${c} (Debian: libnbd-bin, qemu-utils, qemu-block-extra, util-linux, coreutils, diffutils)`);
  }
  if (!Number.isInteger(sizeMiB) || sizeMiB < 16 || sizeMiB % 4 !== 0) throw new Error(`MiB must be a multiple of 4, ≥ 16 (got ${process.argv[2]})`);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds must be ≥ 1 (got ${process.argv[3]})`);
  if (!canDropCaches()) throw new Error("bench/datapath needs to write /proc/sys/vm/drop_caches (root, not in a read-only /proc)");

  const cleanup = new Cleanup();
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`\n${sig}: cleaning up…\n`);
    void cleanup.run().then((failed) => {
      for (const f of failed) process.stderr.write(`cleanup: ${f}\n`);
      process.exit(130);
    });
  };
  // `on`, not `once`: execa's signal-exit re-raises the signal when no other listener is left,
  // which would end the process before the cleanup.
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    await bench(cleanup);
  } finally {
    const failed = await cleanup.run();
    for (const f of failed) console.error(`cleanup: ${f}`);
    if (failed.length) process.exitCode = 1;
  }
}

async function bench(cleanup: Cleanup): Promise<void> {
  // Work folder (volumes, raw file, run folder) on one disk; the source in tmpfs.
  const base = process.env.SDS_BENCH_DIR || os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, "sds-dp-"));
  cleanup.add(`rm -r ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
  const shm = fs.existsSync("/dev/shm") ? "/dev/shm" : dir;
  const src = path.join(shm, `sds-bench-datapath-${process.pid}.src`);
  cleanup.add(`rm ${src}`, () => fs.rmSync(src, { force: true }));
  makeSource(src, sizeMiB);

  const ceph = await startRbdCluster(cleanup);
  const env = await makeDatapathEnv(dir, Math.ceil(sizeMiB / 1024), cleanup, ceph?.bench);
  checkSocketRoom(env.runDir);
  const files = { raw: env.rawPath, ...Object.fromEntries(Object.entries(env.volumes).map(([p, v]) => [p, env.controller.volumePath(v)])) } as Record<"raw" | Protocol, string>;
  const devs = new Set(Object.values(files).map((f) => fs.statSync(f).dev));
  if (devs.size !== 1) throw new Error("the raw file and the volumes are not on one file system");
  // Fill every file once (untimed): the rounds overwrite allocated blocks, the same for every row.
  process.stderr.write(`filling ${Object.keys(files).length} volume files with ${sizeMiB} MiB…\n`);
  for (const f of Object.values(files)) await ddWrite(src, f, { bs: MiB, count: sizeMiB, direct: true });

  process.stderr.write("attaching (local, nbd, iscsi) with connect: true…\n");
  const a = await env.attachAll();
  const rbdA = env.rbd ? await env.rbd.attach() : undefined;
  if (rbdA) {
    process.stderr.write(`filling the RBD volume with ${sizeMiB} MiB through its device…\n`);
    await ddWrite(src, rbdA.device, { bs: MiB, count: sizeMiB, direct: true });
  }

  // --- layer rows: clients without FUSE and loop -------------------------------------------
  const nbdInfo = a.nbd.info;
  const [nbdHost, nbdPort] = [nbdInfo.portals[0].replace(/:\d+$/, ""), nbdInfo.portals[0].split(":").pop()!];
  const nbdImage = ["--image-opts", `driver=raw,file.driver=nbd,file.host=${nbdHost},file.port=${nbdPort},file.export=${nbdInfo.exportName}`];
  const client = await env.attachIscsiClient(QEMU_INITIATOR);
  const chapPassword = client.authPassword ?? "";
  const secrets = chapPassword ? [chapPassword] : [];
  const iscsiUser = client.authUsername ? `${encodeURIComponent(client.authUsername)}@` : "";
  const iscsiUrl = `iscsi://${iscsiUser}${client.portals[0]}/${client.targetIqn}/${client.targetLun}`;
  // libiscsi reads the CHAP password from its environment: not in argv.
  const iscsiImage = ["-f", "raw", iscsiUrl];
  const iscsiEnv = { env: chapPassword ? { LIBISCSI_CHAP_PASSWORD: chapPassword } : undefined, secrets };
  // A qemu-nbd relay started as the connector starts its own (which serves only its nbdfuse).
  const secretFile = path.join(dir, "chap.secret");
  const relayOpts = (initiator: string) => {
    const esc = (v: string) => v.replace(/,/g, ",,");
    const o = ["driver=raw", "file.driver=iscsi", "file.transport=tcp", `file.portal=${esc(client.portals[0])}`, `file.target=${esc(client.targetIqn!)}`, `file.lun=${client.targetLun}`, `file.initiator-name=${esc(initiator)}`];
    if (chapPassword) o.push(`file.user=${esc(client.authUsername!)}`, "file.password-secret=sdschap");
    return o.join(",");
  };
  const relayObjects = chapPassword ? ["--object", `secret,id=sdschap,file=${secretFile}`] : [];
  if (chapPassword) fs.writeFileSync(secretFile, chapPassword, { mode: 0o600 });
  const relay = await makeQemuNbd(cleanup, path.join(dir, "relay"), relayOpts(QEMU_INITIATOR), relayObjects);
  const relayImage = ["--image-opts", `driver=raw,file.driver=nbd,file.path=${relay.socket}`];

  // --- rows of other setups (bench-only) -------------------------------------------------
  // The local connector's loop device with direct I/O (it is buffered: see connectors/host.ts).
  const dioLocal = await makeLoop(cleanup, files.local, ["--direct-io=on"]);
  if ((await loopInfo(dioLocal)).dio !== true) throw new Error(`loop --direct-io=on did not take on ${files.local}`);
  // The one-hop iSCSI chain: qemu-storage-daemon logs in through libiscsi and exports the LUN as a
  // FUSE file itself (no qemu-nbd → NBD socket → nbdfuse), under a direct-I/O loop device.
  // Debian ships qemu-storage-daemon in qemu-system-common; SDS_QSD names another binary.
  // Measured with Debian 12's 7.2: under a direct-I/O loop device (concurrent requests) its FUSE
  // export writes data at the wrong offsets (a 1 MiB write's first half holds its second half;
  // 100+ MiB of 256 differ), while dd on the FUSE file alone (one request at a time) reads back
  // right. So these rows show what one hop fewer would gain, and their read-back check fails.
  const qsdBin = process.env.SDS_QSD || (onPath("qemu-storage-daemon") ? "qemu-storage-daemon" : "");
  let qsd: { file: string; pid: number; loop: string } | undefined;
  let qsdNbd: { file: string; pid: number; loop: string } | undefined;
  if (qsdBin) {
    const esc = (v: string) => v.replace(/,/g, ",,");
    const lun = ["driver=iscsi", "node-name=lun", "transport=tcp", `portal=${esc(client.portals[0])}`, `target=${esc(client.targetIqn!)}`, `lun=${client.targetLun}`, `initiator-name=${esc(QEMU_INITIATOR)}`];
    if (chapPassword) lun.push(`user=${esc(client.authUsername!)}`, "password-secret=sdschap");
    const f = await makeQsdFuse(cleanup, qsdBin, path.join(dir, "qsd"), [lun.join(","), "driver=raw,node-name=disk,file=lun"], relayObjects);
    qsd = { ...f, loop: await makeLoop(cleanup, f.file, ["--direct-io=on"]) };
    // The same FUSE export in front of nbdkit (in place of nbdfuse): is nbdfuse's FUSE the cost, or FUSE itself?
    const nbdDev = `driver=nbd,node-name=lun,server.type=inet,server.host=${nbdHost},server.port=${nbdPort},export=${esc(nbdInfo.exportName!)}`;
    const g = await makeQsdFuse(cleanup, qsdBin, path.join(dir, "qsd-nbd"), [nbdDev, "driver=raw,node-name=disk,file=lun"], []);
    qsdNbd = { ...g, loop: await makeLoop(cleanup, g.file, ["--direct-io=on"]) };
  } else {
    process.stderr.write("no qemu-storage-daemon (Debian: qemu-system-common; or SDS_QSD=path): no one-hop iSCSI rows\n");
  }
  if (chapPassword) fs.rmSync(secretFile, { force: true });

  // The processes of each chain, for CPU accounting (the loop device's work runs in kernel threads:
  // it shows in the host's busy time only).
  const daemons = await env.daemonPids();
  const pids = (o: Record<string, number | undefined>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v)) as Record<string, number>;
  const procs = {
    raw: {},
    local: {},
    nbd: pids({ nbdfuse: a.nbd.record.nbdfusePid, nbdkit: daemons.nbdkit }),
    iscsi: pids({ nbdfuse: a.iscsi.record.nbdfusePid, "qemu-nbd": a.iscsi.record.qemuNbdPid, tgtd: daemons.tgtd }),
    nbdkit: pids({ nbdkit: daemons.nbdkit }),
    tgtd: pids({ tgtd: daemons.tgtd }),
    relay: pids({ "qemu-nbd": relay.pid, tgtd: daemons.tgtd }),
    qsd: pids({ "qemu-storage-daemon": qsd?.pid, tgtd: daemons.tgtd }),
    qsdNbd: pids({ "qemu-storage-daemon": qsdNbd?.pid, nbdkit: daemons.nbdkit }),
    rbd: pids({ nbdfuse: rbdA?.record.nbdfusePid, "qemu-nbd": rbdA?.record.qemuNbdPid, tgtd: env.rbd?.tgtdPid() }),
    librbd: {},
  };

  // --- the rows ----------------------------------------------------------------------------
  const dd = (target: string, bs: number, direct = true) => ({
    write: () => ddWrite(src, target, { bs, count: (sizeMiB * MiB) / bs, direct }),
    read: () => ddRead(target, { bs, count: (sizeMiB * MiB) / bs, direct }),
  });
  const qb = (image: string[], depth: number, extra: { env?: Record<string, string>; secrets?: string[] } = {}) => ({
    write: () => qemuBench({ image, bs: MiB, count: sizeMiB, depth, write: true, ...extra }),
    read: () => qemuBench({ image, bs: MiB, count: sizeMiB, depth, write: false, ...extra }),
  });
  const NBD = "nbdfuse → nbdkit";
  const ISCSI = "nbdfuse → qemu-nbd → tgtd";
  const product = (p: Protocol, x: Attached, bs: number): Case => ({
    key: `${p}-${fmtBs(bs)}`,
    group: "product",
    protocol: p,
    label: `${p.padEnd(6)} loop (${p === "local" ? "buffered" : "dio"}) → ${p === "local" ? "volume file" : p === "nbd" ? NBD : ISCSI}`,
    bs,
    baseline: `raw-${fmtBs(bs)}`,
    ...dd(x.device, bs),
    verify: x.device,
    procs: procs[p],
  });
  const raw1M: Case = { key: "raw-1M", group: "baseline", protocol: "raw", label: "raw    volume file, O_DIRECT", bs: MiB, baseline: "raw-1M", ...dd(files.raw, MiB), procs: procs.raw };
  const cases: Case[] = [
    product("local", a.local, MiB),
    product("nbd", a.nbd, MiB),
    product("iscsi", a.iscsi, MiB),
    { key: "local-dio-1M", group: "other", protocol: "local", label: "local  loop (dio) → volume file", bs: MiB, baseline: "raw-1M", ...dd(dioLocal, MiB), verify: dioLocal, procs: procs.local },
    ...(qsd
      ? [
          { key: "iscsi-qsd-1M", group: "other", protocol: "iscsi", label: "iscsi  loop (dio) → qemu-storage-daemon FUSE → tgtd", bs: MiB, baseline: "raw-1M", ...dd(qsd.loop, MiB), verify: qsd.loop, procs: procs.qsd } as Case,
          { key: "iscsi-qsd-fuse", group: "layer", protocol: "iscsi", label: "iscsi  dd → qemu-storage-daemon FUSE → tgtd (the FUSE file)", bs: MiB, baseline: "raw-1M", ...dd(qsd.file, MiB), procs: procs.qsd } as Case,
        ]
      : []),
    ...(qsdNbd
      ? [
          { key: "nbd-qsd-1M", group: "other", protocol: "nbd", label: "nbd    loop (dio) → qemu-storage-daemon FUSE → nbdkit", bs: MiB, baseline: "raw-1M", ...dd(qsdNbd.loop, MiB), verify: qsdNbd.loop, procs: procs.qsdNbd } as Case,
          { key: "nbd-qsd-fuse", group: "layer", protocol: "nbd", label: "nbd    dd → qemu-storage-daemon FUSE → nbdkit (the FUSE file)", bs: MiB, baseline: "raw-1M", ...dd(qsdNbd.file, MiB), procs: procs.qsdNbd } as Case,
        ]
      : []),
    ...(rbdA && env.rbd
      ? [
          { key: "iscsi-rbd-1M", group: "rbd", protocol: "iscsi", label: `iscsi  loop (dio) → ${ISCSI} rbd → Ceph`, bs: MiB, baseline: "raw-1M", ...dd(rbdA.device, MiB), verify: rbdA.device, procs: procs.rbd } as Case,
          { key: "rbd-librbd-qd1", group: "layer", protocol: "iscsi", label: "rbd    qemu-img (librbd) → Ceph (QD1)", bs: MiB, baseline: "raw-1M", ...qb(["-f", "raw", env.rbd.path], 1), procs: procs.librbd } as Case,
        ]
      : []),
    { key: "nbd-qemu-qd1", group: "layer", protocol: "nbd", label: "nbd    qemu-img → nbdkit (QD1)", bs: MiB, baseline: "raw-1M", ...qb(nbdImage, 1), procs: procs.nbdkit },
    { key: "nbd-fuse", group: "layer", protocol: "nbd", label: `nbd    dd → ${NBD} (the FUSE file)`, bs: MiB, baseline: "raw-1M", ...dd(a.nbd.record.backingFile!, MiB), procs: procs.nbd },
    { key: "iscsi-libiscsi-qd1", group: "layer", protocol: "iscsi", label: "iscsi  qemu-img (libiscsi) → tgtd (QD1)", bs: MiB, baseline: "raw-1M", ...qb(iscsiImage, 1, iscsiEnv), procs: procs.tgtd },
    { key: "iscsi-relay-qd1", group: "layer", protocol: "iscsi", label: "iscsi  qemu-img → qemu-nbd → tgtd (QD1)", bs: MiB, baseline: "raw-1M", ...qb(relayImage, 1), procs: procs.relay },
    { key: "iscsi-fuse", group: "layer", protocol: "iscsi", label: `iscsi  dd → ${ISCSI} (the FUSE file)`, bs: MiB, baseline: "raw-1M", ...dd(a.iscsi.record.backingFile!, MiB), procs: procs.iscsi },
  ];

  // --- rounds ------------------------------------------------------------------------------
  // Each row's operation runs right next to a raw operation of the same kind (raw then row in even
  // rounds, row then raw in odd ones), and its ratio is taken against that raw sample: on a shared,
  // loaded machine the load changes within seconds, so a baseline measured a minute away is noise.
  const results = new Map<string, CaseResult>(
    [raw1M, ...cases].map((c) => [c.key, { key: c.key, group: c.group, protocol: c.protocol, label: c.label, bs: c.bs, baseline: c.baseline, writeSeconds: [], readSeconds: [], write: [], read: [], rawWriteSeconds: [], rawReadSeconds: [] }]),
  );
  const sample = async (fn: () => Promise<number>, p: Record<string, number>): Promise<Sample> => {
    await dropCaches();
    const cpu0 = processCpu(p);
    const busy0 = hostBusy();
    const t0 = process.hrtime.bigint();
    const seconds = await fn();
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const busy = hostBusy() - busy0;
    const cpu1 = processCpu(p);
    const r2 = (x: number) => Math.round(x * 100) / 100;
    return { seconds, wall: Math.round(wall * 1e6) / 1e6, hostBusy: r2(busy), cpu: Object.fromEntries(Object.keys(p).map((k) => [k, r2(cpu1[k] - cpu0[k])])) };
  };
  const rawRes = results.get("raw-1M")!;
  const paired = async (c: Case, op: "write" | "read", rawFirst: boolean): Promise<[Sample, Sample]> => {
    const one = () => sample(() => c[op](), c.procs);
    const base = () => sample(() => raw1M[op](), raw1M.procs);
    if (rawFirst) {
      const b = await base();
      return [b, await one()];
    }
    const x = await one();
    return [await base(), x];
  };
  // Every dd row writes the same source: its device must read back as it.
  const verified: Record<string, boolean> = {};
  const started = Date.now();
  const load0 = os.loadavg()[0];
  for (let r = 0; r < rounds; r++) {
    const shift = Math.floor((r * cases.length) / rounds);
    const order = [...cases.slice(shift), ...cases.slice(0, shift)];
    for (const c of order) {
      const res = results.get(c.key)!;
      for (const op of ["write", "read"] as const) {
        const [b, x] = await paired(c, op, r % 2 === 0);
        res[op].push(x);
        rawRes[op].push(b);
        (op === "write" ? res.writeSeconds : res.readSeconds).push(x.seconds);
        (op === "write" ? res.rawWriteSeconds : res.rawReadSeconds).push(b.seconds);
        (op === "write" ? rawRes.writeSeconds : rawRes.readSeconds).push(b.seconds);
        (op === "write" ? rawRes.rawWriteSeconds : rawRes.rawReadSeconds).push(b.seconds);
      }
      // Rows share volumes (qemu-img bench writes its own pattern): each device is checked right after its own last write.
      if (r === rounds - 1 && c.verify) {
        await dropCaches();
        verified[c.key] = await sameBytes(src, c.verify, sizeMiB * MiB);
      }
      process.stderr.write(
        `round ${r + 1}/${rounds} ${c.key.padEnd(26)} write ${mibps(res.writeSeconds.at(-1)!).toFixed(0).padStart(5)} MiB/s (×${(res.rawWriteSeconds.at(-1)! / res.writeSeconds.at(-1)!).toFixed(2)})  read ${mibps(res.readSeconds.at(-1)!).toFixed(0).padStart(5)} MiB/s (×${(res.rawReadSeconds.at(-1)! / res.readSeconds.at(-1)!).toFixed(2)})\n`,
      );
    }
  }
  const elapsed = (Date.now() - started) / 1000;


  const versions: Record<string, string> = {};
  for (const [name, args] of [["nbdkit", ["--version"]], ["nbdfuse", ["--version"]], ["qemu-nbd", ["--version"]], ["qemu-img", ["--version"]], ["tgtd", ["-V"]], ["losetup", ["--version"]]] as const) {
    versions[name] = await version(name, [...args]);
  }
  if (qsdBin) versions["qemu-storage-daemon"] = await version(qsdBin);
  if (ceph) versions.ceph = await version("ceph");
  report([...results.values()], elapsed, verified, { dir, shm, a: { ...a, ...(rbdA ? { rbd: rbdA } : {}) }, versions, load: [load0, os.loadavg()[0]] });
}

/** The RBD rows' cluster (see the file comment), stopped by the cleanup; undefined when it cannot run here or SDS_BENCH_RBD=0. */
async function startRbdCluster(cleanup: Cleanup): Promise<{ cluster: CephCluster; bench: RbdBench } | undefined> {
  const why = process.env.SDS_BENCH_RBD === "0" ? "SDS_BENCH_RBD=0" : (cephSkipReason() ?? tgtRbdSkipReason());
  if (why) {
    process.stderr.write(`no RBD rows: ${why}\n`);
    return undefined;
  }
  process.stderr.write("starting a single-node Ceph (memstore) for the RBD rows…\n");
  // memstore keeps every byte written in RAM: room for the volume filled once, and some.
  const cluster = await startCeph({ osdBytes: Math.max(2 * 1024, 2 * sizeMiB) * MiB });
  cleanup.add("stop Ceph", () => cluster.stop());
  await cluster.pool("sds");
  return { cluster, bench: { conf: cluster.conf, user: cluster.user, keyringFile: cluster.keyring, cephPool: "sds" } };
}

interface CpuSummary {
  /** Host CPU seconds busy per GiB moved (all processes, kernel included; other load too). */
  hostBusyPerGiB: number;
  /** Host busy time as a share of all CPUs over the operation's wall time. */
  hostBusyShare: number;
  /** CPU seconds per GiB of each process of the chain. */
  perProcessPerGiB: Record<string, number>;
}

interface Row extends CaseResult {
  writeMiBps: number;
  readMiBps: number;
  writeRatio: number;
  readRatio: number;
  writeRatios: number[];
  readRatios: number[];
  writeCpu: CpuSummary;
  readCpu: CpuSummary;
}

const GiB_PER_RUN = () => sizeMiB / 1024;

function cpuSummary(samples: Sample[]): CpuSummary {
  const names = Object.keys(samples[0]?.cpu ?? {});
  return {
    hostBusyPerGiB: median(samples.map((x) => x.hostBusy / GiB_PER_RUN())),
    hostBusyShare: median(samples.map((x) => x.hostBusy / (x.wall * os.cpus().length))),
    perProcessPerGiB: Object.fromEntries(names.map((n) => [n, median(samples.map((x) => x.cpu[n] / GiB_PER_RUN()))])),
  };
}

function report(results: CaseResult[], elapsed: number, verified: Record<string, boolean>, ctx: { dir: string; shm: string; a: Record<string, Attached>; versions: Record<string, string>; load: number[] }): void {
  const rows: Row[] = results.map((r) => {
    const writeRatios = r.writeSeconds.map((s, i) => r.rawWriteSeconds[i] / s);
    const readRatios = r.readSeconds.map((s, i) => r.rawReadSeconds[i] / s);
    return {
      ...r,
      writeMiBps: median(r.writeSeconds.map(mibps)),
      readMiBps: median(r.readSeconds.map(mibps)),
      writeRatio: median(writeRatios),
      readRatio: median(readRatios),
      writeRatios,
      readRatios,
      writeCpu: cpuSummary(r.write),
      readCpu: cpuSummary(r.read),
    };
  });
  const row = (k: string) => rows.find((r) => r.key === k);

  const titles: Record<Group, string> = {
    baseline: "raw volume file (same pool folder, same disk; every sample paired with one row's)",
    product: "what the connectors make (attachment with connect: true)",
    rbd: "what the connectors make on a Ceph RBD volume (tgt's rbd backing store; one memstore OSD: the data sits in RAM, not on the raw file's disk)",
    other: "other setups (bench-only): the local loop with direct I/O; qemu-storage-daemon's FUSE export in place of qemu-nbd + nbdfuse (iSCSI) or nbdfuse (NBD)",
    layer: "layers, measured separately (1M, no FUSE / no loop where it says)",
  };
  console.log(`\nsequential ${sizeMiB} MiB, median of ${rounds} rounds; ×raw = raw seconds / row seconds of a raw run right next to the row's (median)`);
  console.log("dd rows: write oflag=direct conv=fsync, read iflag=direct, caches dropped before each; qemu-img rows: qemu-img bench (I/O time only), one flush at the end of writes");
  const W = 62;
  const head = `${"row".padEnd(W)} |  bs | write MiB/s | ×raw | read MiB/s | ×raw`;
  const goal: Record<string, number> = { local: 0.9, nbd: 0.8, iscsi: 0.6 };
  for (const g of ["baseline", "product", "rbd", "other", "layer"] as const) {
    if (!rows.some((x) => x.group === g)) continue;
    console.log(`\n${titles[g]}`);
    console.log(head);
    console.log(`${"-".repeat(W)}-|-----|------------|------|------------|-----`);
    for (const r of rows.filter((x) => x.group === g)) {
      const want = goal[r.protocol];
      const mark = r.group === "product" && want ? (r.writeRatio >= want && r.readRatio >= want ? `  goal ≥ ${want} met` : `  goal ≥ ${want}`) : "";
      console.log(
        `${r.label.padEnd(W)} | ${fmtBs(r.bs).padStart(3)} | ${r.writeMiBps.toFixed(0).padStart(10)} | ${r.writeRatio.toFixed(2).padStart(4)} | ${r.readMiBps.toFixed(0).padStart(10)} | ${r.readRatio.toFixed(2).padStart(4)}${mark}`,
      );
    }
  }

  // Where the time goes: each layer's time as a multiple of the raw time it was paired with (1/ratio), 1M, one request at a time.
  const chains: Record<string, Array<[string, string]>> = {
    local: [["local-1M", "loop (buffered) on the file"]],
    "local-dio": [["local-dio-1M", "loop (dio) on the file"]],
    nbd: [
      ["nbd-qemu-qd1", "NBD: TCP, nbdkit file plugin"],
      ["nbd-fuse", "+ FUSE: nbdfuse (libnbd)"],
      ["nbd-1M", "+ loop (dio) on the FUSE file"],
    ],
    iscsi: [
      ["iscsi-libiscsi-qd1", "iSCSI: TCP, tgtd, libiscsi"],
      ["iscsi-relay-qd1", "+ qemu-nbd relay (NBD, unix socket)"],
      ["iscsi-fuse", "+ FUSE: nbdfuse (libnbd)"],
      ["iscsi-1M", "+ loop (dio) on the FUSE file"],
    ],
    "nbd-qsd": [
      ["nbd-qemu-qd1", "NBD: TCP, nbdkit file plugin"],
      ["nbd-qsd-fuse", "+ FUSE: qemu-storage-daemon (NBD client)"],
      ["nbd-qsd-1M", "+ loop (dio) on the FUSE file"],
    ],
    "iscsi-rbd": [
      ["rbd-librbd-qd1", "librbd → Ceph (memstore OSD)"],
      ["iscsi-rbd-1M", "+ tgtd rbd, iSCSI, qemu-nbd, nbdfuse, loop (dio)"],
    ],
    "iscsi-qsd": [
      ["iscsi-libiscsi-qd1", "iSCSI: TCP, tgtd, libiscsi"],
      ["iscsi-qsd-fuse", "+ FUSE: qemu-storage-daemon (same process)"],
      ["iscsi-qsd-1M", "+ loop (dio) on the FUSE file"],
    ],
  };
  const breakdown: Record<string, Array<{ layer: string; op: string; timesRaw: number; addedTimesRaw: number }>> = {};
  console.log("\nwhere the time goes (1M; time as a multiple of the paired raw time = 1/ratio; Δ = what the layer adds; raw = 1.00)");
  console.log("(a layer can be faster than the one below it when it adds parallelism or readahead: nbdfuse spreads requests over 4 NBD connections,");
  console.log(" nbdkit and tgtd write through the page cache and fdatasync at the flush)");
  for (const [p, chain] of Object.entries(chains)) {
    if (chain.some(([k]) => !row(k))) continue;
    breakdown[p] = [];
    for (const op of ["write", "read"] as const) {
      const t = chain.map(([k]) => 1 / (op === "write" ? row(k)!.writeRatio : row(k)!.readRatio));
      const parts = chain.map(([, name], i) => {
        const added = t[i] - (i === 0 ? 1 : t[i - 1]);
        breakdown[p].push({ layer: name, op, timesRaw: t[i], addedTimesRaw: added });
        return `${name} ${t[i].toFixed(2)} (Δ ${added >= 0 ? "+" : ""}${added.toFixed(2)})`;
      });
      console.log(`${p.padEnd(9)} ${op.padEnd(5)} ${t.at(-1)!.toFixed(2)}× raw: ${parts.join(" | ")}`);
    }
  }

  console.log(`\nCPU (median seconds per GiB moved; host = all ${os.cpus().length} CPUs busy, kernel and any other load included, and its share of them during the run)`);
  console.log(`${"row".padEnd(W)} |  bs | op    | host s/GiB (share) | chain processes s/GiB`);
  console.log(`${"-".repeat(W)}-|-----|-------|--------------------|----------------------`);
  for (const r of rows) {
    for (const op of ["write", "read"] as const) {
      const c = op === "write" ? r.writeCpu : r.readCpu;
      const per = Object.entries(c.perProcessPerGiB).map(([n, v]) => `${n} ${v.toFixed(2)}`).join(", ");
      console.log(`${(op === "write" ? r.label : "").padEnd(W)} | ${(op === "write" ? fmtBs(r.bs) : "").padStart(3)} | ${op.padEnd(5)} | ${c.hostBusyPerGiB.toFixed(2).padStart(9)} (${(100 * c.hostBusyShare).toFixed(0).padStart(3)}%)    | ${per}`);
    }
  }

  const bad = Object.entries(verified).filter(([, ok]) => !ok);
  console.log(`\nread-back check (cmp with the source): ${bad.length ? `FAILED for ${bad.map(([k]) => k).join(", ")}` : `ok (${Object.keys(verified).join(", ")})`}`);
  // The issue's figures: per path, the product's ratios and CPU seconds per GiB of each daemon.
  const paths = Object.fromEntries(
    rows
      .filter((r) => r.group === "product" || r.group === "rbd" || r.group === "other")
      .map((r) => [
        r.key.replace(/-1M$/, ""),
        {
          label: r.label.trim(),
          product: r.group === "product",
          goal: r.group === "product" ? goal[r.protocol] : undefined,
          writeRatio: r.writeRatio,
          readRatio: r.readRatio,
          cpuSecondsPerGiB: { write: r.writeCpu.perProcessPerGiB, read: r.readCpu.perProcessPerGiB },
          hostCpuSecondsPerGiB: { write: r.writeCpu.hostBusyPerGiB, read: r.readCpu.hostBusyPerGiB },
        },
      ]),
  );
  console.log(`\ngoals (1M): ${rows.filter((r) => r.group === "product").map((r) => `${r.protocol} write ${r.writeRatio.toFixed(2)} read ${r.readRatio.toFixed(2)} (≥ ${goal[r.protocol]})`).join("; ")}`);
  console.log(`${rows.length} rows × ${rounds} rounds in ${elapsed.toFixed(0)} s; work folder on ${fsOf(ctx.dir)}, source in ${ctx.shm}; load average ${ctx.load.map((l) => l.toFixed(2)).join(" → ")}`);

  const out = path.join(repoRoot, "bench/results/datapath.json");
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(
    out,
    JSON.stringify(
      {
        bench: "datapath",
        when: new Date().toISOString(),
        sizeMiB,
        rounds,
        method: {
          dd: "write: dd if=<random source in tmpfs> bs=B count=N iflag=fullblock oflag=direct conv=fsync,notrunc; read: dd iflag=direct of=/dev/null; sync + drop_caches before every write and read",
          qemuImg: "qemu-img bench -s 1M -d QD -t none [-w --flush-interval=N]: I/O time as qemu-img reports it (no process start, no login)",
          ratio: "per round: raw seconds / row seconds, the raw run right before (even rounds) or after (odd rounds) the row's; the median of the rounds",
        },
        host: { kernel: os.release(), cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), fs: fsOf(ctx.dir), loadAverage1m: ctx.load, versions: ctx.versions },
        devices: Object.fromEntries(Object.entries(ctx.a).map(([p, x]) => [p, { device: x.device, backingFile: x.record.backingFile }])),
        paths,
        rows,
        breakdown,
        verified,
        elapsedSeconds: elapsed,
      },
      null,
      2,
    ),
  );
  console.log(`written ${path.relative(repoRoot, out)}`);
}

/** "ext4 /dev/vda" for the file system holding `dir`. */
function fsOf(dir: string): string {
  const mounts = fs
    .readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" "))
    .filter((f) => f.length > 2 && (dir === f[1] || dir.startsWith(f[1].endsWith("/") ? f[1] : `${f[1]}/`)))
    .sort((x, y) => y[1].length - x[1].length);
  return mounts[0] ? `${mounts[0][2]} ${mounts[0][0]} (${mounts[0][1]})` : "?";
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
