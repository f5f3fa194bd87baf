// One multiAttach volume on a storage node's shared iSCSI target, attached rw from two hosts
// (each through its own sds-agent): both attachments go through the same target, CHAP account and LUN.
import * as sds from "pulumi-sds";

const shared = new sds.Volume("shared", { sizeGib: 1, multiAttach: true });
const onA = new sds.Attachment("onA", { volumeId: shared.id, host: "hostA", mode: "rw" });
const onB = new sds.Attachment("onB", { volumeId: shared.id, host: "hostB", mode: "rw" });

export const volumeId = shared.id;
export const aDevice = onA.devicePath;
export const bDevice = onB.devicePath;
export const aTarget = onA.connectionInfo.apply((c) => c?.targetIqn);
export const bTarget = onB.connectionInfo.apply((c) => c?.targetIqn);
