/**
 * What sds made for creates the Pulumi engine never recorded (`pending_operations` of type
 * `creating` in `pulumi stack export`): the engine or the CLI died after the provider began, or
 * finished, a create. A non-interactive `pulumi refresh` keeps such operations, and an `up` after
 * `refresh --clear-pending-creates` creates the resource again under a new auto-name, so what the
 * first attempt made would be forgotten by the stack (it would survive every destroy).
 *
 * Every row sds makes carries its resource's URN (`owner`), written before any side effect, so
 * the row a pending create made is found by URN, never by a name that changes between attempts:
 * - attachments and replication pairs are keyed by URN and by inputs that do not change between
 *   attempts (volume, host, mode; primary volume): the next `up` retries the create, which takes
 *   up the row, finished or not;
 * - a volume cut short on the way (`creating`) is taken up the same way, under the retry's name;
 * - a volume or profile that got to its final state is not (its retry carries a new auto-name, and
 *   under a create-before-delete replacement the URN's finished row is the one being replaced):
 *   it is to be imported (`pulumi import TYPE NAME ID`), so the stack holds it again.
 */
import type { Store } from "../store/store";

/** A pending create as `pulumi stack export` shows it. */
export interface PendingCreate {
  type: string;
  urn: string;
}

export interface CutShortCreate extends PendingCreate {
  /** The resource's name in the program (the URN's last part). */
  name: string;
  /** `import`: a finished row to import by `id`; `retry`: the next up's create takes the row up; `none`: sds made nothing; `stray`: a row no resource owns (see {@link unrecordedRows}). */
  action: "import" | "retry" | "none" | "stray";
  id?: string;
  /** What sds holds for it, in words. */
  detail: string;
}

/** Imports go parents first: a volume before the pair and the attachment that name it. */
const ORDER = ["sds:index:Profile", "sds:index:Volume", "sds:index:ReplicationPair", "sds:index:Attachment"];

/** A row sds made, as recovery sees it. */
export interface OwnedRow {
  type: string;
  /** The URN of the resource it was made for. */
  owner: string;
  id: string;
  what: string;
  status: string;
  /** Whether a create's retry under the same URN takes this row up by itself. */
  retried: boolean;
  createdAt: string;
}

/** Every row of the state (profiles, volumes, pairs, attachments), oldest first within each kind; read once per recovery. */
export async function ownedRows(store: Pick<Store, "listProfiles" | "listVolumes" | "listAttachments" | "listPairs">): Promise<OwnedRow[]> {
  return [
    ...(await store.listProfiles()).map((r) => ({ type: "sds:index:Profile", owner: r.owner, id: r.id, what: `profile ${r.name}`, status: "made", retried: false, createdAt: r.createdAt })),
    ...(await store.listVolumes()).map((r) => ({ type: "sds:index:Volume", owner: r.owner, id: r.id, what: `volume ${r.name}`, status: r.status, retried: r.status === "creating", createdAt: r.createdAt })),
    ...(await store.listPairs()).map((r) => ({ type: "sds:index:ReplicationPair", owner: r.owner, id: r.id, what: "replication pair", status: r.status, retried: true, createdAt: r.createdAt })),
    ...(await store.listAttachments()).map((r) => ({ type: "sds:index:Attachment", owner: r.owner, id: r.id, what: `attachment of volume ${r.volumeId} to ${r.host}`, status: r.status, retried: true, createdAt: r.createdAt })),
  ];
}

/** What sds made for each pending create (the newest row its URN owns), in the order to import them; non-sds resources are left out. */
export function cutShortCreates(rows: OwnedRow[], pending: PendingCreate[]): CutShortCreate[] {
  const out: CutShortCreate[] = [];
  for (const p of pending.filter((x) => ORDER.includes(x.type)).sort((a, b) => ORDER.indexOf(a.type) - ORDER.indexOf(b.type))) {
    const name = p.urn.slice(p.urn.lastIndexOf("::") + 2);
    const found = rows.filter((r) => r.type === p.type && r.owner === p.urn).sort((a, b) => a.createdAt.localeCompare(b.createdAt)).pop();
    if (!found) out.push({ ...p, name, action: "none", detail: "sds holds nothing for it; the next up creates it" });
    else if (found.retried) out.push({ ...p, name, action: "retry", id: found.id, detail: `${found.what} ${found.id} is ${found.status}; the next up's create takes it up` });
    else out.push({ ...p, name, action: "import", id: found.id, detail: `${found.what} ${found.id} is ${found.status}` });
  }
  return out;
}

/** A resource of the stack as `pulumi stack export` shows it. */
export interface StackResource {
  urn: string;
  type: string;
  id?: string;
}

/**
 * Rows sds made for resources of this stack (owners under `prefix`, `urn:pulumi:<stack>::<project>::`)
 * that the stack does not hold, apart from pending creates (see {@link cutShortCreates}): a create
 * whose answer never reached the engine (the provider killed while the row became available; the
 * engine saw an error and kept nothing) leaves a finished row no pending operation names, and the
 * retry makes a second one under a new auto-name. Such a row is to be imported when the stack holds
 * nothing at its URN (`import`); when the stack holds another row there, it is a stray no program
 * owns (`stray`), reported for the operator to remove. Rows a retry takes up (a volume `creating`,
 * attachments, pairs) are `retry`. A replication pair's secondary belongs to its pair and is skipped.
 */
export function unrecordedRows(rows: OwnedRow[], prefix: string, resources: StackResource[], pendingUrns: ReadonlySet<string>): CutShortCreate[] {
  const ids = new Set(resources.map((r) => r.id).filter((id): id is string => typeof id === "string" && id !== ""));
  const held = new Map(resources.map((r) => [r.urn, r.id]));
  const out: CutShortCreate[] = [];
  const imported = new Set<string>();
  // Newest first: of several rows one URN owns, the newest is the one to import.
  for (const r of rows.filter((x) => x.owner.startsWith(prefix) && !x.owner.includes("#") && !ids.has(x.id) && !pendingUrns.has(x.owner)).sort((a, b) => b.createdAt.localeCompare(a.createdAt))) {
    const name = r.owner.slice(r.owner.lastIndexOf("::") + 2);
    const base = { type: r.type, urn: r.owner, name, id: r.id };
    if (r.retried) out.push({ ...base, action: "retry", detail: `${r.what} ${r.id} is ${r.status}, not in the stack; the next up's create takes it up` });
    else if (!held.has(r.owner) && !imported.has(r.owner)) {
      imported.add(r.owner);
      out.push({ ...base, action: "import", detail: `${r.what} ${r.id} is ${r.status}, and the stack holds nothing at its URN` });
    } else {
      out.push({ ...base, action: "stray", detail: `${r.what} ${r.id} is ${r.status}, but the stack holds ${held.get(r.owner) ?? "another row"} at its URN; nothing owns it: check it and remove it` });
    }
  }
  return inRecoveryOrder(out);
}

/** Imports first, parents before children (a volume before the pair and attachment naming it); then what is only reported. */
export function inRecoveryOrder(list: CutShortCreate[]): CutShortCreate[] {
  const rank = (c: CutShortCreate) => (c.action === "import" ? 0 : 1) * ORDER.length + ORDER.indexOf(c.type);
  return [...list].sort((a, b) => rank(a) - rank(b));
}

/** `urn:pulumi:<stack>::<project>::` of the first URN, or undefined. */
export function stackPrefix(urns: string[]): string | undefined {
  const m = urns.map((u) => /^(urn:pulumi:[^:]+::[^:]+::)/.exec(u)?.[1]).find(Boolean);
  return m;
}
