import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const count = new pulumi.Config().requireNumber("count");
for (let i = 0; i < count; i++) new sds.Volume(`v${i}`, { sizeGib: 1 });
