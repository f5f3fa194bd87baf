// The fault harness's stack (test/faults): five volumes over three backends, an iSCSI attachment
// with CHAP on a shared target (tgtd) and an NBD attachment (nbdkit), both connected on this
// machine (the NBD one through an sds-agent when config `agentHost` names one), and a replication
// pair from the iSCSI backend to "dr" whose activeSide config `activeSide` flips (failover).
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const on = (backend: string) => new sds.Profile(`on-${backend}`, { extraSpecs: { "capabilities:backendName": `s== ${backend}` } });
const iscsi = on("iscsi");
const nbd = on("nbd");

const volumes = [iscsi, nbd, iscsi, nbd, iscsi].map((profile, i) => new sds.Volume(`v${i}`, { sizeGib: 1, profile: profile.name }));
const agentHost = config.get("agentHost");
const onIscsi = new sds.Attachment("a-iscsi", { volumeId: volumes[0].id, mode: "rw" });
const onNbd = new sds.Attachment("a-nbd", { volumeId: volumes[1].id, mode: "rw", ...(agentHost ? { host: agentHost } : {}) });
const pair = new sds.ReplicationPair("pair", {
  primaryVolumeId: volumes[2].id,
  targetBackend: "dr",
  rpoSeconds: 3600,
  activeSide: config.get<sds.types.enums.ActiveSide>("activeSide") ?? "primary",
});

export const volumeIds = volumes.map((v) => v.id);
export const iscsiDevice = onIscsi.devicePath;
export const nbdDevice = onNbd.devicePath;
export const activeSide = pair.activeSide;
export const replicationStatus = pair.replicationStatus;
