// A Ceph RBD backend beside a file backend: a profile that places on RBD, a multiAttach volume
// there attached rw to hostA and ro to hostB over iSCSI (tgt's rbd backing store), optionally a
// clone of it; and a plain volume a profile places on the file backend.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const onRbd = new sds.Profile("on-rbd", { extraSpecs: { "capabilities:backendName": "s== ceph", "capabilities:multiAttach": "<is> True" } });
const onFile = new sds.Profile("on-file", { extraSpecs: { "capabilities:backendName": "s== files" } });

const shared = new sds.Volume("shared", { sizeGib: config.requireNumber("sizeGib"), profile: onRbd.name, multiAttach: true });
const onA = new sds.Attachment("onA", { volumeId: shared.id, host: "hostA", mode: "rw" });
const onB = new sds.Attachment("onB", { volumeId: shared.id, host: "hostB", mode: "ro" });
const plain = new sds.Volume("plain", { sizeGib: 1, profile: onFile.name });
const copy = config.getBoolean("clone") ? new sds.Volume("copy", { sizeGib: config.requireNumber("sizeGib"), profile: onRbd.name, sourceVolumeId: shared.id }) : undefined;

export const volumeId = shared.id;
export const backendName = shared.backendName;
export const poolId = shared.poolId;
export const plainBackend = plain.backendName;
export const aDevice = onA.devicePath;
export const bDevice = onB.devicePath;
export const aInfo = onA.connectionInfo;
export const bInfo = onB.connectionInfo;
export const copyId = copy?.id;
export const copyBackend = copy?.backendName;
