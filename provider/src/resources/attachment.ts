/**
 * sds:index:Attachment: a volume exported to a host (exports made per connector, on shared or
 * per-volume targets, multi-attach). Every input change replaces the attachment; when the volume
 * is not multiAttach the old attachment goes first (the new one would be refused while it exists).
 * Refresh probes the export and the device: a `broken` attachment (target daemon crashed, a
 * helper died) shows as such with its reason, and the next `up` repairs it in place.
 */
import { z } from "zod";
import type { ConnectionInfo } from "../domain/connection-info";
import type { AttachmentRow, VolumeRow } from "../store/store";
import { UserError } from "../errors";
import { type Props, UNKNOWN, isUnknown, reveal, secret } from "./values";
import type { ProviderContext } from "./context";
import { type PropertySpecs, assertValidInputs, checkProperties, diffProperties, nameFromUrn, withDefaults } from "./properties";
import type { CheckRequest, CheckResult, CreateRequest, DeleteRequest, DiffRequest, DiffResult, ReadRequest, ResourceHandler, UpdateRequest } from "./resource";

const connectorSchema = z.strictObject({
  initiator: z.string().regex(/^(iqn\.\d{4}-\d{2}\.[^\s:]+(:\S+)?|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$/, "must be an iSCSI name (iqn.YYYY-MM.reversed.domain[:id], eui.…, naa.…)").optional(),
  nqn: z.string().min(1).optional(),
  ip: z.string().min(1).optional(),
  hostname: z.string().min(1).optional(),
  multipath: z.boolean().optional(),
});

export const attachmentProperties: PropertySpecs = {
  volumeId: { schema: z.string().min(1), required: true, replaces: true },
  host: { schema: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/, "must be a host name"), default: "localhost", replaces: true },
  mode: { schema: z.enum(["rw", "ro"]), default: "rw", replaces: true },
  connector: { schema: connectorSchema, replaces: true },
  connect: { schema: z.boolean(), default: true, replaces: true },
};

/** connectionInfo as state holds it: the CHAP password wrapped as a secret. */
function connectionInfoOutput(info: ConnectionInfo): Props {
  const out: Props = { ...info };
  if (info.authPassword !== undefined) out.authPassword = secret(info.authPassword);
  return out;
}

export class AttachmentResource implements ResourceHandler {
  readonly token = "sds:index:Attachment";

  /** Volume id → the URN of the attachment a preview creates on it (this process previews one program). */
  private readonly previewed = new Map<string, string>();

  constructor(private readonly ctx: ProviderContext) {}

  async check(req: CheckRequest): Promise<CheckResult> {
    const failures = checkProperties(attachmentProperties, req.news);
    const host = req.news.host;
    if (typeof host === "string" && host !== "localhost" && !isUnknown(host) && !this.ctx.hostNames().includes(host)) {
      const known = ["localhost", ...this.ctx.hostNames()].join(", ");
      if (req.news.connect !== false) {
        failures.push({ property: "host", reason: `no host named "${host}" in the provider's hosts (known: ${known}): add its sds-agent to hosts, or set connect: false to export only (and give the connector)` });
      } else if (req.news.connector === undefined) {
        failures.push({ property: "connector", reason: `host "${host}" has no agent in the provider's hosts to ask: give its connector (at least the initiator for iSCSI)` });
      }
    }
    return { inputs: { ...req.news }, failures };
  }

  async diff(req: DiffRequest): Promise<DiffResult> {
    const d = diffProperties(attachmentProperties, req.oldInputs, req.news, req.ignoreChanges);
    // Refresh found it broken, or it is broken now (its target daemon restarted since, a helper
    // died): an update puts it back, on the same export and device path. Looking changes nothing.
    if (d.replaces.length === 0 && (req.oldOutputs.status === "broken" || (await this.brokenNow(req.id)))) {
      d.detailed.status = "update";
      d.changed = true;
    }
    if (d.replaces.length > 0) {
      // The replacement would be refused while the old attachment exists on a volume that is not multiAttach.
      const volumeId = isUnknown(req.news.volumeId) ? req.oldInputs.volumeId : req.news.volumeId;
      const c = await this.ctx.controller();
      const v = typeof volumeId === "string" ? await c.getVolume(volumeId) : undefined;
      d.deleteBeforeReplace = !v?.multiAttach;
    }
    return d;
  }

  /**
   * A preview fails where the up would: a volume that is not multiAttach refuses a second
   * attachment, whether the state holds the first one or this same preview creates it. The
   * resource's own row (a replacement of this attachment: the old one goes first) is not a second.
   * A replicated volume is left to `up` (a failover in the same update moves the attachment to
   * the secondary, which a preview cannot tell), and so is one the same preview makes multiAttach.
   */
  private async foreseeSecondAttachment(v: VolumeRow, urn: string): Promise<void> {
    if (this.ctx.previewedMultiAttach.has(v.id) || (await (await this.ctx.replication()).pairOf(v.id))) return;
    const held = (await (await this.ctx.controller()).attachmentsOf(v.id)).find((a) => a.owner !== urn);
    const refused = (by: string) => new UserError("CONFLICT", `attachment "${nameFromUrn(urn)}" (volumeId): volume ${v.name} (${v.id}) is not multiAttach and ${by}; \`up\` would refuse this attachment: detach the other first or use a multiAttach volume`, "volumeId");
    if (held) throw refused(`is already attached: attachment ${held.id} ("${nameFromUrn(held.owner)}") to host ${held.host} (${held.mode})`);
    const first = this.previewed.get(v.id);
    if (first !== undefined && first !== urn) throw refused(`attachment "${nameFromUrn(first)}" of this same preview attaches it too`);
    this.previewed.set(v.id, urn);
  }

