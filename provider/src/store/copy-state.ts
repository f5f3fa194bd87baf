/**
 * Copy a whole controller state from one {@link Store} to another (`sds state migrate`): a stack
 * that began on one person's SQLite file moves to a PostgreSQL state the team shares, or back.
 *
 * Contract:
 * - Every row goes through the Store interface, so any pair of implementations works and each
 *   row is written exactly as its store reads it back (the contract suite checks both ways).
 * - The source is read in ONE of its transactions: they are exclusive, so no writer changes it
 *   half way through the read and the copy is one consistent snapshot.
 * - The destination is written in ONE of its transactions: all of it lands, or nothing does.
 *   Rows go parents first (backends, profiles, volumes, targets, their LUNs, attachments, pairs),
 *   so the foreign keys hold at every insert.
 * - The destination must hold no state of its own (no profile, volume, target, attachment or
 *   pair): two states are never merged. It is checked inside the writing transaction, so a runner
 *   that starts using the destination meanwhile cannot slip in between the check and the copy. A
 *   fresh destination has only its own `state_id` (and maybe backends and a `key_check` from a
 *   run with nothing in it): those are overwritten with the source's.
 * - The state's facts are carried over: `state_id`, because targets, CHAP accounts and NBD
 *   servers on the storage nodes carry it and reconciliation touches only its own state's; and
 *   `key_check`, so the destination still recognises the key its CHAP secrets were sealed with.
 * - Locks are not copied: they belong to runs of the source, which end with it.
 */
import { UserError } from "../errors";
import type { AttachmentRow, BackendRow, LunRow, PairRow, ProfileRow, Store, StoreOps, TargetRow, VolumeRow } from "./store";

/** How many rows of each table were copied. */
export interface Counts {
  backends: number;
  profiles: number;
  volumes: number;
  targets: number;
  luns: number;
  attachments: number;
  pairs: number;
}

/** The state facts (`state_info` keys) a copy carries; the store offers no listing of them. */
export const STATE_FACTS = ["state_id", "key_check"] as const;

/** Everything one state holds, read at one moment. */
interface Snapshot {
  backends: BackendRow[];
  profiles: ProfileRow[];
  volumes: VolumeRow[];
  targets: TargetRow[];
  luns: LunRow[];
  attachments: AttachmentRow[];
  pairs: PairRow[];
  facts: Map<string, string>;
}

/**
 * Copy every row of `from` into `to` (see the contract above) and return how many of each.
 * Throws UserError INVALID_INPUT naming `--to` when `to` already holds a state of its own; `to`
 * is then unchanged. `from` is only read.
 */
export async function copyState(from: Store, to: Store): Promise<Counts> {
  const snap = await from.transaction(readSnapshot);
  await to.transaction(async (tx) => {
    await assertEmpty(tx, snap);
    for (const b of snap.backends) await tx.upsertBackend(b);
    for (const p of snap.profiles) await tx.insertProfile(p);
    for (const v of snap.volumes) await tx.insertVolume(v);
    for (const t of snap.targets) await tx.insertTarget(t);
    for (const l of snap.luns) await tx.insertLun(l);
    for (const a of snap.attachments) await tx.insertAttachment(a);
    for (const p of snap.pairs) await tx.insertPair(p);
    for (const [key, value] of snap.facts) await tx.setInfo(key, value);
  });
  return {
    backends: snap.backends.length,
    profiles: snap.profiles.length,
    volumes: snap.volumes.length,
    targets: snap.targets.length,
    luns: snap.luns.length,
    attachments: snap.attachments.length,
    pairs: snap.pairs.length,
  };
}

// Why: the one read of the source, inside its transaction, so every list is of the same moment.
async function readSnapshot(tx: StoreOps): Promise<Snapshot> {
  const targets = await tx.listTargets();
  const luns: LunRow[] = [];
  for (const t of targets) luns.push(...(await tx.listLuns(t.name)));
  const facts = new Map<string, string>();
  for (const key of STATE_FACTS) {
    const value = await tx.getInfo(key);
    if (value !== undefined) facts.set(key, value);
  }
  if (!facts.has("state_id")) throw new Error("sds internal error: the source state has no state_id (every migrated store makes one)");
  return {
    backends: await tx.listBackends(),
    profiles: await tx.listProfiles(),
    volumes: await tx.listVolumes(),
    targets,
    luns,
    attachments: await tx.listAttachments(),
    pairs: await tx.listPairs(),
    facts,
  };
}

/** Why: never merge two states; a destination with rows of its own is another stack's state. */
async function assertEmpty(tx: StoreOps, snap: Snapshot): Promise<void> {
  const held = [
    ["profile", (await tx.listProfiles()).length],
    ["volume", (await tx.listVolumes()).length],
    ["target", (await tx.listTargets()).length],
    ["attachment", (await tx.listAttachments()).length],
    ["replication pair", (await tx.listPairs()).length],
  ] as const;
  const nonEmpty = held.filter(([, n]) => n > 0).map(([what, n]) => `${n} ${what}(s)`);
  if (nonEmpty.length > 0) {
    throw new UserError(
      "INVALID_INPUT",
      `--to: the destination already holds a state (${nonEmpty.join(", ")}); sds never merges two states: migrate into an empty database or a new file`,
      "to",
    );
  }
  // A key check with no source one to replace it would keep a key the copied secrets were not sealed with.
  if (!snap.facts.has("key_check") && (await tx.getInfo("key_check")) !== undefined) {
    throw new UserError(
      "INVALID_INPUT",
      "--to: the destination already checks a sealing key (a run with sds:secretKey wrote it) and the source has no key check to replace it with; migrate into an empty database or a new file",
      "to",
    );
  }
}
