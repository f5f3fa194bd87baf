/**
 * The volume path of an RBD volume (domain/rbd-path.ts): qemu's rbd filename syntax, agreed by
 * the driver, the targets and replication; round trips, qemu's escapes, and what is refused.
 */
import { formatRbdPath, isRbdPath, parseRbdPath, tgtRbdBacking } from "../../provider/src/domain/rbd-path";

describe("rbd path", () => {
  it("formats qemu's rbd filename and parses it back", () => {
    const p = { cephPool: "sds", image: "0b6c1d2e-aaaa-bbbb-cccc-000000000001", user: "sds", conf: "/var/lib/sds/rbd/fast.conf" };
    const s = formatRbdPath(p);
    expect(s).toBe("rbd:sds/0b6c1d2e-aaaa-bbbb-cccc-000000000001:id=sds:conf=/var/lib/sds/rbd/fast.conf");
    expect(isRbdPath(s)).toBe(true);
    expect(parseRbdPath(s)).toEqual(p);
  });

  it("carries a snapshot", () => {
    const p = { cephPool: "rbd", image: "v1", snap: "sds-ro-1", user: "admin", conf: "/tmp/c.conf" };
    const s = formatRbdPath(p);
    expect(s).toBe("rbd:rbd/v1@sds-ro-1:id=admin:conf=/tmp/c.conf");
    expect(parseRbdPath(s)).toEqual(p);
  });

  it("escapes ':' (volume ids may hold one) and '\\' as qemu does", () => {
    const p = { cephPool: "p", image: "vol:1", user: "admin", conf: "/tmp/a:b\\c.conf" };
    const s = formatRbdPath(p);
    expect(s).toBe("rbd:p/vol\\:1:id=admin:conf=/tmp/a\\:b\\\\c.conf");
    expect(parseRbdPath(s)).toEqual(p);
  });

  it("takes the options in any order", () => {
    expect(parseRbdPath("rbd:p/i:conf=/c:id=u")).toEqual({ cephPool: "p", image: "i", user: "u", conf: "/c" });
  });

  it("refuses what is not a whole sds rbd path", () => {
    expect(isRbdPath("/var/lib/sds/pools/a/volume-1.img")).toBe(false);
    expect(parseRbdPath("/var/lib/sds/pools/a/volume-1.img")).toBeUndefined();
    expect(parseRbdPath("rbd:noimage")).toBeUndefined();
    expect(parseRbdPath("rbd:p/i")).toBeUndefined(); // no id, no conf
    expect(parseRbdPath("rbd:p/i:id=u")).toBeUndefined();
    expect(parseRbdPath("rbd:p/i:id=u:conf=/c:keyring=/k")).toBeUndefined();
    expect(parseRbdPath("rbd:p/i:id")).toBeUndefined();
    expect(parseRbdPath("rbd:/i:id=u:conf=/c")).toBeUndefined();
    expect(parseRbdPath("rbd:p/@s:id=u:conf=/c")).toBeUndefined();
  });

  it("refuses to format an '@' in a name or an empty part (qemu would misread it)", () => {
    expect(() => formatRbdPath({ cephPool: "p", image: "a@b", user: "u", conf: "/c" })).toThrow(/contains "@"/);
    expect(() => formatRbdPath({ cephPool: "", image: "a", user: "u", conf: "/c" })).toThrow(/empty pool/);
  });

  it("gives tgt's backing store and bsopts", () => {
    expect(tgtRbdBacking({ cephPool: "p", image: "i", snap: "s", user: "sds", conf: "/c.conf" })).toEqual({ backingStore: "p/i@s", bsopts: "conf=/c.conf;id=sds" });
  });
});
