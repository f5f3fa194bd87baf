/**
 * bench/datapath: sequential write and read MiB/s through the block devices the connectors make
 * on this host (userspace paths: no kernel iSCSI/NBD client), next to the raw volume file on the
 * same disk, and their ratios (goal ≥ 0.5 of raw). Extra rows measure the layers of each chain
 * separately (where the time goes) and tuning knobs the connectors/targets could use (rows only:
 * nothing in provider/ changes). Root only. Prints a table, writes bench/results/datapath.json.
 *
 *   npm run bench:datapath -- [MiB=512] [rounds=3]
 *
 * Method (the same for every dd row, raw and paths): each write is `dd bs=B count=N oflag=direct
 * conv=fsync` from a random source in tmpfs, so no page cache sits on top of the device or file
 * being measured and the final fsync pushes every layer's cache (loop, FUSE, NBD/iSCSI flush,
 * nbdkit/tgtd fdatasync) to the disk; each read is `dd iflag=direct` after `sync; echo 3 >
 * /proc/sys/vm/drop_caches`, so it starts cold in every layer (also the page cache that nbdkit and
 * tgtd read the volume file through). Caches are dropped before every write too. Rows run
 * interleaved, in a rotated order each round; ratio = path / raw of the same round; medians.
 * Each operation also records the CPU seconds of the chain's daemons (/proc/PID/stat) and of the
 * whole host (/proc/stat), per GiB moved.
 *
 * Setup is the product's: Controller + Attachments (`connect: true` on localhost) with the
 * connectors of connectors/factory.ts (userspace mode) and the targets of targets/local-targets.ts
 * (TgtTarget, NbdkitTarget). Everything made is undone at the end, also on failure or Ctrl-C.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { onPath } from "../../provider/src/connectors/host";
import { cannotRun } from "../../test/datapath/harness";
import { type Attached, checkSocketRoom, makeDatapathEnv, type Protocol } from "./env";
import {
  canDropCaches,
  Cleanup,
  ddRead,
  ddWrite,
  dropCaches,
  loopInfo,
  makeLoop,
  makeNbdfuse,
  makeQemuNbd,
  makeSource,
  hostBusy,
  median,
  MiB,
  processCpu,
  qemuBench,
  sameBytes,
  setTgtParams,
  tgtParams,
  version,
} from "./tools";

const sizeMiB = Number(process.argv[2] ?? 512);
const rounds = Number(process.argv[3] ?? 3);
const repoRoot = path.resolve(__dirname, "../..");

/** qemu-img's default iSCSI initiator name (qemu-img bench has no option to set another). */
const QEMU_INITIATOR = "iqn.2008-11.org.linux-kvm";

/**
 * tgtd's defaults are MaxRecvDataSegmentLength=8192, MaxXmitDataSegmentLength=8192,
 * FirstBurstLength=65536, MaxBurstLength=262144, InitialR2T=Yes: a 1 MiB write is 128 data PDUs
 * and 4 R2T round trips. The "tgtd*" rows let sessions negotiate these instead.
 */
const TGT_TUNED: Record<string, string> = {
  MaxRecvDataSegmentLength: "1048576",
  MaxXmitDataSegmentLength: "1048576",
  FirstBurstLength: "1048576",
  MaxBurstLength: "16776192",
  InitialR2T: "No",
};

