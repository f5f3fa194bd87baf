/**
 * `driver: rbd` in the backends YAML and inline config (domain/backend.ts, controller/backends.ts):
 * its options, what it refuses in one line with file and line, and the key kept out of files.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { loadBackendsFile, parseInlineBackends } from "../../provider/src/controller/backends";

let dir: string;
beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "sds-backends-rbd-"))));
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const write = (text: string) => {
  const f = path.join(dir, "backends.yaml");
  fs.writeFileSync(f, text);
  return f;
};

const good = `backends:
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
  const b = loadBackendsFile(write(good));
  expect(b[0]).toMatchObject({ driver: "rbd", rbd: { cluster: "ceph", user: "sds", conf: path.join(dir, "ceph/ceph.conf"), keyringFile: path.join(dir, "ceph/client.sds.keyring") } });
  expect(b[0].pools[0]).toMatchObject({ path: "sds", multiAttach: true, replication: "async", maxOverSubscriptionRatio: 20 });
  expect(b[1].pools[0].path).toBe(path.join(dir, "pools/p0"));
});

test("defaults: cluster ceph, user admin", () => {
  const b = parseInlineBackends([{ name: "c", driver: "rbd", rbd: {}, export: { protocol: "iscsi" }, pools: [{ name: "p", path: "rbd" }] }], dir);
  expect(b[0].rbd).toEqual({ cluster: "ceph", user: "admin" });
});

test("each refusal is one line naming the file, the line and the key", () => {
  const cases: Array<[string, string, RegExp]> = [
    [good.replace("        path: sds", "        path: sds/x"), "11", /backends\[0\]\.pools\[0\]\.path: driver: rbd: path is the Ceph pool: must be a Ceph pool name/],
    [good.replace("    export: {protocol: iscsi, portal: \"127.0.0.1:3260\"}\n", ""), "2", /backends\[0\]\.export\.protocol: driver: rbd needs export\.protocol iscsi: an RBD image is no file to loop-mount/],
    [good.replace("protocol: iscsi", "protocol: local"), "8", /backends\[0\]\.export\.protocol: driver: rbd needs export\.protocol iscsi/],
    [good.replace("protocol: iscsi", "protocol: nbd"), "8", /backends\[0\]\.export\.protocol: driver: rbd: export\.protocol nbd is not supported yet \(use iscsi: tgt's rbd backing store\)/],
    [good.replace("    rbd:\n      conf: ceph/ceph.conf\n      user: sds\n      keyringFile: ceph/client.sds.keyring\n", ""), "3", /backends\[0\]\.driver: driver: rbd needs rbd options/],
    [good.replace("    driver: file\n", "    driver: file\n    rbd: {user: x}\n"), "16", /backends\[1\]\.rbd: rbd options are for driver: rbd, not driver: file/],
    [good.replace("      user: sds", "      usr: sds"), "6", /backends\[0\]\.rbd\.usr: unknown key/],
    [good.replace("      user: sds", "      user: client.sds!"), "6", /backends\[0\]\.rbd\.user: must be a Ceph user name without 'client\.'/],
    [good.replace("    driver: rbd\n", "    driver: rbd\n    node: store1\n"), "4", /backends\[0\]\.node: driver: rbd runs on the provider's machine only for now \(node: local\); a storage node running rbd through its agent is not supported yet/],
    [good.replace("        replication: async", "        replication: async\n        extras: {dataStorage: {provisioningPolicy: Thick}}"), "14", /provisioningPolicy: driver: rbd: RBD images are thin/],
    [good.replace("      keyringFile: ceph/client.sds.keyring", "      key: AQBhc2Rmc2RmCg=="), "7", /backends\[0\]\.rbd\.key: a cephx key does not belong in a backends file/],
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
