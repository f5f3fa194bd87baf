// A multiAttach volume with an rw and an ro attachment; optionally a second attachment of a
// volume that is not multiAttach (which must be refused).
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const shared = new sds.Volume("shared", { sizeGib: 1, multiAttach: true });
const writer = new sds.Attachment("writer", { volumeId: shared.id, mode: "rw" });
const reader = new sds.Attachment("reader", { volumeId: shared.id, mode: config.get<sds.types.enums.AccessMode>("readerMode") ?? "ro" });

const single = new sds.Volume("single", { sizeGib: 1 });
new sds.Attachment("first", { volumeId: single.id });
if (config.getBoolean("second")) new sds.Attachment("second", { volumeId: single.id, mode: "ro" });

export const sharedId = shared.id;
export const writerInfo = writer.connectionInfo;
export const readerInfo = reader.connectionInfo;
export const readerId = reader.id;
export const writerDevice = writer.devicePath;
export const readerDevice = reader.devicePath;
