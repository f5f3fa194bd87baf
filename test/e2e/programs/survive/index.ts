// One multiAttach volume with an rw and an ro attachment, both connected on this machine, on
// whatever backend the stack's backends file names (iSCSI or NBD).
import * as sds from "pulumi-sds";

const shared = new sds.Volume("shared", { sizeGib: 1, multiAttach: true });
const writer = new sds.Attachment("writer", { volumeId: shared.id, mode: "rw" });
const reader = new sds.Attachment("reader", { volumeId: shared.id, mode: "ro" });

export const writerDevice = writer.devicePath;
export const readerDevice = reader.devicePath;
export const writerInfo = writer.connectionInfo;
