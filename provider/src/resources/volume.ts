/**
 * sds:index:Volume. Growing `sizeGib` extends in place; shrinking is a check failure;
 * `profile`, `availabilityZone` and `sourceVolumeId` replace; the rest update in place.
 */
import { z } from "zod";
import { human, volumeCapacity } from "../controller/capacity";
import { UserError, type UserErrorCode } from "../errors";
import type { Controller } from "../controller/controller";
import type { VolumeRow } from "../store/store";
import { type Props, UNKNOWN, containsUnknown, isUnknown } from "./values";
import { type ProviderContext, reportProgress } from "./context";
import { type PropertySpecs, assertValidInputs, checkProperties, diffProperties, isAutoName, nameFromUrn, settleName, withDefaults } from "./properties";
import type { CheckRequest, CheckResult, CreateRequest, DeleteRequest, DiffRequest, DiffResult, ReadRequest, ResourceHandler, UpdateRequest } from "./resource";

export const nameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit");

export const volumeProperties: PropertySpecs = {
  name: { schema: nameSchema },
  sizeGib: { schema: z.number().int("must be a whole number of GiB").min(1, "must be at least 1"), required: true },
  profile: { schema: z.string().min(1), replaces: true },
  availabilityZone: { schema: z.string().min(1), replaces: true },
  multiAttach: { schema: z.boolean(), default: false },
  sourceVolumeId: { schema: z.string().min(1), replaces: true },
  description: { schema: z.string().max(4096), default: "" },
  metadata: { schema: z.record(z.string(), z.string()), default: {} },
};

/** The inputs as the controller wants them (call only when nothing is unknown). */
function spec(inputs: Props) {
  const i = withDefaults(volumeProperties, inputs);
  return {
    name: i.name as string,
    sizeGib: i.sizeGib as number,
    profile: (i.profile as string | undefined) ?? undefined,
    availabilityZone: (i.availabilityZone as string | undefined) ?? undefined,
    // Absent means "what the profile asks"; the controller settles it.
    multiAttach: typeof inputs.multiAttach === "boolean" ? inputs.multiAttach : undefined,
    sourceVolumeId: (i.sourceVolumeId as string | undefined) ?? undefined,
    description: i.description as string,
    metadata: i.metadata as Record<string, string>,
  };
}

/** Outputs: the inputs (defaults applied) plus what the controller decided. */
export function volumeOutputs(row: VolumeRow, inputs: Props): Props {
  return {
    ...withDefaults(volumeProperties, inputs),
    name: row.name,
    sizeGib: row.sizeGib,
    availabilityZone: row.availabilityZone,
    multiAttach: row.multiAttach,
    description: row.description,
    metadata: row.metadata,
    poolId: row.poolId,
    backendName: row.backendName,
    backendId: row.backendId,
    sharedTargets: row.sharedTargets,
    status: row.status,
    attachmentIds: [],
    replicationStatus: row.replicationStatus,
    createdAt: row.createdAt,
  };
}

/**
 * The inputs that describe an existing volume (import and refresh), in the shape check produces.
 * A value the controller derived (multiAttach from the profile) is not an input the user wrote:
 * returning it would show as drift (`+multiAttach`) and the next preview would propose removing it.
 */
function inputsFromRow(row: VolumeRow, old: Props, profileName: string | undefined, derivedMultiAttach: boolean): Props {
  const inputs: Props = { name: row.name, sizeGib: row.sizeGib };
  // Keep how the user referred to the profile (id or name) when it still points at the same profile.
  if (row.profileId) inputs.profile = typeof old.profile === "string" ? old.profile : (profileName ?? row.profileId);
  if (typeof old.availabilityZone === "string") inputs.availabilityZone = row.availabilityZone;
  if (old.multiAttach !== undefined || row.multiAttach !== derivedMultiAttach) inputs.multiAttach = row.multiAttach;
  if (row.sourceVolumeId) inputs.sourceVolumeId = row.sourceVolumeId;
  if (row.description || old.description !== undefined) inputs.description = row.description;
  if (Object.keys(row.metadata).length > 0 || old.metadata !== undefined) inputs.metadata = row.metadata;
  return inputs;
}

