// The e2e lifecycle program: every knob the test turns is stack config.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const gold = new sds.Profile("gold", { description: "gold tier" });
const silver = new sds.Profile("silver", { description: "silver tier", extraSpecs: { provisioningPolicy: "Thin" } });
const profiles: Record<string, sds.Profile> = { gold, silver };

const data = new sds.Volume("data", {
    sizeGib: config.requireNumber("dataSize"),
    profile: profiles[config.get("dataProfile") ?? "gold"].name,
    metadata: { app: "e2e" },
});
const scratch = new sds.Volume("scratch", { sizeGib: 1, description: config.get("scratchDescription") ?? "scratch space" });

export const dataId = data.id;
export const dataSize = data.sizeGib;
export const dataPool = data.poolId;
export const scratchId = scratch.id;
