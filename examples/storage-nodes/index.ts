// Volumes on pools that live on storage nodes, chosen by profile, attached on an application host.
// The provider reaches each storage node's and the application host's sds-agent (sds:hosts).
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
/** The application host: a name in sds:hosts. */
const appHost = config.get("appHost") ?? "app1";

const ssd = new sds.Profile("ssd", { extraSpecs: { diskType: "SSD" } });   // storage1's pool
const hdd = new sds.Profile("hdd", { extraSpecs: { diskType: "HDD" } });   // storage2's pool

const db = new sds.Volume("db", { sizeGib: config.getNumber("dbSizeGib") ?? 20, profile: ssd.name });
const logs = new sds.Volume("logs", { sizeGib: config.getNumber("logsSizeGib") ?? 100, profile: hdd.name });

const dbOnApp = new sds.Attachment("db-on-app", { volumeId: db.id, host: appHost, mode: "rw" });
const logsOnApp = new sds.Attachment("logs-on-app", { volumeId: logs.id, host: appHost, mode: "rw" });

/** backend/pool of each volume: fast/ssd on storage1, bulk/hdd on storage2. */
export const pools = { db: db.poolId, logs: logs.poolId };
export const volumeIds = { db: db.id, logs: logs.id };
/** The devices on the application host. */
export const devices = { db: dbOnApp.devicePath, logs: logsOnApp.devicePath };
