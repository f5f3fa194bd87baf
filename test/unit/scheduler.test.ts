import fc from "fast-check";
import { capacityFilter, capabilitiesFilter, availabilityZoneFilter, multiAttachFilter, reject, storageTypeFilter, virtualFreeGib } from "../../provider/src/scheduler/filters";
import { parseExtraSpecs, evaluate } from "../../provider/src/scheduler/extra-specs";
import { explainNoValidPool, place } from "../../provider/src/scheduler/scheduler";
import type { PoolState } from "../../provider/src/scheduler/types";
import { capacityWeigher } from "../../provider/src/scheduler/weighers";
import { pool } from "./pool-fixtures";

const reqs = (specs: Record<string, string>) => parseExtraSpecs(specs).requirements;

describe("filters", () => {
  test("availabilityZone", () => {
    expect(reject(availabilityZoneFilter, pool({ id: "a/p" }), { sizeGib: 1 })).toBeUndefined();
    expect(reject(availabilityZoneFilter, pool({ id: "a/p", availabilityZone: "z1" }), { sizeGib: 1, availabilityZone: "z2" })).toBe('pool is in zone "z1", volume asks "z2"');
  });
  test("storageType", () => {
    expect(reject(storageTypeFilter, pool({ id: "a/p", storageType: "file" }), { sizeGib: 1, storageType: "block" })).toMatch(/storageType is "file"/);
  });
  test("capabilities: the first failing requirement is the reason", () => {
    const r = reqs({ "capabilities:multiAttach": "<is> true" });
    expect(reject(capabilitiesFilter, pool({ id: "a/p" }), { sizeGib: 1, requirements: r })).toBe("multiAttach is false, profile asks <is> true");
    expect(reject(capabilitiesFilter, pool({ id: "a/p", multiAttach: true }), { sizeGib: 1, requirements: r })).toBeUndefined();
  });
  test("multiAttach", () => {
    expect(reject(multiAttachFilter, pool({ id: "a/p" }), { sizeGib: 1, multiAttach: true })).toMatch(/multiAttach is false/);
    expect(reject(multiAttachFilter, pool({ id: "a/p" }), { sizeGib: 1, multiAttach: false })).toBeUndefined();
  });
  test("capacity: thin pools oversubscribe up to the ratio, thick pools do not", () => {
    const thin = pool({ id: "a/p", totalGib: 10, freeGib: 10, provisionedGib: 190, maxOverSubscriptionRatio: 20 });
    expect(virtualFreeGib(thin)).toBe(10);
    expect(reject(capacityFilter, thin, { sizeGib: 10 })).toBeUndefined();
    expect(reject(capacityFilter, thin, { sizeGib: 11 })).toBe("10 GiB free (thin: 10 GiB total × 20 - 190 GiB provisioned), 11 GiB asked");
    const thick = pool({ id: "a/q", totalGib: 10, freeGib: 4, provisionedGib: 5, provisioning: "thick", maxOverSubscriptionRatio: 1 });
    expect(reject(capacityFilter, thick, { sizeGib: 5 })).toBe("4 GiB free (thick), 5 GiB asked");
  });
});

describe("weighers", () => {
  test("spread prefers the most free capacity, stack the least", () => {
    const empty = pool({ id: "a/empty", provisionedGib: 0 });
    const full = pool({ id: "a/full", provisionedGib: 1000 });
    expect(capacityWeigher.weigh(empty, { sizeGib: 1 })).toBeGreaterThan(capacityWeigher.weigh(full, { sizeGib: 1 }));
    expect(place([full, empty], { sizeGib: 1 }).ok && (place([full, empty], { sizeGib: 1 }) as { pool: PoolState }).pool.id).toBe("a/empty");
    const stacked = [full, empty].map((p) => ({ ...p, weigher: "stack" as const }));
    expect((place(stacked, { sizeGib: 1 }) as { pool: PoolState }).pool.id).toBe("a/full");
  });
  test("ties break by pool id, whatever the order", () => {
    const a = pool({ id: "b/a" });
    const b = pool({ id: "a/z" });
    expect((place([a, b], { sizeGib: 1 }) as { pool: PoolState }).pool.id).toBe("a/z");
    expect((place([b, a], { sizeGib: 1 }) as { pool: PoolState }).pool.id).toBe("a/z");
  });
});

