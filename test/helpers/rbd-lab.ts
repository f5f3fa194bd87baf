/**
 * What the RBD e2e tests share: the caps the README tells a Ceph admin to grant, reads of images
 * through librbd, and the two-host lab of the export tests (a real single-node Ceph, a user with
 * only those caps, hostA and hostB in network namespaces with their own sds-agent, and a project
 * whose backends file holds an rbd backend beside a file backend), with the data checks both
 * export tests run on it. Each test says only how its rbd backend exports, what more it checks,
 * and what it stops of its own before the lab goes.
 */
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { execFileSync, spawnSync } from "node:child_process";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import { processesMentioning } from "../datapath/harness";
import { type CephCluster, startCeph } from "./ceph";
import { NetLab, startLabAgent } from "./netns";
import { PulumiProject } from "./pulumi";

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

/** A buffer's sha256, hex. */
export const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** The caps of README's "What a Ceph admin creates", for these Ceph pools (makeUser's argument). */
export function readmeCaps(pools: readonly string[]): string[] {
  const each = pools.map((x) => `profile rbd pool=${x}`).join(", ");
  return ["mon", "profile rbd", "osd", each, "mgr", each];
}

/** The images of a Ceph pool. */
export async function rbdImages(ceph: CephCluster, pool: string): Promise<string[]> {
  return JSON.parse(await ceph.rbd(["ls", pool, "--format", "json"])) as string[];
}

/** An image's size in bytes. */
export async function rbdSize(ceph: CephCluster, pool: string, image: string): Promise<number> {
  return (JSON.parse(await ceph.rbd(["info", `${pool}/${image}`, "--format", "json"])) as { size: number }).size;
}

/** qemu's rbd filename of an image, as admin (an application's view, not the provider's user). */
export function rbdFile(ceph: CephCluster, pool: string, image: unknown): string {
  return `rbd:${pool}/${String(image)}:id=admin:conf=${ceph.conf}`;
}

/** Run qemu-io commands (`write -P 0xa1 3M 4M`, …) on an image through librbd, as an application on it would. */
export function qemuIo(ceph: CephCluster, pool: string, image: unknown, ...cmds: string[]): void {
  execFileSync("qemu-io", ["-f", "raw", ...cmds.flatMap((c) => ["-c", c]), rbdFile(ceph, pool, image)], { stdio: "pipe" });
}

/** Whether `len` bytes at `offset` of an image hold `pattern` (qemu-io `read -P`: "Pattern verification failed" when not). */
export function rbdHolds(ceph: CephCluster, pool: string, image: unknown, pattern: number, offset: number, len: number): boolean {
  const r = spawnSync("qemu-io", ["-f", "raw", "-c", `read -P ${pattern} ${offset} ${len}`, rbdFile(ceph, pool, image)], { encoding: "utf8" });
  if (/Pattern verification failed/.test(r.stdout + r.stderr)) return false;
  if (r.status !== 0) throw new Error(`qemu-io read failed (exit ${r.status}): ${r.stderr}`);
  return true;
}

/**
 * `len` bytes at `offset` (whole MiB) of an image, read through librbd into a file of `dir`
 * (`rbd export` of the whole image is too big to pipe); qemu-img dd's count includes the skipped blocks.
 */
export function rbdBytes(ceph: CephCluster, pool: string, image: string, offset: number, len: number, dir: string): Buffer {
  const out = path.join(dir, `read-${image}.bin`);
  execFileSync("qemu-img", ["dd", "-f", "raw", "-O", "raw", `if=${rbdFile(ceph, pool, image)}`, `of=${out}`, "bs=1M", `skip=${offset / MiB}`, `count=${(offset + len) / MiB}`], { stdio: "pipe" });
  try {
    return fs.readFileSync(out);
  } finally {
    fs.rmSync(out, { force: true });
  }
}

/**
 * The backends file of the rbd-replication program: "ceph" (Ceph pool `sds`, async replication to
 * the two others), "cephdr" (Ceph pool `dr`) and "files" (`pools/files` in the project), each rbd
 * backend reaching its cluster as user sds with `keyring`.
 */
