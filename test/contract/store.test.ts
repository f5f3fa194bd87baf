/**
 * The Store contract (store/store.ts), run on every implementation in `factories`: each
 * operation, transactions (commit, rollback on a rejection, isolation of concurrent ones, no
 * overbooking by concurrent read-decide-writes) and locks (exclusive, released, expiring, per
 * holder). A new store joins by adding its factory; nothing else changes. PostgresStore runs on
 * one throwaway cluster (test/helpers/postgres.ts) started once for this file, a fresh database
 * per test; the tests only it can have (two pools, as two runners would) are at the end.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ATTACHMENT_STATUSES, REPLICATION_STATUSES, VOLUME_STATUSES } from "../../provider/src/domain/status";
import { withStoreLock } from "../../provider/src/store/lock";
import { PostgresStore } from "../../provider/src/store/postgres-store";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import type { AttachmentRow, PairRow, ProfileRow, Store, StoreOps, TargetRow, VolumeRow } from "../../provider/src/store/store";
import { type PostgresCluster, postgresSkipReason, startPostgres } from "../helpers/postgres";
import { startScriptChild } from "../helpers/script-child";

interface StoreFactory {
  name: string;
  /** A store on the state in `dir`; called twice on one dir, the second sees the first's state (a restart, another process). */
  open(dir: string): Promise<Store>;
  /** Why it cannot run here (its server is missing), or undefined. */
  skip?: string;
  /** Start what it needs, once before its tests (a server). */
  start?(): Promise<void>;
  /** What another process opens the state in `dir` with (a file, a URL), and how (the script's expression). */
  child(dir: string): Promise<{ env: NodeJS.ProcessEnv; openExpr: string }>;
}

/** The one PostgreSQL cluster of this file, started by the first suite that needs it, stopped after all. */
let cluster: PostgresCluster | undefined;
const startCluster = async () => {
  cluster ??= await startPostgres();
};
afterAll(async () => {
  await cluster?.stop();
});
/** The database of each state folder: the PostgreSQL counterpart of the SQLite file in it. */
const databases = new Map<string, Promise<string>>();
const databaseFor = (dir: string) => {
  if (!databases.has(dir)) databases.set(dir, cluster!.createDatabase());
  return databases.get(dir)!;
};

const factories: StoreFactory[] = [
  {
    name: "SqliteStore",
    open: async (dir) => new SqliteStore(path.join(dir, "state.db")),
    child: async (dir) => ({ env: { STATE: path.join(dir, "state.db") }, openExpr: `new (require("./provider/src/store/sqlite-store").SqliteStore)(process.env.STATE)` }),
  },
  {
    name: "PostgresStore",
    open: async (dir) => PostgresStore.open(await databaseFor(dir)),
    skip: postgresSkipReason(),
    start: startCluster,
    child: async (dir) => ({ env: { STATE: await databaseFor(dir) }, openExpr: `await require("./provider/src/store/postgres-store").PostgresStore.open(process.env.STATE)` }),
  },
];
/** Starting a cluster (initdb, then the server) takes a few seconds on a slow machine. */
const startTimeoutMs = 60_000;

