/**
 * Backends and pools as configured (shared/CONTRACT.md, "Backends and pools"): the zod schemas
 * and the types every layer uses (drivers take a PoolConfig, the scheduler reads pools, the
 * controller places volumes on them). Loading them from YAML or provider config, with file and
 * line in errors, is controller/backends.ts.
 */
import * as path from "node:path";
import { z } from "zod";

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit");

const extrasGroup = z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]));

export const poolSchema = z.strictObject({
  name,
  path: z.string().min(1),
  totalCapacityGib: z.number().positive().optional(),
  maxOverSubscriptionRatio: z.number().min(1).default(20),
  availabilityZone: z.string().min(1).default("default"),
  storageType: z.string().min(1).default("block"),
  multiAttach: z.boolean().default(false),
  replication: z.enum(["async"]).optional(),
  extras: z
    .strictObject({
      dataStorage: extrasGroup.optional(),
      ioConnectivity: extrasGroup.optional(),
      advanced: extrasGroup.optional(),
    })
    .default({}),
});

/** A Ceph pool name as sds accepts it: what `ceph osd pool create` takes and qemu's rbd filename carries unescaped. */
const cephPoolName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, "must be a Ceph pool name: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit");

/**
 * How sds reaches a Ceph cluster (`driver: rbd`). sds writes its own client conf from these (the
 * monitors and the keyring file, root-only, in its run folder) so every tool it starts (rbd, ceph,
 * tgtd, qemu-nbd) gets `conf=` + `id=` and never a key in argv.
 */
export const rbdOptionsSchema = z.strictObject({
  /** The cluster name: the default conf is /etc/ceph/<cluster>.conf. */
  cluster: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/, "must be 1-63 letters, digits, '_' or '-'").default("ceph"),
  /** A conf naming the monitors (`mon host`); default /etc/ceph/<cluster>.conf. Only its `mon host` is read. */
  conf: z.string().min(1).optional(),
  /** The monitors (`mon host` syntax); overrides the conf's. */
  monHost: z.string().min(1).optional(),
  /** The Ceph user, without `client.`. */
  user: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "must be a Ceph user name without 'client.': letters, digits, '.', '_' or '-'").default("admin"),
  /** A keyring file holding the user's key (read by Ceph's tools, never by sds). Default: /etc/ceph/<cluster>.client.<user>.keyring, unless `key` is given. */
  keyringFile: z.string().min(1).optional(),
  /**
   * The user's cephx key itself (base64), for inline backends given as a Pulumi secret: sds writes
   * it to a 0600 keyring file in its run folder and keeps it out of the state (pool-catalog.ts).
   */
  key: z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, "must be a cephx key (base64, as `ceph auth get-key` prints it)").optional(),
});

export type RbdOptions = z.output<typeof rbdOptionsSchema>;

export const backendSchema = z.strictObject({
  name,
  driver: z.enum(["file", "rbd"]),
  rbd: rbdOptionsSchema.optional(),
  node: z.string().min(1).default("local"),
  backendId: z.string().min(1).optional(),
  sharedTargets: z.boolean().default(true),
  weigher: z.enum(["spread", "stack"]).default("spread"),
  export: z
    .strictObject({
      protocol: z.enum(["iscsi", "nbd", "local"]).default("local"),
      portal: z.string().min(1).optional(),
      chap: z.boolean().default(false),
    })
    .default({ protocol: "local", chap: false }),
  replicationTargets: z.array(z.strictObject({ backend: name })).default([]),
  pools: z.array(poolSchema).min(1, "a backend needs at least one pool"),
});

export const backendsSchema = z
  .array(backendSchema)
  .superRefine((backends, ctx) => {
    const seen = new Map<string, number>();
    backends.forEach((b, i) => {
      if (seen.has(b.name)) ctx.addIssue({ code: "custom", path: [i, "name"], message: `duplicate backend name "${b.name}" (also backends[${seen.get(b.name)}])` });
      seen.set(b.name, i);
      const pools = new Set<string>();
      if (b.driver !== "rbd" && b.rbd) ctx.addIssue({ code: "custom", path: [i, "rbd"], message: `rbd options are for driver: rbd, not driver: ${b.driver}` });
      if (b.driver === "rbd") {
        if (!b.rbd) ctx.addIssue({ code: "custom", path: [i, "driver"], message: "driver: rbd needs rbd options (at least `rbd: {}`: cluster, conf or monHost, user, keyringFile or key)" });
        else if (b.rbd.key !== undefined && b.rbd.keyringFile !== undefined) ctx.addIssue({ code: "custom", path: [i, "rbd", "key"], message: "give either rbd.key or rbd.keyringFile, not both" });
        if (b.node !== "local") ctx.addIssue({ code: "custom", path: [i, "node"], message: `driver: rbd runs on the provider's machine only for now (node: local); a storage node running rbd through its agent is not supported yet` });
        if (b.export.protocol === "local") {
          ctx.addIssue({ code: "custom", path: [i, "export", "protocol"], message: "driver: rbd needs export.protocol iscsi or nbd: an RBD image is no file to loop-mount, so \"local\" (the default) cannot serve it" });
        } else if (b.export.protocol === "nbd" && b.sharedTargets) {
          ctx.addIssue({ code: "custom", path: [i, "sharedTargets"], message: "driver: rbd with export.protocol nbd needs sharedTargets: false: qemu-nbd serves one RBD image per server, so each volume gets its own server per mode" });
        }
      }
      b.pools.forEach((p, j) => {
        if (b.driver === "rbd") {
          const r = cephPoolName.safeParse(p.path);
          if (!r.success) ctx.addIssue({ code: "custom", path: [i, "pools", j, "path"], message: `driver: rbd: path is the Ceph pool: ${r.error.issues[0].message}` });
          if (String(p.extras.dataStorage?.provisioningPolicy ?? "Thin").toLowerCase() === "thick") {
            ctx.addIssue({ code: "custom", path: [i, "pools", j, "extras", "dataStorage", "provisioningPolicy"], message: "driver: rbd: RBD images are thin: provisioningPolicy Thick cannot be honoured" });
          }
        } else if (b.node !== "local" && !path.isAbsolute(p.path)) {
          ctx.addIssue({ code: "custom", path: [i, "pools", j, "path"], message: `a pool of a backend on node "${b.node}" needs an absolute path (a path on that node)` });
        }
        if (pools.has(p.name)) ctx.addIssue({ code: "custom", path: [i, "pools", j, "name"], message: `duplicate pool name "${p.name}" in backend "${b.name}"` });
        pools.add(p.name);
      });
    });
    backends.forEach((b, i) =>
      b.replicationTargets.forEach((t, j) => {
        if (t.backend === b.name) ctx.addIssue({ code: "custom", path: [i, "replicationTargets", j, "backend"], message: "a backend cannot replicate to itself" });
        else if (!seen.has(t.backend)) ctx.addIssue({ code: "custom", path: [i, "replicationTargets", j, "backend"], message: `no backend named "${t.backend}"` });
      }),
    );
  });

export type PoolConfig = z.output<typeof poolSchema>;
export type BackendConfig = z.output<typeof backendSchema>;
