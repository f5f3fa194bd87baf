// One multiAttach volume on a backend whose storage node is reached through its sds-agent,
// attached rw to hostA and ro to hostB (each through its own sds-agent), replicated to a backend
// on a second storage node.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const shared = new sds.Volume("shared", { sizeGib: config.requireNumber("sizeGib"), multiAttach: true });
const onA = new sds.Attachment("onA", { volumeId: shared.id, host: "hostA", mode: "rw" });
const onB = new sds.Attachment("onB", { volumeId: shared.id, host: "hostB", mode: "ro" });
// Replicated to a second storage node: the first node's agent syncs every 2 s.
const dr = new sds.ReplicationPair("dr", { primaryVolumeId: shared.id, targetBackend: "dr", rpoSeconds: 2 });

export const volumeId = shared.id;
export const backendName = shared.backendName;
export const aDevice = onA.devicePath;
export const bDevice = onB.devicePath;
export const aInfo = onA.connectionInfo;
export const bInfo = onB.connectionInfo;
export const secondaryVolumeId = dr.secondaryVolumeId;
