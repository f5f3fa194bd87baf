/**
 * `sds recover` (provider/src/cli-main.ts, controller/cut-short-creates.ts), run as an operator
 * runs it: `pulumi stack export` piped in, a real SQLite state. For each pending create it finds by
 * URN what sds made: finished volumes and profiles are to be imported (a retry would make them
 * again under a new auto-name, and the first would outlive every destroy), cut-short volumes and
 * every attachment or pair are taken up by the next up's retry, and a create sds never began
 * needs nothing. It prints commands and changes nothing.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { SqliteStore } from "../../provider/src/store/sqlite-store";
import type { AttachmentRow, PairRow, ProfileRow, VolumeRow } from "../../provider/src/store/store";
import { sdsCli } from "../helpers/sds-cli";

jest.setTimeout(60_000);

const at = "2026-11-01T00:00:00.000Z";
const later = "2026-11-02T00:00:00.000Z";
const urn = (type: string, name: string) => `urn:pulumi:dev::app::${type}::${name}`;
const volume = (id: string, name: string, owner: string, status: VolumeRow["status"], createdAt = at): VolumeRow => ({
  id, name, owner, sizeGib: 1, profileId: null, availabilityZone: "nova", multiAttach: false, sourceVolumeId: null, description: "", metadata: {},
  poolId: "b1/p1", backendName: "b1", backendId: "bid", sharedTargets: false, status, replicationStatus: "disabled", createdAt, updatedAt: createdAt,
});

const sds = (args: string[], stdin: string) => sdsCli(args, { stdin });

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-recover-"));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

test("after a crash, sds recover prints the imports of what sds finished and leaves the rest to up", async () => {
  const file = path.join(dir, "state.db");
  const store = new SqliteStore(file);
  const vDone = urn("sds:index:Volume", "data");
  const vCut = urn("sds:index:Volume", "logs");
  const vNone = urn("sds:index:Volume", "scratch");
  const prof = urn("sds:index:Profile", "gold");
  const att = urn("sds:index:Attachment", "data-on-web");
  const pairUrn = urn("sds:index:ReplicationPair", "data-dr");
  // A replaced volume's old row (older, recorded in the stack) and the finished one the crash left (newer).
  await store.insertVolume(volume("vol-old", "data-1111111", vDone, "available", at));
  await store.insertVolume(volume("vol-new", "data-2222222", vDone, "available", later));
  await store.insertVolume(volume("vol-cut", "logs-3333333", vCut, "creating"));
  await store.insertProfile({ id: "prof-1", name: "gold-4444444", owner: prof, description: "", storageType: "block", extraSpecs: {}, createdAt: at, updatedAt: at } satisfies ProfileRow);
  await store.insertAttachment({
    id: "att-1", owner: att, volumeId: "vol-new", host: "localhost", mode: "rw", connector: {}, protocol: "local", targetName: null,
    status: "attached", devicePath: "/dev/loop9", brokenReason: null, createdAt: at, updatedAt: at,
  } satisfies AttachmentRow);
  await store.insertPair({
    id: "pair-1", owner: pairUrn, primaryVolumeId: "vol-new", secondaryVolumeId: null, targetBackend: "dr", targetPool: null, rpoSeconds: 60, enabled: true,
    activeSide: "primary", status: "enabling", lastSyncAt: null, bytesTransferred: 0, lastError: null, createdAt: at, updatedAt: at,
  } satisfies PairRow);
  await store.close();

  const pending = [att, vDone, vCut, vNone, prof, pairUrn, "urn:pulumi:dev::app::random:index:RandomId::x"].map((u) => ({
    type: "creating",
    resource: { urn: u, type: u.split("::")[2] },
  }));
  const exported = JSON.stringify({ version: 3, deployment: { resources: [], pending_operations: [...pending, { type: "deleting", resource: { urn: vCut, type: "sds:index:Volume" } }] } });
  const before = fs.readFileSync(file);

  const r = await sds(["recover", "--state", `sqlite:${file}`], exported);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  const lines = r.stdout.trimEnd().split("\n");
  expect(lines[0]).toBe(`# sds recover: 6 pending create(s) of sds resources, 0 row(s) the stack does not hold; state ${file}`);
  expect(lines[1]).toBe("pulumi refresh --yes --clear-pending-creates");
  // Parents first; the newest row the URN owns; nothing for a resource of another provider.
  expect(lines.slice(2, -1)).toEqual([
    "pulumi import --yes --generate-code=false sds:index:Profile gold prof-1   # profile gold-4444444 prof-1 is made",
    "pulumi import --yes --generate-code=false sds:index:Volume data vol-new   # volume data-2222222 vol-new is available",
    "# logs (sds:index:Volume): volume logs-3333333 vol-cut is creating; the next up's create takes it up",
    "# scratch (sds:index:Volume): sds holds nothing for it; the next up creates it",
    "# data-dr (sds:index:ReplicationPair): replication pair pair-1 is enabling; the next up's create takes it up",
    "# data-on-web (sds:index:Attachment): attachment of volume vol-new to localhost att-1 is attached; the next up's create takes it up",
  ]);
  expect(lines.at(-1)).toBe("pulumi up");
  // It only looks: the state file is byte for byte what it was.
  expect(fs.readFileSync(file).equals(before)).toBe(true);
});

test("a create whose answer never reached the engine: no pending operation names it, sds recover still finds the row the stack does not hold", async () => {
  const file = path.join(dir, "state.db");
  const store = new SqliteStore(file);
  const data = urn("sds:index:Volume", "data");
  const logs = urn("sds:index:Volume", "logs");
  const att = urn("sds:index:Attachment", "logs-on-web");
  await store.insertVolume(volume("vol-1", "data-1111111", data, "available"));
  // The retry of "data" made a second volume the stack holds; the first attempt's is a stray.
  await store.insertVolume(volume("vol-2", "data-2222222", data, "available", later));
  // "logs" finished, but the engine saw an error (its provider was killed) and holds nothing for it.
  await store.insertVolume(volume("vol-3", "logs-3333333", logs, "available"));
  // A pair's secondary, and another stack's volume, are none of this stack's business.
  await store.insertVolume(volume("vol-4", "logs-replica", `${urn("sds:index:ReplicationPair", "dr")}#secondary`, "available"));
  await store.insertVolume(volume("vol-5", "other-5555555", "urn:pulumi:prod::app::sds:index:Volume::other", "available"));
  await store.insertAttachment({
    id: "att-9", owner: att, volumeId: "vol-3", host: "localhost", mode: "rw", connector: {}, protocol: "local", targetName: null,
    status: "attached", devicePath: "/dev/loop9", brokenReason: null, createdAt: at, updatedAt: at,
  } satisfies AttachmentRow);
  await store.close();
  const exported = JSON.stringify({
    deployment: {
      resources: [
        { urn: "urn:pulumi:dev::app::pulumi:pulumi:Stack::app-dev", type: "pulumi:pulumi:Stack" },
        { urn: data, type: "sds:index:Volume", id: "vol-2" },
      ],
    },
  });
  const r = await sds(["recover", "--state", `sqlite:${file}`], exported);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  expect(r.stdout.trimEnd().split("\n")).toEqual([
    `# sds recover: 0 pending create(s) of sds resources, 3 row(s) the stack does not hold; state ${file}`,
    "pulumi refresh --yes",
    "pulumi import --yes --generate-code=false sds:index:Volume logs vol-3   # volume logs-3333333 vol-3 is available, and the stack holds nothing at its URN",
    "# data (sds:index:Volume): volume data-1111111 vol-1 is available, but the stack holds vol-2 at its URN; nothing owns it: check it and remove it",
    "# logs-on-web (sds:index:Attachment): attachment of volume vol-3 to localhost att-9 is attached, not in the stack; the next up's create takes it up",
    "pulumi up",
  ]);
  // Everything held: nothing to say.
  const all = JSON.stringify({ deployment: { resources: ["vol-1", "vol-2", "vol-3"].map((id, i) => ({ urn: `${data}${i}`, type: "sds:index:Volume", id })).concat([{ urn: att, type: "sds:index:Attachment", id: "att-9" }]) } });
  const none = await sds(["recover", "--state", `sqlite:${file}`], all);
  expect(none.stdout).toBe("sds recover: the stack holds everything sds made for it; `pulumi refresh` then `pulumi up` is all sds needs\n");
});

test("sds recover on a stack with no pending create says so; bad input is one line naming the flag", async () => {
  const ok = await sds(["recover", "--state", `sqlite:${path.join(dir, "none.db")}`], JSON.stringify({ deployment: { resources: [] } }));
  expect(ok.status).toBe(0);
  expect(ok.stdout).toBe("sds recover: the export holds no resource and no pending create; nothing to recover\n");

  const bad = await sds(["recover"], "not json");
  expect(bad.status).toBe(2);
  expect(bad.stderr).toMatch(/^sds: --export: stdin is not the JSON of `pulumi stack export`: [^\n]+\n$/);

  const pendingOnly = JSON.stringify({ deployment: { pending_operations: [{ type: "creating", resource: { urn: urn("sds:index:Volume", "v"), type: "sds:index:Volume" } }] } });
  const missing = await sds(["recover", "--state", `sqlite:${path.join(dir, "none.db")}`], pendingOnly);
  expect(missing.status).toBe(2);
  expect(missing.stderr).toBe(`sds: --state: no sds state at ${path.join(dir, "none.db")}; run sds in the project folder, or pass --project DIR or --state URL\n`);
  expect(fs.existsSync(path.join(dir, "none.db"))).toBe(false);
});
