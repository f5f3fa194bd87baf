import * as sds from "pulumi-sds";

// A profile says what the storage must be able to do; the scheduler finds a pool.
const standard = new sds.Profile("standard", {
    description: "thin volumes on any pool",
    extraSpecs: { provisioningPolicy: "Thin" },
});

// Volumes: sparse files on the built-in `local` backend (.sds/pools/default).
const data = new sds.Volume("data", { sizeGib: 10, profile: standard.name, metadata: { app: "quickstart" } });
const logs = new sds.Volume("logs", { sizeGib: 2, description: "application logs" });

export const dataVolumeId = data.id;
export const dataPool = data.poolId;
export const dataStatus = data.status;
export const logsSizeGib = logs.sizeGib;
