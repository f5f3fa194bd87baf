// The house's dependency rule (shared/STYLE.md, "Imports point down"), checked by
// `npm run lint:deps` and so by `npm test`. Type-only imports count (tsPreCompilationDeps below):
// a type imported upward still ties a lower layer to an upper one, and round 1's upward imports
// were mostly types.
//
// Layers, bottom to top:
//   domain/, errors.ts                       shared types, the error taxonomy
//   exec/  scheduler/  store/                 commands; pure placement; state
//   drivers/ targets/ connectors/ replication/ agent/   the data path and the node agent
//   controller/                               use cases
//   compose/ resources/ server/               wiring, Pulumi mapping, the gRPC service
//   main.ts, agent-main.ts, cli-main.ts, bench/  entry points
// Only "error" rules fail the command; "warn" rules are known debts, printed on every run.

/** Folders below the controller: none of them may know a use case, Pulumi or the wiring. */
const LOWER = "^provider/src/(domain|scheduler|store|exec|drivers|targets|connectors|replication|agent)/";
const UPPER = "^provider/src/(controller|resources|server|compose)/";
/** The error taxonomy: errors.ts today, maybe an errors/ folder tomorrow. */
const ERRORS = "^provider/src/errors(\\.ts$|/)";

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "lower-imports-upper",
      severity: "error",
      comment:
        "domain, scheduler, store, exec, drivers, targets, connectors, replication and agent sit below the " +
        "controller: they may not import controller/, resources/, server/ or compose/. Move the shared type " +
        "down (to domain/ or the lower layer's own interface file) instead.",
      from: { path: LOWER },
      to: { path: UPPER },
    },
    {
      name: "domain-imports-nothing-of-ours",
      severity: "error",
      comment:
        "domain/ is the bottom: it imports only itself and the error taxonomy. errors is allowed because " +
        "domain's parsers (volume-id.ts) throw the same UserError every layer reports, and the taxonomy " +
        "itself sits at the bottom too (rule errors-is-bottom), so this adds no upward edge. If errors.ts " +
        "ever needs domain types, move those into domain/ rather than loosening this.",
      from: { path: "^provider/src/domain/" },
      to: { path: "^provider/src/", pathNot: ["^provider/src/domain/", ERRORS] },
    },
    {
      name: "errors-is-bottom",
      severity: "error",
      comment: "The error taxonomy is imported by every layer, so it may import only itself and domain/.",
      from: { path: ERRORS },
      to: { path: "^provider/src/", pathNot: ["^provider/src/domain/", ERRORS] },
    },
    {
      name: "no-circular",
      severity: "error",
      comment:
        "No import cycles under provider/src, type-only ones included: a cycle means two files are one " +
        "module in disguise, and it hides which of them is the lower layer. Move the shared part down.",
      from: { path: "^provider/src/" },
      to: { circular: true },
    },
    {
      name: "pulumi-only-in-resources-and-server",
      severity: "error",
      comment:
        "Only server/ (the gRPC service) and resources/ (input mapping) know Pulumi: @pulumi/pulumi, its " +
        "protobuf stubs, google-protobuf and gRPC. Everything below must run without the engine (the agent, " +
        "the CLI, the tests of the data path).",
      from: { path: "^provider/src/", pathNot: "^provider/src/(resources|server)/" },
      to: { path: "(^|/)node_modules/(@pulumi/pulumi|google-protobuf|@grpc/grpc-js)/" },
    },
    {
      name: "execa-only-in-exec",
      severity: "error",
      comment:
        "exec/ is the one door to commands (argv builders, timeouts, secret masking; tests record the argv " +
        "there). Everything else runs a command through exec/.",
      from: { path: "^provider/src/", pathNot: "^provider/src/exec/" },
      to: { path: "(^|/)node_modules/execa/" },
    },
    {
      name: "scheduler-is-pure",
      severity: "error",
      comment:
        "The scheduler sees a snapshot and answers (STYLE: no I/O, no clock): it imports only itself, domain/ " +
        "and errors, and no Node module that does I/O.",
      from: { path: "^provider/src/scheduler/" },
      to: {
        pathNot: ["^provider/src/(scheduler|domain)/", ERRORS],
        dependencyTypesNot: ["npm", "npm-dev", "npm-optional", "npm-peer", "npm-bundled", "npm-no-pkg"],
      },
    },
    {
      name: "drivers-never-call-targets",
      severity: "error",
      comment:
        "The controller composes a driver with a target (STYLE); a driver that reaches for a target or a " +
        "connector would hide that composition.",
      from: { path: "^provider/src/drivers/" },
      to: { path: "^provider/src/(targets|connectors)/" },
    },
    {
      name: "controller-imports-no-adapter",
      severity: "error",
      comment:
        "Use cases sit under the Pulumi mapping and the wiring: controller/ may not import resources/, " +
        "server/ or compose/ (compose wires the controller, not the other way round).",
      from: { path: "^provider/src/controller/" },
      to: { path: "^provider/src/(resources|server|compose)/" },
    },
    {
      name: "resources-import-server",
      severity: "error",
      comment:
        "The Pulumi layer points one way: server/ (the gRPC adapter) calls resources/, never the " +
        "reverse. The value codec (Props, UNKNOWN, secret, reveal) lives in resources/values.ts.",
      from: { path: "^provider/src/resources/" },
      to: { path: "^provider/src/server/" },
    },
  ],
  options: {
    // Cruise our sources; record npm packages as leaves (the rules above name some) without
    // walking into them.
    doNotFollow: { path: "(^|/)node_modules/" },
    // Count `import type` and type-only re-exports: they tie layers as firmly as values do.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".js", ".cjs", ".mjs", ".json", ".d.ts"],
    },
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
};