export class VolumeResource implements ResourceHandler {
  readonly token = "sds:index:Volume";

  constructor(private readonly ctx: ProviderContext) {}

  async check(req: CheckRequest): Promise<CheckResult> {
    const failures = checkProperties(volumeProperties, req.news);
    const inputs: Props = { ...req.news };
    const name = settleName(req, failures);
    if (name !== undefined) inputs.name = name;
    const size = req.news.sizeGib;
    const oldSize = req.olds.sizeGib;
    if (typeof size === "number" && typeof oldSize === "number" && size < oldSize) {
      failures.push({ property: "sizeGib", reason: `volumes cannot shrink (from ${oldSize} to ${size} GiB); grow it, or replace it with a new volume` });
    }
    const profile = req.news.profile;
    if (typeof profile === "string" && !isUnknown(profile) && !failures.some((f) => f.property === "profile")) {
      const c = await this.ctx.controller();
      if (!(await c.resolveProfile(profile))) {
        failures.push({
          property: "profile",
          reason: `no profile with id or name "${profile}" (if it is declared in this program, pass profile.id or profile.name so Pulumi creates it first)`,
        });
      } else if (typeof req.news.multiAttach === "boolean") {
        try {
          await c.effectiveMultiAttach({ profile, multiAttach: req.news.multiAttach });
        } catch (err) {
          if (!(err instanceof UserError)) throw err;
          failures.push({ property: err.property ?? "multiAttach", reason: err.message });
        }
      }
    }
    return { inputs, failures };
  }

  async diff(req: DiffRequest): Promise<DiffResult> {
    const d = diffProperties(volumeProperties, req.oldInputs, req.news, req.ignoreChanges);
    const drop = (key: string) => {
      delete d.detailed[key];
      d.replaces = d.replaces.filter((k) => k !== key);
    };
    // The zone asks for a place: a volume already in that zone (or a request for any zone) needs no move.
    const zone = req.news.availabilityZone;
    if (d.detailed.availabilityZone && !containsUnknown(zone) && (zone === undefined || zone === req.oldOutputs.availabilityZone)) drop("availabilityZone");
    // A profile may be named by id or by name: the same profile either way is no change.
    const oldProfile = req.oldInputs.profile;
    const newProfile = req.news.profile;
    if (d.detailed.profile && typeof oldProfile === "string" && typeof newProfile === "string" && !isUnknown(newProfile)) {
      const c = await this.ctx.controller();
      const a = await c.resolveProfile(oldProfile);
      const b = await c.resolveProfile(newProfile);
      if (a?.id !== undefined && a.id === b?.id) drop("profile");
    }
    d.changed = Object.keys(d.detailed).length > 0;
    // A user-chosen name cannot exist twice: the old volume must go before its replacement comes.
    if (d.replaces.length > 0) d.deleteBeforeReplace = !isAutoName(nameFromUrn(req.urn), req.news.name);
    return d;
  }

