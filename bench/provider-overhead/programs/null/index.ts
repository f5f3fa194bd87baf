import * as pulumi from "@pulumi/pulumi";

// The properties an sds.Volume registers (its inputs and outputs, as the generated SDK lists them),
// so both programs resolve the same number of outputs per resource.
const volumeProperties = ["availabilityZone", "description", "metadata", "multiAttach", "name", "profile", "sizeGib", "sourceVolumeId", "attachmentIds", "backendId", "backendName", "createdAt", "poolId", "replicationStatus", "sharedTargets", "status"];

class Thing extends pulumi.CustomResource {
    constructor(name: string, props: pulumi.Inputs) {
        super("sdsnull:index:Thing", name, { ...Object.fromEntries(volumeProperties.map((k) => [k, undefined])), ...props });
    }
}

const count = new pulumi.Config().requireNumber("count");
const things = Array.from({ length: count }, (_, i) => new Thing(`t${i}`, { sizeGib: 1 }));
// One stack output, as the sds program returns.
export const ids = things.map((t) => t.id);
