// Profiles that must each land on one pool of backends.yaml, and getPlacement next to each volume.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const specs: Record<string, Record<string, string>> = {
    shared: { "capabilities:multiAttach": "<is> True", diskType: "SSD", maxIOPS: ">= 5000" },
    bulk: { diskType: "<or> HDD <or> NVMe", latency: "<= 20ms", "capabilities:replication": "<is> false" },
    dr: { "capabilities:replication": "<is> true", "dataStorage.provisioningPolicy": "s== Thick" },
};
if (config.getBoolean("impossible")) specs.impossible = { diskType: "NVMe", maxIOPS: ">= 1000000" };

export const volumes: Record<string, pulumi.Output<string>> = {};
export const placements: Record<string, pulumi.Output<string | undefined> | undefined> = {};
for (const [name, extraSpecs] of Object.entries(specs)) {
    const profile = new sds.Profile(name, { extraSpecs });
    const volume = new sds.Volume(`${name}-vol`, { sizeGib: 5, profile: profile.name });
    volumes[name] = volume.poolId;
    placements[name] = sds.getPlacementOutput({ sizeGib: 5, profile: profile.name }).poolId;
}