  async create(req: CreateRequest): Promise<{ id: string; outs: Props }> {
    assertValidInputs(volumeProperties, req.inputs, { settled: ["name"] });
    const c = await this.ctx.controller();
    if (req.preview) {
      const outs: Props = { ...withDefaults(volumeProperties, req.inputs) };
      for (const k of ["status", "attachmentIds", "replicationStatus", "createdAt"]) outs[k] = UNKNOWN;
      const placeable = !["sizeGib", "profile", "availabilityZone", "multiAttach"].some((k) => containsUnknown(req.inputs[k]));
      if (placeable) {
        const s = spec(req.inputs);
        // The engine prints a preview's failure without its resource: the message names the volume.
        const p = await c.plan(s, req.urn).catch((err: unknown) => {
          throw err instanceof UserError ? new UserError(err.code as UserErrorCode, `volume "${nameFromUrn(req.urn)}": ${err.message}`, err.property, { cause: err }) : err;
        });
        Object.assign(outs, {
          poolId: p.pool.id,
          backendName: p.pool.backendName,
          backendId: p.pool.backendId,
          sharedTargets: p.pool.sharedTargets,
          availabilityZone: p.pool.availabilityZone,
          multiAttach: await c.effectiveMultiAttach(s),
        });
        const others = p.rejectedCount > 0 ? `; ${p.rejectedCount} other pool(s) rejected (see getPlacement)` : "";
        // The engine prints these lines unlabelled and out of order in `preview --diff`: each names its volume.
        this.ctx.log("info", `placement of volume "${nameFromUrn(req.urn)}": ${p.pool.id} (backend ${p.pool.backendName}, backendId ${p.pool.backendId}, sharedTargets ${p.pool.sharedTargets})${others}`, req.urn);
      } else {
        Object.assign(outs, { poolId: UNKNOWN, backendName: UNKNOWN, backendId: UNKNOWN, sharedTargets: UNKNOWN, availabilityZone: req.inputs.availabilityZone ?? UNKNOWN });
      }
      return { id: "", outs };
    }
    const s = spec(req.inputs);
    const progress = s.sourceVolumeId !== undefined ? reportProgress(this.ctx, req.urn, `clone of volume "${nameFromUrn(req.urn)}"`) : undefined;
    // No log line here: the outputs say where the volume went, and a line per create was one
    // engine round trip each (issue 14).
    const row = await c.createVolume(req.urn, s, progress);
    return { id: row.id, outs: volumeOutputs(row, req.inputs) };
  }

  async read(req: ReadRequest): Promise<{ id: string; outs: Props; inputs: Props } | undefined> {
    const c = await this.ctx.controller();
    const d = await c.describeVolume(req.id);
    if (!d) return undefined;
    await this.reportCapacity(c.catalog, d.row, req.urn);
    const inputs = inputsFromRow(d.row, req.inputs, d.profileName, d.derivedMultiAttach);
    return { id: d.row.id, outs: volumeOutputs(d.row, inputs), inputs };
  }

  /**
   * Refresh reports the pool's usage (info) and warns when it is near full, provisioned past its
   * free space, or full under this volume (controller/capacity.ts). A pool that cannot be
   * measured is a warning too, never a failed refresh: the volume's own read succeeded.
   */
  private async reportCapacity(catalog: Controller["catalog"], row: VolumeRow, urn: string): Promise<void> {
    try {
      const r = await volumeCapacity(catalog, row);
      const u = r.usage;
      this.ctx.log("info", `pool ${u.poolId}: ${human(u.freeBytes)} free of ${human(u.fsBytes)}; volume ${row.name}: ${r.volume ? `${human(r.volume.allocatedBytes)} of ${human(r.volume.sizeBytes)} allocated` : "allocation unknown"}`, urn);
      for (const w of r.warnings) this.ctx.log("warning", `volume ${row.name}: ${w}`, urn);
    } catch (err) {
      this.ctx.log("warning", `volume ${row.name}: the capacity of pool ${row.poolId} could not be measured: ${(err as Error).message.split("\n")[0]}`, urn);
    }
  }

  /** Input mapping, then the volume update use case (controller/update-volume.ts). */
  async update(req: UpdateRequest): Promise<Props> {
    assertValidInputs(volumeProperties, req.news, { settled: ["name"] });
    if (req.preview) {
      // A growth its pool cannot hold fails the preview, as it would fail the up.
      const row = typeof req.news.sizeGib === "number" ? await (await this.ctx.controller()).getVolume(req.id) : undefined;
      if (row) await (await this.ctx.controller()).assertGrowthFits(row, req.news.sizeGib as number);
      if (req.news.multiAttach === true) this.ctx.previewedMultiAttach.add(req.id);
      return { ...req.oldOutputs, ...withDefaults(volumeProperties, req.news), status: UNKNOWN };
    }
    const s = spec(req.news);
    const previousSizeGib = Number(req.oldInputs.sizeGib ?? s.sizeGib);
    const row = await (await this.ctx.volumeUpdates()).update(req.id, s, { previousSizeGib, log: (severity, m) => this.ctx.log(severity, m, req.urn) });
    return volumeOutputs(row, req.news);
  }

  async delete(req: DeleteRequest): Promise<void> {
    const c = await this.ctx.controller();
    await c.deleteVolume(req.id);
  }
}
