// A volume placed by a replicated profile, its ReplicationPair to backend "dr", and attachments
// switched on by config: "writer" before a failover, "reader" after it.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const profile = new sds.Profile("replicated", { extraSpecs: { "capabilities:replication": "<is> true" } });
const data = new sds.Volume("data", { sizeGib: config.getNumber("sizeGib") ?? 1, profile: profile.name });
const pair = new sds.ReplicationPair("pair", {
  primaryVolumeId: data.id,
  targetBackend: "dr",
  rpoSeconds: 3600,
  activeSide: config.get<sds.types.enums.ActiveSide>("activeSide") ?? "primary",
});
const attach = (name: string) => new sds.Attachment(name, { volumeId: data.id, mode: "rw" }, { dependsOn: [pair] });
const writer = config.getBoolean("writer") ? attach("writer") : undefined;
const reader = config.getBoolean("reader") ? attach("reader") : undefined;

export const volumeId = data.id;
export const backendName = data.backendName;
export const secondaryVolumeId = pair.secondaryVolumeId;
export const replicationStatus = pair.replicationStatus;
export const activeSide = pair.activeSide;
export const bytesTransferred = pair.bytesTransferred;
export const writerDevice = writer?.devicePath;
export const readerDevice = reader?.devicePath;