const at = "2026-11-01T00:00:00.000Z";
let n = 0;
const volume = (extra: Partial<VolumeRow> = {}): VolumeRow => {
  n++;
  return {
    id: `vol-${n}`, name: `v${n}`, owner: "urn:v", sizeGib: 1, profileId: null, availabilityZone: "nova", multiAttach: false, sourceVolumeId: null,
    description: "", metadata: { k: "v" }, poolId: "b1/p1", backendName: "b1", backendId: "bid", sharedTargets: true, status: "available",
    replicationStatus: "disabled", createdAt: at, updatedAt: at, ...extra,
  };
};
const profile = (extra: Partial<ProfileRow> = {}): ProfileRow => ({ id: "prof-1", name: "gold", owner: "urn:p", description: "", storageType: "block", extraSpecs: { a: "b" }, createdAt: at, updatedAt: at, ...extra });
const attachment = (volumeId: string, extra: Partial<AttachmentRow> = {}): AttachmentRow => {
  n++;
  return {
    id: `att-${n}`, owner: "urn:a", volumeId, host: "localhost", mode: "rw", connector: { initiator: "iqn.2026-11.test:h", multipath: false },
    protocol: "iscsi", targetName: "iqn.t1", status: "attached", devicePath: "/dev/loop0", brokenReason: null, createdAt: at, updatedAt: at, ...extra,
  };
};
const target = (name: string, extra: Partial<TargetRow> = {}): TargetRow => ({
  name, backendName: "b1", protocol: "iscsi", mode: "rw", portal: "127.0.0.1:3260", tid: 1, port: null, chapUser: "u", chapSecretEnc: "sealed", createdAt: at, ...extra,
});
const pair = (primaryVolumeId: string, extra: Partial<PairRow> = {}): PairRow => ({
  id: `pair-${primaryVolumeId}`, owner: "urn:r", primaryVolumeId, secondaryVolumeId: null, targetBackend: "dr", targetPool: null, rpoSeconds: 60, enabled: true,
  activeSide: "primary", status: "enabling", lastSyncAt: null, bytesTransferred: 0, lastError: null, createdAt: at, updatedAt: at, ...extra,
});
const tick = () => new Promise((r) => setTimeout(r, 1));
/**
 * The store refused a write. Checked by shape, not `instanceof Error`: a driver's error class may
 * come from another realm (better-sqlite3 keeps the SqliteError of the first test file that loaded
 * it in a jest worker), which `toThrow` would not count as an error at all.
 */
const refused = (p: Promise<unknown>) => expect(p).rejects.toMatchObject({ message: expect.any(String) });

for (const f of factories.filter((x) => x.skip)) test.skip(`Store contract: ${f.name} skipped: ${f.skip}`, () => undefined);