type Group = "baseline" | "product" | "layer" | "tuning";

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

  const env = await makeDatapathEnv(dir, Math.ceil(sizeMiB / 1024), cleanup);
  checkSocketRoom(env.runDir);
  const files = { raw: env.rawPath, ...Object.fromEntries(Object.entries(env.volumes).map(([p, v]) => [p, env.controller.volumePath(v)])) } as Record<"raw" | Protocol, string>;
  const devs = new Set(Object.values(files).map((f) => fs.statSync(f).dev));
  if (devs.size !== 1) throw new Error("the raw file and the volumes are not on one file system");
  // Fill every file once (untimed): the rounds overwrite allocated blocks, the same for every row.
  process.stderr.write(`filling ${Object.keys(files).length} volume files with ${sizeMiB} MiB…\n`);
  for (const f of Object.values(files)) await ddWrite(src, f, { bs: MiB, count: sizeMiB, direct: true });

  process.stderr.write("attaching (local, nbd, iscsi) with connect: true…\n");
  const a = await env.attachAll();

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

  // --- tuning rows -------------------------------------------------------------------------
  const dioLoop = async (file: string) => {
    const dev = await makeLoop(cleanup, file, ["--direct-io=on"]);
    if (!(await loopInfo(dev)).dio) throw new Error(`loop --direct-io=on did not take on ${file}`);
    return dev;
  };
  const dio = { local: await dioLoop(files.local), nbd: await dioLoop(a.nbd.record.backingFile!), iscsi: await dioLoop(a.iscsi.record.backingFile!) };
  // iSCSI with tgtd's session parameters raised: a second chain (qemu-nbd → nbdfuse → loop) whose
  // session logged in while they were set; they are put back right after (live sessions keep theirs).
  const tgt = await env.tgt();
  const tgtDefaults = await tgtParams(tgt.controlPort, tgt.tid);
  const tgtRestore = Object.fromEntries(Object.keys(TGT_TUNED).map((k) => [k, tgtDefaults[k]]).filter(([, v]) => v !== undefined)) as Record<string, string>;
  const withTunedTgt = async <T>(fn: () => Promise<T>): Promise<T> => {
    await setTgtParams(tgt.controlPort, tgt.tid, TGT_TUNED);
    try {
      return await fn();
    } finally {
      await setTgtParams(tgt.controlPort, tgt.tid, tgtRestore);
    }
  };
  const tunedRelay = await withTunedTgt(() => makeQemuNbd(cleanup, path.join(dir, "tuned"), relayOpts(QEMU_INITIATOR), relayObjects));
  if (chapPassword) fs.rmSync(secretFile, { force: true });
  const tunedFuse = await makeNbdfuse(cleanup, path.join(dir, "tuned-fuse"), [], ["--unix", tunedRelay.socket]);
  const tunedLoop = await makeLoop(cleanup, tunedFuse.file);
  const tunedDio = await dioLoop(tunedFuse.file);

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
    tuned: pids({ nbdfuse: tunedFuse.pid, "qemu-nbd": tunedRelay.pid, tgtd: daemons.tgtd }),
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
    label: `${p.padEnd(6)} loop → ${p === "local" ? "volume file" : p === "nbd" ? NBD : ISCSI}`,
    bs,
    baseline: `raw-${fmtBs(bs)}`,
    ...dd(x.device, bs),
    verify: x.device,
    procs: procs[p],
  });
  const cases: Case[] = [
    { key: "raw-1M", group: "baseline", protocol: "raw", label: "raw    volume file, O_DIRECT", bs: MiB, baseline: "raw-1M", ...dd(files.raw, MiB), procs: procs.raw },
    { key: "raw-4M", group: "baseline", protocol: "raw", label: "raw    volume file, O_DIRECT", bs: 4 * MiB, baseline: "raw-4M", ...dd(files.raw, 4 * MiB), procs: procs.raw },
    { key: "raw-buffered", group: "baseline", protocol: "raw", label: "raw    volume file, buffered+fdatasync / cold", bs: MiB, baseline: "raw-1M", ...dd(files.raw, MiB, false), procs: procs.raw },
    product("local", a.local, MiB),
    product("nbd", a.nbd, MiB),
    product("iscsi", a.iscsi, MiB),
    product("local", a.local, 4 * MiB),
    product("nbd", a.nbd, 4 * MiB),
    product("iscsi", a.iscsi, 4 * MiB),
    { key: "nbd-qemu-qd1", group: "layer", protocol: "nbd", label: "nbd    qemu-img → nbdkit (QD1)", bs: MiB, baseline: "raw-1M", ...qb(nbdImage, 1), procs: procs.nbdkit },
    { key: "nbd-qemu-qd8", group: "layer", protocol: "nbd", label: "nbd    qemu-img → nbdkit (QD8)", bs: MiB, baseline: "raw-1M", ...qb(nbdImage, 8), procs: procs.nbdkit },
    { key: "nbd-fuse", group: "layer", protocol: "nbd", label: `nbd    dd → ${NBD} (the FUSE file)`, bs: MiB, baseline: "raw-1M", ...dd(a.nbd.record.backingFile!, MiB), procs: procs.nbd },
    { key: "iscsi-libiscsi-qd1", group: "layer", protocol: "iscsi", label: "iscsi  qemu-img (libiscsi) → tgtd (QD1)", bs: MiB, baseline: "raw-1M", ...qb(iscsiImage, 1, iscsiEnv), procs: procs.tgtd },
    { key: "iscsi-libiscsi-qd8", group: "layer", protocol: "iscsi", label: "iscsi  qemu-img (libiscsi) → tgtd (QD8)", bs: MiB, baseline: "raw-1M", ...qb(iscsiImage, 8, iscsiEnv), procs: procs.tgtd },
    { key: "iscsi-relay-qd1", group: "layer", protocol: "iscsi", label: "iscsi  qemu-img → qemu-nbd → tgtd (QD1)", bs: MiB, baseline: "raw-1M", ...qb(relayImage, 1), procs: procs.relay },
    { key: "iscsi-fuse", group: "layer", protocol: "iscsi", label: `iscsi  dd → ${ISCSI} (the FUSE file)`, bs: MiB, baseline: "raw-1M", ...dd(a.iscsi.record.backingFile!, MiB), procs: procs.iscsi },
  ];
  for (const bs of [MiB, 4 * MiB]) {
    for (const p of ["local", "nbd", "iscsi"] as const) {
      const rest = p === "local" ? "volume file" : p === "nbd" ? NBD : ISCSI;
      cases.push({ key: `${p}-dio-${fmtBs(bs)}`, group: "tuning", protocol: p, label: `${p.padEnd(6)} loop --direct-io=on → ${rest}`, bs, baseline: `raw-${fmtBs(bs)}`, ...dd(dio[p], bs), procs: procs[p] });
    }
  }
  const tunedQb = qb(iscsiImage, 1, iscsiEnv);
  cases.push(
    { key: "iscsi-tuned-libiscsi-qd1", group: "tuning", protocol: "iscsi", label: "iscsi  qemu-img (libiscsi) → tgtd* (QD1)", bs: MiB, baseline: "raw-1M", write: () => withTunedTgt(tunedQb.write), read: () => withTunedTgt(tunedQb.read), procs: procs.tgtd },
    { key: "iscsi-tuned-1M", group: "tuning", protocol: "iscsi", label: "iscsi  loop → nbdfuse → qemu-nbd → tgtd*", bs: MiB, baseline: "raw-1M", ...dd(tunedLoop, MiB), verify: tunedLoop, procs: procs.tuned },
    { key: "iscsi-tuned-dio-1M", group: "tuning", protocol: "iscsi", label: "iscsi  loop --direct-io=on → … → tgtd*", bs: MiB, baseline: "raw-1M", ...dd(tunedDio, MiB), procs: procs.tuned },
    { key: "iscsi-tuned-dio-4M", group: "tuning", protocol: "iscsi", label: "iscsi  loop --direct-io=on → … → tgtd*", bs: 4 * MiB, baseline: "raw-4M", ...dd(tunedDio, 4 * MiB), procs: procs.tuned },
  );

  // --- rounds ------------------------------------------------------------------------------
  const results = new Map<string, CaseResult>(
    cases.map((c) => [c.key, { key: c.key, group: c.group, protocol: c.protocol, label: c.label, bs: c.bs, baseline: c.baseline, writeSeconds: [], readSeconds: [], write: [], read: [] }]),
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
  const started = Date.now();
  const load0 = os.loadavg()[0];
  for (let r = 0; r < rounds; r++) {
    const shift = Math.floor((r * cases.length) / rounds);
    const order = [...cases.slice(shift), ...cases.slice(0, shift)];
    for (const c of order) {
      const res = results.get(c.key)!;
      const w = await sample(() => c.write(), c.procs);
      const rd = await sample(() => c.read(), c.procs);
      res.write.push(w);
      res.read.push(rd);
      res.writeSeconds.push(w.seconds);
      res.readSeconds.push(rd.seconds);
      process.stderr.write(
        `round ${r + 1}/${rounds} ${c.key.padEnd(26)} write ${mibps(res.writeSeconds.at(-1)!).toFixed(0).padStart(5)} MiB/s  read ${mibps(res.readSeconds.at(-1)!).toFixed(0).padStart(5)} MiB/s\n`,
      );
    }
  }
  const elapsed = (Date.now() - started) / 1000;

  // Every row wrote the same source: every device must read back as it.
  const verified: Record<string, boolean> = {};
  for (const c of cases.filter((x) => x.verify)) verified[c.key] = await sameBytes(src, c.verify!, sizeMiB * MiB);

  const versions: Record<string, string> = {};
  for (const [name, args] of [["nbdkit", ["--version"]], ["nbdfuse", ["--version"]], ["qemu-nbd", ["--version"]], ["qemu-img", ["--version"]], ["tgtd", ["-V"]], ["losetup", ["--version"]]] as const) {
    versions[name] = await version(name, [...args]);
  }
  report([...results.values()], elapsed, verified, { dir, shm, a, dio, tgtDefaults, versions, load: [load0, os.loadavg()[0]] });
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

function report(results: CaseResult[], elapsed: number, verified: Record<string, boolean>, ctx: { dir: string; shm: string; a: Record<Protocol, Attached>; dio: Record<Protocol, string>; tgtDefaults: Record<string, string>; versions: Record<string, string>; load: number[] }): void {
  const byKey = new Map(results.map((r) => [r.key, r]));
  const rows: Row[] = results.map((r) => {
    const base = byKey.get(r.baseline)!;
    const writeRatios = r.writeSeconds.map((s, i) => base.writeSeconds[i] / s);
    const readRatios = r.readSeconds.map((s, i) => base.readSeconds[i] / s);
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
  const row = (k: string) => rows.find((r) => r.key === k)!;

  const titles: Record<Group, string> = {
    baseline: "raw volume file (same pool folder, same disk)",
    product: "what the connectors make (attachment with connect: true)",
    layer: "layers, measured separately (1M, no FUSE / no loop where it says)",
    tuning: "tuning knobs (bench-only setups; * = tgtd session parameters raised)",
  };
  console.log(`\nsequential ${sizeMiB} MiB, median of ${rounds} interleaved rounds; ×raw = path / raw of the same round (median), raw at the same block size`);
  console.log("dd rows: write oflag=direct conv=fsync, read iflag=direct, caches dropped before each; qemu-img rows: qemu-img bench (I/O time only), one flush at the end of writes");
  console.log(`tgtd* = ${Object.entries(TGT_TUNED).map(([k, v]) => `${k}=${v}`).join(", ")} (tgtd's defaults: ${Object.keys(TGT_TUNED).map((k) => `${k}=${ctx.tgtDefaults[k]}`).join(", ")})`);
  const W = 62;
  const head = `${"row".padEnd(W)} |  bs | write MiB/s | ×raw | read MiB/s | ×raw`;
  for (const g of ["baseline", "product", "layer", "tuning"] as const) {
    console.log(`\n${titles[g]}`);
    console.log(head);
    console.log(`${"-".repeat(W)}-|-----|------------|------|------------|-----`);
    for (const r of rows.filter((x) => x.group === g)) {
      const mark = r.group === "product" ? (r.writeRatio >= 0.5 && r.readRatio >= 0.5 ? "" : "  < 0.5") : "";
      console.log(
        `${r.label.padEnd(W)} | ${fmtBs(r.bs).padStart(3)} | ${r.writeMiBps.toFixed(0).padStart(10)} | ${r.writeRatio.toFixed(2).padStart(4)} | ${r.readMiBps.toFixed(0).padStart(10)} | ${r.readRatio.toFixed(2).padStart(4)}${mark}`,
      );
    }
  }

  // Where the time goes: each layer's added seconds per GiB (from the medians), 1M, one request at a time.
  const chains: Record<Protocol, Array<[string, string]>> = {
    local: [
      ["raw-1M", "disk (raw file, O_DIRECT)"],
      ["local-1M", "+ loop (buffered) on the file"],
    ],
    nbd: [
      ["raw-1M", "disk (raw file, O_DIRECT)"],
      ["nbd-qemu-qd1", "+ NBD: TCP, nbdkit file plugin"],
      ["nbd-fuse", "+ FUSE: nbdfuse (libnbd)"],
      ["nbd-1M", "+ loop (buffered) on the FUSE file"],
    ],
    iscsi: [
      ["raw-1M", "disk (raw file, O_DIRECT)"],
      ["iscsi-libiscsi-qd1", "+ iSCSI: TCP, tgtd, libiscsi"],
      ["iscsi-relay-qd1", "+ qemu-nbd relay (NBD, unix socket)"],
      ["iscsi-fuse", "+ FUSE: nbdfuse (libnbd)"],
      ["iscsi-1M", "+ loop (buffered) on the FUSE file"],
    ],
  };
  const sPerGiB = (mbps: number) => 1024 / mbps;
  const breakdown: Record<string, Array<{ layer: string; op: string; MiBps: number; sPerGiB: number; addedSPerGiB: number; shareOfPath: number }>> = {};
  console.log("\nwhere the time goes (1M, QD1; seconds per GiB from the medians; Δ = what the layer adds; share = Δ / the full path's time)");
  console.log("(a layer can be faster than the one below it when it adds parallelism or readahead: nbdfuse spreads requests over 4 NBD connections,");
  console.log(" a buffered loop reads through its backing file's readahead, nbdkit and tgtd write through the page cache and fdatasync at the flush)");
  for (const [p, chain] of Object.entries(chains)) {
    breakdown[p] = [];
    for (const op of ["write", "read"] as const) {
      const v = chain.map(([k]) => (op === "write" ? row(k).writeMiBps : row(k).readMiBps));
      const total = sPerGiB(v.at(-1)!);
      const parts = chain.map(([, name], i) => {
        const s = sPerGiB(v[i]);
        const added = i === 0 ? s : s - sPerGiB(v[i - 1]);
        breakdown[p].push({ layer: name, op, MiBps: v[i], sPerGiB: s, addedSPerGiB: added, shareOfPath: added / total });
        return `${name} ${v[i].toFixed(0)} MiB/s (Δ ${added >= 0 ? "+" : ""}${added.toFixed(2)} s/GiB, ${((100 * added) / total).toFixed(0)}%)`;
      });
      console.log(`${p.padEnd(5)} ${op.padEnd(5)} ${total.toFixed(2)} s/GiB: ${parts.join(" | ")}`);
    }
  }

  console.log(`\nCPU (median seconds per GiB moved; host = all ${os.cpus().length} CPUs busy, kernel and any other load included, and its share of them during the run)`);
  console.log(`${"row".padEnd(W)} |  bs | op    | host s/GiB (share) | chain processes s/GiB`);
  console.log(`${"-".repeat(W)}-|-----|-------|--------------------|----------------------`);
  for (const r of rows.filter((x) => x.key !== "raw-buffered")) {
    for (const op of ["write", "read"] as const) {
      const c = op === "write" ? r.writeCpu : r.readCpu;
      const per = Object.entries(c.perProcessPerGiB).map(([n, v]) => `${n} ${v.toFixed(2)}`).join(", ");
      console.log(`${(op === "write" ? r.label : "").padEnd(W)} | ${(op === "write" ? fmtBs(r.bs) : "").padStart(3)} | ${op.padEnd(5)} | ${c.hostBusyPerGiB.toFixed(2).padStart(9)} (${(100 * c.hostBusyShare).toFixed(0).padStart(3)}%)    | ${per}`);
    }
  }

  const bad = Object.entries(verified).filter(([, ok]) => !ok);
  console.log(`\nread-back check (cmp with the source): ${bad.length ? `FAILED for ${bad.map(([k]) => k).join(", ")}` : `ok (${Object.keys(verified).join(", ")})`}`);
  const goal = rows.filter((r) => r.group === "product" && r.bs === MiB);
  console.log(`goal ≥ 0.5 of raw (1M): ${goal.map((r) => `${r.protocol} write ${r.writeRatio.toFixed(2)} read ${r.readRatio.toFixed(2)}`).join("; ")}`);
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
          ratio: "per round: path MiB/s / raw MiB/s at the same block size; the median of the rounds",
          tgtTuned: TGT_TUNED,
          tgtDefaults: ctx.tgtDefaults,
        },
        host: { kernel: os.release(), cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), fs: fsOf(ctx.dir), loadAverage1m: ctx.load, versions: ctx.versions },
        devices: Object.fromEntries(Object.entries(ctx.a).map(([p, x]) => [p, { device: x.device, backingFile: x.record.backingFile, dio: ctx.dio[p as Protocol] }])),
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
