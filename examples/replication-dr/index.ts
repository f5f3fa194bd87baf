// A volume on backend main, kept in step with a copy on backend dr by a ReplicationPair, and
// attached where the application runs. Failover and failback are config changes:
//   pulumi config set activeSide secondary && pulumi up    # dr serves the volume
//   pulumi config set activeSide primary && pulumi up      # main serves it again, newest data first
// Between updates, `sds replicate` on a timer keeps the copy within rpoSeconds.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
/** Which side serves the volume: "primary" (backend main) or "secondary" (backend dr). */
const activeSide = config.get<sds.types.enums.ActiveSide>("activeSide") ?? "primary";
/** Where the application runs: localhost (this machine) or a host in sds:hosts running sds-agent. */
const appHost = config.get("appHost") ?? "localhost";

// Only pools that can replicate (main/p0 says `replication: async`) take this profile's volumes.
const replicated = new sds.Profile("replicated", { extraSpecs: { "capabilities:replication": "<is> true" } });
const data = new sds.Volume("data", { sizeGib: config.getNumber("sizeGib") ?? 1, profile: replicated.name });

const pair = new sds.ReplicationPair("data-dr", {
    primaryVolumeId: data.id,
    targetBackend: "dr",                  // one of main's replicationTargets
    rpoSeconds: config.getNumber("rpoSeconds") ?? 300,
    activeSide,
});

// The application's device. An attachment keeps the export it was made with, so it is made again
// whenever the active side changes (replacementTrigger), from the side that now serves the volume;
// the old one goes first (deleteBeforeReplace: the volume is not multiAttach).
const app = new sds.Attachment("app", { volumeId: data.id, host: appHost, mode: "rw" }, {
    dependsOn: [pair],
    replacementTrigger: activeSide,
    deleteBeforeReplace: true,
});

export const volumeId = data.id;
export const secondaryVolumeId = pair.secondaryVolumeId;
export const servedBy = pair.activeSide;
export const replicationStatus = pair.replicationStatus;
export const devicePath = app.devicePath;
