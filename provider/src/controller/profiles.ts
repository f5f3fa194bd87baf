/**
 * Profiles (Cinder's volume types): what a volume needs of a pool, as extra specs. Creates are
 * idempotent per owner, names unique, a profile in use cannot go. A preview plans the profiles it
 * will create, so volumes naming them can be checked and placed in the same preview.
 */
import { randomUUID } from "node:crypto";
import { UserError } from "../errors";
import { type Requirement, evaluate, parseExtraSpecs, unknownKeyErrors } from "../scheduler/extra-specs";
import type { PoolState } from "../scheduler/types";
import type { ProfileRow, Store } from "../store/store";
import type { PoolCatalog } from "./pool-catalog";

export interface ProfileSpec {
  name: string;
  description: string;
  storageType: string;
  extraSpecs: Record<string, string>;
}

export class Profiles {
  /** Profiles a preview in this process has planned (they will exist when the update runs). */
  private readonly plannedProfiles = new Map<string, ProfileSpec>();

  constructor(
    private readonly store: Store,
    private readonly catalog: PoolCatalog,
    private readonly now: () => Date,
  ) {}

  /** Find a profile by id or name; a profile planned by a preview in this process counts. */
  async resolveProfile(idOrName: string): Promise<(ProfileSpec & { id?: string }) | undefined> {
    const row = (await this.store.getProfile(idOrName)) ?? (await this.store.getProfileByName(idOrName));
    if (row) return row;
    return this.plannedProfiles.get(idOrName);
  }

  /** Remember a profile a preview will create, so volumes referring to it can be checked and placed. */
  planProfile(spec: ProfileSpec): void {
    this.plannedProfiles.set(spec.name, spec);
  }

  /** Create a profile; a retried create by the same owner returns the existing row. */
  createProfile(owner: string, spec: ProfileSpec): Promise<ProfileRow> {
    return this.store.transaction(async (tx) => {
      const existing = await tx.getProfileByName(spec.name);
      if (existing) {
        if (existing.owner === owner) return tx.updateProfile(existing.id, { ...spec, updatedAt: this.now().toISOString() });
        throw new UserError("CONFLICT", `name: a profile named "${spec.name}" already exists (id ${existing.id}, created by ${existing.owner})`, "name");
      }
      const at = this.now().toISOString();
      const row: ProfileRow = { id: randomUUID(), owner, ...spec, createdAt: at, updatedAt: at };
      await tx.insertProfile(row);
      return row;
    });
  }

  getProfile(id: string): Promise<ProfileRow | undefined> {
    return this.store.getProfile(id);
  }

  updateProfile(id: string, spec: ProfileSpec): Promise<ProfileRow> {
    return this.store.transaction(async (tx) => {
      if (!(await tx.getProfile(id))) throw new UserError("NOT_FOUND", `profile ${id} no longer exists; run pulumi refresh`);
      const clash = await tx.getProfileByName(spec.name);
      if (clash && clash.id !== id) throw new UserError("CONFLICT", `name: a profile named "${spec.name}" already exists (id ${clash.id})`, "name");
      return tx.updateProfile(id, { ...spec, updatedAt: this.now().toISOString() });
    });
  }

  /**
   * Delete a profile; gone is success; a profile still used by volumes is refused, naming them.
   * A volume being deleted at the same moment (a destroy whose dependencies were not recorded,
   * e.g. right after an import) is waited for, up to `waitMs`.
   */
  async deleteProfile(id: string, waitMs = 15_000): Promise<void> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const users = await this.store.transaction(async (tx) => {
        const users = (await tx.listVolumes()).filter((v) => v.profileId === id);
        if (users.length === 0) await tx.deleteProfile(id);
        return users;
      });
      if (users.length === 0) return;
      if (Date.now() >= deadline) {
        throw new UserError("CONFLICT", `profile ${id} is used by ${users.length} volume(s): ${users.slice(0, 5).map((v) => `${v.name} (${v.id})`).join(", ")}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /**
   * Check a profile's extra specs: malformed values and keys no pool could ever have are errors
   * (by key), so a typo fails at check instead of silently matching nothing.
   */
  async checkExtraSpecs(extraSpecs: Record<string, string>): Promise<Array<{ key: string; reason: string }>> {
    const { requirements, errors } = parseExtraSpecs(extraSpecs);
    return [...errors, ...unknownKeyErrors(requirements, await this.catalog.pools())];
  }

  /** The profile's parsed requirements and what it says of multiAttach (true, false, or nothing). */
  async requirements(ref: string | undefined): Promise<{ requirements: Requirement[]; storageType?: string; multiAttach?: boolean }> {
    if (ref === undefined) return { requirements: [] };
    const profile = await this.resolveProfile(ref);
    if (!profile) throw unknownProfile(ref);
    const { requirements, errors } = parseExtraSpecs(profile.extraSpecs);
    if (errors.length > 0) throw new UserError("INVALID_INPUT", `profile: profile "${profile.name}" has invalid extra specs: ${errors.map((e) => `${e.key}: ${e.reason}`).join("; ")}`, "profile");
    return { requirements, storageType: profile.storageType, multiAttach: multiAttachDemand(requirements) };
  }

  /** The multiAttach a volume gets: its own, else its profile's demand, else false. A contradiction is an error. */
  async effectiveMultiAttach(spec: { profile?: string; multiAttach?: boolean }): Promise<boolean> {
    const demand = (await this.requirements(spec.profile)).multiAttach;
    if (spec.multiAttach !== undefined && demand !== undefined && spec.multiAttach !== demand) {
      throw new UserError(
        "INVALID_INPUT",
        `multiAttach is ${spec.multiAttach} but profile "${spec.profile}" asks capabilities:multiAttach ${demand}; drop one of them`,
        "multiAttach",
      );
    }
    return spec.multiAttach ?? demand ?? false;
  }
}

/** What requirements say of multiAttach: true or false when they demand it, undefined when they do not care. */
export function multiAttachDemand(requirements: readonly Requirement[]): boolean | undefined {
  const rs = requirements.filter((r) => r.lookup.kind !== "extra" && r.lookup.name === "multiAttach");
  if (rs.length === 0) return undefined;
  const probe = (v: boolean) => rs.every((r) => evaluate({ multiAttach: v } as PoolState, r) === undefined);
  const t = probe(true);
  const f = probe(false);
  return t && !f ? true : f && !t ? false : undefined;
}

export function unknownProfile(ref: string): UserError {
  return new UserError(
    "NOT_FOUND",
    `profile: no profile with id or name "${ref}" (if the profile is declared in this program, pass profile.id or profile.name so Pulumi creates it first)`,
    "profile",
  );
}
