/**
 * `sds force-detach <attachment>`: for an attachment whose host is gone (a dead hypervisor, a
 * host taken out of the provider's hosts), what the provider's forced detach does
 * (`SDS_FORCE_DETACH=<id> pulumi destroy`, controller/detach.ts with `force`): the device is
 * disconnected on the host when its agent answers, and skipped (reported) when it does not; the
 * export is removed as far as nothing else needs it; the row goes, and the volume is available
 * again when its last attachment is gone. It says what it did, and that the stack still holds
 * the Attachment resource (`pulumi refresh` forgets it).
 */
import { UserError } from "../errors";
import { inventoryOf } from "./inventory-commands";
import { type OpenStack, openStack, probeAgent, type StackFlags, stderrLog, withStack } from "./open-stack";

export async function forceDetach(id: string, flags: StackFlags): Promise<number> {
  // First look the attachment and its host up, changing nothing.
  const found = await withStack(flags, async (s) => {
    const a = await (await inventoryOf(s)).attachment(id);
    if (!a) throw new UserError("NOT_FOUND", `ATTACHMENT: no attachment "${id}" in the state ${s.parts.stateShown} (sds attachments lists them)`, "attachment");
    const gone = a.host === "localhost" ? undefined : await unreachable(s, a.host);
    return { a, gone };
  });
  const { a, gone } = found;
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`sds force-detach: attachment ${a.id} (volume ${a.volume ?? a.volumeId}, host ${a.host}, ${a.protocol}, ${a.mode})`);
  // A host whose agent does not answer is left out: its device is not disconnected (nothing could).
  const s = await openStack(flags, gone ? { dropHost: a.host } : {});
  try {
    await s.parts.allowWrites();
    const before = a.target ? await s.parts.store.getTarget(a.target) : undefined;
    const warnings: string[] = [];
    await (await s.parts.attachments()).detach(a.id, { force: true, warn: (m) => warnings.push(m) });
    if (!a.devicePath) out("  device: none connected");
    else if (gone) out(`  device: ${a.devicePath} on ${a.host} NOT disconnected: ${gone}; if the host comes back, disconnect it there before using the volume elsewhere`);
    else out(`  device: ${a.devicePath} disconnected on ${a.host}`);
    for (const w of warnings) out(`  warning: ${w}`);
    if (!a.target) out("  export: none (local)");
    else if (before && !(await s.parts.store.getTarget(a.target))) out(`  export: ${a.target} removed`);
    else out(`  export: ${a.target} kept (other attachments use it); ${a.host}'s access to it removed`);
    const volume = await (await s.parts.controller()).getVolume(a.volumeId);
    out(`  state: attachment removed${volume ? `; volume ${volume.name} is ${volume.status}` : ""}`);
    out("next: pulumi refresh (the stack still holds the Attachment: refresh forgets it), then drop it from the program, or the next pulumi up attaches again");
    return 0;
  } finally {
    await s.parts.close();
  }
}

/** Why the agent of `host` counts as gone (not in hosts, or no answer), or undefined when it answers. */
async function unreachable(s: OpenStack, host: string): Promise<string | undefined> {
  if (!s.config.hosts[host]) return `host "${host}" is not in the provider's hosts`;
  try {
    await probeAgent(s.parts, host);
    return undefined;
  } catch (err) {
    const why = (err as Error).message.split("\n")[0];
    stderrLog("warning", `sds: the agent of ${host} does not answer (${why}): detaching without its device`);
    return `its agent does not answer (${why})`;
  }
}
