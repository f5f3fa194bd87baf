/**
 * `sds recover` is for after a crash (the CLI or the engine killed during `up`): it reads the
 * stack's pending creates and resources from `pulumi stack export` (stdin, or --export FILE),
 * finds by URN what sds made that the stack does not hold (controller/cut-short-creates.ts: a
 * pending create, or a create whose answer never reached the engine), and prints the commands
 * that bring the stack back in step: `pulumi refresh` (`--clear-pending-creates` when there are
 * some), a `pulumi import` of each finished volume or profile the stack holds nothing for (a
 * retried create would make it again under a new auto-name), one comment line per row the next
 * `up` takes up by itself or that nothing owns. It changes nothing. The state is found as for
 * `sds state check`. Exits 0, 2 on a usage error.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { cutShortCreates, inRecoveryOrder, ownedRows, type PendingCreate, type StackResource, stackPrefix, unrecordedRows } from "../controller/cut-short-creates";
import { UserError } from "../errors";
import { locateState, openState, shellQuote, stateUrlFor } from "./state-location";

/** `sds recover`: the commands that bring a crashed stack back in step (see the header); changes nothing. */
export async function recover(values: { export?: string; state?: string; project?: string; stack?: string }): Promise<number> {
  const source = values.export ?? "-";
  const shown = source === "-" ? "stdin" : source;
  let exported: { deployment?: { resources?: Array<{ urn?: string; type?: string; id?: string }>; pending_operations?: Array<{ type?: string; resource?: { urn?: string; type?: string } }> } };
  try {
    exported = JSON.parse(fs.readFileSync(source === "-" ? 0 : source, "utf8"));
  } catch (err) {
    throw new UserError("INVALID_INPUT", `--export: ${shown} is not the JSON of \`pulumi stack export\`: ${(err as Error).message}`, "export");
  }
  const pending: PendingCreate[] = (exported.deployment?.pending_operations ?? [])
    .filter((o) => o.type === "creating" && typeof o.resource?.urn === "string" && o.resource?.type?.startsWith("sds:"))
    .map((o) => ({ urn: o.resource!.urn!, type: o.resource!.type! }));
  const resources: StackResource[] = (exported.deployment?.resources ?? [])
    .filter((r) => typeof r.urn === "string" && typeof r.type === "string")
    .map((r) => ({ urn: r.urn!, type: r.type!, id: r.id }));
  const prefix = stackPrefix([...resources.map((r) => r.urn), ...pending.map((p) => p.urn)]);
  if (!prefix) {
    process.stdout.write("sds recover: the export holds no resource and no pending create; nothing to recover\n");
    return 0;
  }
  const projectDir = path.resolve(values.project ?? process.cwd());
  const loc = locateState("--state", await stateUrlFor(values, projectDir), projectDir);
  if (loc.kind === "sqlite" && !fs.existsSync(loc.file)) throw new UserError("NOT_FOUND", `--state: no sds state at ${loc.file}; run sds in the project folder, or pass --project DIR or --state URL`, "state");
  const store = await openState(loc);
  try {
    const rows = await ownedRows(store);
    const cut = cutShortCreates(rows, pending);
    const unrecorded = unrecordedRows(rows, prefix, resources, new Set(pending.map((p) => p.urn)));
    if (!pending.length && !unrecorded.length) {
      process.stdout.write("sds recover: the stack holds everything sds made for it; `pulumi refresh` then `pulumi up` is all sds needs\n");
      return 0;
    }
    process.stdout.write(`# sds recover: ${pending.length} pending create(s) of sds resources, ${unrecorded.length} row(s) the stack does not hold; state ${loc.shown}\n`);
    process.stdout.write(pending.length ? "pulumi refresh --yes --clear-pending-creates\n" : "pulumi refresh --yes\n");
    for (const c of inRecoveryOrder([...cut, ...unrecorded])) {
      if (c.action === "import") process.stdout.write(`pulumi import --yes --generate-code=false ${shellQuote(c.type)} ${shellQuote(c.name)} ${shellQuote(c.id!)}   # ${c.detail}\n`);
      else process.stdout.write(`# ${c.name} (${c.type}): ${c.detail}\n`);
    }
    process.stdout.write("pulumi up\n");
    return 0;
  } finally {
    await store.close();
  }
}
