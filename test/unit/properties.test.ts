import { z } from "zod";
import { autoName, checkProperties, diffProperties, isAutoName, settleName } from "../../provider/src/resources/properties";
import { SECRET_SIG, SIG_KEY, UNKNOWN } from "../../provider/src/resources/values";

const specs = {
  size: { schema: z.number().int().min(1), required: true },
  zone: { schema: z.string(), replaces: true },
  tags: { schema: z.record(z.string(), z.string()), default: {} },
};

test("check: required, unknown properties, nested paths; unknowns and secrets are fine", () => {
  expect(checkProperties(specs, {})).toEqual([{ property: "size", reason: "size is required" }]);
  expect(checkProperties(specs, { size: 1, colour: "red" })[0].property).toBe("colour");
  expect(checkProperties(specs, { size: 1, tags: { a: 1 } })[0].property).toBe("tags.a");
  expect(checkProperties(specs, { size: UNKNOWN, tags: { a: UNKNOWN } })).toEqual([]);
  expect(checkProperties(specs, { size: { [SIG_KEY]: SECRET_SIG, value: 2 } })).toEqual([]);
});

test("diff: kinds, defaults equal absence, replaces, ignoreChanges", () => {
  expect(diffProperties(specs, { size: 1 }, { size: 1, tags: {} })).toMatchObject({ changed: false, detailed: {} });
  expect(diffProperties(specs, { size: 1 }, { size: 2 }).detailed).toEqual({ size: "update" });
  expect(diffProperties(specs, { size: 1 }, { size: 1, zone: "a" })).toMatchObject({ replaces: ["zone"], detailed: { zone: "add-replace" } });
  expect(diffProperties(specs, { size: 1, zone: "a" }, { size: 1 }).detailed).toEqual({ zone: "delete-replace" });
  expect(diffProperties(specs, { size: 1, zone: "a" }, { size: 1, zone: "b" }).detailed).toEqual({ zone: "update-replace" });
  expect(diffProperties(specs, { size: 1 }, { size: UNKNOWN }).detailed).toEqual({ size: "update" });
  expect(diffProperties(specs, { size: 1 }, { size: 2 }, ["size"]).changed).toBe(false);
  // A secret compared with the same plain value is no change.
  expect(diffProperties(specs, { size: 1 }, { size: { [SIG_KEY]: SECRET_SIG, value: 1 } }).changed).toBe(false);
});

test("autonaming: user's name, then the old one, then the engine's proposal, then name-<7 hex>", () => {
  const seed = Buffer.from("seed");
  const base = { urn: "urn:pulumi:s::p::sds:index:Volume::data", name: "data", randomSeed: seed };
  const failures: never[] = [];
  expect(settleName({ ...base, olds: {}, news: { name: "mine" } }, failures)).toBe("mine");
  expect(settleName({ ...base, olds: { name: "data-0000000" }, news: {} }, failures)).toBe("data-0000000");
  expect(settleName({ ...base, olds: {}, news: {}, autonaming: { proposedName: "data-x", mode: "propose" } }, failures)).toBe("data-x");
  const n = settleName({ ...base, olds: {}, news: {} }, failures);
  expect(n).toBe(autoName(base));
  expect(isAutoName("data", n)).toBe(true);
  expect(isAutoName("data", "mine")).toBe(false);
  expect(settleName({ ...base, olds: {}, news: {} }, failures)).toBe(n); // deterministic: preview == up
  const f: { property: string; reason: string }[] = [];
  settleName({ ...base, olds: {}, news: {}, autonaming: { proposedName: "", mode: "disable" } }, f);
  expect(f[0].property).toBe("name");
});
