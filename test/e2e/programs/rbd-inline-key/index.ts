// One volume on an rbd backend given inline, in stack config, with only its key set as a secret.
import * as sds from "pulumi-sds";

const data = new sds.Volume("data", { sizeGib: 1 });

export const volumeId = data.id;
export const backendName = data.backendName;
