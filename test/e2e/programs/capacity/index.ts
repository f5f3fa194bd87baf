// A thin volume bigger than its pool's file system (a small tmpfs the test mounts), attached
// and connected on this host: the test fills the pool through the device and reads what refresh says.
import * as sds from "pulumi-sds";

const big = new sds.Volume("big", { sizeGib: 1 });
const dev = new sds.Attachment("dev", { volumeId: big.id });

export const volumeName = big.name;
export const volumeId = big.id;
export const attachmentId = dev.id;
export const devicePath = dev.devicePath;
