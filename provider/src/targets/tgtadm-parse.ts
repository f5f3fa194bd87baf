/**
 * Readers of tgtd's `show` answers (the text tgtadm prints, whether it came through tgtadm or
 * through {@link TgtadmClient}'s socket). The layout is tgt's usr/target.c `tgt_target_show_all`:
 * sections indented by 4 spaces, items by 8, LUN attributes by 12.
 */
import type { ExportState } from "./target";

/** A LUN as tgtd shows it: `bstype` is set when its backing store is not a file (`rdwr`), e.g. `rbd`. */
export type TgtLun = ExportState["luns"][number] & { bstype?: string };
/** A target as tgtd shows it, its LUNs with their backing store type. */
export type TgtTargetState = Omit<ExportState, "luns"> & { luns: TgtLun[] };

/**
 * Parse `tgtadm --op show --mode target`: one {@link ExportState} per target, without LUN 0
 * (tgt's controller LUN) and without outgoing CHAP accounts; `sessions` counts the I_T nexuses
 * (one per logged-in initiator session). A LUN on tgt's rbd backing store shows its
 * `pool/image[@snap]` as its path and `bstype: "rbd"` (tgtd never shows its bsopts).
 */
export function parseTgtTargets(text: string): TgtTargetState[] {
  const out: TgtTargetState[] = [];
  let target: TgtTargetState | undefined;
  let section = "";
  let lun: TgtLun | undefined;
  let lunIsDisk = false;
  const endLun = () => {
    if (target && lun && lunIsDisk) target.luns.push(lun);
    lun = undefined;
  };
  for (const line of text.split("\n")) {
    const head = /^Target (\d+): (.+)$/.exec(line);
    if (head) {
      endLun();
      target = { name: head[2]!.trim(), tid: Number(head[1]), luns: [], initiators: [], chapUsers: [], sessions: 0 };
      out.push(target);
      section = "";
      continue;
    }
    if (!target || !line.trim()) continue;
    const indent = line.length - line.trimStart().length;
    const item = line.trim();
    if (indent === 4) {
      endLun();
      section = item;
      continue;
    }
    if (section === "I_T nexus information:") {
      if (indent === 8 && /^I_T nexus: \d+$/.test(item)) target.sessions!++;
    } else if (section === "LUN information:") {
      const start = /^LUN: (\d+)$/.exec(item);
      if (start) {
        endLun();
        lun = { lun: Number(start[1]), path: "", readOnly: false };
        lunIsDisk = true;
        continue;
      }
      if (!lun) continue;
      const colon = item.indexOf(": ");
      const key = colon < 0 ? item.replace(/:$/, "") : item.slice(0, colon);
      const value = colon < 0 ? "" : item.slice(colon + 2);
      if (key === "Type") lunIsDisk = value !== "controller";
      else if (key === "Backing store path") lun.path = value;
      else if (key === "Readonly") lun.readOnly = value === "Yes";
      else if (key === "Backing store type" && value !== "rdwr") lun.bstype = value;
    } else if (section === "Account information:" && indent === 8) {
      if (!item.endsWith(" (outgoing)")) target.chapUsers.push(item);
    } else if (section === "ACL information:" && indent === 8) {
      target.initiators.push(item);
    }
  }
  endLun();
  return out;
}

/** Parse `tgtadm --op show --mode account` ("Account list:" then one name a line). */
export function parseTgtAccounts(text: string): string[] {
  return text
    .split("\n")
    .filter((l) => /^\s+\S/.test(l))
    .map((l) => l.trim());
}

/** Parse `tgtadm --op show --mode portal` ("Portal: 127.0.0.1:3260,1" a line) into `ip:port`s. */
export function parseTgtPortals(text: string): string[] {
  return text
    .split("\n")
    .map((l) => /^Portal: (.+),\d+$/.exec(l.trim())?.[1])
    .filter((p): p is string => p !== undefined);
}

