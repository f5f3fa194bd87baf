/**
 * The storage-node routes of sds-agent (`/v1/storage/…`): a backend whose `node` is a host in
 * the provider's `hosts` is driven through them (agent/remote-node.ts is the other side).
 * They keep callers inside the node (why each check sits where it does is said on it):
 * - volume ids match domain/volume-id.ts (they become file names);
 * - every path stays under `--storage-root` with symlinks followed (drivers/confine.ts);
 * - replication sends only to the nodes of the agent's own `--peers`, named by the request,
 *   never to a url a request carries.
 * Without `--storage-root` every one of them answers 404.
 */
import type { PoolConfig } from "../domain/backend";
import { checkVolumeId } from "../domain/volume-id";
import { confinedFile, confinedFolder, refuseSymlink } from "../drivers/confine";
import type { VolumeDriver } from "../drivers/volume-driver";
import { UserError } from "../errors";
import type { TargetFactory } from "../targets/target";
import type { DriverCall, IscsiCall, NbdCall, SyncSpec } from "./api";
import type { RouteHandlers } from "./connector-routes";
import { HttpError, invalid } from "./http-errors";
import type { NodeReplication } from "./node-replication";

/**
 * What a storage node serves: every path a client names must stay under `root` with symlinks
 * followed (drivers/confine.ts), and every volume id must be one (domain/volume-id.ts).
 */
export interface StorageNode {
  /** Absolute folder the pools of this node live in (`--storage-root`). */
  root: string;
  driverFor(kind: string): VolumeDriver;
  targets: TargetFactory;
  /** Replication syncs run by this node (agent/node-replication.ts). */
  replication?: NodeReplication;
}

function storageOf(storage: StorageNode | undefined): StorageNode {
  if (!storage) throw new HttpError(404, { error: { code: "NOT_FOUND", message: "this agent is not a storage node (start it with --storage-root)" } });
  return storage;
}

function replicationOf(storage: StorageNode | undefined): NodeReplication {
  const node = storageOf(storage);
  if (!node.replication) throw new HttpError(404, { error: { code: "NOT_FOUND", message: "this storage node does not run replication" } });
  return node.replication;
}

/**
 * A sync spec checked against this node: the peer is one of its `--peers`, the source (and a
 * local sink) are files under its storage root, not symlinks. Returns the spec with the
 * resolved paths. `prefix` is where the spec sits in the request (`spec` for schedule).
 */
async function checkedSpec(storage: StorageNode | undefined, spec: SyncSpec, prefix = ""): Promise<SyncSpec> {
  const root = storageOf(storage).root;
  const field = (name: string) => (prefix ? `${prefix}.${name}` : name);
  if (spec.peer !== undefined) replicationOf(storage).peer(spec.peer, field("peer"));
  const source = await confinedFile(root, spec.source, field("source"));
  // A sink on a peer is that node's to check (its sink route confines it to its own root).
  const sink = spec.peer === undefined ? await confinedFile(root, spec.sink, field("sink")) : spec.sink;
  return { ...spec, source, sink };
}

/**
 * Why each driver call resolves its pools here: the driver follows what it is given, so the
 * folders it gets are the real ones inside the root (drivers/confine.ts), and a volume file
 * that is a symlink is refused naming the id that led to it.
 */
