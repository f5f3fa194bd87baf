/**
 * `sds state migrate` (store/copy-state.ts and its command in cli-main.ts) on real stores: a
 * SQLite file and a throwaway PostgreSQL cluster (test/helpers/postgres.ts), one database per
 * test. A source state with every kind of row is copied, and every read the Store offers (each
 * list, with each filter value the rows use, each get, the provisioned capacity, the state id and
 * key check) must answer the same on both sides. A destination that holds a state already is
 * refused and left as it was. The CLI runs as a real process (ts-node on cli-main.ts): counts on
 * stdout and exit 0, one line and exit 2 for a missing source or a refused destination, and the
 * PostgreSQL password never in its output.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { SecretBox } from "../../provider/src/controller/secret-box";
import { copyState } from "../../provider/src/store/copy-state";
import { PostgresStore } from "../../provider/src/store/postgres-store";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import type { AttachmentRow, BackendRow, PairRow, ProfileRow, Store, TargetRow, VolumeRow } from "../../provider/src/store/store";
import { type PostgresCluster, postgresSkipReason, startPostgres } from "../helpers/postgres";
import { sdsCli } from "../helpers/sds-cli";

const pgSkip = postgresSkipReason();
/** Starting a cluster (initdb, then the server) takes a few seconds on a slow machine. */
const startTimeoutMs = 60_000;
/** One CLI run: ts-node compiles cli-main.ts and what it imports (a few seconds on a busy machine). */
const cliTimeoutMs = 90_000;

const t = (s: number) => new Date(Date.UTC(2026, 10, 1, 0, 0, s)).toISOString();

/**
 * A state as a stack that ran for a while leaves it: backends (one from before configs were
 * kept), profiles, volumes (a clone, a replica, one in error), an iSCSI target with CHAP and two
 * LUNs and an NBD server, attachments of every protocol (one broken), two pairs, a sealed key
 * check made with the key file beside a SQLite database, and a lock (which is not to travel).
 */
