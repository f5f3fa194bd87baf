/**
 * Replication use cases (controller/replication.ts) on real sparse files and SQLite, no root:
 * validation by property, incremental syncs, routing while failed over, a failover that fails
 * leaves the pair usable, failback, delete.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { backendsSchema } from "../../provider/src/domain/backend";
import { Controller } from "../../provider/src/controller/controller";
import { Replication } from "../../provider/src/controller/replication";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import { bytesAt } from "../helpers/files";

// Each test makes real volume files and runs whole syncs (64 KiB chunks since issue 14): about
// 4 s on a quiet run, over jest's default 5 s on a loaded CI machine (two timed out in a fresh-clone run).
jest.setTimeout(60_000);

const MiB = 1024 * 1024;
let dir: string;
let store: SqliteStore;
let controller: Controller;
let r: Replication;

async function setup() {
  const backends = backendsSchema.parse([
    { name: "main", driver: "file", replicationTargets: [{ backend: "dr" }], pools: [{ name: "p0", path: path.join(dir, "main"), totalCapacityGib: 50, replication: "async" }, { name: "plain", path: path.join(dir, "plain"), totalCapacityGib: 1 }] },
    { name: "dr", driver: "file", pools: [{ name: "p0", path: path.join(dir, "dr"), totalCapacityGib: 50 }] },
    { name: "other", driver: "file", pools: [{ name: "p0", path: path.join(dir, "other"), totalCapacityGib: 50 }] },
  ]);
  controller = new Controller({ store, backends });
  await controller.discover();
  r = new Replication({ store, controller, stateDir: path.join(dir, "replication") });
}

const writeAt = (file: string, offset: number, data: Buffer) => {
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, data, 0, data.length, offset);
  fs.closeSync(fd);
};
beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-repl-"));
  store = new SqliteStore(path.join(dir, "state.db"));
  await setup();
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const volume = (name: string, pool?: string) =>
  controller.createVolume(`urn:${name}`, { name, sizeGib: 1, multiAttach: false, description: "", metadata: {}, ...(pool ? { placeOn: { backend: "main", pool } } : {}) });
const spec = (primaryVolumeId: string, extra = {}) => ({ primaryVolumeId, targetBackend: "dr", rpoSeconds: 60, enabled: true, activeSide: "primary" as const, ...extra });

test("validation names the property: target not a replication target, pool without replication, unknown pool", async () => {
  const v = await volume("v", "p0");
  const plain = await volume("w", "plain");
  expect(await r.validate({ primaryVolumeId: v.id, targetBackend: "other" })).toEqual([["targetBackend", expect.stringMatching(/does not replicate to "other"; its replicationTargets: dr/)]]);
  expect(await r.validate({ primaryVolumeId: plain.id, targetBackend: "dr" })).toEqual([["primaryVolumeId", expect.stringMatching(/does not report replication: async/)]]);
  expect(await r.validate({ primaryVolumeId: v.id, targetBackend: "dr", targetPool: "nope" })).toEqual([["targetPool", expect.stringMatching(/no pool "nope"/)]]);
  expect(await r.validate({ primaryVolumeId: "missing", targetBackend: "dr" })).toEqual([["primaryVolumeId", expect.any(String)]]);
  await expect(r.create("urn:p", spec(v.id, { targetBackend: "other" }))).rejects.toMatchObject({ property: "targetBackend" });
  expect(await store.listPairs()).toEqual([]);
  expect(fs.existsSync(path.join(dir, "dr")) ? fs.readdirSync(path.join(dir, "dr")) : []).toEqual([]); // nothing made on the target pool (not even its folder)
});

test("create makes the secondary on the target backend and syncs; the next sync sends only what changed; create is safe to retry", async () => {
  const v = await volume("v", "p0");
  const primary = controller.volumePath(v);
  writeAt(primary, 5 * MiB, Buffer.alloc(2 * MiB, 0x11));
  const pair = await r.create("urn:p", spec(v.id));
  expect(pair.status).toBe("enabled");
  const secondary = (await controller.getVolume(pair.secondaryVolumeId!))!;
  expect(secondary.backendName).toBe("dr");
  expect(bytesAt(controller.volumePath(secondary), 5 * MiB, 2 * MiB).equals(Buffer.alloc(2 * MiB, 0x11))).toBe(true);
  expect(pair.bytesTransferred).toBe(2 * MiB);
  expect((await store.getVolume(v.id))?.replicationStatus).toBe("enabled");
  expect((await r.create("urn:p", spec(v.id))).id).toBe(pair.id);
  writeAt(primary, 100 * MiB + 10, Buffer.alloc(1000, 0x22));
  const second = await r.sync(pair.id);
  expect(second.full).toBe(false);
  // One chunk of the pair's size: 64 KiB for this volume (chooseChunkSizeBytes).
  expect(second.bytesTransferred).toBe(64 * 1024);
  expect((await r.sync(pair.id)).bytesTransferred).toBe(0);
});

test("a failover that fails (secondary gone) says why and leaves the pair on its primary, still syncing", async () => {
  const v = await volume("v", "p0");
  const pair = await r.create("urn:p", spec(v.id));
  const secondaryFile = controller.volumePath((await controller.getVolume(pair.secondaryVolumeId!))!);
  fs.renameSync(secondaryFile, `${secondaryFile}.away`);
  await expect(r.update(pair.id, { rpoSeconds: 60, enabled: true, activeSide: "secondary" })).rejects.toThrow(/failover of replication pair .* failed, the pair stays on its primary: .*missing/);
  const after = (await r.get(pair.id))!;
  expect(after).toMatchObject({ activeSide: "primary", status: "failover-error", lastError: expect.stringMatching(/missing/) });
  expect((await r.activeVolume(v.id))?.id).toBe(v.id);
  fs.renameSync(`${secondaryFile}.away`, secondaryFile);
  expect((await r.syncDue({ all: true }))[0]).toMatchObject({ id: pair.id, ok: true });
});

test("failover routes the volume to its secondary; failback brings the secondary's writes home; delete keeps the primary", async () => {
  const v = await volume("v", "p0");
  const pair = await r.create("urn:p", spec(v.id));
  const failed = await r.update(pair.id, { rpoSeconds: 60, enabled: true, activeSide: "secondary" });
  expect(failed).toMatchObject({ activeSide: "secondary", status: "failed-over" });
  expect((await r.activeVolume(v.id))?.id).toBe(pair.secondaryVolumeId);
  writeAt(controller.volumePath((await controller.getVolume(pair.secondaryVolumeId!))!), 7 * MiB, Buffer.alloc(MiB, 0x33));
  const back = await r.update(pair.id, { rpoSeconds: 60, enabled: true, activeSide: "primary" });
  expect(back).toMatchObject({ activeSide: "primary", status: "enabled" });
  expect(bytesAt(controller.volumePath(v), 7 * MiB, MiB).equals(Buffer.alloc(MiB, 0x33))).toBe(true);
  // After failback the forward map was adopted: nothing changed, nothing is sent.
  expect((await r.sync(pair.id)).bytesTransferred).toBe(0);
  await r.delete(pair.id);
  await r.delete(pair.id);
  expect(await controller.getVolume(pair.secondaryVolumeId!)).toBeUndefined();
  expect((await store.getVolume(v.id))?.replicationStatus).toBe("disabled");
  expect(fs.existsSync(controller.volumePath(v))).toBe(true);
});

test("enabled: false pauses (no scheduled sync); growing the primary grows the secondary", async () => {
  const v = await volume("v", "p0");
  const pair = await r.create("urn:p", spec(v.id));
  expect((await r.update(pair.id, { rpoSeconds: 60, enabled: false, activeSide: "primary" })).status).toBe("disabled");
  expect(await r.syncDue({ all: true })).toEqual([]);
  await controller.extendVolume(v.id, 3);
  const secondary = await r.volumeGrew(v.id, 3);
  expect(secondary?.sizeGib).toBe(3);
  expect(fs.statSync(controller.volumePath(secondary!)).size).toBe(3 * 1024 * MiB);
});

test("growing a failed-over volume whose primary is unreachable grows the secondary now and the primary at failback", async () => {
  const v = await volume("v", "p0");
  const pair = await r.create("urn:p", spec(v.id));
  fs.renameSync(path.join(dir, "main"), path.join(dir, "main.away"));
  const warnings: string[] = [];
  await r.update(pair.id, { rpoSeconds: 60, enabled: true, activeSide: "secondary" }, (m) => warnings.push(m));
  expect(warnings.join("\n")).toMatch(/cannot be read: failing over with the data of the last sync/);
  const secondary = await r.volumeGrew(v.id, 2);
  expect(secondary?.sizeGib).toBe(2);
  expect((await r.growFailedOverPrimary(v.id, 2, (m) => warnings.push(m))).sizeGib).toBe(2);
  expect(warnings.join("\n")).toMatch(/takes the new size when it fails back/);
  fs.rmSync(path.join(dir, "main"), { recursive: true, force: true });
  fs.renameSync(path.join(dir, "main.away"), path.join(dir, "main"));
  await r.update(pair.id, { rpoSeconds: 60, enabled: true, activeSide: "primary" });
  expect(fs.statSync(controller.volumePath(v)).size).toBe(2 * 1024 * MiB);
});
