/**
 * The plugin process driven over gRPC as the engine drives it: handshake, configure with a
 * secret, check with unknowns, diff with a detailed diff, create with preview, read with inputs.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import type * as pluginPb from "@pulumi/pulumi/proto/plugin_pb";
import * as pb from "@pulumi/pulumi/proto/provider_pb";
import { type ProviderProcess, call, startProvider, struct } from "../helpers/provider-process";

const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
const SIG = "4dabf18193072939515e22adb298388d";
const SECRET = "1b47061264138c4ac30d75fd1eb44270";
const VOL = "sds:index:Volume";
const urn = (name: string, type = VOL) => `urn:pulumi:test::proj::${type}::${name}`;

let dir: string;
let p: ProviderProcess;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-protocol-"));
  p = await startProvider(dir, { SDS_STATE_URL: "", SDS_BACKENDS_FILE: "" });
  const hs = new pb.ProviderHandshakeRequest();
  hs.setEngineAddress("127.0.0.1:1");
  hs.setRootDirectory(dir);
  hs.setProgramDirectory(dir);
  const res = await call<pb.ProviderHandshakeRequest, pb.ProviderHandshakeResponse>(p.client, "handshake", hs);
  expect(res.getAcceptSecrets()).toBe(true);
  expect(res.getAcceptResources()).toBe(true);
}, 30_000);

afterAll(async () => {
  await p.stop();
  expect(p.extraStdout).toEqual([]);
  fs.rmSync(dir, { recursive: true, force: true });
});

function checkReq(name: string, news: Record<string, unknown>, olds: Record<string, unknown> = {}, type = VOL) {
  const r = new pb.CheckRequest();
  r.setUrn(urn(name, type));
  r.setName(name);
  r.setType(type);
  r.setNews(struct(news));
  r.setOlds(struct(olds));
  r.setRandomseed(Buffer.from("0123456789abcdef0123456789abcdef"));
  return r;
}

const check = (r: pb.CheckRequest) => call<pb.CheckRequest, pb.CheckResponse>(p.client, "check", r);

test("GetPluginInfo reports the package version", async () => {
  const info = await call<Empty, pluginPb.PluginInfo>(p.client, "getPluginInfo", new Empty());
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  expect(info.getVersion()).toBe(require("../../package.json").version);
});

test("GetSchema returns schema.json", async () => {
  const res = await call<pb.GetSchemaRequest, pb.GetSchemaResponse>(p.client, "getSchema", new pb.GetSchemaRequest());
  const schema = JSON.parse(res.getSchema());
  expect(schema.name).toBe("sds");
  expect(Object.keys(schema.resources)).toEqual(expect.arrayContaining(["sds:index:Volume", "sds:index:Profile"]));
});

test("CheckConfig keeps a secret wrapped and names a bad property", async () => {
  const r = new pb.CheckRequest();
  r.setUrn("urn:pulumi:test::proj::pulumi:providers:sds::default");
  r.setOlds(struct({}));
  r.setNews(struct({ agentToken: { [SIG]: SECRET, value: "s3cr3t-token" }, backends: JSON.stringify([{ name: "b", driver: "file", pools: [] }]) }));
  const res = await call<pb.CheckRequest, pb.CheckResponse>(p.client, "checkConfig", r);
  expect(res.getInputs()!.toJavaScript().agentToken).toEqual({ [SIG]: SECRET, value: "s3cr3t-token" });
  const failures = res.getFailuresList().map((f) => [f.getProperty(), f.getReason()]);
  // Under its top-level key (the engine prints inputs[property]), the full path leading the reason.
  expect(failures).toEqual([["backends", expect.stringMatching(/^backends\[0\]\.pools: .*at least one pool/)]]);
});

test("Configure receives provider config including a secret", async () => {
  const r = new pb.ConfigureRequest();
  r.setArgs(struct({ agentToken: { [SIG]: SECRET, value: "s3cr3t-token" }, stateUrl: "sqlite:state/sds.db" }));
  r.setAcceptsecrets(true);
  r.setAcceptresources(true);
  const res = await call<pb.ConfigureRequest, pb.ConfigureResponse>(p.client, "configure", r);
  expect(res.getAcceptsecrets()).toBe(true);
  expect(res.getSupportspreview()).toBe(true);
  expect(p.stderr.join("")).not.toContain("s3cr3t-token");
});

test("Check accepts unknowns in preview and reports bad inputs by property", async () => {
  const ok = await check(checkReq("v1", { sizeGib: UNKNOWN, profile: UNKNOWN, metadata: { a: UNKNOWN } }));
  expect(ok.getFailuresList()).toEqual([]);
  const inputs = ok.getInputs()!.toJavaScript();
  expect(inputs.sizeGib).toBe(UNKNOWN);
  expect(inputs.name).toMatch(/^v1-[0-9a-f]{7}$/);

  const bad = await check(checkReq("v2", { sizeGib: 0, profile: "no-such-profile", colour: "red" }));
  const failures = Object.fromEntries(bad.getFailuresList().map((f) => [f.getProperty(), f.getReason()]));
  expect(Object.keys(failures).sort()).toEqual(["colour", "profile", "sizeGib"]);
  expect(failures.sizeGib).toBe("must be at least 1");
  expect(failures.profile).toMatch(/no profile with id or name "no-such-profile"/);

  const shrink = await check(checkReq("v3", { sizeGib: 5, name: "v3" }, { sizeGib: 10, name: "v3" }));
  expect(shrink.getFailuresList().map((f) => f.getProperty())).toEqual(["sizeGib"]);
  expect(shrink.getFailuresList()[0].getReason()).toMatch(/cannot shrink \(from 10 to 5 GiB\)/);
});

test("Check keeps the old name on update (stable autonaming)", async () => {
  const res = await check(checkReq("v4", { sizeGib: 2 }, { sizeGib: 1, name: "v4-abcdef0" }));
  expect(res.getInputs()!.toJavaScript().name).toBe("v4-abcdef0");
});

function diffReq(name: string, oldInputs: Record<string, unknown>, news: Record<string, unknown>, olds = oldInputs) {
  const r = new pb.DiffRequest();
  r.setId("some-id");
  r.setUrn(urn(name));
  r.setType(VOL);
  r.setOlds(struct(olds));
  r.setOldInputs(struct(oldInputs));
  r.setNews(struct(news));
  return r;
}
const diff = (r: pb.DiffRequest) => call<pb.DiffRequest, pb.DiffResponse>(p.client, "diff", r);
const detailed = (res: pb.DiffResponse) => Object.fromEntries(res.getDetaileddiffMap().toArray().map(([k, v]) => [k, (v as unknown as [number, boolean])[0]]));

test("Diff: grow is an in-place update with a detailed diff on sizeGib", async () => {
  const res = await diff(diffReq("v5", { name: "v5-1234567", sizeGib: 1 }, { name: "v5-1234567", sizeGib: 2 }));
  expect(res.getChanges()).toBe(pb.DiffResponse.DiffChanges.DIFF_SOME);
  expect(res.getHasdetaileddiff()).toBe(true);
  expect(res.getReplacesList()).toEqual([]);
  expect(detailed(res)).toEqual({ sizeGib: pb.PropertyDiff.Kind.UPDATE });
});

test("Diff: no change, defaults equal absent values", async () => {
  const res = await diff(diffReq("v6", { name: "n", sizeGib: 1 }, { name: "n", sizeGib: 1, multiAttach: false, description: "", metadata: {} }));
  expect(res.getChanges()).toBe(pb.DiffResponse.DiffChanges.DIFF_NONE);
  expect(detailed(res)).toEqual({});
});

test("Diff: profile change replaces; a user-set name deletes before replacing", async () => {
  const auto = await diff(diffReq("v7", { name: "v7-1234567", sizeGib: 1, profile: "a" }, { name: "v7-1234567", sizeGib: 1, profile: "b" }));
  expect(auto.getReplacesList()).toEqual(["profile"]);
  expect(auto.getDeletebeforereplace()).toBe(false);
  expect(detailed(auto)).toEqual({ profile: pb.PropertyDiff.Kind.UPDATE_REPLACE });
  const named = await diff(diffReq("v7", { name: "data", sizeGib: 1, profile: "a" }, { name: "data", sizeGib: 1, profile: "b" }));
  expect(named.getDeletebeforereplace()).toBe(true);
});

test("Diff: an unknown value counts as a change, never a crash", async () => {
  const res = await diff(diffReq("v8", { name: "n", sizeGib: 1 }, { name: "n", sizeGib: UNKNOWN, sourceVolumeId: UNKNOWN }));
  expect(detailed(res)).toEqual({ sizeGib: pb.PropertyDiff.Kind.UPDATE, sourceVolumeId: pb.PropertyDiff.Kind.ADD_REPLACE });
});

test("Create with preview places the volume and allocates nothing; Create then Read returns inputs", async () => {
  const pr = new pb.CreateRequest();
  pr.setUrn(urn("v9"));
  pr.setType(VOL);
  pr.setPreview(true);
  pr.setProperties(struct({ name: "v9-1234567", sizeGib: 3 }));
  const preview = await call<pb.CreateRequest, pb.CreateResponse>(p.client, "create", pr);
  const pouts = preview.getProperties()!.toJavaScript();
  expect(preview.getId()).toBe("");
  expect(pouts.poolId).toBe("local/default");
  expect(pouts.status).toBe(UNKNOWN);
  const poolDir = path.join(dir, ".sds/pools/default");
  expect(fs.existsSync(poolDir)).toBe(false); // a preview makes nothing, not even the pool's folder (it comes with the first volume)

  const cr = new pb.CreateRequest();
  cr.setUrn(urn("v9"));
  cr.setType(VOL);
  cr.setProperties(struct({ name: "v9-1234567", sizeGib: 3, metadata: { team: "db" } }));
  const created = await call<pb.CreateRequest, pb.CreateResponse>(p.client, "create", cr);
  const id = created.getId();
  expect(id).toMatch(/^[0-9a-f-]{36}$/);
  expect(fs.statSync(path.join(poolDir, `volume-${id}.img`)).size).toBe(3 * 1024 ** 3);
  expect(fs.existsSync(path.join(dir, "state/sds.db"))).toBe(true);

  // A retried create of the same resource adopts the volume instead of making a second one.
  const again = await call<pb.CreateRequest, pb.CreateResponse>(p.client, "create", cr);
  expect(again.getId()).toBe(id);
  expect(fs.readdirSync(poolDir)).toHaveLength(1);

  const rr = new pb.ReadRequest();
  rr.setId(id);
  rr.setUrn(urn("v9"));
  rr.setType(VOL);
  const read = await call<pb.ReadRequest, pb.ReadResponse>(p.client, "read", rr);
  expect(read.getId()).toBe(id);
  expect(read.getInputs()!.toJavaScript()).toEqual({ name: "v9-1234567", sizeGib: 3, metadata: { team: "db" } });
  expect(read.getProperties()!.toJavaScript()).toMatchObject({ status: "available", sizeGib: 3, poolId: "local/default" });

  const dr = new pb.DeleteRequest();
  dr.setId(id);
  dr.setUrn(urn("v9"));
  dr.setType(VOL);
  await call(p.client, "delete", dr);
  await call(p.client, "delete", dr); // deleting what is gone succeeds
  expect(fs.readdirSync(poolDir)).toEqual([]);
  const gone = await call<pb.ReadRequest, pb.ReadResponse>(p.client, "read", rr);
  expect(gone.getId()).toBe("");
});

test("Attachment and ReplicationPair checks name bad inputs", async () => {
  const bad = await check(checkReq("a1", { volumeId: "x", mode: "rwx", connector: { initiator: "not an iqn" } }, {}, "sds:index:Attachment"));
  expect(bad.getFailuresList().map((f) => f.getProperty()).sort()).toEqual(["connector", "mode"]);
  const ok = await check(checkReq("a2", { volumeId: UNKNOWN, mode: "ro" }, {}, "sds:index:Attachment"));
  expect(ok.getFailuresList()).toEqual([]);
  const rp = await check(checkReq("r1", { primaryVolumeId: "x", mode: "sync", rpoSeconds: 0, activeSide: "secondary" }, {}, "sds:index:ReplicationPair"));
  expect(rp.getFailuresList().map((f) => f.getProperty()).sort()).toEqual(["activeSide", "mode", "rpoSeconds", "targetBackend"]);
  const unknownVolume = await check(checkReq("r2", { primaryVolumeId: UNKNOWN, targetBackend: "dr" }, {}, "sds:index:ReplicationPair"));
  expect(unknownVolume.getFailuresList()).toEqual([]);
});