  /** Whether a probe finds the attachment broken now (bounded; a host that cannot be asked is not a finding). */
  private async brokenNow(id: string): Promise<boolean> {
    if (!id) return false;
    try {
      return (await (await this.ctx.attachments({ reconcile: false })).health(id, { fence: false })).status === "broken";
    } catch (err) {
      // A host or daemon that cannot answer is not a finding; the state itself failing (damaged,
      // unreachable, another key) is the run's error, never a silent "no change".
      if (err instanceof UserError) throw err;
      return false;
    }
  }

  private outputs(row: AttachmentRow, info: ConnectionInfo, inputs: Props, volume: { sharedTargets: boolean; backendId: string } | undefined, health?: { status: string; reason?: string }): Props {
    return {
      ...withDefaults(attachmentProperties, inputs),
      ...(inputs.connector !== undefined ? { connector: inputs.connector } : {}),
      status: health?.status ?? row.status,
      statusReason: health?.reason ?? "",
      connectionInfo: connectionInfoOutput(info),
      devicePath: row.devicePath ?? "",
      sharedTargets: volume?.sharedTargets ?? false,
      backendId: volume?.backendId ?? "",
    };
  }

  async create(req: CreateRequest): Promise<{ id: string; outs: Props }> {
    assertValidInputs(attachmentProperties, req.inputs);
    const c = await this.ctx.controller();
    const i = withDefaults(attachmentProperties, req.inputs);
    if (req.preview) {
      const v = typeof i.volumeId === "string" && !isUnknown(i.volumeId) ? await c.getVolume(i.volumeId) : undefined;
      if (v && !v.multiAttach) await this.foreseeSecondAttachment(v, req.urn);
      return {
        id: "",
        outs: { ...i, status: UNKNOWN, statusReason: UNKNOWN, connectionInfo: UNKNOWN, devicePath: UNKNOWN, sharedTargets: v?.sharedTargets ?? UNKNOWN, backendId: v?.backendId ?? UNKNOWN },
      };
    }
    const a = await this.ctx.attachments();
    const connector = req.inputs.connector !== undefined ? (reveal(req.inputs.connector) as AttachmentRow["connector"]) : undefined;
    const { row, connectionInfo } = await a.attach(req.urn, { volumeId: i.volumeId as string, host: i.host as string, mode: i.mode as "rw" | "ro", connector, connect: i.connect as boolean });
    return { id: row.id, outs: this.outputs(row, connectionInfo, req.inputs, await c.getVolume(row.volumeId)) };
  }

  async read(req: ReadRequest): Promise<{ id: string; outs: Props; inputs: Props } | undefined> {
    const d = await (await this.ctx.attachments()).describe(req.id);
    if (!d) return undefined;
    const { row, volume, health } = d;
    // A volume failed over to its replica is served by the replica's volume: the input stays the volume's id.
    const inputs: Props = { volumeId: typeof req.inputs.volumeId === "string" ? req.inputs.volumeId : row.volumeId };
    if (row.host !== "localhost" || req.inputs.host !== undefined) inputs.host = row.host;
    if (row.mode !== "rw" || req.inputs.mode !== undefined) inputs.mode = row.mode;
    if (req.inputs.connector !== undefined) inputs.connector = req.inputs.connector;
    if (req.inputs.connect !== undefined) inputs.connect = req.inputs.connect;
    if (health.status === "broken") this.ctx.log("warning", `attachment ${row.id} is broken: ${health.reason}; the next pulumi up repairs it`, req.urn);
    else if (health.reason) this.ctx.log("warning", `attachment ${row.id} (${row.devicePath ?? "not connected"} on ${row.host}): ${health.reason}`, req.urn);
    return { id: row.id, outs: this.outputs(row, d.connectionInfo, inputs, volume, health), inputs };
  }

  /**
   * Every input replaces, so an update is only ever the repair of a `broken` attachment (see
   * diff): the export is made again and the device reconnected on its host, on the same path.
   */
  async update(req: UpdateRequest): Promise<Props> {
    assertValidInputs(attachmentProperties, req.news);
    if (req.preview) return { ...req.oldOutputs, status: UNKNOWN, statusReason: UNKNOWN };
    const c = await this.ctx.controller();
    const a = await this.ctx.attachments();
    this.ctx.log("info", `repairing attachment ${req.id}: ${String(req.oldOutputs.statusReason ?? "")}`, req.urn);
    const r = await a.repair(req.id);
    if (r.moved) this.ctx.log("warning", `attachment ${req.id}: the volume could not come back on ${r.moved.from} (something still holds that device); it is now ${r.moved.to}`, req.urn);
    return this.outputs(r.row, r.connectionInfo, req.oldInputs, await c.getVolume(r.row.volumeId));
  }

  /**
   * Operators force a detach that the orphan check refuses (a device something still holds):
   * `SDS_FORCE_DETACH=<attachment id>[,<id>…]` (or `all`) in the environment of `pulumi destroy`/`up`.
   * What the host could not release is reported as a warning instead of failing.
   */
  async delete(req: DeleteRequest): Promise<void> {
    const a = await this.ctx.attachments();
    const wanted = (process.env.SDS_FORCE_DETACH ?? "").split(",").map((x) => x.trim());
    const force = wanted.includes("all") || wanted.includes(req.id);
    if (force) this.ctx.log("warning", `attachment ${req.id}: detaching with force (SDS_FORCE_DETACH); paths left on the host are reported, not refused`, req.urn);
    await a.detach(req.id, { force, warn: (m) => this.ctx.log("warning", m, req.urn) });
  }
}
