// Test layers (shared/STYLE.md): unit (pure logic), contract (one suite per interface),
// provider (the real plugin process driven over gRPC like the engine), e2e (the real Pulumi CLI),
// datapath (real tgtd, nbdkit and initiators, as root), faults (SIGKILLs in real pulumi runs, as root).
const transform = { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.test.json" }] };
const project = (name, extra = {}) => ({
  displayName: name,
  testEnvironment: "node",
  transform,
  testMatch: [`<rootDir>/test/${name}/**/*.test.ts`],
  // The SDK's build copies its package.json into bin/ (its version is read there): two
  // package.jsons named pulumi-sds would make jest's module map warn on every run.
  modulePathIgnorePatterns: ["<rootDir>/sdk/nodejs/bin/", "<rootDir>/dist-package/"],
  ...extra,
});
module.exports = {
  projects: [
    project("unit"),
    project("contract"),
    project("provider"),
    project("e2e"),
    project("datapath"),
    project("faults"),
  ],
};
