/**
 * The volume update use case (controller/update-volume.ts) on real sparse files, SQLite and
 * replication, with the attachments recorded: the grow of an attached, replicated volume reaches
 * the replica and the devices in the right order, a failed-over volume grows its secondary first,
 * a retried update redoes what is missing, and an update that does not grow opens nothing.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Controller } from "../../provider/src/controller/controller";
import { Replication } from "../../provider/src/controller/replication";
import { VolumeUpdates } from "../../provider/src/controller/update-volume";
import { backendsSchema } from "../../provider/src/domain/backend";
import { SqliteStore } from "../../provider/src/store/sqlite-store";

const GiB = 1024 ** 3;
let dir: string;
let store: SqliteStore;
let controller: Controller;
let replication: Replication;
let calls: string[];
let logs: string[];
let replicationOpened: number;

const updates = () =>
  new VolumeUpdates({
    controller,
    replication: async () => {
      replicationOpened++;
      return replication;
    },
    attachments: async () => ({
      volumeGrew: async (volumeId: string) => {
        const v = await controller.getVolume(volumeId);
        calls.push(`devices of ${v?.backendName} volume at ${v?.sizeGib} GiB`);
        return { devices: [{ host: "hostA", path: "/dev/loop7", sizeBytes: (v?.sizeGib ?? 0) * GiB }], pending: [] };
      },
    }),
  });
const log = (severity: string, m: string) => logs.push(`${severity}: ${m}`);
const fileSize = (v: { backendName: string; poolId: string; id: string }) => fs.statSync(controller.volumePath(v)).size;
const spec = (sizeGib: number) => ({ name: "data", sizeGib, description: "d", metadata: { app: "db" } });

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-update-volume-"));
  store = new SqliteStore(path.join(dir, "state.db"));
  const backends = backendsSchema.parse([
    { name: "main", driver: "file", replicationTargets: [{ backend: "dr" }], pools: [{ name: "p0", path: path.join(dir, "main"), totalCapacityGib: 50, replication: "async", multiAttach: true }] },
    { name: "dr", driver: "file", pools: [{ name: "p0", path: path.join(dir, "dr"), totalCapacityGib: 50, multiAttach: true }] },
  ]);
  controller = new Controller({ store, backends });
  await controller.discover();
  replication = new Replication({ store, controller, stateDir: path.join(dir, "replication") });
  // Record the order of the grows the use case asks for.
  const extend = controller.extendVolume.bind(controller);
  controller.extendVolume = async (id, sizeGib) => {
    const v = await controller.getVolume(id);
    calls.push(`extend ${v?.backendName} volume to ${sizeGib} GiB`);
    return extend(id, sizeGib);
  };
  calls = [];
  logs = [];
  replicationOpened = 0;
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function attachedReplicatedVolume() {
  const v = await controller.createVolume("urn:data", { ...spec(1), multiAttach: true, placeOn: { backend: "main" } });
  const pair = await replication.create("urn:pair", { primaryVolumeId: v.id, targetBackend: "dr", rpoSeconds: 60, enabled: true, activeSide: "primary" });
  await store.updateVolume(v.id, { status: "in-use" }); // attached somewhere
  calls = [];
  return { v, pair };
}

test("growing an attached, replicated volume: the volume, then its replica, then the devices; in-place fields updated", async () => {
  const { v, pair } = await attachedReplicatedVolume();
  const row = await updates().update(v.id, { ...spec(3), multiAttach: true, description: "grown" }, { previousSizeGib: 1, log });
  expect(calls).toEqual(["extend main volume to 3 GiB", "extend dr volume to 3 GiB", "devices of main volume at 3 GiB"]);
  expect(row).toMatchObject({ sizeGib: 3, status: "in-use", description: "grown", multiAttach: true });
  expect(fileSize(v)).toBe(3 * GiB);
  expect(fileSize((await controller.getVolume(pair.secondaryVolumeId!))!)).toBe(3 * GiB);
  expect(logs).toEqual(["info: extending volume data from 1 to 3 GiB", `info: volume data: /dev/loop7 on hostA now shows ${3 * GiB} bytes`]);
});

test("a failed-over volume grows its secondary (the active side) first; with the primary unreachable the primary takes the size in the state only", async () => {
  const { v, pair } = await attachedReplicatedVolume();
  await replication.update(pair.id, { rpoSeconds: 60, enabled: true, activeSide: "secondary" });
  await store.updateVolume(pair.secondaryVolumeId!, { status: "in-use" }); // served from the secondary now
  fs.renameSync(path.join(dir, "main"), path.join(dir, "main.away"));
  calls = [];
  const row = await updates().update(v.id, spec(2), { previousSizeGib: 1, log });
  expect(calls).toEqual(["extend dr volume to 2 GiB", "devices of dr volume at 2 GiB", "devices of main volume at 2 GiB"]);
  expect(row.sizeGib).toBe(2);
  expect(logs.some((l) => /^warning: volume data is failed over and its primary cannot be reached/.test(l))).toBe(true);
  fs.renameSync(path.join(dir, "main.away"), path.join(dir, "main"));
  expect(fileSize(v)).toBe(1 * GiB); // the failback resync grows it
});

test("a retried update (the driver already grew the volume) still grows the replica and the devices", async () => {
  const { v, pair } = await attachedReplicatedVolume();
  await controller.extendVolume(v.id, 4); // the first attempt died after this
  calls = [];
  await updates().update(v.id, spec(4), { previousSizeGib: 1, log });
  expect(calls).toEqual(["extend dr volume to 4 GiB", "devices of main volume at 4 GiB"]);
  expect(fileSize((await controller.getVolume(pair.secondaryVolumeId!))!)).toBe(4 * GiB);
});

test("an update that does not grow opens no replication and touches no device", async () => {
  const { v } = await attachedReplicatedVolume();
  const row = await updates().update(v.id, { ...spec(1), metadata: { app: "web" } }, { previousSizeGib: 1, log });
  expect(row.metadata).toEqual({ app: "web" });
  expect(calls).toEqual([]);
  expect(replicationOpened).toBe(0);
});
