/**
 * What the RBD e2e tests share: the caps the README tells a Ceph admin to grant, reads of images
 * through librbd, and the two-host lab of the export tests (a real single-node Ceph, a user with
 * only those caps, hostA and hostB in network namespaces with their own sds-agent, and a project
 * whose backends file holds an rbd backend beside a file backend). Each test says only how its
 * rbd backend exports and what it stops of its own before the lab goes.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { type CephCluster, startCeph } from "./ceph";
import { NetLab, startLabAgent } from "./netns";
import { PulumiProject } from "./pulumi";

const MiB = 1024 ** 2;

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

/**
 * `len` bytes at `offset` (whole MiB) of an image, read through librbd into a file of `dir`
 * (`rbd export` of the whole image is too big to pipe); qemu-img dd's count includes the skipped blocks.
 */
export function rbdBytes(ceph: CephCluster, pool: string, image: string, offset: number, len: number, dir: string): Buffer {
  const out = path.join(dir, `read-${image}.bin`);
  execFileSync("qemu-img", ["dd", "-f", "raw", "-O", "raw", `if=rbd:${pool}/${image}:id=admin:conf=${ceph.conf}`, `of=${out}`, "bs=1M", `skip=${offset / MiB}`, `count=${(offset + len) / MiB}`], { stdio: "pipe" });
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
