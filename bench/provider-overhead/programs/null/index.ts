import * as pulumi from "@pulumi/pulumi";

class Thing extends pulumi.CustomResource {
    constructor(name: string, props: pulumi.Inputs) {
        super("sdsnull:index:Thing", name, props);
    }
}

const count = new pulumi.Config().requireNumber("count");
for (let i = 0; i < count; i++) new Thing(`t${i}`, { sizeGib: 1 });
