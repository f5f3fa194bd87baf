import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const count = new pulumi.Config().requireNumber("count");
const volumes = Array.from({ length: count }, (_, i) => new sds.Volume(`v${i}`, { sizeGib: 1 }));
// One stack output, as the do-nothing program returns.
export const ids = volumes.map((v) => v.id);