describe.each(factories.filter((x) => !x.skip))("Store contract: $name", (factory) => {
  let dir: string;
  let store: Store;
  const opened: Store[] = [];
  const open = async () => {
    const s = await factory.open(dir);
    opened.push(s);
    return s;
  };

  beforeAll(async () => {
    await factory.start?.();
  }, startTimeoutMs);
  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-store-"));
    store = await open();
  });
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe("rows", () => {
    test("volumes: insert, get by id and name, list in creation order and by pool, update returns the row, delete", async () => {
      const a = volume({ createdAt: "2026-11-01T00:00:01.000Z" });
      const b = volume({ poolId: "b1/p2", multiAttach: true, owner: "urn:b", status: "creating", createdAt: "2026-11-01T00:00:00.000Z" });
      await store.insertVolume(a);
      await store.insertVolume(b);
      expect(await store.getVolume(a.id)).toEqual(a);
      expect(await store.getVolumeByName(b.name)).toEqual(b);
      expect(await store.getVolume("nope")).toBeUndefined();
      expect((await store.listVolumes()).map((v) => v.id)).toEqual([b.id, a.id]);
      expect(await store.listVolumes({ poolId: "b1/p2" })).toEqual([b]);
      expect(await store.listVolumes({ owner: "urn:b", status: "creating" })).toEqual([b]);
      expect(await store.listVolumes({ owner: "urn:b", status: "available" })).toEqual([]);
      expect(await store.updateVolume(a.id, { status: "in-use", metadata: { x: "y" }, updatedAt: "later" })).toEqual({ ...a, status: "in-use", metadata: { x: "y" }, updatedAt: "later" });
      await expect(store.updateVolume("nope", { status: "error" })).rejects.toMatchObject({ code: "NOT_FOUND" });
      await refused(store.insertVolume({ ...volume(), name: a.name }));
      await store.deleteVolume(a.id);
      await store.deleteVolume(a.id);
      expect(await store.getVolume(a.id)).toBeUndefined();
    });

    test("provisioned capacity sums sizes by pool and follows every change; sharedTargets is corrected per backend", async () => {
      const a = volume({ sizeGib: 3 });
      await store.insertVolume(a);
      await store.insertVolume(volume({ sizeGib: 4 }));
      await store.insertVolume(volume({ sizeGib: 5, poolId: "b2/p1", backendName: "b2" }));
      expect(new Map(await store.provisionedGibByPool())).toEqual(new Map([["b1/p1", 7], ["b2/p1", 5]]));
      await store.updateVolume(a.id, { sizeGib: 10 });
      expect((await store.provisionedGibByPool()).get("b1/p1")).toBe(14);
      await store.deleteVolume(a.id);
      expect((await store.provisionedGibByPool()).get("b1/p1")).toBe(4);
      expect(await store.setSharedTargets("b1", false)).toBe(1);
      expect(await store.setSharedTargets("b1", false)).toBe(0);
      expect((await store.listVolumes()).map((v) => [v.backendName, v.sharedTargets])).toEqual([["b1", false], ["b2", true]]);
    });

    test("the provisioned totals the store keeps equal a re-sum of the rows after creates, deletes, grows, moves, failed creates and a crash mid-transaction", async () => {
      /** The truth, summed from the rows themselves. */
      const resum = async () => {
        const gib = new Map<string, number>();
        const count = new Map<string, number>();
        for (const v of await store.listVolumes()) {
          gib.set(v.poolId, (gib.get(v.poolId) ?? 0) + v.sizeGib);
          count.set(v.backendName, (count.get(v.backendName) ?? 0) + 1);
        }
        return { gib, count };
      };
      const expectTotalsEqualResum = async () => {
        const truth = await resum();
        expect(new Map(await store.provisionedGibByPool())).toEqual(truth.gib);
        expect(new Map(await store.volumeCountByBackend())).toEqual(truth.count);
      };
      const pools = [
        { poolId: "b1/p1", backendName: "b1" },
        { poolId: "b1/p2", backendName: "b1" },
        { poolId: "b2/p1", backendName: "b2" },
      ];
      // Creates (in and out of transactions).
      const made: VolumeRow[] = [];
      for (let i = 0; i < 12; i++) {
        const v = volume({ sizeGib: 1 + (i % 5), ...pools[i % 3] });
        made.push(v);
        if (i % 2) await store.insertVolume(v);
        else await store.transaction((tx) => tx.insertVolume(v));
      }
      await expectTotalsEqualResum();
      // Grows, an update that leaves the size alone, a move to another pool.
      await store.updateVolume(made[0].id, { sizeGib: 40 });
      await store.transaction((tx) => tx.updateVolume(made[1].id, { sizeGib: 9, status: "extending" }));
      await store.updateVolume(made[2].id, { status: "in-use", sizeGib: made[2].sizeGib });
      await store.updateVolume(made[3].id, { poolId: "b2/p1", backendName: "b2" });
      await expectTotalsEqualResum();
      // Deletes, down to an empty pool (b1/p2: made[1], [4], [7], [10]).
      for (const i of [1, 4, 7, 10, 5]) await store.deleteVolume(made[i].id);
      await store.deleteVolume(made[5].id); // already gone
      await expectTotalsEqualResum();
      expect((await store.provisionedGibByPool()).has("b1/p2")).toBe(false);
      // Failed creates: a transaction that inserts and grows, then fails, counts nothing; a refused insert (same name) neither.
      await refused(
        store.transaction(async (tx) => {
          await tx.insertVolume(volume({ sizeGib: 7, ...pools[1] }));
          await tx.updateVolume(made[0].id, { sizeGib: 50 });
          await tx.deleteVolume(made[6].id);
          await tick();
          throw new Error("the driver could not make the file");
        }),
      );
      await refused(store.insertVolume(volume({ name: made[0].name, sizeGib: 30 })));
      await expectTotalsEqualResum();
      // A crash mid-transaction: another process inserts, grows and deletes in a transaction and is killed before it commits.
      const { env, openExpr } = await factory.child(dir);
      const row = volume({ sizeGib: 11, ...pools[1] });
      const script = `(async () => {
        const store = ${openExpr};
        await store.transaction(async (tx) => {
          await tx.insertVolume(${JSON.stringify(row)});
          await tx.updateVolume(${JSON.stringify(made[0].id)}, { sizeGib: 60 });
          await tx.deleteVolume(${JSON.stringify(made[8].id)});
          process.stdout.write("inside\\n");
          await new Promise(() => undefined);
        });
      })().catch((err) => { console.error(err); process.exit(1); });`;
      const child = await startScriptChild(script, env, "inside");
      await new Promise((resolve) => {
        child.on("exit", resolve);
        child.kill("SIGKILL");
      });
      const after = await open();
      expect(await after.getVolume(row.id)).toBeUndefined();
      await expectTotalsEqualResum();
      expect(new Map(await after.provisionedGibByPool())).toEqual(new Map(await store.provisionedGibByPool()));
      // And the totals go on following the rows after it, whichever store (process) writes.
      await after.insertVolume(row);
      await after.updateVolume(made[8].id, { sizeGib: 20 });
      await expectTotalsEqualResum();
      await store.updateVolume(made[8].id, { sizeGib: 21 });
      await after.deleteVolume(made[9].id);
      await expectTotalsEqualResum();
    }, 60_000);

    test("profiles: insert, get by id and name, list by name, update, delete", async () => {
      const p = profile();
      await store.insertProfile(p);
      await store.insertProfile(profile({ id: "prof-0", name: "bronze" }));
      expect(await store.getProfile(p.id)).toEqual(p);
      expect(await store.getProfileByName("gold")).toEqual(p);
      expect((await store.listProfiles()).map((x) => x.name)).toEqual(["bronze", "gold"]);
      expect(await store.updateProfile(p.id, { extraSpecs: { c: "d" } })).toEqual({ ...p, extraSpecs: { c: "d" } });
      await expect(store.updateProfile("nope", { description: "x" })).rejects.toMatchObject({ code: "NOT_FOUND" });
      await store.deleteProfile(p.id);
      expect(await store.getProfile(p.id)).toBeUndefined();
    });

    test("attachments: insert, get, list by volume, target and owner, update, delete; a volume with attachments cannot go", async () => {
      const v = volume();
      const w = volume();
      await store.insertVolume(v);
      await store.insertVolume(w);
      const a = attachment(v.id);
      const b = attachment(w.id, { owner: "urn:b", targetName: null, protocol: "local", connector: {}, devicePath: null, mode: "ro" });
      await store.insertAttachment(a);
      await store.insertAttachment(b);
      expect(await store.getAttachment(a.id)).toEqual(a);
      expect(await store.listAttachments({ volumeId: w.id })).toEqual([b]);
      expect(await store.listAttachments({ targetName: "iqn.t1" })).toEqual([a]);
      expect(await store.listAttachments({ owner: "urn:b", volumeId: w.id })).toEqual([b]);
      expect(await store.listAttachments()).toHaveLength(2);
      expect(await store.updateAttachment(a.id, { status: "detaching", devicePath: null })).toEqual({ ...a, status: "detaching", devicePath: null });
      await expect(store.updateAttachment("nope", { status: "attached" })).rejects.toMatchObject({ code: "NOT_FOUND" });
      await refused(store.insertAttachment(attachment("no-such-volume")));
      await refused(store.deleteVolume(v.id));
      await store.deleteAttachment(a.id);
      expect(await store.getAttachment(a.id)).toBeUndefined();
    });

    test("targets and LUNs: insert, list by portal and backend, record a new tid or port, LUNs in order, deleting a target deletes its LUNs", async () => {
      await store.insertTarget(target("iqn.t1"));
      await store.insertTarget(target("nbd-1", { protocol: "nbd", portal: "127.0.0.1:10809", tid: null, port: 10809, chapUser: null, chapSecretEnc: null, backendName: "b2" }));
      expect(await store.getTarget("iqn.t1")).toEqual(target("iqn.t1"));
      expect((await store.listTargets({ portal: "127.0.0.1:3260" })).map((t) => t.name)).toEqual(["iqn.t1"]);
      expect((await store.listTargets({ backendName: "b2" })).map((t) => t.name)).toEqual(["nbd-1"]);
      await store.updateTarget("iqn.t1", { tid: 7 });
      await store.updateTarget("nbd-1", { port: 10900 });
      expect((await store.getTarget("iqn.t1"))?.tid).toBe(7);
      expect((await store.getTarget("nbd-1"))?.port).toBe(10900);
      await store.insertLun({ targetName: "iqn.t1", volumeId: "b", lun: 2 });
      await store.insertLun({ targetName: "iqn.t1", volumeId: "a", lun: 1 });
      expect(await store.listLuns("iqn.t1")).toEqual([{ targetName: "iqn.t1", volumeId: "a", lun: 1 }, { targetName: "iqn.t1", volumeId: "b", lun: 2 }]);
      await refused(store.insertLun({ targetName: "iqn.t1", volumeId: "c", lun: 2 }));
      await store.deleteLun("iqn.t1", "a");
      expect((await store.listLuns("iqn.t1")).map((l) => l.lun)).toEqual([2]);
      await store.deleteTarget("iqn.t1");
      expect(await store.getTarget("iqn.t1")).toBeUndefined();
      expect(await store.listLuns("iqn.t1")).toEqual([]);
    });

    test("replication pairs: insert, get, list by primary and secondary, update, delete; one pair per primary", async () => {
      const v = volume();
      await store.insertVolume(v);
      const p = pair(v.id, { secondaryVolumeId: "sec" });
      await store.insertPair(p);
      expect(await store.getPair(p.id)).toEqual(p);
      expect(await store.listPairs({ primaryVolumeId: v.id })).toEqual([p]);
      expect(await store.listPairs({ secondaryVolumeId: "sec" })).toEqual([p]);
      expect(await store.listPairs({ secondaryVolumeId: "other" })).toEqual([]);
      expect(await store.updatePair(p.id, { enabled: false, activeSide: "secondary", status: "failed-over", bytesTransferred: 5 })).toEqual({
        ...p, enabled: false, activeSide: "secondary", status: "failed-over", bytesTransferred: 5,
      });
      await refused(store.insertPair({ ...p, id: "pair-2" }));
      await expect(store.updatePair("nope", { status: "error" })).rejects.toMatchObject({ code: "NOT_FOUND" });
      await store.deletePair(p.id);
      expect(await store.listPairs()).toEqual([]);
    });

    test("backends keep their id and config; the state id is 32 hex digits, the same after a reopen; facts are kept by key", async () => {
      await store.upsertBackend({ name: "b1", backendId: "one", config: null, createdAt: at });
      await store.upsertBackend({ name: "b1", backendId: "two", config: '{"pools":["p0"]}', createdAt: "later" });
      await store.upsertBackend({ name: "a0", backendId: "three", config: null, createdAt: at });
      expect(await store.getBackend("b1")).toEqual({ name: "b1", backendId: "two", config: '{"pools":["p0"]}', createdAt: at });
      expect(await store.getBackend("b2")).toBeUndefined();
      expect((await store.listBackends()).map((b) => b.name)).toEqual(["a0", "b1"]);
      expect(await store.getInfo("key_check")).toBeUndefined();
      await store.setInfo("key_check", "one");
      await store.setInfo("key_check", "two");
      expect(await store.getInfo("key_check")).toBe("two");
      const id = await store.stateId();
      expect(id).toMatch(/^[0-9a-f]{32}$/);
      expect(await (await open()).stateId()).toBe(id);
    });

    test("every status of the unions is stored; anything else is refused", async () => {
      const v = volume();
      await store.insertVolume(v);
      for (const status of VOLUME_STATUSES) expect((await store.updateVolume(v.id, { status })).status).toBe(status);
      for (const replicationStatus of REPLICATION_STATUSES) expect((await store.updateVolume(v.id, { replicationStatus })).replicationStatus).toBe(replicationStatus);
      const a = attachment(v.id);
      await store.insertAttachment(a);
      for (const status of ATTACHMENT_STATUSES) expect((await store.updateAttachment(a.id, { status })).status).toBe(status);
      await store.insertPair(pair(v.id));
      for (const status of REPLICATION_STATUSES) expect((await store.updatePair(pair(v.id).id, { status })).status).toBe(status);
      const bogus = "avaliable" as VolumeRow["status"];
      await refused(store.updateVolume(v.id, { status: bogus }));
      await refused(store.insertVolume(volume({ status: bogus })));
      await refused(store.updateVolume(v.id, { replicationStatus: "broken" as VolumeRow["replicationStatus"] }));
      await refused(store.updateAttachment(a.id, { status: "broken" as AttachmentRow["status"] }));
      await refused(store.updateAttachment(a.id, { mode: "wo" as AttachmentRow["mode"] }));
      await refused(store.updatePair(pair(v.id).id, { status: "ok" as PairRow["status"] }));
      await refused(store.updatePair(pair(v.id).id, { activeSide: "both" as PairRow["activeSide"] }));
    });
  });

  describe("transactions", () => {
    test("commit: what fn wrote is there after, and fn's value is returned", async () => {
      const v = volume();
      const out = await store.transaction(async (tx) => {
        await tx.insertVolume(v);
        await tick();
        return (await tx.getVolume(v.id))?.name;
      });
      expect(out).toBe(v.name);
      expect(await store.getVolume(v.id)).toEqual(v);
      expect(await (await open()).getVolume(v.id)).toEqual(v);
    });

    test("rollback: a rejection undoes every write of fn, provisioned capacity included, and is passed on as it is", async () => {
      const a = volume({ sizeGib: 2 });
      await store.insertVolume(a);
      const boom = new Error("boom");
      await expect(
        store.transaction(async (tx) => {
          await tx.insertVolume(volume({ sizeGib: 5 }));
          await tx.updateVolume(a.id, { sizeGib: 3, status: "extending" });
          await tx.insertProfile(profile());
          expect((await tx.provisionedGibByPool()).get("b1/p1")).toBe(8);
          await tick();
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await store.listVolumes()).toEqual([a]);
      expect(await store.listProfiles()).toEqual([]);
      expect((await store.provisionedGibByPool()).get("b1/p1")).toBe(2);
      expect(await (await open()).listVolumes()).toEqual([a]);
    });

    test("a write that fails inside fn rolls back the writes before it when fn passes the failure on", async () => {
      const a = volume();
      await expect(
        store.transaction(async (tx) => {
          await tx.insertVolume(a);
          await tx.insertVolume({ ...volume(), id: a.id });
        }),
      ).rejects.toMatchObject({ message: expect.any(String) });
      expect(await store.getVolume(a.id)).toBeUndefined();
    });

    test("isolation: a transaction in flight is seen by no other transaction and no read, in this store or another on the same state", async () => {
      const other = await open();
      const v = volume();
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      let inside!: () => void;
      const wrote = new Promise<void>((r) => (inside = r));
      const first = store.transaction(async (tx) => {
        await tx.insertVolume(v);
        inside();
        await released;
        throw new Error("undo");
      });
      await wrote;
      // Started while the first is open and uncommitted: whenever they answer, they must not see its row.
      const second = store.transaction(async (tx) => (await tx.getVolume(v.id)) ?? "absent");
      const read = store.getVolume(v.id);
      const list = store.listVolumes();
      const elsewhere = await other.getVolume(v.id);
      await tick();
      release();
      await expect(first).rejects.toThrow("undo");
      expect(await second).toBe("absent");
      expect(await read).toBeUndefined();
      expect(await list).toEqual([]);
      expect(elsewhere).toBeUndefined();
    });

    test("two concurrent transactions do not interleave: each one's reads and writes form one step", async () => {
      const log: string[] = [];
      const run = (name: string) =>
        store.transaction(async (tx) => {
          log.push(`${name} begin`);
          await tick();
          await tx.insertProfile(profile({ id: name, name }));
          await tick();
          log.push(`${name} end`);
        });
      await Promise.all([run("a"), run("b"), run("c")]);
      expect(log).toEqual(["a begin", "a end", "b begin", "b end", "c begin", "c end"]);
      expect((await store.listProfiles()).map((p) => p.name)).toEqual(["a", "b", "c"]);
    });

    test("no overbooking: concurrent placement-like read-decide-writes never exceed the capacity they check", async () => {
      const capacityGib = 10;
      const place = (i: number) =>
        store.transaction(async (tx) => {
          const used = (await tx.provisionedGibByPool()).get("b1/p1") ?? 0;
          await tick(); // what a placement decides on must still hold when it writes
          if (used + 3 > capacityGib) throw new Error(`full (${used} GiB used)`);
          await tx.insertVolume(volume({ id: `placed-${i}`, name: `placed-${i}`, sizeGib: 3 }));
        });
      const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => place(i)));
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
      expect((await store.provisionedGibByPool()).get("b1/p1")).toBe(9);
    });

    test("the store itself used inside its own transaction fails at once, and the transaction rolls back", async () => {
      const v = volume();
      await refused(
        store.transaction(async (tx) => {
          await tx.insertVolume(v);
          await store.getVolume(v.id);
        }),
      );
      expect(await store.listVolumes()).toEqual([]);
    });

    test("a transaction's handle is dead once the transaction ended", async () => {
      let leaked: Parameters<Parameters<Store["transaction"]>[0]>[0] | undefined;
      await store.transaction(async (tx) => {
        leaked = tx;
      });
      await refused(leaked!.insertVolume(volume()));
      expect(await store.listVolumes()).toEqual([]);
    });
  });

  describe("locks", () => {
    test("exclusive per name; the holder may take it again; only the holder releases it", async () => {
      expect(await store.tryLock("l", "h1", 60_000)).toBe(true);
      expect(await store.tryLock("l", "h2", 60_000)).toBe(false);
      expect(await (await open()).tryLock("l", "h2", 60_000)).toBe(false);
      expect(await store.tryLock("other", "h2", 60_000)).toBe(true);
      expect(await store.tryLock("l", "h1", 60_000)).toBe(true);
      await store.unlock("l", "h2");
      expect(await store.tryLock("l", "h2", 60_000)).toBe(false);
      await store.unlock("l", "h1");
      expect(await store.tryLock("l", "h2", 60_000)).toBe(true);
    });

    // PostgreSQL's locks live as long as their holder's session, not a TTL (test/contract/postgres-locks.test.ts).
    if (factory.name === "SqliteStore") test("a lock expires after its ttl (its holder died), and then another holder gets it (SQLite; PostgreSQL: the session is the lifetime)", async () => {
      expect(await store.tryLock("l", "dead", 50)).toBe(true);
      expect(await store.tryLock("l", "h2", 60_000)).toBe(false);
      await new Promise((r) => setTimeout(r, 80));
      expect(await store.tryLock("l", "h2", 60_000)).toBe(true);
      expect(await store.tryLock("l", "dead", 50)).toBe(false);
    });

    test("withStoreLock: work under one name never overlaps, across stores on the same state; a holder that never lets go times out", async () => {
      const other = await open();
      let running = 0;
      let most = 0;
      const work = (s: Store) =>
        withStoreLock(s, "job", { timeoutMs: 10_000, timedOut: () => new Error("timed out") }, async () => {
          most = Math.max(most, ++running);
          await new Promise((r) => setTimeout(r, 5));
          running--;
        });
      await Promise.all([work(store), work(other), work(store), work(other)]);
      expect(most).toBe(1);
      expect(await store.tryLock("job", "anyone", 1_000)).toBe(true);
      await expect(withStoreLock(other, "job", { timeoutMs: 30, timedOut: () => new Error("timed out") }, async () => undefined)).rejects.toThrow("timed out");
    });
  });
});

