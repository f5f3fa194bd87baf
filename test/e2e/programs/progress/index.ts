// Long operations whose progress `pulumi up` shows: a clone of a volume holding real data, and a
// replication pair's initial sync, a failover and a failback resync of that volume.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const replicated = new sds.Profile("replicated", { extraSpecs: { "capabilities:replication": "<is> true" } });
const source = new sds.Volume("source", { sizeGib: 1, profile: replicated.name });
if (config.getBoolean("clone")) {
  new sds.Volume("copy", { sizeGib: 1, sourceVolumeId: source.id });
  new sds.ReplicationPair("dr", { primaryVolumeId: source.id, targetBackend: "dr", rpoSeconds: 3600, activeSide: config.get<sds.types.enums.ActiveSide>("activeSide") ?? "primary" });
}

export const sourceId = source.id;
