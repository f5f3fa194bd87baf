/**
 * The SQLite state compiles each SQL text once per connection (issue 14): 50 reads and writes of
 * volumes compile their statements once, and what they return is what was written.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import Database from "better-sqlite3";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import type { VolumeRow } from "../../provider/src/store/store";

const at = "2026-11-01T00:00:00.000Z";
const volume = (i: number): VolumeRow => ({
  id: `vol-${i}`, name: `v${i}`, owner: "urn:v", sizeGib: i, profileId: null, availabilityZone: "nova", multiAttach: false, sourceVolumeId: null,
  description: "", metadata: { k: "v" }, poolId: "b1/p1", backendName: "b1", backendId: "bid", sharedTargets: true, status: "available",
  replicationStatus: "disabled", createdAt: at, updatedAt: at,
});

test("50 inserts and reads compile each statement once, and read back what was written", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-stmt-cache-"));
  const compiled = jest.spyOn(Database.prototype, "prepare");
  const store = new SqliteStore(path.join(dir, "state.db"));
  try {
    for (let i = 1; i <= 50; i++) {
      await store.insertVolume(volume(i));
      expect(await store.getVolume(`vol-${i}`)).toEqual(volume(i));
    }
    const texts = compiled.mock.calls.map(([sql]) => sql);
    expect(texts.length).toBeGreaterThan(0);
    expect(new Set(texts).size).toBe(texts.length);
    // A statement in pluck mode (better-sqlite3's pragma()) is not handed to the store's queries.
    expect(await store.getVolume("vol-7")).toEqual(volume(7));
  } finally {
    compiled.mockRestore();
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
