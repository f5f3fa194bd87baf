import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { loadBackendsFile, parseInlineBackends } from "../../provider/src/controller/backends";
import { resolveProviderConfig } from "../../provider/src/controller/config";

let dir: string;
beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-backends-"))));
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const write = (text: string) => {
  const f = path.join(dir, "backends.yaml");
  fs.writeFileSync(f, text);
  return f;
};

const good = `backends:
  - name: fast
    driver: file
    sharedTargets: false
    export: {protocol: iscsi, portal: "127.0.0.1:3260", chap: true}
    replicationTargets:
      - backend: slow
    pools:
      - name: pool0
        path: pools/fast
        totalCapacityGib: 100
        multiAttach: true
        extras:
          advanced: {diskType: SSD, latency: 3ms}
  - name: slow
    driver: file
    pools:
      - name: pool1
        path: /var/tmp/sds-slow
`;

test("a valid file: defaults applied, relative pool paths resolved against the file's folder", () => {
  const b = loadBackendsFile(write(good));
  expect(b.map((x) => x.name)).toEqual(["fast", "slow"]);
  expect(b[0].pools[0]).toMatchObject({ path: path.join(dir, "pools/fast"), maxOverSubscriptionRatio: 20, availabilityZone: "default", storageType: "block", multiAttach: true });
  expect(b[1]).toMatchObject({ node: "local", sharedTargets: true, weigher: "spread", export: { protocol: "local", chap: false } });
  expect(b[1].pools[0]).toMatchObject({ path: "/var/tmp/sds-slow", multiAttach: false });
});

test("a bad value names the file, the line and the key", () => {
  const f = write(good.replace("totalCapacityGib: 100", "totalCapacityGib: -5"));
  expect(() => loadBackendsFile(f)).toThrow(`${f}:11: backends[0].pools[0].totalCapacityGib:`);
});

test("an unknown key (a typo) names its own line", () => {
  const f = write(good.replace("        multiAttach: true", "        multiAtach: true"));
  expect(() => loadBackendsFile(f)).toThrow(`${f}:12: backends[0].pools[0].multiAtach: unknown key`);
});

test("a missing required key points at its parent", () => {
  const f = write(good.replace("    driver: file\n    pools:\n      - name: pool1", "    pools:\n      - name: pool1"));
  expect(() => loadBackendsFile(f)).toThrow(new RegExp(`${f}:15: backends\\[1\\]\\.driver:`));
});

test("malformed YAML names the line", () => {
  const f = write("backends:\n  - name: a\n    pools: [\n");
  expect(() => loadBackendsFile(f)).toThrow(new RegExp(`^${f}:\\d+: invalid YAML`));
});

test("a key indented too deep names its own line, not the line above (issue 12)", () => {
  // YAML reads "path" as the rest of "p0" on the line above: the parser's error starts on line 5.
  const f = write("backends:\n  - name: fast\n    driver: file\n    pools:\n      - name: p0\n          path: pools/p0\n");
  expect(() => loadBackendsFile(f)).toThrow(`${f}:6: invalid YAML: "path" is indented deeper than the keys beside it, so it reads as part of the value on line 5`);
  const g = write("backends:\n  - name: fast\n      driver: file\n    pools: []\n");
  expect(() => loadBackendsFile(g)).toThrow(`${g}:3: invalid YAML: "driver" is indented deeper`);
  // Other indentation faults already pointed at their own line, and still do.
  expect(() => loadBackendsFile(write("backends:\n  - name: fast\n    driver: file\n    pools:\n      - name: p0\n     path: pools/p0\n"))).toThrow(/backends\.yaml:6: invalid YAML: All mapping items must start at the same column/);
  expect(() => loadBackendsFile(write("backends:\n  - name: fast\n   driver: file\n    pools: []\n"))).toThrow(/backends\.yaml:3: invalid YAML/);
});

test("duplicate names and unknown replication targets are refused", () => {
  expect(() => loadBackendsFile(write(good.replace("name: slow", "name: fast")))).toThrow(/duplicate backend name "fast"/);
  expect(() => loadBackendsFile(write(good.replace("backend: slow", "backend: nowhere")))).toThrow(/replicationTargets\[0\]\.backend: no backend named "nowhere"/);
});

test("inline backends: errors name the property path", () => {
  expect(() => parseInlineBackends([{ name: "x", driver: "file", pools: [{ name: "p" }] }], dir)).toThrow("backends[0].pools[0].path:");
});

