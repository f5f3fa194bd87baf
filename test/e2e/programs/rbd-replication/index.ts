// Two RBD volumes placed by a replicated profile on backend "ceph", each the primary of a
// ReplicationPair: one to backend "cephdr" (RBD → RBD, Ceph's incremental diffs) and one to
// backend "files" (RBD → file, the chunk engine). Failover and failback are config changes of
// activeSide, as in examples/replication-dr.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const activeSide = config.get<sds.types.enums.ActiveSide>("activeSide") ?? "primary";
const profile = new sds.Profile("replicated", { extraSpecs: { "capabilities:replication": "<is> true" } });
const toRbd = new sds.Volume("to-rbd", { sizeGib: 1, profile: profile.name });
const toFile = new sds.Volume("to-file", { sizeGib: 1, profile: profile.name });
// rbdPair=false deletes the pair and keeps its primary (without the snapshots replication made on it).
const rbdPair = config.getBoolean("rbdPair") ?? true
    ? new sds.ReplicationPair("rbd-pair", { primaryVolumeId: toRbd.id, targetBackend: "cephdr", rpoSeconds: 3600, activeSide })
    : undefined;
const filePair = new sds.ReplicationPair("file-pair", { primaryVolumeId: toFile.id, targetBackend: "files", rpoSeconds: 3600, activeSide });

export const rbdVolumeId = toRbd.id;
export const rbdBackend = toRbd.backendName;
export const rbdSecondaryId = rbdPair?.secondaryVolumeId;
export const rbdStatus = rbdPair?.replicationStatus;
export const fileVolumeId = toFile.id;
export const fileBackend = toFile.backendName;
export const fileSecondaryId = filePair.secondaryVolumeId;
export const fileStatus = filePair.replicationStatus;
