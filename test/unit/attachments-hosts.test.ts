/**
 * Attachments on hosts other than localhost, and on a storage node other than this machine: the
 * logic around the agents (which connector is asked, which targets are driven, what the orphan
 * check does with what a host reports, force, extend after a grow). The host agents and the
 * node's targets are in-memory recorders here; the real ones run in test/e2e/multihost.test.ts.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Attachments, type HostConnector, type RemoteHost, type TargetFactory } from "../../provider/src/controller/attachments";
import { ensureExportByStep, type IscsiExport, type IscsiTarget } from "../../provider/src/targets/target";
import { backendsSchema } from "../../provider/src/domain/backend";
import { Controller } from "../../provider/src/controller/controller";
import { SecretBox } from "../../provider/src/controller/secret-box";
import { FileDriver } from "../../provider/src/drivers/file-driver";
import { UserError } from "../../provider/src/errors";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import type { Connection, VolumePath } from "../../provider/src/connectors/connector";

let dir: string;
let store: SqliteStore;
let calls: string[];
/** Paths a host keeps after a disconnect (to make the orphan check fire), by host. */
let stuck: Map<string, string[]>;
/** Hosts whose extend says the device is in use. */
let busy: Set<string>;

function host(name: string): RemoteHost {
  const devices = new Map<string, string>();
  const connector: HostConnector = {
    async connectVolume(c: Connection) {
      calls.push(`${name}: connect ${c.volumeId} ${c.readOnly ? "ro" : "rw"} via ${c.portals[0]} lun ${c.targetLun}`);
      const dev = `/dev/loop-${name}-${devices.size}`;
      devices.set(c.volumeId, dev);
      return { path: dev };
    },
    async disconnectVolume(c: Connection, o?: { force?: boolean }) {
      calls.push(`${name}: disconnect ${c.volumeId}${o?.force ? " (force)" : ""}`);
      if (!stuck.has(name)) devices.delete(c.volumeId);
    },
    async getVolumePaths(c: Connection): Promise<VolumePath[]> {
      const dev = devices.get(c.volumeId);
      return dev ? [{ volumeId: c.volumeId, path: dev, protocol: "iscsi", via: "userspace" }] : [];
    },
    async extendVolume(c: Connection) {
      calls.push(`${name}: extend ${c.volumeId}`);
      if (busy.has(name)) throw new UserError("INVALID_STATE", `${devices.get(c.volumeId)} is mounted on /mnt`);
      return 2 * 1024 ** 3;
    },
    async checkVolume(c: Connection) {
      const dev = devices.get(c.volumeId);
      return dev ? { path: dev, healthy: true } : { path: null, healthy: false, reason: "not connected" };
    },
    async fenceVolume(c: Connection) {
      return connector.checkVolume(c);
    },
  };
  return { connector: () => connector, properties: async () => ({ initiator: `iqn.2026-11.test:${name}`, hostname: name, multipath: false }) };
}

/** Targets of the storage node "store1", recording every call. */
function nodeTargets(node: string): TargetFactory {
  const rec =
    (kind: string) =>
    (...args: unknown[]) => {
      calls.push(`${node} ${kind}: ${args.map((a) => (typeof a === "object" ? "{…}" : String(a))).join(" ")}`);
      return Promise.resolve(kind === "ensureTarget" ? 1 : kind === "list" ? [] : undefined);
    };
  // ensureExport as RemoteIscsiTarget does it: the steps, one agent call each.
  const iscsi: IscsiTarget = new Proxy({} as IscsiTarget, { get: (_t, op) => (op === "then" ? undefined : op === "ensureExport" ? (e: IscsiExport) => ensureExportByStep(iscsi, e) : rec(String(op))) });
  return { iscsi: () => iscsi as never, nbd: () => iscsi as never };
}