async function driverCall(node: StorageNode, kind: string, c: DriverCall): Promise<unknown> {
  const d = node.driverFor(kind);
  const pool = async (p: PoolConfig, field: string, create: boolean): Promise<PoolConfig | undefined> => {
    const real = await confinedFolder(node.root, p.path, field, { create });
    return real === undefined ? undefined : { ...p, path: real };
  };
  const existingPool = async (p: PoolConfig, field: string): Promise<PoolConfig> => {
    const found = await pool(p, field, false);
    if (!found) throw new UserError("NOT_FOUND", `${field}: pool folder ${p.path} does not exist on this node`, field);
    return found;
  };
  const volumeFile = (p: PoolConfig, volumeId: string, field: string) => refuseSymlink(d.volumePath(p, checkVolumeId(field, volumeId)), field);
  switch (c.op) {
    case "getPoolStats":
      return d.getPoolStats((await pool(c.args[0] as PoolConfig, "call.args[0].path", true))!);
    case "createVolume": {
      const p = (await pool(c.args[0] as PoolConfig, "call.args[0].path", true))!;
      await volumeFile(p, c.args[1], "call.args[1]");
      return d.createVolume(p, c.args[1], c.args[2]);
    }
    case "cloneVolume": {
      const [source, target, volumeId, sizeBytes] = c.args;
      // The target's pool first, as the driver does: it is made even when the source is missing.
      const to = (await pool(target as PoolConfig, "call.args[1].path", true))!;
      await volumeFile(to, volumeId, "call.args[2]");
      const from = await existingPool(source.pool as PoolConfig, "call.args[0].pool.path");
      await volumeFile(from, source.volumeId, "call.args[0].volumeId");
      return d.cloneVolume({ pool: from, volumeId: source.volumeId }, to, volumeId, sizeBytes);
    }
    case "extendVolume": {
      const p = await existingPool(c.args[0] as PoolConfig, "call.args[0].path");
      await volumeFile(p, c.args[1], "call.args[1]");
      return d.extendVolume(p, c.args[1], c.args[2]);
    }
    case "deleteVolume":
    case "getVolumeSizeBytes": {
      // A pool folder that is not there holds no volume: deleted already, size unknown.
      const p = await pool(c.args[0] as PoolConfig, "call.args[0].path", false);
      if (!p) return undefined;
      await volumeFile(p, c.args[1], "call.args[1]");
      return d[c.op](p, c.args[1]);
    }
  }
}

/**
 * Why only the backing file is checked: it is the one argument naming a path, and tgtd and
 * nbdkit would open whatever it names. The target still gets the path as sent (it lists LUNs
 * by it); the check refuses every path whose folders leave the root or that is a symlink.
 */
async function iscsiCall(node: StorageNode, portal: string, c: IscsiCall): Promise<unknown> {
  if (c.op === "ensureLun" || c.op === "refreshLun") await confinedFile(node.root, c.args[2], "call.args[2]");
  const t = node.targets.iscsi(portal) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  if (typeof t[c.op] !== "function") throw invalid("call.op", `the iSCSI target of this agent has no ${c.op}`);
  return t[c.op](...c.args);
}

async function nbdCall(node: StorageNode, host: string, c: NbdCall): Promise<unknown> {
  if (c.op === "ensureExport" || c.op === "refreshExport") await confinedFile(node.root, c.args[2], "call.args[2]");
  const t = node.targets.nbd(host) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  if (typeof t[c.op] !== "function") throw invalid("call.op", `the NBD target of this agent has no ${c.op}`);
  return t[c.op](...c.args);
}

/** The handlers of the storage routes, by operationId; `storage` undefined: not a storage node. */
export function storageRoutes(storage: StorageNode | undefined): RouteHandlers {
  return {
  storageDriver: async (_q, b) => ({ result: await driverCall(storageOf(storage), b.driver, b.call) }),
  storageIscsi: async (_q, b) => ({ result: await iscsiCall(storageOf(storage), b.portal, b.call) }),
  storageNbd: async (_q, b) => ({ result: await nbdCall(storageOf(storage), b.host, b.call) }),
  storageSync: async (_q, b) => {
    const repl = replicationOf(storage);
    const r = await repl.sync(await checkedSpec(storage, b));
    repl.noteSync(b.pairId, r);
    return { result: { bytesTransferred: r.bytesTransferred, full: r.full, lastSyncAt: r.lastSyncAt, durationMs: r.durationMs } };
  },
  storageSchedule: async (_q, b) => {
    const repl = replicationOf(storage);
    // Checked now, saved as sent: the timer's syncs open the files with O_NOFOLLOW.
    await checkedSpec(storage, b.spec, "spec");
    repl.schedule(b.spec, b.rpoSeconds);
    return {};
  },
  storageUnschedule: async (_q, b) => {
    await replicationOf(storage).unschedule(b.pairId);
    return {};
  },
  storagePairs: async () => ({ pairs: replicationOf(storage).pairs() }),
  storageSyncProgress: async (_q, b) => ({ progress: replicationOf(storage).progressOf(b.pairId) ?? null }),
  storageSink: async (_q, b) => {
    const repl = replicationOf(storage);
    return { result: await repl.sinkCall(await confinedFile(storageOf(storage).root, b.path, "path"), b.call) };
  },
  };
}