async function fillState(store: Store, keyFile: string): Promise<void> {
  const backends: BackendRow[] = [
    { name: "b1", backendId: "bid-1", config: '{"driver":"file","pools":[{"name":"p1"}]}', createdAt: t(0) },
    { name: "dr", backendId: "bid-dr", config: '{"driver":"file","pools":[{"name":"p9"}]}', createdAt: t(1) },
    { name: "legacy", backendId: "bid-old", config: null, createdAt: t(2) },
  ];
  const profiles: ProfileRow[] = [
    { id: "prof-gold", name: "gold", owner: "urn:pulumi:dev::p::sds:index:Profile::gold", description: "fast", storageType: "block", extraSpecs: { "replication:enabled": "<is> True", tier: "1" }, createdAt: t(3), updatedAt: t(4) },
    { id: "prof-bronze", name: "bronze", owner: "urn:pulumi:dev::p::sds:index:Profile::bronze", description: "", storageType: "block", extraSpecs: {}, createdAt: t(3), updatedAt: t(3) },
  ];
  const vol = (id: string, extra: Partial<VolumeRow>): VolumeRow => ({
    id, name: `name-${id}`, owner: `urn:pulumi:dev::p::sds:index:Volume::${id}`, sizeGib: 1, profileId: null, availabilityZone: "nova", multiAttach: false,
    sourceVolumeId: null, description: "", metadata: {}, poolId: "b1/p1", backendName: "b1", backendId: "bid-1", sharedTargets: true, status: "available",
    replicationStatus: "disabled", createdAt: t(10), updatedAt: t(10), ...extra,
  });
  const volumes: VolumeRow[] = [
    vol("vol-a", { sizeGib: 10, profileId: "prof-gold", multiAttach: true, metadata: { app: "db", "zz-last": "1", a: "é ✓" }, status: "in-use", replicationStatus: "enabled", description: "primary db" }),
    vol("vol-b", { sizeGib: 10, sourceVolumeId: "vol-a", status: "in-use", createdAt: t(11), updatedAt: t(12), sharedTargets: false }),
    // Same creation time as vol-b: the id orders them, in both stores.
    vol("vol-B2", { sizeGib: 2, profileId: "prof-bronze", createdAt: t(11), status: "error_extending" }),
    vol("vol-a-replica", { sizeGib: 10, poolId: "dr/p9", backendName: "dr", backendId: "bid-dr", replicationStatus: "enabled", createdAt: t(13) }),
    vol("vol-c", { sizeGib: 3, poolId: "b1/p2", status: "in-use", createdAt: t(14) }),
  ];
  const targets: TargetRow[] = [
    { name: "iqn.2026-11.org.sds:abc-b1-rw", backendName: "b1", protocol: "iscsi", mode: "rw", portal: "127.0.0.1:3260", tid: 7, port: null, chapUser: "sds-abc", chapSecretEnc: "v1:aaa:bbb:ccc", createdAt: t(20) },
    { name: "nbd-abc-vol-c-rw", backendName: "b1", protocol: "nbd", mode: "rw", portal: "127.0.0.1", tid: null, port: 10809, chapUser: null, chapSecretEnc: null, createdAt: t(21) },
    { name: "iqn.2026-11.org.sds:abc-b1-ro", backendName: "b1", protocol: "iscsi", mode: "ro", portal: "10.0.0.2:3260", tid: 2, port: null, chapUser: "sds-abc-ro", chapSecretEnc: "v1:ddd:eee:fff", createdAt: t(22) },
  ];
  const att = (id: string, volumeId: string, extra: Partial<AttachmentRow>): AttachmentRow => ({
    id, owner: `urn:pulumi:dev::p::sds:index:Attachment::${id}`, volumeId, host: "localhost", mode: "rw", connector: { initiator: "iqn.1993-08.org.debian:01:h1", hostname: "h1", multipath: false },
    protocol: "iscsi", targetName: targets[0].name, status: "attached", devicePath: "/dev/sdb", brokenReason: null, createdAt: t(30), updatedAt: t(30), ...extra,
  });
  const attachments: AttachmentRow[] = [
    att("att-1", "vol-a", {}),
    att("att-2", "vol-a", { host: "h2", mode: "ro", connector: { initiator: "iqn.1993-08.org.debian:01:h2", ip: "10.0.0.5" }, targetName: targets[2].name, devicePath: "/dev/sdc", createdAt: t(31) }),
    att("att-3", "vol-b", { devicePath: null, status: "error_attaching", createdAt: t(32) }),
    att("att-4", "vol-c", { protocol: "nbd", targetName: targets[1].name, devicePath: "/dev/nbd0", brokenReason: "nbdkit for nbd-abc-vol-c-rw was gone (restarted)", createdAt: t(33) }),
    att("att-5", "vol-B2", { protocol: "local", targetName: null, connector: {}, devicePath: "/dev/loop3", createdAt: t(34) }),
  ];
  const pairs: PairRow[] = [
    {
      id: "pair-a", owner: "urn:pulumi:dev::p::sds:index:Replication::a", primaryVolumeId: "vol-a", secondaryVolumeId: "vol-a-replica", targetBackend: "dr", targetPool: "p9", rpoSeconds: 300,
      enabled: true, activeSide: "primary", status: "enabled", lastSyncAt: t(40), bytesTransferred: 6 * 2 ** 40 + 123, lastError: null, createdAt: t(15), updatedAt: t(40),
    },
    {
      id: "pair-c", owner: "urn:pulumi:dev::p::sds:index:Replication::c", primaryVolumeId: "vol-c", secondaryVolumeId: null, targetBackend: "dr", targetPool: null, rpoSeconds: 60,
      enabled: false, activeSide: "secondary", status: "error", lastSyncAt: null, bytesTransferred: 0, lastError: "sync failed: agent unreachable", createdAt: t(16), updatedAt: t(41),
    },
  ];
  await store.transaction(async (tx) => {
    for (const b of backends) await tx.upsertBackend(b);
    for (const p of profiles) await tx.insertProfile(p);
    for (const v of volumes) await tx.insertVolume(v);
    for (const tg of targets) await tx.insertTarget(tg);
    await tx.insertLun({ targetName: targets[0].name, volumeId: "vol-a", lun: 1 });
    await tx.insertLun({ targetName: targets[0].name, volumeId: "vol-b", lun: 2 });
    await tx.insertLun({ targetName: targets[1].name, volumeId: "vol-c", lun: 0 });
    await tx.insertLun({ targetName: targets[2].name, volumeId: "vol-a", lun: 1 });
    for (const a of attachments) await tx.insertAttachment(a);
    for (const p of pairs) await tx.insertPair(p);
    await tx.setInfo("key_check", new SecretBox({ file: keyFile }).checkValue());
  });
  expect(await store.tryLock("replicate:pair-a", "runner-1", 60_000)).toBe(true);
}