function setup() {
  const backends = backendsSchema.parse([
    { name: "array", driver: "file", node: "store1", export: { protocol: "iscsi", portal: "10.0.0.5:3260", chap: true }, pools: [{ name: "p0", path: path.join(dir, "p0"), totalCapacityGib: 10, multiAttach: true }] },
  ]);
  const controller = new Controller({ store, backends, nodeDriver: () => new FileDriver() });
  const localTargets: TargetFactory = {
    iscsi: () => {
      throw new Error("the volume's targets are on store1, never on this machine");
    },
    nbd: () => {
      throw new Error("never local");
    },
  };
  const hosts = new Map([["hostA", host("hostA")], ["hostB", host("hostB")]]);
  const attachments = new Attachments({ store, controller, targets: localTargets, box: SecretBox.forState({ sqliteFile: path.join(dir, "state.db") }), remoteHost: (h) => hosts.get(h), nodeTargets });
  return { controller, attachments };
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-hosts-"));
  store = new SqliteStore(path.join(dir, "state.db"));
  calls = [];
  stuck = new Map();
  busy = new Set();
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test("attach on a remote host: the connector comes from the host's agent, the export from the storage node, the device from the host", async () => {
  const { controller, attachments } = setup();
  await controller.discover();
  const v = await controller.createVolume("urn:v", { name: "v", sizeGib: 1, multiAttach: true, description: "", metadata: {} });
  const a = await attachments.attach("urn:a", { volumeId: v.id, host: "hostA", mode: "rw", connect: true });
  const b = await attachments.attach("urn:b", { volumeId: v.id, host: "hostB", mode: "ro", connect: true });
  expect(a.row.connector.initiator).toBe("iqn.2026-11.test:hostA");
  expect(a.row.devicePath).toBe("/dev/loop-hostA-0");
  expect(b.row.devicePath).toBe("/dev/loop-hostB-0");
  expect(calls).toEqual(
    expect.arrayContaining([
      "store1 ensureInitiator: 1 iqn.2026-11.test:hostA",
      "store1 ensureInitiator: 1 iqn.2026-11.test:hostB",
      `hostA: connect ${v.id} rw via 10.0.0.5:3260 lun 1`,
      `hostB: connect ${v.id} ro via 10.0.0.5:3260 lun 1`,
    ]),
  );
  // A user-given connector wins over what the host says.
  const w = await attachments.attach("urn:c", { volumeId: v.id, host: "hostB", mode: "rw", connector: { initiator: "iqn.2026-11.test:given" }, connect: false });
  expect(w.row.connector.initiator).toBe("iqn.2026-11.test:given");
  expect(w.row.devicePath).toBeNull();
});

test("connect on a host that is not in hosts is refused naming host, and leaves no row", async () => {
  const { controller, attachments } = setup();
  await controller.discover();
  const v = await controller.createVolume("urn:v", { name: "v", sizeGib: 1, multiAttach: true, description: "", metadata: {} });
  await expect(attachments.attach("urn:a", { volumeId: v.id, host: "hostZ", mode: "rw", connect: true })).rejects.toMatchObject({ property: "host" });
  expect(await store.listAttachments()).toEqual([]);
});

test("detach: a path the host still reports fails the delete, listing it; force detaches and warns", async () => {
  const { controller, attachments } = setup();
  await controller.discover();
  const v = await controller.createVolume("urn:v", { name: "v", sizeGib: 1, multiAttach: true, description: "", metadata: {} });
  const a = await attachments.attach("urn:a", { volumeId: v.id, host: "hostA", mode: "rw", connect: true });
  stuck.set("hostA", []);
  await expect(attachments.detach(a.row.id)).rejects.toThrow(/left paths on hostA: \/dev\/loop-hostA-0; .*SDS_FORCE_DETACH=/);
  expect((await store.getAttachment(a.row.id))?.status).toBe("error_detaching");
  const warnings: string[] = [];
  await attachments.detach(a.row.id, { force: true, warn: (m) => warnings.push(m) });
  expect(await store.getAttachment(a.row.id)).toBeUndefined();
  expect(warnings.join("\n")).toMatch(/left paths on hostA: \/dev\/loop-hostA-0 \(forced/);
  expect(calls).toContain(`hostA: disconnect ${v.id} (force)`);
  expect(calls).toContain("store1 removeTarget: 1");
});

test("a grow refreshes the LUN on the storage node and extends every device; a busy device is reported, not failed", async () => {
  const { controller, attachments } = setup();
  await controller.discover();
  const v = await controller.createVolume("urn:v", { name: "v", sizeGib: 1, multiAttach: true, description: "", metadata: {} });
  await attachments.attach("urn:a", { volumeId: v.id, host: "hostA", mode: "rw", connect: true });
  await attachments.attach("urn:b", { volumeId: v.id, host: "hostB", mode: "ro", connect: true });
  const grown = await controller.extendVolume(v.id, 2);
  expect(grown.status).toBe("in-use");
  busy.add("hostB");
  calls = [];
  const r = await attachments.volumeGrew(v.id);
  expect(calls.filter((c) => c.includes("refreshLun")).length).toBe(2); // the rw and the ro target
  expect(r.devices).toEqual([{ host: "hostA", path: "/dev/loop-hostA-0", sizeBytes: 2 * 1024 ** 3 }]);
  expect(r.pending).toEqual([{ host: "hostB", path: "/dev/loop-hostB-0", reason: "/dev/loop-hostB-0 is mounted on /mnt" }]);
});
