/** The contract's functions (invokes): getPools, getPlacement, getReplicationTargets. */
import { z } from "zod";
import { UserError } from "../errors";
import { virtualFreeGib } from "../scheduler/filters";
import { type Props, reveal } from "./values";
import type { ProviderContext } from "./context";
import type { FunctionHandler } from "./resource";

function parseArgs<T extends z.ZodType>(schema: T, args: Props): z.output<T> {
  const r = schema.safeParse(reveal(args));
  if (!r.success) {
    const i = r.error.issues[0];
    // A stray argument is named by its key (the issue's path is the object holding it).
    const at = i.code === "unrecognized_keys" ? [...i.path, i.keys[0]] : i.path;
    const prop = at.length > 0 ? at.map(String).join(".") : "args";
    throw new UserError("INVALID_INPUT", `${prop}: ${i.message}`, prop);
  }
  return r.data;
}

const round = (gib: number) => Math.round(gib * 1000) / 1000;

export class GetPools implements FunctionHandler {
  readonly token = "sds:index:getPools";
  constructor(private readonly ctx: ProviderContext) {}
  async invoke(args: Props) {
    const { backend } = parseArgs(z.strictObject({ backend: z.string().min(1).optional() }), args);
    const c = await this.ctx.controller();
    const all = await c.pools();
    if (backend !== undefined && !all.some((p) => p.backendName === backend)) throw new UserError("NOT_FOUND", `backend: no backend named "${backend}"`, "backend");
    const pools = all
      .filter((p) => backend === undefined || p.backendName === backend)
      .map((p) => ({
        id: p.id,
        name: p.poolName,
        backendName: p.backendName,
        backendId: p.backendId,
        availabilityZone: p.availabilityZone,
        storageType: p.storageType,
        multiAttach: p.multiAttach,
        ...(p.replication ? { replication: p.replication } : {}),
        sharedTargets: p.sharedTargets,
        extras: p.extras,
        totalCapacityGib: round(p.totalGib),
        freeCapacityGib: round(p.freeGib),
        provisionedCapacityGib: round(p.provisionedGib),
        virtualFreeCapacityGib: round(virtualFreeGib(p)),
        maxOverSubscriptionRatio: p.maxOverSubscriptionRatio,
      }));
    return { outputs: { pools } };
  }
}

export class GetPlacement implements FunctionHandler {
  readonly token = "sds:index:getPlacement";
  constructor(private readonly ctx: ProviderContext) {}
  async invoke(args: Props) {
    const a = parseArgs(
      z.strictObject({
        sizeGib: z.number().int().min(1),
        profile: z.string().min(1).optional(),
        availabilityZone: z.string().min(1).optional(),
        multiAttach: z.boolean().optional(),
      }),
      args,
    );
    const c = await this.ctx.controller();
    // Same request the Volume create makes, so the answer is the pool `up` will use.
    const r = await c.explain({ sizeGib: a.sizeGib, profile: a.profile, availabilityZone: a.availabilityZone, multiAttach: a.multiAttach });
    const chosen = r.ok
      ? { poolId: r.pool.id, poolName: r.pool.poolName, backendName: r.pool.backendName, backendId: r.pool.backendId, sharedTargets: r.pool.sharedTargets, availabilityZone: r.pool.availabilityZone }
      : {};
    return { outputs: { ...chosen, rejections: r.rejections } };
  }
}

export class GetReplicationTargets implements FunctionHandler {
  readonly token = "sds:index:getReplicationTargets";
  constructor(private readonly ctx: ProviderContext) {}
  async invoke(args: Props) {
    const { backend } = parseArgs(z.strictObject({ backend: z.string().min(1) }), args);
    const c = await this.ctx.controller();
    const b = c.backendConfigs().find((x) => x.name === backend);
    if (!b) throw new UserError("NOT_FOUND", `backend: no backend named "${backend}"`, "backend");
    const targets = b.replicationTargets.map((t) => {
      const tb = c.backendConfigs().find((x) => x.name === t.backend);
      return { backend: t.backend, backendId: c.backendId(t.backend) ?? "", pools: (tb?.pools ?? []).map((p) => `${t.backend}/${p.name}`) };
    });
    return { outputs: { targets } };
  }
}

/** Path discovery as a function: what paths a volume (or every volume) has on a host, orphans included. */
export class GetVolumePaths implements FunctionHandler {
  readonly token = "sds:index:getVolumePaths";
  constructor(private readonly ctx: ProviderContext) {}
  async invoke(args: Props) {
    const { host, volumeId } = parseArgs(z.strictObject({ host: z.string().min(1), volumeId: z.string().min(1).optional() }), args);
    const paths = await this.ctx.hostPaths(host, volumeId);
    // An orphan path no connection record claims has no volume: reported with volumeId "".
    return { outputs: { paths: paths.map((p) => ({ volumeId: p.volumeId ?? "", path: p.path, protocol: p.protocol })) } };
  }
}
