/**
 * Deleting a volume reads only the volumes it must (issue 14): the check for a clone still being
 * made from it asks the state for volumes in `creating`, not for every volume (a destroy of N
 * volumes decoded N² rows). The check itself still refuses.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { backendsSchema } from "../../provider/src/domain/backend";
import { Controller } from "../../provider/src/controller/controller";
import { SqliteStore } from "../../provider/src/store/sqlite-store";

let dir: string;
let store: SqliteStore;
const spec = (name: string) => ({ name, sizeGib: 1, multiAttach: false, description: "", metadata: {} });

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-delete-reads-"));
  store = new SqliteStore(path.join(dir, "state.db"));
});
afterEach(async () => {
  jest.restoreAllMocks();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const controller = () => new Controller({ store, backends: backendsSchema.parse([{ name: "b1", driver: "file", pools: [{ name: "p1", path: path.join(dir, "p1") }] }]) });

test("deleting 20 volumes never lists every volume; a volume being cloned from is still refused", async () => {
  const c = controller();
  await c.discover();
  const rows = [];
  for (let i = 0; i < 20; i++) rows.push(await c.createVolume(`urn:v${i}`, spec(`v${i}`)));
  const source = rows[0];
  await store.insertVolume({ ...rows[1], id: "00000000-0000-4000-8000-00000000c10e", name: "clone", owner: "urn:clone", sourceVolumeId: source.id, status: "creating" });
  const lists = jest.spyOn(store, "listVolumes");
  await expect(c.deleteVolume(source.id)).rejects.toThrow(/is being cloned into clone/);
  for (const row of rows.slice(1)) await c.deleteVolume(row.id);
  expect(lists.mock.calls.length).toBeGreaterThan(0);
  expect(lists.mock.calls.filter(([filter]) => filter === undefined || Object.keys(filter).length === 0)).toEqual([]);
  expect((await store.listVolumes()).map((v) => v.name).sort()).toEqual(["clone", "v0"]);
});