const pgSkip = postgresSkipReason();
if (pgSkip) {
  test.skip(`PostgresStore with two runners skipped: ${pgSkip}`, () => undefined);
} else {
  describe("PostgresStore: two runners on one database (two stores, two pools)", () => {
    let url: string;
    const opened: PostgresStore[] = [];
    const open = async (u = url) => {
      const s = await PostgresStore.open(u);
      opened.push(s);
      return s;
    };

    beforeAll(startCluster, startTimeoutMs);
    beforeEach(async () => {
      url = await cluster!.createDatabase();
    });
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close();
    });

    test("two processes starting at once migrate once and share one state id", async () => {
      const [a, b] = await Promise.all([open(), open()]);
      expect(await a.appliedMigrations()).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(await b.appliedMigrations()).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(await a.stateId()).toBe(await b.stateId());
    });

    test("no overbooking: placement-like read-decide-writes from two runners never exceed the capacity they check", async () => {
      const runners = [await open(), await open()];
      const capacityGib = 10;
      const place = (s: Store, i: number) =>
        s.transaction(async (tx) => {
          const used = (await tx.provisionedGibByPool()).get("b1/p1") ?? 0;
          await tick(); // the other runner gets every chance to decide on the same numbers
          if (used + 3 > capacityGib) throw new Error(`full (${used} GiB used)`);
          await tx.insertVolume(volume({ id: `placed-${i}`, name: `placed-${i}`, sizeGib: 3 }));
        });
      const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => place(runners[i % 2], i)));
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
      expect((await runners[0].provisionedGibByPool()).get("b1/p1")).toBe(9);
      expect((await runners[1].listVolumes()).map((v) => v.sizeGib)).toEqual([3, 3, 3]);
    });

    test("a runner's write transaction waits at the database for the other's to end, then sees what it committed", async () => {
      const [a, b] = [await open(), await open()];
      const v = volume();
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      let inside!: () => void;
      const wrote = new Promise<void>((r) => (inside = r));
      const first = a.transaction(async (tx) => {
        await tx.insertVolume(v);
        inside();
        await released;
      });
      await wrote;
      let started = false;
      const second = b.transaction(async (tx: StoreOps) => {
        started = true;
        return tx.getVolume(v.id);
      });
      // Wait (polling the database, no fixed sleep) until b's session queues for the write lock.
      const deadline = Date.now() + 10_000;
      while ((await cluster!.waitingAdvisoryLocks(url)) === 0 && Date.now() < deadline) await tick();
      expect(await cluster!.waitingAdvisoryLocks(url)).toBe(1);
      expect(started).toBe(false);
      release();
      await first;
      expect(await second).toEqual(v);
    }, 20_000);

    test("a bad password is refused with a message naming stateUrl, never the password", async () => {
      const wrong = url.replace(cluster!.password, "not-the-password");
      const err: unknown = await PostgresStore.open(wrong).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "INVALID_INPUT", property: "stateUrl", message: expect.stringContaining("stateUrl") });
      expect((err as Error).message).not.toContain("not-the-password");
      expect((err as Error).message).toContain("***");
    });
  });
}