test("when nothing fits, the message lists every pool with its filter and reason", () => {
  const pools = [pool({ id: "fast/pool0" }), pool({ id: "slow/pool1", totalGib: 12, maxOverSubscriptionRatio: 1 })];
  const request = { sizeGib: 50, requirements: reqs({ "capabilities:multiAttach": "<is> true" }) };
  const pools2 = [pools[0], { ...pools[1], multiAttach: true }];
  const r = place(pools2, request);
  expect(r.ok).toBe(false);
  expect(explainNoValidPool(request, r.rejections, pools2.length)).toBe(
    "no valid pool for a 50 GiB volume; every pool was rejected:\n" +
      "  fast/pool0: capabilities: multiAttach is false, profile asks <is> true\n" +
      "  slow/pool1: capacity: 12 GiB free (thin: 12 GiB total × 1 - 0 GiB provisioned), 50 GiB asked",
  );
});

// ---------------------------------------------------------------- properties

const arbPool = fc
  .record({
    b: fc.constantFrom("a", "b", "c"),
    n: fc.integer({ min: 0, max: 30 }),
    multiAttach: fc.boolean(),
    diskType: fc.constantFrom("SSD", "HDD", "NVMe"),
    maxIOPS: fc.integer({ min: 100, max: 100000 }),
    totalGib: fc.integer({ min: 1, max: 1000 }),
    ratio: fc.constantFrom(1, 2, 20),
    provisionedGib: fc.integer({ min: 0, max: 2000 }),
    zone: fc.constantFrom("z1", "z2"),
    weigher: fc.constantFrom("spread" as const, "stack" as const),
  })
  .map((x) =>
    pool({
      id: `${x.b}/p${x.n}`,
      multiAttach: x.multiAttach,
      availabilityZone: x.zone,
      totalGib: x.totalGib,
      freeGib: x.totalGib,
      provisionedGib: Math.min(x.provisionedGib, x.totalGib * x.ratio),
      maxOverSubscriptionRatio: x.ratio,
      weigher: x.weigher,
      extras: { advanced: { diskType: x.diskType }, ioConnectivity: { maxIOPS: x.maxIOPS } },
    }),
  );
const arbPools = fc.uniqueArray(arbPool, { selector: (p) => p.id, maxLength: 25 });
const arbSpecs = fc.record(
  { "capabilities:multiAttach": fc.constantFrom("<is> true", "<is> false"), diskType: fc.constantFrom("SSD", "<or> SSD <or> NVMe", "s!= HDD"), maxIOPS: fc.constantFrom(">= 5000", "< 50000") },
  { requiredKeys: [] },
);
const arbRequest = fc.record({ sizeGib: fc.integer({ min: 1, max: 500 }), multiAttach: fc.boolean(), zone: fc.option(fc.constantFrom("z1", "z2"), { nil: undefined }), specs: arbSpecs });

test("property: a volume is never placed on a pool lacking a required capability", () => {
  fc.assert(
    fc.property(arbPools, arbRequest, (pools, rq) => {
      const requirements = reqs(rq.specs as Record<string, string>);
      const r = place(pools, { sizeGib: rq.sizeGib, multiAttach: rq.multiAttach, availabilityZone: rq.zone, requirements });
      if (!r.ok) return r.rejections.length === pools.length;
      return (
        requirements.every((x) => evaluate(r.pool, x) === undefined) &&
        (!rq.multiAttach || r.pool.multiAttach) &&
        (rq.zone === undefined || r.pool.availabilityZone === rq.zone) &&
        r.rejections.length === pools.length - 1
      );
    }),
    { numRuns: 500 },
  );
});

test("property: placing volumes one after another never provisions a pool beyond total × ratio", () => {
  fc.assert(
    fc.property(arbPools, fc.array(fc.integer({ min: 1, max: 300 }), { maxLength: 40 }), (pools, sizes) => {
      const state = pools.map((p) => ({ ...p }));
      for (const sizeGib of sizes) {
        const r = place(state, { sizeGib });
        if (r.ok) state.find((p) => p.id === r.pool.id)!.provisionedGib += sizeGib;
      }
      return state.every((p) => p.provisionedGib <= Math.max(p.totalGib * p.maxOverSubscriptionRatio, pools.find((q) => q.id === p.id)!.provisionedGib));
    }),
    { numRuns: 300 },
  );
});

test("property: the same inputs always give the same pool, whatever the pool order", () => {
  fc.assert(
    fc.property(arbPools, arbRequest, fc.integer(), (pools, rq, seed) => {
      const request = { sizeGib: rq.sizeGib, multiAttach: rq.multiAttach, requirements: reqs(rq.specs as Record<string, string>) };
      const shuffled = [...pools].sort((a, b) => ((a.id.length * seed) % 7) - ((b.id.length * seed) % 7) || (a.id < b.id ? 1 : -1));
      const x = place(pools, request);
      const y = place(shuffled, request);
      const z = place(pools, request);
      return x.ok === y.ok && (!x.ok || (y.ok && x.pool.id === y.pool.id && z.ok && z.pool.id === x.pool.id));
    }),
    { numRuns: 500 },
  );
});
