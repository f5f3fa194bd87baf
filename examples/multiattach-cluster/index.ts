// One multiAttach volume, attached read-write on the writer host and read-only on each reader
// host, each through the host's sds-agent (iSCSI with CHAP, made per host: the host's initiator
// in the target's ACL). Hosts, their agents' URLs and the agent token are stack config.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
/** The host that writes: a name in sds:hosts. */
const writerHost = config.get("writer") ?? "app1";
/** The hosts that only read: names in sds:hosts. */
const readerHosts = config.getObject<string[]>("readers") ?? ["app2", "app3"];

const shared = new sds.Volume("shared", {
    sizeGib: config.getNumber("sizeGib") ?? 10,
    multiAttach: true,          // needs a pool with multiAttach: true (backends.yaml)
    description: "one writer, many readers",
});

// rw: the writer's device. ro: the target itself refuses writes from these hosts (a read-only LUN).
const writer = new sds.Attachment("writer", { volumeId: shared.id, host: writerHost, mode: "rw" });
const readers = readerHosts.map((host) => new sds.Attachment(`reader-${host}`, { volumeId: shared.id, host, mode: "ro" }));

export const volumeId = shared.id;
export const pool = shared.poolId;
/** The block device of the volume on each host (e.g. /dev/sdc, or /dev/loop3 on a host without a kernel initiator). */
export const devicePaths = pulumi
    .all([writer.devicePath, ...readers.map((r) => r.devicePath)])
    .apply(([w, ...rs]) => ({
        [writerHost]: { mode: "rw", device: w },
        ...Object.fromEntries(readerHosts.map((h, i) => [h, { mode: "ro", device: rs[i] }])),
    }));
