// Profiles say what a volume needs; the scheduler picks the pool (backends.yaml) that has it.
// getPlacement asks the same question without making anything; getPools lists what the pools have.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

// Each key names a pool capability or extra; the value is a literal or an operator.
const database = new sds.Profile("database", {
    description: "low-latency flash for databases",
    extraSpecs: {
        diskType: "<or> NVMe <or> SSD",       // one of the alternatives
        maxIOPS: ">= 100000",                 // compared as numbers
        latency: "<= 0.5ms",                  // units compare as numbers of the same unit
    },
});
const shared = new sds.Profile("shared", {
    description: "flash that many hosts attach at once",
    extraSpecs: {
        "capabilities:multiAttach": "<is> true", // volumes of this profile are multiAttach
        diskType: "SSD",                          // no operator: equals it literally
        availabilityZone: "zone-a",
    },
});
const archive = new sds.Profile("archive", {
    description: "thick-provisioned disks for backups",
    extraSpecs: {
        diskType: "HDD",
        "dataStorage.provisioningPolicy": "s== Thick", // compared as a string
        maxIOPS: "< 1000",
    },
});

const volumes = {
    db: new sds.Volume("db", { sizeGib: 10, profile: database.name }),
    media: new sds.Volume("media", { sizeGib: 20, profile: shared.name }),
    // On a thick pool a volume's bytes are allocated when it is made: this takes 1 GiB of disk now.
    backups: new sds.Volume("backups", { sizeGib: 1, profile: archive.name }),
};

/** Where each volume landed: backend/pool. */
export const pools = Object.fromEntries(Object.entries(volumes).map(([name, v]) => [name, v.poolId]));
export const mediaIsMultiAttach = volumes.media.multiAttach;

// The questions below are asked once the volumes exist, so the answers count the capacity they
// took (and a later preview asks, and answers, the same).
const afterVolumes = pulumi.all(Object.values(volumes).map((v) => v.id));
const ask = (sizeGib: number, profile: sds.Profile) =>
    pulumi.all([profile.name, afterVolumes]).apply(async ([name]) => {
        const p = await sds.getPlacement({ sizeGib, profile: name });
        return { pool: p.poolId ?? "none fits", rejected: p.rejections.map((r) => `${r.poolId}: ${r.filter}: ${r.reason}`) };
    });

/** Where would one more database volume go, and why not elsewhere? */
export const nextDatabase = ask(50, database);

/** A shared volume bigger than any pool can take: no pool, and every pool's reason. */
export const hugeShared = ask(20000, shared);

/**
 * Every pool with what it has: disk type, zone, capacity in GiB (a thin pool takes volumes up to
 * total × maxOverSubscriptionRatio; a thick one only what its file system has free).
 */
export const capacity = afterVolumes.apply(async () => {
    const { pools: all } = await sds.getPools({});
    return Object.fromEntries(
        all.map((p) => [p.id, {
            diskType: p.extras?.advanced?.diskType,
            zone: p.availabilityZone,
            totalGib: p.totalCapacityGib,
            provisionedGib: p.provisionedCapacityGib,
            multiAttach: p.multiAttach,
        }]),
    );
});