/** Every read the Store offers, over every row and every filter value the rows use: two states that answer alike are alike. */
async function everything(s: Store) {
  const volumes = await s.listVolumes();
  const profiles = await s.listProfiles();
  const attachments = await s.listAttachments();
  const targets = await s.listTargets();
  const pairs = await s.listPairs();
  const backends = await s.listBackends();
  const uniq = <T>(xs: T[]) => [...new Set(xs)];
  const each = async <K, V>(keys: K[], f: (k: K) => Promise<V>) => Promise.all(keys.map(async (k) => [k, await f(k)] as const));
  return {
    volumes,
    profiles,
    attachments,
    targets,
    pairs,
    backends,
    luns: await each(targets.map((x) => x.name), (n) => s.listLuns(n)),
    volumesByPool: await each(uniq(volumes.map((v) => v.poolId)), (poolId) => s.listVolumes({ poolId })),
    volumeById: await each(volumes.map((v) => v.id), (id) => s.getVolume(id)),
    volumeByName: await each(volumes.map((v) => v.name), (n) => s.getVolumeByName(n)),
    profileById: await each(profiles.map((p) => p.id), (id) => s.getProfile(id)),
    profileByName: await each(profiles.map((p) => p.name), (n) => s.getProfileByName(n)),
    attachmentById: await each(attachments.map((a) => a.id), (id) => s.getAttachment(id)),
    attachmentsByVolume: await each(uniq(attachments.map((a) => a.volumeId)), (volumeId) => s.listAttachments({ volumeId })),
    attachmentsByTarget: await each(uniq(attachments.flatMap((a) => (a.targetName ? [a.targetName] : []))), (targetName) => s.listAttachments({ targetName })),
    attachmentsByOwner: await each(uniq(attachments.map((a) => a.owner)), (owner) => s.listAttachments({ owner })),
    targetByName: await each(targets.map((x) => x.name), (n) => s.getTarget(n)),
    targetsByPortal: await each(uniq(targets.map((x) => x.portal)), (portal) => s.listTargets({ portal })),
    targetsByBackend: await each(uniq(targets.map((x) => x.backendName)), (backendName) => s.listTargets({ backendName })),
    pairById: await each(pairs.map((p) => p.id), (id) => s.getPair(id)),
    pairsByPrimary: await each(pairs.map((p) => p.primaryVolumeId), (primaryVolumeId) => s.listPairs({ primaryVolumeId })),
    pairsBySecondary: await each(uniq(pairs.flatMap((p) => (p.secondaryVolumeId ? [p.secondaryVolumeId] : []))), (secondaryVolumeId) => s.listPairs({ secondaryVolumeId })),
    backendByName: await each(backends.map((b) => b.name), (n) => s.getBackend(n)),
    provisioned: Object.fromEntries(await s.provisionedGibByPool()),
    stateId: await s.stateId(),
    stateIdFact: await s.getInfo("state_id"),
    keyCheck: await s.getInfo("key_check"),
  };
}

/** The sizes of a filled state: what the copy must report, and proof the comparison compared something. */
const FILLED = { backends: 3, profiles: 2, volumes: 5, targets: 3, luns: 4, attachments: 5, pairs: 2 };

/** Run the sds CLI as operators do (test/helpers/sds-cli.ts). */
const sds = (args: string[], env: NodeJS.ProcessEnv = {}) => sdsCli(args, { env });

let dir: string;
const opened: Store[] = [];
const track = <S extends Store>(s: S): S => {
  opened.push(s);
  return s;
};
const sqlite = (file: string) => track(new SqliteStore(file));
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-migrate-"));
});
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close().catch(() => undefined);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("SQLite to SQLite: every row, the state id and the key check are copied; locks are not", async () => {
  const source = sqlite(path.join(dir, "a/state.db"));
  await fillState(source, path.join(dir, "a/secret.key"));
  const dest = sqlite(path.join(dir, "b/state.db"));
  const before = await everything(dest);
  expect(before.stateId).toMatch(/^[0-9a-f]{32}$/);
  expect(before.stateId).not.toBe(await source.stateId());

  expect(await copyState(source, dest)).toEqual(FILLED);
  const want = await everything(source);
  expect(want.volumes).toHaveLength(FILLED.volumes);
  expect(await everything(dest)).toEqual(want);
  expect(await dest.tryLock("replicate:pair-a", "runner-2", 60_000)).toBe(true);
});

