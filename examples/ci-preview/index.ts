// A team stack: volumes on the storage node's backend (backends.yaml), attached to an application
// host. Every runner — a teammate's `pulumi up`, CI's `pulumi preview --diff` — shares the Pulumi
// backend, the controller's PostgreSQL state (SDS_STATE_URL) and its sealing key (SDS_SECRET_KEY).
import * as sds from "pulumi-sds";

/** The host the volumes are attached to: a name in sds:hosts (Pulumi.team.yaml), running sds-agent. */
const appHost = "app1";

// What the application's volumes need; the scheduler picks the pool (array/ssd, not array/hdd).
const ssd = new sds.Profile("team-ssd", {
    description: "SSD pools of the team's storage node",
    extraSpecs: { diskType: "SSD" },
});

// The stack's volumes, one line each: a pull request grows one (sizeGib, an update in place) or
// adds one (a create), and its preview shows where a new one will land (`pools` below).
const volumes: Record<string, sds.Volume> = {
    db: new sds.Volume("db", { sizeGib: 2, profile: ssd.name, metadata: { app: "orders" } }),
    wal: new sds.Volume("wal", { sizeGib: 1, profile: ssd.name, metadata: { app: "orders" } }),
};

// Attached on app1 through its sds-agent: a block device there (iSCSI with CHAP, per the backend's export).
const dbOnApp = new sds.Attachment("db-on-app1", { volumeId: volumes.db.id, host: appHost, mode: "rw" });
const walOnApp = new sds.Attachment("wal-on-app1", { volumeId: volumes.wal.id, host: appHost, mode: "rw" });

// The pool of every volume (backend/pool). Known in a preview already: for a new volume it is the
// scheduler's choice, shown in the diff that CI posts on the pull request.
export const pools = Object.fromEntries(Object.entries(volumes).map(([name, v]) => [name, v.poolId]));
export const devices = { db: dbOnApp.devicePath, wal: walOnApp.devicePath };
