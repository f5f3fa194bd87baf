import * as pulumi from "@pulumi/pulumi";

const count = new pulumi.Config().requireNumber("count");
for (let i = 0; i < count; i++) new pulumi.CustomResource("sdsnull:index:Thing", `t${i}`, { sizeGib: 1 });
