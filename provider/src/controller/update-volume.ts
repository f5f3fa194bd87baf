/**
 * The update of a volume, as one use case: a grow reaches everything the volume is part of, in
 * the order that keeps data safe, then what changes in place (name, description, metadata,
 * multiAttach) is written.
 *
 *   grow:  the replica first when failed over (the secondary is the active side; a primary that
 *          cannot be reached takes the new size in the state and gets it at failback) → the
 *          volume's bytes (driver) → the replica after, when not failed over → the targets and
 *          the devices of every attachment on every host (the replica's too when it is in use).
 *
 * Every step is idempotent, so a retried update (an earlier attempt died after the driver grew
 * the file) redoes what is missing: whether the volume grew is judged from the size the program
 * had before (`previousSizeGib`), not from the row.
 */
import type { VolumeRow } from "../store/store";
import type { Attachments } from "./attachments";
import type { Controller, VolumeSpec } from "./controller";
import type { Replication } from "./replication";

export type UpdateLog = (severity: "info" | "warning", message: string) => void;

export interface VolumeUpdatesParts {
  controller: Controller;
  /** Opened only when the size changes (replication may sync what is due when it opens). */
  replication: () => Promise<Pick<Replication, "pairOf" | "volumeGrew" | "growFailedOverPrimary">>;
  attachments: () => Promise<Pick<Attachments, "volumeGrew">>;
}

export class VolumeUpdates {
  constructor(private readonly parts: VolumeUpdatesParts) {}

  async update(id: string, spec: Pick<VolumeSpec, "name" | "sizeGib" | "profile" | "multiAttach" | "description" | "metadata">, o: { previousSizeGib: number; log: UpdateLog }): Promise<VolumeRow> {
    const c = this.parts.controller;
    const row = await c.getVolume(id);
    if (!row) throw new Error(`volume ${id} no longer exists; run pulumi refresh`);
    const grew = spec.sizeGib !== o.previousSizeGib;
    if (grew || spec.sizeGib !== row.sizeGib) await this.grow(row, spec.sizeGib, grew, o.log);
    const multiAttach = await c.effectiveMultiAttach({ profile: spec.profile, multiAttach: spec.multiAttach });
    return c.updateVolume(id, { name: spec.name, description: spec.description, metadata: spec.metadata, multiAttach });
  }

  private async grow(row: VolumeRow, sizeGib: number, grew: boolean, log: UpdateLog): Promise<VolumeRow> {
    const c = this.parts.controller;
    const r = await this.parts.replication();
    const pair = await r.pairOf(row.id);
    const failedOver = pair?.activeSide === "secondary";
    let secondary = grew && failedOver ? await r.volumeGrew(row.id, sizeGib) : undefined;
    if (sizeGib !== row.sizeGib) {
      log("info", `extending volume ${row.name} from ${row.sizeGib} to ${sizeGib} GiB`);
      row = failedOver ? await r.growFailedOverPrimary(row.id, sizeGib, (m) => log("warning", m)) : await c.extendVolume(row.id, sizeGib);
    }
    if (grew && pair?.secondaryVolumeId && !failedOver) secondary = await r.volumeGrew(row.id, sizeGib);
    if (secondary?.status === "in-use") await (await this.parts.attachments()).volumeGrew(secondary.id);
    if (grew && row.status === "in-use") {
      const grown = await (await this.parts.attachments()).volumeGrew(row.id);
      for (const d of grown.devices) log("info", `volume ${row.name}: ${d.path} on ${d.host} now shows ${d.sizeBytes} bytes`);
      for (const p of grown.pending) log("warning", `volume ${row.name} grew, but ${p.path} on ${p.host} still shows the old size: ${p.reason}`);
    }
    return row;
  }
}