export function replicationBackendsYaml(primary: { conf: string; keyring: string }, dr: { conf: string; keyring: string }): string {
  const rbd = (c: { conf: string; keyring: string }) => [
    "    driver: rbd",
    `    rbd: {conf: ${c.conf}, user: sds, keyringFile: ${c.keyring}}`,
    '    export: {protocol: iscsi, portal: "127.0.0.1:3260"}',
  ];
  return [
    "backends:",
    "  - name: ceph",
    ...rbd(primary),
    "    replicationTargets: [{backend: cephdr}, {backend: files}]",
    "    pools: [{name: r0, path: sds, replication: async}]",
    "  - name: cephdr",
    ...rbd(dr),
    "    pools: [{name: d0, path: dr}]",
    "  - name: files",
    "    driver: file",
    "    pools: [{name: f0, path: pools/files, totalCapacityGib: 20}]",
    "",
  ].join("\n");
}

export const LAB_HOSTS = ["hostA", "hostB"] as const;

export interface RbdHostsLab {
  ceph: CephCluster;
  lab: NetLab;
  p: PulumiProject;
  /** The lab's folder in the project: agents' state, the file pool `pools/f0`. */
  work: string;
  agents: Map<string, Awaited<ReturnType<typeof startLabAgent>>>;
  /** Destroy the stack, run `release` (what the test's exports leave behind), then stop agents, hosts and Ceph and remove the project. */
  close(release?: () => Promise<void>): Promise<void>;
}

/**
 * The two-host lab with the Ceph pool `pool` (multiAttach pool `rbd0` of backend `ceph`, user
 * `sds`) and a file backend `files` (pool `f0`). `exportLines` are the rbd backend's lines after
 * its `rbd:` line (export, sharedTargets), given the lab for its address; stack config
 * `sizeGib: 1`.
 */
