import { compareQuantities, evaluate, parseExtraSpecs, parseQuantity, parseRequirement, unknownKeyErrors, type Requirement } from "../../provider/src/scheduler/extra-specs";
import { pool } from "./pool-fixtures";

const p = pool({
  id: "fast/pool0",
  multiAttach: true,
  replication: "async",
  extras: {
    dataStorage: { provisioningPolicy: "Thin", isSpaceEfficient: false },
    ioConnectivity: { accessProtocol: "iscsi", maxIOPS: 7000000, maxBWS: 600 },
    advanced: { diskType: "SSD", latency: "3ms", features: "compression dedup encryption" },
  },
});

function req(key: string, text: string): Requirement {
  const r = parseRequirement(key, text);
  if ("reason" in r) throw new Error(`unexpected parse error: ${r.reason}`);
  return r;
}
const passes = (key: string, text: string) => evaluate(p, req(key, text)) === undefined;

test.each([
  ["capabilities:multiAttach", "<is> true", true],
  ["capabilities:multiAttach", "<is> True", true], // OpenSDS shipped a case bug here
  ["capabilities:multiAttach", "<is> TRUE", true],
  ["capabilities:multiAttach", "<is> false", false],
  ["isSpaceEfficient", "<is> False", true],
  ["accessProtocol", "<in> iscsi", true],
  ["accessProtocol", "<in> isc", true],
  ["accessProtocol", "<in> nvme", false],
  ["diskType", "<or> SSD <or> NVMe", true],
  ["diskType", "<or> HDD <or> NVMe", false],
  ["features", "<all-in> dedup compression", true],
  ["features", "<all-in> dedup tiering", false],
  ["maxIOPS", ">= 5000", true],
  ["maxIOPS", "> 7000000", false],
  ["maxIOPS", "== 7000000", true],
  ["maxIOPS", "!= 7000000", false],
  ["maxIOPS", "<= 7000000", true],
  ["maxIOPS", "< 5000", false],
  ["ioConnectivity.maxBWS", ">= 500", true],
  ["latency", "<= 5ms", true],
  ["latency", "< 3ms", false],
  ["latency", "<= 3000us", true], // same family converts
  ["latency", "< 0.002s", false],
  ["diskType", "s== SSD", true],
  ["diskType", "s!= SSD", false],
  ["diskType", "s< T", true],
  ["diskType", "s<= SSD", true],
  ["diskType", "s> A", true],
  ["diskType", "s>= Z", false],
  ["diskType", "SSD", true], // no operator: literal
  ["diskType", "ssd", false], // literals are exact
  ["capabilities:replication", "async", true],
  ["capabilities:replication", "<is> true", true], // a mode counts as having it
  ["capabilities:replication", "<is> false", false],
  ["capabilities:storageType", "block", true],
  ["capabilities:diskType", "SSD", true], // capabilities: scope also sees extras
  ["provisioningPolicy", "Thin", true],
])("%s %s → %s", (key, text, expected) => {
  expect(passes(key, text)).toBe(expected);
});

test("the reason names the key, the pool's value and the requirement", () => {
  expect(evaluate(pool({ id: "b/p", multiAttach: false }), req("capabilities:multiAttach", "<is> true"))).toBe("multiAttach is false, profile asks <is> true");
  expect(evaluate(p, req("maxIOPS", "> 9000000"))).toBe("maxIOPS is 7000000, profile asks > 9000000");
  expect(evaluate(p, req("latency", ">= 2MB"))).toBe("latency is 3ms, profile asks >= 2MB (units differ (ms vs MB))");
  expect(evaluate(pool({ id: "b/p" }), req("diskType", "SSD"))).toBe("diskType is not reported, profile asks SSD");
});

test.each([
  ["diskType", "<xor> SSD", /unknown operator <xor>/],
  ["diskType", "=> 5", /unknown operator =>/],
  ["maxIOPS", ">= lots", /compares numbers; "lots" is not a number/],
  ["capabilities:multiAttach", "<is> maybe", /<is> takes true or false/],
  ["diskType", "<or>", /<or> needs at least one alternative/],
  ["diskType", "<or> SSD <or>", /empty <or> alternative/],
  ["diskType", "<in>", /<in> needs a value/],
  ["diskType", "<all-in>", /<all-in> needs at least one value/],
  ["diskType", "   ", /empty requirement/],
  ["maxIOPS", ">=", /needs a value/],
  ["capabilities:", "x", /names no capability/],
  ["vendor:diskType", "x", /unknown scope "vendor"/],
])("malformed %s %s is an error", (key, text, why) => {
  const r = parseRequirement(key, text);
  expect("reason" in r && r.reason).toMatch(why);
});

test("parseExtraSpecs splits requirements and errors, in key order", () => {
  const r = parseExtraSpecs({ b: "<xor> 1", a: "SSD" });
  expect(r.requirements.map((x) => x.key)).toEqual(["a"]);
  expect(r.errors.map((x) => x.key)).toEqual(["b"]);
});

test("keys no pool could ever have are errors, with a typo hint; well-known and reported keys are fine", () => {
  const { requirements } = parseExtraSpecs({ diskTyp: "SSD", maxIOPS: ">= 1", features: "<in> dedup", "capabilities:multiAttach": "<is> true", "advanced.nope": "x", compression: "<is> true" });
  const errors = unknownKeyErrors(requirements, [p]);
  expect(errors.map((e) => e.key).sort()).toEqual(["advanced.nope", "diskTyp"]);
  expect(errors.find((e) => e.key === "diskTyp")!.reason).toMatch(/did you mean "diskType"\?/);
});

test("quantities", () => {
  expect(parseQuantity("3ms")).toEqual({ value: 3, unit: "ms" });
  expect(parseQuantity("5000")).toEqual({ value: 5000, unit: "" });
  expect(parseQuantity("1.5 GiB")).toEqual({ value: 1.5, unit: "GiB" });
  expect(parseQuantity("fast")).toBeUndefined();
  expect(compareQuantities({ value: 1, unit: "GiB" }, { value: 1024, unit: "MiB" })).toBe(0);
  expect(compareQuantities({ value: 1, unit: "ms" }, { value: 1, unit: "GiB" })).toMatch(/units differ/);
});