test("provider config: built-in default, file if present, env fallbacks, not both sources", () => {
  const builtIn = resolveProviderConfig({}, dir, {});
  expect(builtIn.backendsSource).toBe("built-in");
  expect(builtIn.stateUrl).toBe("sqlite:.sds/state.db");
  expect(builtIn.backends[0]).toMatchObject({ name: "local", driver: "file", pools: [{ name: "default", path: path.join(dir, ".sds/pools/default"), multiAttach: true }] });

  fs.mkdirSync(path.join(dir, ".sds"));
  fs.writeFileSync(path.join(dir, ".sds/backends.yaml"), good);
  expect(resolveProviderConfig({}, dir, {}).backends.map((b) => b.name)).toEqual(["fast", "slow"]);

  const f = write(good);
  expect(resolveProviderConfig({}, "/", { SDS_BACKENDS_FILE: f, SDS_STATE_URL: "sqlite:/tmp/x.db" })).toMatchObject({ backendsSource: f, stateUrl: "sqlite:/tmp/x.db" });
  expect(() => resolveProviderConfig({ backendsFile: f, backends: [] }, dir, {})).toThrow(/either backends or backendsFile/);
  expect(() => resolveProviderConfig({ backendsFile: "missing.yaml" }, dir, {})).toThrow(/backendsFile: cannot read/);
});