export async function startRbdHostsLab(o: { program: string; name?: string; pool: string; exportLines: (lab: NetLab) => string[] }): Promise<RbdHostsLab> {
  const ceph = await startCeph();
  let lab: NetLab | undefined;
  let p: PulumiProject | undefined;
  const agents: RbdHostsLab["agents"] = new Map();
  const close = async (release?: () => Promise<void>) => {
    try {
      if (p) await p.run(["destroy", "--yes"]);
      if (release) await release();
      for (const a of agents.values()) await a.client.close();
    } finally {
      lab?.down();
      await ceph.stop();
      p?.remove();
    }
  };
  try {
    await ceph.pool(o.pool);
    // The user sds runs as holds only what the README tells a Ceph admin to grant.
    const keyring = await ceph.makeUser("sds", readmeCaps([o.pool]));
    lab = new NetLab([...LAB_HOSTS]);
    lab.up();
    p = await PulumiProject.create(o.program, o.name ? { name: o.name } : {});
    const work = path.join(p.dir, "lab");
    fs.mkdirSync(path.join(work, "pools"), { recursive: true });
    const token = randomBytes(24).toString("hex");
    fs.writeFileSync(path.join(work, "token"), token, { mode: 0o600 });
    for (const h of LAB_HOSTS) agents.set(h, await startLabAgent(lab, h, { work, token }));
    fs.writeFileSync(
      path.join(p.dir, "backends.yaml"),
      [
        "backends:",
        "  - name: ceph",
        "    driver: rbd",
        `    rbd: {conf: ${ceph.conf}, user: sds, keyringFile: ${keyring}}`,
        ...o.exportLines(lab).map((l) => `    ${l}`),
        "    pools:",
        `      - {name: rbd0, path: ${o.pool}, multiAttach: true}`,
        "  - name: files",
        "    driver: file",
        "    pools:",
        `      - {name: f0, path: ${path.join(work, "pools", "f0")}, totalCapacityGib: 50}`,
        "",
      ].join("\n"),
    );
    const hosts = Object.fromEntries(LAB_HOSTS.map((h) => [h, { url: `http://${lab!.node(h).ip}:7700` }]));
    await p.config({ "sds:backendsFile": "backends.yaml", sizeGib: 1 });
    await p.config({ "sds:hosts": JSON.stringify(hosts), "sds:agentToken": token }, { secret: true });
    return { ceph, lab, p, work, agents, close };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

/** The lab program's outputs the data checks use: the shared volume and its two devices. */
export type SharedVolume = Record<string, unknown> & { volumeId?: unknown; aDevice?: unknown; bDevice?: unknown };

/**
 * 4 MiB written at 2 MiB through hostA's rw device read back on hostB's ro device and through
 * librbd; hostB cannot write; the first MiB is still zeros. The pattern's digest goes to
 * `<work>/pattern.sha` for the later steps.
 */
export function checkPatternAcrossHosts(l: RbdHostsLab, pool: string, out: SharedVolume): void {
  const pattern = randomBytes(4 * MiB);
  l.lab.exec("hostA", ["dd", `of=${String(out.aDevice)}`, "bs=1M", "seek=2", "oflag=direct", "conv=fsync", "status=none"], pattern);
  const back = l.lab.exec("hostB", ["dd", `if=${String(out.bDevice)}`, "bs=1M", "skip=2", "count=4", "iflag=direct", "status=none"]);
  expect(sha(back)).toBe(sha(pattern));
  expect(sha(rbdBytes(l.ceph, pool, String(out.volumeId), 2 * MiB, 4 * MiB, l.work))).toBe(sha(pattern));
  expect(() => l.lab.exec("hostB", ["dd", `of=${String(out.bDevice)}`, "bs=4k", "count=1", "oflag=direct", "status=none"], Buffer.alloc(4096, 1))).toThrow();
  expect(sha(rbdBytes(l.ceph, pool, String(out.volumeId), 0, MiB, l.work))).toBe(sha(Buffer.alloc(MiB)));
  fs.writeFileSync(path.join(l.work, "pattern.sha"), sha(pattern));
}

/**
 * After the shared volume grew to 2 GiB while attached: the image and the devices of `hosts`
 * (hostA first) are 2 GiB, the pattern reads back on hostA, and a MiB written at the end on hostA
 * lands in the image and reads back on the other hosts of `hosts`.
 */
export async function checkGrown(l: RbdHostsLab, pool: string, out: SharedVolume, hosts: Array<"hostA" | "hostB">): Promise<void> {
  const device = (h: string) => String(h === "hostA" ? out.aDevice : out.bDevice);
  expect(await rbdSize(l.ceph, pool, String(out.volumeId))).toBe(2 * GiB);
  for (const h of hosts) expect(Number(l.lab.exec(h, ["blockdev", "--getsize64", device(h)]).toString().trim())).toBe(2 * GiB);
  const back = l.lab.exec("hostA", ["dd", `if=${device("hostA")}`, "bs=1M", "skip=2", "count=4", "iflag=direct", "status=none"]);
  expect(sha(back)).toBe(fs.readFileSync(path.join(l.work, "pattern.sha"), "utf8"));
  l.lab.exec("hostA", ["dd", `of=${device("hostA")}`, "bs=1M", `seek=${2 * 1024 - 1}`, "count=1", "iflag=fullblock", "oflag=direct", "conv=fsync", "status=none"], Buffer.alloc(MiB, 7));
  expect(rbdBytes(l.ceph, pool, String(out.volumeId), 2 * GiB - MiB, MiB, l.work).equals(Buffer.alloc(MiB, 7))).toBe(true);
  for (const h of hosts.filter((x) => x !== "hostA")) {
    expect(l.lab.exec(h, ["dd", `if=${device(h)}`, "bs=1M", `skip=${2 * 1024 - 1}`, "count=1", "iflag=direct", "status=none"]).equals(Buffer.alloc(MiB, 7))).toBe(true);
  }
}

/** What a destroy leaves of the lab's stack: no image and nothing in the trash of `pool`, no state row, no path or process on either host. */
export async function checkNothingLeft(l: RbdHostsLab, pool: string): Promise<void> {
  expect(await rbdImages(l.ceph, pool)).toEqual([]);
  // No image left means no snapshot left; the pool's trash is empty too (nothing deferred).
  expect(JSON.parse(await l.ceph.rbd(["trash", "ls", pool, "--format", "json"]))).toEqual([]);
  const store = new SqliteStore(path.join(l.p.dir, ".sds/state.db"));
  try {
    expect([...(await store.listVolumes()), ...(await store.listAttachments()), ...(await store.listTargets())]).toEqual([]);
  } finally {
    await store.close();
  }
  for (const h of LAB_HOSTS) {
    expect(await l.agents.get(h)!.client.getAllVolumePaths()).toEqual([]);
    expect(processesMentioning(l.agents.get(h)!.stateDir)).toEqual([]);
  }
}
