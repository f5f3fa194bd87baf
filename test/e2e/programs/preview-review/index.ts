// What a reviewer reads in a preview: three volumes whose placement lines name them, a hypervisor's
// export (connect: false) whose connection info is readable but for the CHAP password, and on
// request the changes `up` would refuse (a second attachment of a volume that is not multiAttach,
// from the state or within one preview; a volume no pool can hold).
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const data = new sds.Volume("data", { sizeGib: config.getNumber("dataSizeGib") ?? 2, multiAttach: config.getBoolean("dataMultiAttach") });
const logs = new sds.Volume("logs", { sizeGib: 1 });
new sds.Volume("scratch", { sizeGib: 1, multiAttach: true });

// A hypervisor logs in by itself: sds only exports the volume for this initiator.
const hv = new sds.Attachment("hv", { volumeId: data.id, connect: false, connector: { initiator: config.require("initiator") } });

if (config.getBoolean("second")) new sds.Attachment("hv2", { volumeId: data.id, connect: false, connector: { initiator: config.require("initiator") } });
if (config.getBoolean("twoNew")) {
  new sds.Attachment("a", { volumeId: logs.id, connect: false, connector: { initiator: config.require("initiator") } });
  new sds.Attachment("b", { volumeId: logs.id, connect: false, connector: { initiator: config.require("initiator") } });
}
if (config.getBoolean("huge")) new sds.Volume("huge", { sizeGib: 500 });

export const dataId = data.id;
/** The whole connection info: the Node.js SDK makes an output secret when any part of it is. */
export const hvInfo = hv.connectionInfo;
/** What the hypervisor's operator may read: everything but the password, which stays secret. */
export const hvTarget = pulumi.unsecret(
  hv.connectionInfo.apply((c) => {
    const { authPassword: _, ...rest } = c ?? {};
    return rest;
  }),
);
export const hvPassword = hv.connectionInfo.apply((c) => c?.authPassword);
