/**
 * sds:index:Profile (Cinder's volume type): requirements on pool capabilities. Every change
 * updates in place and affects future placements only.
 */
import { z } from "zod";
import type { ProfileRow } from "../store/store";
import { type Props, UNKNOWN, containsUnknown, reveal } from "./values";
import type { ProviderContext } from "./context";
import { type PropertySpecs, assertValidInputs, checkProperties, diffProperties, settleName, withDefaults } from "./properties";
import type { CheckRequest, CheckResult, CreateRequest, DeleteRequest, DiffRequest, DiffResult, ReadRequest, ResourceHandler, UpdateRequest } from "./resource";
import { nameSchema } from "./volume";

export const profileProperties: PropertySpecs = {
  name: { schema: nameSchema },
  description: { schema: z.string().max(4096), default: "" },
  storageType: { schema: z.string().min(1), default: "block" },
  extraSpecs: { schema: z.record(z.string().min(1), z.string()), default: {} },
};

function spec(inputs: Props) {
  const i = withDefaults(profileProperties, inputs);
  return { name: i.name as string, description: i.description as string, storageType: i.storageType as string, extraSpecs: i.extraSpecs as Record<string, string> };
}

function outputs(row: ProfileRow): Props {
  return { name: row.name, description: row.description, storageType: row.storageType, extraSpecs: row.extraSpecs };
}

function inputsFromRow(row: ProfileRow, old: Props): Props {
  const inputs: Props = { name: row.name };
  if (row.description || old.description !== undefined) inputs.description = row.description;
  if (row.storageType !== "block" || old.storageType !== undefined) inputs.storageType = row.storageType;
  if (Object.keys(row.extraSpecs).length > 0 || old.extraSpecs !== undefined) inputs.extraSpecs = row.extraSpecs;
  return inputs;
}

export class ProfileResource implements ResourceHandler {
  readonly token = "sds:index:Profile";

  constructor(private readonly ctx: ProviderContext) {}

  async check(req: CheckRequest): Promise<CheckResult> {
    const failures = checkProperties(profileProperties, req.news);
    const inputs: Props = { ...req.news };
    const name = settleName(req, failures);
    if (name !== undefined) inputs.name = name;
    const specs = req.news.extraSpecs;
    if (specs && typeof specs === "object" && !containsUnknown(specs) && !failures.some((f) => f.property.startsWith("extraSpecs"))) {
      const c = await this.ctx.controller();
      for (const e of await c.checkExtraSpecs(reveal(specs) as Record<string, string>)) failures.push({ property: `extraSpecs["${e.key}"]`, reason: e.reason });
    }
    return { inputs, failures };
  }

  async diff(req: DiffRequest): Promise<DiffResult> {
    return diffProperties(profileProperties, req.oldInputs, req.news, req.ignoreChanges);
  }

  async create(req: CreateRequest): Promise<{ id: string; outs: Props }> {
    assertValidInputs(profileProperties, req.inputs, { settled: ["name"] });
    const c = await this.ctx.controller();
    if (req.preview) {
      if (!Object.values(req.inputs).some(containsUnknown)) c.planProfile(spec(req.inputs));
      return { id: "", outs: withDefaults(profileProperties, req.inputs) };
    }
    const row = await c.createProfile(req.urn, spec(req.inputs));
    return { id: row.id, outs: outputs(row) };
  }

  async read(req: ReadRequest): Promise<{ id: string; outs: Props; inputs: Props } | undefined> {
    const c = await this.ctx.controller();
    const row = await c.getProfile(req.id);
    if (!row) return undefined;
    return { id: row.id, outs: outputs(row), inputs: inputsFromRow(row, req.inputs) };
  }

  async update(req: UpdateRequest): Promise<Props> {
    assertValidInputs(profileProperties, req.news, { settled: ["name"] });
    const c = await this.ctx.controller();
    if (req.preview) {
      const outs = withDefaults(profileProperties, req.news);
      if (!Object.values(req.news).some(containsUnknown)) c.planProfile(spec(req.news));
      return Object.fromEntries(Object.entries(outs).map(([k, v]) => [k, v ?? UNKNOWN]));
    }
    return outputs(await c.updateProfile(req.id, spec(req.news)));
  }

  async delete(req: DeleteRequest): Promise<void> {
    const c = await this.ctx.controller();
    await c.deleteProfile(req.id);
  }
}