test("a backend on a remote node: absolute pool paths kept as they are, the node and a portal required", () => {
  const remote = (extra: Record<string, unknown> = {}, pool: Record<string, unknown> = {}) => [
    { name: "array", driver: "file", node: "store1", export: { protocol: "iscsi", portal: "10.0.0.5:3260" }, pools: [{ name: "p0", path: "/srv/sds/p0", ...pool }], ...extra },
  ];
  const hosts = { store1: { url: "http://10.0.0.5:7700", token: "t" } };
  const ok = resolveProviderConfig({ backends: remote(), hosts }, "/project", {});
  expect(ok.backends[0].pools[0].path).toBe("/srv/sds/p0");
  expect(() => resolveProviderConfig({ backends: remote({}, { path: "pools/p0" }), hosts }, "/project", {})).toThrow(/backends\[0\]\.pools\[0\]\.path: a pool of a backend on node "store1" needs an absolute path/);
  expect(() => resolveProviderConfig({ backends: remote() }, "/project", {})).toThrow(/backends\[0\]\.node: .*"store1", which is not in the provider's hosts/);
  expect(() => resolveProviderConfig({ backends: remote({ export: { protocol: "iscsi" } }), hosts }, "/project", {})).toThrow(/backends\[0\]\.export\.portal/);
  expect(() => resolveProviderConfig({ backends: remote({ export: { protocol: "local" } }), hosts }, "/project", {})).toThrow(/backends\[0\]\.export/);
  expect(() => resolveProviderConfig({ backends: remote(), hosts: { store1: { url: "http://10.0.0.5:7700" } } }, "/project", {})).toThrow(/hosts\.store1\.token/);
});

/**
 * `driver: rbd` (domain/backend.ts, controller/backends.ts): its options, what it refuses in one
 * line with file and line, and the key kept out of files.
 */
describe("driver: rbd", () => {
  const rbdGood = `backends:
  - name: ceph
    driver: rbd
    rbd:
      conf: ceph/ceph.conf
      user: sds
      keyringFile: ceph/client.sds.keyring
    export: {protocol: iscsi, portal: "127.0.0.1:3260"}
    pools:
      - name: fast
        path: sds
        multiAttach: true
        replication: async
  - name: files
    driver: file
    pools:
      - {name: p0, path: pools/p0}
`;

  test("a valid rbd backend: pool path is the Ceph pool (not resolved), conf and keyring files resolved against the file's folder", () => {
    const b = loadBackendsFile(write(rbdGood));
    expect(b[0]).toMatchObject({ driver: "rbd", rbd: { cluster: "ceph", user: "sds", conf: path.join(dir, "ceph/ceph.conf"), keyringFile: path.join(dir, "ceph/client.sds.keyring") } });
    expect(b[0].pools[0]).toMatchObject({ path: "sds", multiAttach: true, replication: "async", maxOverSubscriptionRatio: 20 });
    expect(b[1].pools[0].path).toBe(path.join(dir, "pools/p0"));
  });

  test("NBD on rbd with a server per volume (sharedTargets: false) is accepted", () => {
    const b = parseInlineBackends([{ name: "c", driver: "rbd", rbd: {}, sharedTargets: false, export: { protocol: "nbd" }, pools: [{ name: "p", path: "rbd" }] }], dir);
    expect(b[0]).toMatchObject({ driver: "rbd", sharedTargets: false, export: { protocol: "nbd" } });
  });

  test("defaults: cluster ceph, user admin", () => {
    const b = parseInlineBackends([{ name: "c", driver: "rbd", rbd: {}, export: { protocol: "iscsi" }, pools: [{ name: "p", path: "rbd" }] }], dir);
    expect(b[0].rbd).toEqual({ cluster: "ceph", user: "admin" });
  });

  test("each refusal is one line naming the file, the line and the key", () => {
    const cases: Array<[string, string, RegExp]> = [
      [rbdGood.replace("        path: sds", "        path: sds/x"), "11", /backends\[0\]\.pools\[0\]\.path: driver: rbd: path is the Ceph pool: must be a Ceph pool name/],
      [rbdGood.replace("    export: {protocol: iscsi, portal: \"127.0.0.1:3260\"}\n", ""), "2", /backends\[0\]\.export\.protocol: driver: rbd needs export\.protocol iscsi or nbd: an RBD image is no file to loop-mount/],
      [rbdGood.replace("protocol: iscsi", "protocol: local"), "8", /backends\[0\]\.export\.protocol: driver: rbd needs export\.protocol iscsi or nbd/],
      [rbdGood.replace("protocol: iscsi", "protocol: nbd"), "2", /backends\[0\]\.sharedTargets: driver: rbd with export\.protocol nbd needs sharedTargets: false: qemu-nbd serves one RBD image per server/],
      [rbdGood.replace("protocol: iscsi", "protocol: nbd").replace("    driver: rbd\n", "    driver: rbd\n    sharedTargets: true\n"), "4", /backends\[0\]\.sharedTargets: driver: rbd with export\.protocol nbd needs sharedTargets: false/],
      [rbdGood.replace("    rbd:\n      conf: ceph/ceph.conf\n      user: sds\n      keyringFile: ceph/client.sds.keyring\n", ""), "3", /backends\[0\]\.driver: driver: rbd needs rbd options/],
      [rbdGood.replace("    driver: file\n", "    driver: file\n    rbd: {user: x}\n"), "16", /backends\[1\]\.rbd: rbd options are for driver: rbd, not driver: file/],
      [rbdGood.replace("      user: sds", "      usr: sds"), "6", /backends\[0\]\.rbd\.usr: unknown key/],
      [rbdGood.replace("      user: sds", "      user: client.sds!"), "6", /backends\[0\]\.rbd\.user: must be a Ceph user name without 'client\.'/],
      [rbdGood.replace("    driver: rbd\n", "    driver: rbd\n    node: store1\n"), "4", /backends\[0\]\.node: driver: rbd runs on the provider's machine only for now \(node: local\); a storage node running rbd through its agent is not supported yet/],
      [rbdGood.replace("        replication: async", "        replication: async\n        extras: {dataStorage: {provisioningPolicy: Thick}}"), "14", /provisioningPolicy: driver: rbd: RBD images are thin/],
      [rbdGood.replace("      keyringFile: ceph/client.sds.keyring", "      key: AQBhc2Rmc2RmCg=="), "7", /backends\[0\]\.rbd\.key: a cephx key does not belong in a backends file/],
    ];
    for (const [text, line, re] of cases) {
      const f = write(text);
      let message = "";
      try {
        loadBackendsFile(f);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message.split("\n")).toHaveLength(1);
      expect(message.startsWith(`${f}:${line}: `) ? message : `${message} (expected line ${line})`).toMatch(re);
    }
  });

  test("inline: the key is accepted (a Pulumi secret), never with a keyring file; a bad key never echoed", () => {
    const inline = (rbd: Record<string, unknown>) => [{ name: "c", driver: "rbd", rbd, export: { protocol: "iscsi" }, pools: [{ name: "p", path: "sds" }] }];
    expect(parseInlineBackends(inline({ user: "sds", key: "AQBhc2Rmc2RmCg==" }), dir)[0].rbd?.key).toBe("AQBhc2Rmc2RmCg==");
    expect(() => parseInlineBackends(inline({ key: "AQBhc2Rmc2RmCg==", keyringFile: "/k" }), dir)).toThrow("backends[0].rbd.key: give either rbd.key or rbd.keyringFile, not both");
    let message = "";
    try {
      parseInlineBackends(inline({ key: "not a key!" }), dir);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/backends\[0\]\.rbd\.key: must be a cephx key/);
    expect(message).not.toContain("not a key!");
  });
});