if (pgSkip) {
  test.skip(`state migrate with PostgreSQL skipped: ${pgSkip}`, () => undefined);
} else {
  describe("with PostgreSQL", () => {
    let cluster: PostgresCluster;
    beforeAll(async () => {
      cluster = await startPostgres();
    }, startTimeoutMs);
    afterAll(async () => {
      await cluster?.stop();
    });
    const postgres = async (url?: string) => track(await PostgresStore.open(url ?? (await cluster.createDatabase())));

    test("SQLite to PostgreSQL and back: every read answers the same, the state id and key check travel, locks do not", async () => {
      const source = sqlite(path.join(dir, "state.db"));
      await fillState(source, path.join(dir, "secret.key"));
      const pgState = await postgres();
      const freshId = await pgState.stateId();
      expect(freshId).toMatch(/^[0-9a-f]{32}$/);
      const want = await everything(source);
      expect(want.stateId).not.toBe(freshId);
      expect(want.keyCheck).toMatch(/^v1:/);

      expect(await copyState(source, pgState)).toEqual(FILLED);
      expect(await everything(pgState)).toEqual(want);
      // The CHAP secrets still open with the source's key, as the key check says.
      new SecretBox({ file: path.join(dir, "secret.key") }).verify((await pgState.getInfo("key_check"))!);
      expect(await pgState.tryLock("replicate:pair-a", "runner-2", 60_000)).toBe(true);

      const back = sqlite(path.join(dir, "back/state.db"));
      expect(await copyState(pgState, back)).toEqual(FILLED);
      expect(await everything(back)).toEqual(want);
    });

    test("a destination that holds a state is refused, naming --to, and left exactly as it was", async () => {
      const source = sqlite(path.join(dir, "state.db"));
      await fillState(source, path.join(dir, "secret.key"));
      const sourceBefore = await everything(source);
      const cases: Array<[string, (s: Store) => Promise<void>]> = [
        ["a profile", (s) => s.insertProfile({ id: "p-x", name: "other", owner: "urn:x", description: "", storageType: "block", extraSpecs: {}, createdAt: t(1), updatedAt: t(1) })],
        ["a target", (s) => s.insertTarget({ name: "iqn.other", backendName: "b1", protocol: "iscsi", mode: "rw", portal: "127.0.0.1:3260", tid: 1, port: null, chapUser: null, chapSecretEnc: null, createdAt: t(1) })],
      ];
      for (const [what, add] of cases) {
        const dest = await postgres();
        await add(dest);
        const destBefore = await everything(dest);
        await expect(copyState(source, dest)).rejects.toMatchObject({ code: "INVALID_INPUT", message: expect.stringMatching(/^--to: the destination already holds a state/) });
        expect({ what, state: await everything(dest) }).toEqual({ what, state: destBefore });
      }
      // A destination with a key check of its own, and a source without one to replace it.
      const bare = sqlite(path.join(dir, "bare.db"));
      const keyed = await postgres();
      await keyed.setInfo("key_check", "v1:other");
      await expect(copyState(bare, keyed)).rejects.toMatchObject({ message: expect.stringMatching(/^--to: .*key check/) });
      expect(await keyed.stateId()).not.toBe(await bare.stateId());
      expect(await everything(source)).toEqual(sourceBefore);
    });

    test("the CLI: SQLite file to PostgreSQL from SDS_STATE_URL, counts on stdout, exit 0; again into it: refused, exit 2; no password or key printed", async () => {
      const file = path.join(dir, ".sds/state.db");
      const keyFile = path.join(dir, ".sds/secret.key");
      await fillState(sqlite(file), keyFile);
      const want = await everything(opened[0]);
      await opened.splice(0)[0].close();
      const url = await cluster.createDatabase();

      const r = await sds(["state", "migrate", "--from", "sqlite:.sds/state.db", "--project", dir], { SDS_STATE_URL: `${url}?sslmode=disable` });
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      const count = (label: string) => Number(new RegExp(`^  ${label}: (\\d+)$`, "m").exec(r.stdout)?.[1]);
      expect({
        backends: count("backends"), profiles: count("profiles"), volumes: count("volumes"), targets: count("targets"),
        luns: count("luns"), attachments: count("attachments"), pairs: count("replication pairs"),
      }).toEqual(FILLED);
      expect(r.stdout).toContain(`state id: ${want.stateId}`);
      expect(r.stdout).toContain('pulumi config set --secret sds:stateUrl "$SDS_STATE_URL"');
      expect(r.stdout).toContain(`pulumi config set --secret sds:secretKey "$(cat ${keyFile})"`);
      expect(r.stdout).not.toContain(cluster.password);
      expect(r.stdout).not.toContain(fs.readFileSync(keyFile, "utf8").trim());
      expect(await everything(await postgres(url))).toEqual(want);

      const again = await sds(["state", "migrate", "--from", "sqlite:.sds/state.db", "--to", url, "--project", dir]);
      expect(again.status).toBe(2);
      expect(again.stdout).toBe("");
      expect(again.stderr).toMatch(/^sds: --to: the destination already holds a state \(2 profile\(s\), 5 volume\(s\), 3 target\(s\), 5 attachment\(s\), 2 replication pair\(s\)\)[^\n]*\n$/);
      expect(again.stderr).not.toContain(cluster.password);
      expect(await everything(opened[opened.length - 1])).toEqual(want);

      // Both URLs on the command line: PostgreSQL back to a new SQLite file, and the file to a new database.
      const back = await sds(["state", "migrate", "--from", url, "--to", "sqlite:back/state.db", "--project", dir]);
      expect(back.stderr).toBe("");
      expect(back.status).toBe(0);
      expect(back.stdout).toContain(`  volumes: ${FILLED.volumes}\n`);
      expect(back.stdout).toContain("pulumi config set sds:stateUrl sqlite:back/state.db");
      expect(back.stdout).not.toContain(cluster.password);
      expect(await everything(sqlite(path.join(dir, "back/state.db")))).toEqual(want);
      const url2 = await cluster.createDatabase();
      const argvTo = await sds(["state", "migrate", "--from", "sqlite:back/state.db", "--to", url2, "--project", dir]);
      expect(argvTo.stderr).toBe("");
      expect(argvTo.status).toBe(0);
      expect(argvTo.stdout).toContain(`pulumi config set --secret sds:stateUrl '${url2.replace(cluster.password, "***")}'   (with the password in place of ***)`);
      expect(argvTo.stdout).not.toContain(cluster.password);
      expect(await everything(await postgres(url2))).toEqual(want);
    }, 4 * cliTimeoutMs);

    test("the CLI: a missing source file, a wrong password, an unknown scheme: exit 2, one line naming the flag, no password, nothing made", async () => {
      const url = await cluster.createDatabase();
      const missing = await sds(["state", "migrate", "--from", "sqlite:nope/state.db", "--to", url, "--project", dir]);
      expect(missing.status).toBe(2);
      expect(missing.stdout).toBe("");
      expect(missing.stderr).toBe(`sds: --from: no sds state at ${path.join(dir, "nope/state.db")}; name the state file the stack used (its sds:stateUrl, by default sqlite:.sds/state.db in the project)\n`);
      expect(missing.stderr).not.toContain(cluster.password);
      expect(fs.existsSync(path.join(dir, "nope"))).toBe(false);

      await fillState(sqlite(path.join(dir, "state.db")), path.join(dir, "secret.key"));
      await opened.splice(0)[0].close();
      const wrong = url.replace(cluster.password, "not-the-password-4711");
      const denied = await sds(["state", "migrate", "--from", "sqlite:state.db", "--to", wrong, "--project", dir]);
      expect(denied.status).toBe(2);
      expect(denied.stdout).toBe("");
      expect(denied.stderr).toMatch(/^sds: --to: cannot (open|connect to) the PostgreSQL state at postgres:\/\/sds:\*\*\*@127\.0\.0\.1:\d+\/sds_test_\d+[^\n]*\n$/);
      expect(denied.stderr).not.toContain("not-the-password-4711");

      const scheme = await sds(["state", "migrate", "--from", "sqlite:state.db", "--to", `mysql://sds:${cluster.password}@127.0.0.1/x`, "--project", dir]);
      expect(scheme.status).toBe(2);
      expect(scheme.stderr).toBe('sds: --to: "mysql://sds:***@127.0.0.1/x" is neither sqlite:<path> nor postgres://…\n');

      // A PostgreSQL source that holds no sds state is a wrong URL: refused, and not given tables.
      const empty = await cluster.createDatabase();
      const noState = await sds(["state", "migrate", "--from", empty, "--to", "sqlite:out/state.db", "--project", dir]);
      expect(noState.status).toBe(2);
      expect(noState.stderr).toMatch(/^sds: --from: no sds state in the database at postgres:\/\/sds:\*\*\*@[^\n]*\n$/);
      expect(noState.stderr).not.toContain(cluster.password);
      expect(fs.existsSync(path.join(dir, "out"))).toBe(false);
    }, 4 * cliTimeoutMs);
  });
}
