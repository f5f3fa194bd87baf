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

export const backendSchema = z.strictObject({
  name,
  driver: z.enum(["file"]),
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
      b.pools.forEach((p, j) => {
        if (b.node !== "local" && !path.isAbsolute(p.path)) {
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
