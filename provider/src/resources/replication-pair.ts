/**
 * sds:index:ReplicationPair: a primary volume replicated asynchronously to a secondary
 * volume on one of its backend's replication targets. `enabled` and `activeSide` change in place
 * (pause/resume, failover/failback); the volume and the target replace the pair.
 */
import { z } from "zod";
import type { PairRow } from "../store/store";
import { type Props, UNKNOWN, containsUnknown, reveal } from "./values";
import type { ProgressReporter } from "../domain/progress";
import { type ProviderContext, reportProgress } from "./context";
import { type PropertySpecs, assertValidInputs, checkProperties, diffProperties, nameFromUrn, withDefaults } from "./properties";
import type { CheckRequest, CheckResult, CreateRequest, DeleteRequest, DiffRequest, DiffResult, ReadRequest, ResourceHandler, UpdateRequest } from "./resource";

export const pairProperties: PropertySpecs = {
  primaryVolumeId: { schema: z.string().min(1), required: true, replaces: true },
  targetBackend: { schema: z.string().min(1), required: true, replaces: true },
  targetPool: { schema: z.string().min(1), replaces: true },
  mode: { schema: z.literal("async", { message: 'only "async" replication exists (async first)' }), default: "async" },
  rpoSeconds: { schema: z.number().int().min(1).max(86_400), default: 60 },
  enabled: { schema: z.boolean(), default: true },
  activeSide: { schema: z.enum(["primary", "secondary"]), default: "primary" },
};

function outputs(row: PairRow, inputs: Props, lag: number | undefined): Props {
  const out: Props = {
    ...withDefaults(pairProperties, inputs),
    rpoSeconds: row.rpoSeconds,
    enabled: row.enabled,
    activeSide: row.activeSide,
    secondaryVolumeId: row.secondaryVolumeId ?? "",
    replicationStatus: row.status,
    bytesTransferred: row.bytesTransferred,
  };
  if (inputs.targetPool === undefined) delete out.targetPool;
  if (row.lastSyncAt) out.lastSyncAt = row.lastSyncAt;
  if (lag !== undefined) out.lagSeconds = lag;
  return out;
}

export class ReplicationPairResource implements ResourceHandler {
  readonly token = "sds:index:ReplicationPair";

  constructor(private readonly ctx: ProviderContext) {}

  async check(req: CheckRequest): Promise<CheckResult> {
    const failures = checkProperties(pairProperties, req.news);
    const n = req.news;
    const known = ["primaryVolumeId", "targetBackend", "targetPool"].every((k) => !containsUnknown(n[k]));
    if (failures.length === 0 && known && typeof n.primaryVolumeId === "string") {
      const r = await this.ctx.replication();
      const c = await this.ctx.controller();
      // A volume created in this same update does not exist yet at check time: judged at create.
      if (await c.getVolume(n.primaryVolumeId)) {
        for (const [property, reason] of await r.validate({ primaryVolumeId: n.primaryVolumeId, targetBackend: String(reveal(n.targetBackend)), targetPool: n.targetPool === undefined ? undefined : String(reveal(n.targetPool)) })) {
          failures.push({ property, reason });
        }
      }
    }
    if (Object.keys(req.olds).length === 0 && n.activeSide === "secondary") {
      failures.push({ property: "activeSide", reason: "a new pair starts with activeSide primary; fail over by changing it once the pair exists" });
    }
    return { inputs: { ...req.news }, failures };
  }

  async diff(req: DiffRequest): Promise<DiffResult> {
    return diffProperties(pairProperties, req.oldInputs, req.news, req.ignoreChanges);
  }

  async create(req: CreateRequest): Promise<{ id: string; outs: Props }> {
    assertValidInputs(pairProperties, req.inputs);
    const i = withDefaults(pairProperties, req.inputs);
    if (req.preview) {
      return { id: "", outs: { ...i, secondaryVolumeId: UNKNOWN, replicationStatus: UNKNOWN, bytesTransferred: UNKNOWN, lastSyncAt: UNKNOWN, lagSeconds: UNKNOWN } };
    }
    const r = await this.ctx.replication();
    this.ctx.log("info", `creating the secondary of volume ${i.primaryVolumeId} on backend ${i.targetBackend} and syncing it`, req.urn);
    const row = await r.create(req.urn, {
      primaryVolumeId: i.primaryVolumeId as string,
      targetBackend: i.targetBackend as string,
      targetPool: i.targetPool as string | undefined,
      rpoSeconds: i.rpoSeconds as number,
      enabled: i.enabled as boolean,
      activeSide: i.activeSide as "primary" | "secondary",
    }, this.progress(req.urn));
    return { id: row.id, outs: outputs(row, req.inputs, r.lag(row)) };
  }

  async read(req: ReadRequest): Promise<{ id: string; outs: Props; inputs: Props } | undefined> {
    const r = await this.ctx.replication();
    // Pairs on storage nodes sync on the node's timer: its last sync is read from there.
    const row = await r.refresh(req.id);
    if (!row) return undefined;
    const inputs: Props = { primaryVolumeId: row.primaryVolumeId, targetBackend: row.targetBackend };
    if (row.targetPool !== null) inputs.targetPool = row.targetPool;
    for (const [k, v, d] of [["rpoSeconds", row.rpoSeconds, 60], ["enabled", row.enabled, true], ["activeSide", row.activeSide, "primary"], ["mode", "async", "async"]] as const) {
      if (v !== d || req.inputs[k] !== undefined) inputs[k] = v;
    }
    return { id: row.id, outs: outputs(row, inputs, r.lag(row)), inputs };
  }

  async update(req: UpdateRequest): Promise<Props> {
    assertValidInputs(pairProperties, req.news);
    const n = withDefaults(pairProperties, req.news);
    if (req.preview) {
      const changing = n.activeSide !== req.oldOutputs.activeSide || n.enabled !== req.oldOutputs.enabled;
      return { ...req.oldOutputs, ...n, ...(changing ? { replicationStatus: UNKNOWN, lastSyncAt: UNKNOWN, lagSeconds: UNKNOWN, bytesTransferred: UNKNOWN } : {}) };
    }
    const r = await this.ctx.replication();
    if (n.activeSide !== req.oldOutputs.activeSide) this.ctx.log("info", n.activeSide === "secondary" ? "failing over to the secondary" : "failing back: resyncing the secondary to the primary", req.urn);
    const row = await r.update(req.id, { rpoSeconds: n.rpoSeconds as number, enabled: n.enabled as boolean, activeSide: n.activeSide as "primary" | "secondary" }, (m) => this.ctx.log("warning", m, req.urn), this.progress(req.urn));
    return outputs(row, req.news, r.lag(row));
  }

  /** Each sync of this pair (initial sync, failback resync, …) reports its progress under its own name. */
  private progress(urn: string): ProgressReporter {
    return (phase) => reportProgress(this.ctx, urn, `${phase} of pair "${nameFromUrn(urn)}"`);
  }

  async delete(req: DeleteRequest): Promise<void> {
    const r = await this.ctx.replication();
    await r.delete(req.id, (m) => this.ctx.log("warning", m, req.urn));
  }
}
