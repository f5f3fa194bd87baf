// Test layers (shared/STYLE.md): unit (pure logic), contract (one suite per interface),
// provider (the real plugin process driven over gRPC like the engine), e2e (the real Pulumi CLI),
// datapath (real tgtd, nbdkit and initiators, as root), faults (SIGKILLs in real pulumi runs, as root).
const transform = { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.test.json" }] };
const project = (name, extra = {}) => ({
  displayName: name,
  testEnvironment: "node",
  transform,
  testMatch: [`<rootDir>/test/${name}/**/*.test.ts`],
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
