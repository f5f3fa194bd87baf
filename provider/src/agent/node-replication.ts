/**
 * Replication on storage nodes: the agent of the primary's node runs the incremental sync
 * (replication/sync.ts) of a pair, now when the provider asks (create, failover, failback,
 * `sds replicate`) and on its own timer every rpoSeconds once the pair is scheduled. The
 * destination is a file on this node or, through {@link HttpSink}, on a peer node's agent.
 *
 * - Peers are this node's configuration (`sds-agent --peers FILE`: name → url, token, CA), never
 *   the request's: a sync names its peer, so a token holder cannot make the node send a volume
 *   to a url of their choosing. Schedules keep the name only, so no token lands in the state folder.
 * - Chunk maps and the schedules live in `<state dir>/replication` (0700): a restarted agent
 *   resumes its schedules.
 * - One sync of a pair at a time (an in-process mutex; the provider's store lock covers the rest).
 * - Every path is confined to the node's storage root by the caller (agent/server.ts); the file
 *   source and sink refuse symbolic links themselves, the last guard against a link made since.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { invalidInput } from "../errors";
import type { Progress } from "../domain/progress";
import { FileSink, FileSource, invalidateMap, pairStatePaths, syncVolume, type SyncResult } from "../replication/sync";
import type { ByteRange, ChunkHashAlgorithm, SinkChunk, SinkDigests, SyncSink } from "../replication/sync-sink";
import type { PairStatus, PeerEndpoint, Peers, SinkCall, SyncSpec } from "./api";
import { AgentClient } from "./client";

/** Sync batches to a peer travel as JSON (base64): 4 MiB of data per request. */
const PEER_BATCH_BYTES = 4 << 20;

/** The destination of a sync on another node, through its agent's sink route. */
export class HttpSink implements SyncSink {
  readonly description: string;
  constructor(
    private readonly client: Pick<AgentClient, "sinkCall">,
    private readonly file: string,
    peer: string,
  ) {
    this.description = `${peer}:${file}`;
  }
  private call(c: SinkCall): Promise<unknown> {
    return this.client.sinkCall(this.file, c);
  }
  async sizeBytes(): Promise<number | undefined> {
    const r = await this.call({ op: "sizeBytes", args: [] });
    return typeof r === "number" ? r : undefined;
  }
  async resize(bytes: number): Promise<void> {
    await this.call({ op: "resize", args: [bytes] });
  }
  async writeChunks(chunks: readonly SinkChunk[]): Promise<void> {
    await this.call({ op: "writeChunks", args: [chunks.map((c) => ({ offset: c.offset, data: c.data.toString("base64") }))] });
  }
  async zeroRanges(ranges: readonly ByteRange[]): Promise<void> {
    await this.call({ op: "zeroRanges", args: [ranges.map((r) => ({ offset: r.offset, length: r.length }))] });
  }
  async flush(): Promise<void> {
    await this.call({ op: "flush", args: [] });
  }
  async readDigests(chunkSizeBytes: number, algorithm: ChunkHashAlgorithm): Promise<SinkDigests> {
    const r = (await this.call({ op: "readDigests", args: [chunkSizeBytes, algorithm] })) as Omit<SinkDigests, "digests"> & { digests: string };
    return { ...r, digests: Buffer.from(r.digests, "base64") };
  }
  async close(): Promise<void> {
    // stateless: nothing held
  }
}

interface Schedule {
  spec: SyncSpec;
  rpoSeconds: number;
  lastSyncAt: string | null;
  bytesTransferred: number;
  lastError: string | null;
  /** Not before (ms since epoch): a failed scheduled sync waits min(rpo, 30 s) before the next try. */
  retryAt?: number;
}

/** Options of {@link NodeReplication}. */
export interface NodeReplicationOptions {
  /** The nodes this one may send to, by name (the agent's `--peers` file). Default: none. */
  peers?: Peers;
}

/**
 * Why: agents before `--peers` saved `{url, token}` as a schedule's peer. Such a schedule is not
 * run (its peer is no name: every sync fails, saying so) until the provider schedules the pair
 * again, and its token is dropped so that it leaves the state folder at the next save.
 */
function withoutLegacyPeer(s: Schedule): Schedule {
  const peer: unknown = s.spec.peer;
  if (peer === undefined || typeof peer === "string") return s;
  const url = typeof peer === "object" && peer !== null && "url" in peer ? String(peer.url) : "?";
  return { ...s, spec: { ...s.spec, peer: { url } as never }, lastError: `saved by an older agent with the peer's url (${url}) instead of its name: schedule the pair again` };
}

export class NodeReplication {
  private readonly dir: string;
  private readonly schedulesFile: string;
  private schedules = new Map<string, Schedule>();
  private readonly running = new Map<string, Promise<SyncResult>>();
  /** The progress of each pair's sync in flight, as its scan reports it. */
  private readonly progress = new Map<string, Progress>();
  private timer?: NodeJS.Timeout;
  private peerTable: Peers;

  constructor(
    stateDir: string,
    private readonly log: (line: string) => void = () => undefined,
    options: NodeReplicationOptions = {},
  ) {
    this.peerTable = { ...options.peers };
    this.dir = path.join(stateDir, "replication");
    this.schedulesFile = path.join(this.dir, "schedules.json");
    try {
      const saved = JSON.parse(fs.readFileSync(this.schedulesFile, "utf8")) as Schedule[];
      this.schedules = new Map(saved.map((s) => [s.spec.pairId, withoutLegacyPeer(s)]));
    } catch {
      // none yet
    }
  }

  /**
   * Set the peers (runAgent does, from `--peers`, for a NodeReplication its caller built without
   * them). Later syncs, scheduled ones included, resolve names against this table.
   */
  setPeers(peers: Peers): void {
    this.peerTable = { ...peers };
  }

  /**
   * The endpoint of a peer named by a sync spec; `field` names the spec's peer in errors.
   * Why it also refuses objects: schedules saved by an older agent carried `{url, token}`.
   */
  peer(name: unknown, field = "peer"): PeerEndpoint {
    const known = Object.keys(this.peerTable);
    if (typeof name !== "string") throw invalidInput(field, "name a peer from this agent's --peers file; a url or token in the request is not accepted");
    const p = Object.hasOwn(this.peerTable, name) ? this.peerTable[name] : undefined;
    if (!p) throw invalidInput(field, `no peer ${JSON.stringify(name)} in this agent's --peers file (known: ${known.length ? known.join(", ") : "none"})`);
    return p;
  }

  /** Sync a pair now; a sync of the same pair already running is waited for first (one at a time). */
  async sync(spec: SyncSpec): Promise<SyncResult> {
    const busy = this.running.get(spec.pairId);
    if (busy) await busy.catch(() => undefined);
    const p = this.syncOnce(spec);
    this.running.set(spec.pairId, p);
    try {
      return await p;
    } finally {
      if (this.running.get(spec.pairId) === p) {
        this.running.delete(spec.pairId);
        this.progress.delete(spec.pairId);
      }
    }
  }

  /** How far the pair's sync in flight got (the provider polls it while its sync call waits). */
  progressOf(pairId: string): Progress | undefined {
    return this.progress.get(pairId);
  }

  private async syncOnce(spec: SyncSpec): Promise<SyncResult> {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const peer = spec.peer === undefined ? undefined : this.peer(spec.peer);
    const maps = pairStatePaths(this.dir, spec.pairId)[spec.direction];
    if (spec.fresh) await invalidateMap(maps.mapPath);
    const source = new FileSource(spec.source);
    let client: AgentClient | undefined;
    let sink: SyncSink;
    if (peer) {
      client = new AgentClient({ url: peer.url, token: peer.token, caCert: peer.caCert });
      sink = new HttpSink(client, spec.sink, spec.peer!);
    } else {
      sink = new FileSink(spec.sink);
    }
    try {
      return await syncVolume(source, sink, maps.mapPath, { mapKey: maps.mapKey, batchBytes: peer ? PEER_BATCH_BYTES : undefined, onProgress: (p) => this.progress.set(spec.pairId, p) });
    } finally {
      await Promise.allSettled([source.close(), sink.close(), client?.close()]);
    }
  }

  /** The sink side of a sync from another node: one call on a file of this node. */
  async sinkCall(file: string, c: SinkCall): Promise<unknown> {
    const sink = new FileSink(file, { field: "path" });
    // Every case awaits inside the try: the finally must not close the file under a call in flight.
    try {
      switch (c.op) {
        case "sizeBytes":
          return (await sink.sizeBytes()) ?? null;
        case "resize":
          return await sink.resize(c.args[0]);
        case "writeChunks":
          return await sink.writeChunks(c.args[0].map((x) => ({ offset: x.offset, data: Buffer.from(x.data, "base64") })));
        case "zeroRanges":
          return await sink.zeroRanges(c.args[0]);
        case "flush":
          return await sink.flush();
        case "readDigests": {
          const d = await sink.readDigests(c.args[0], c.args[1]);
          return { ...d, digests: d.digests.toString("base64") };
        }
      }
    } finally {
      await sink.close();
    }
  }

  schedule(spec: SyncSpec, rpoSeconds: number): void {
    const old = this.schedules.get(spec.pairId);
    this.schedules.set(spec.pairId, { spec: { ...spec, fresh: undefined }, rpoSeconds, lastSyncAt: old?.lastSyncAt ?? null, bytesTransferred: old?.bytesTransferred ?? 0, lastError: null });
    this.save();
  }

  /**
   * Stop the timer's syncs of a pair, and wait for one in flight: the caller may delete the
   * destination next, which a sync still writing would create again.
   */
  async unschedule(pairId: string): Promise<void> {
    if (this.schedules.delete(pairId)) this.save();
    await this.running.get(pairId)?.catch(() => undefined);
  }

  pairs(): PairStatus[] {
    return [...this.schedules.values()].map((s) => ({ pairId: s.spec.pairId, rpoSeconds: s.rpoSeconds, lastSyncAt: s.lastSyncAt, bytesTransferred: s.bytesTransferred, lastError: s.lastError }));
  }

  /** Record a sync the provider asked for, so the schedule's clock starts from it. */
  noteSync(pairId: string, r: SyncResult): void {
    const s = this.schedules.get(pairId);
    if (!s) return;
    s.lastSyncAt = r.lastSyncAt;
    s.bytesTransferred += r.bytesTransferred;
    s.lastError = null;
    this.save();
  }

  /** Run due schedules every `tickMs`. */
  start(tickMs = 1000): void {
    this.timer ??= setInterval(() => void this.tick(), tickMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private ticking = false;
  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      for (const s of [...this.schedules.values()]) {
        const due = (!s.lastSyncAt || Date.now() - new Date(s.lastSyncAt).getTime() >= s.rpoSeconds * 1000) && (s.retryAt ?? 0) <= Date.now();
        if (!due || !this.schedules.has(s.spec.pairId)) continue;
        try {
          const r = await this.sync(s.spec);
          this.noteSync(s.spec.pairId, r);
          this.log(`replication ${s.spec.pairId}: scheduled sync sent ${r.bytesTransferred} bytes`);
        } catch (err) {
          s.lastError = (err as Error).message;
          s.retryAt = Date.now() + Math.min(s.rpoSeconds, 30) * 1000;
          this.save();
          this.log(`replication ${s.spec.pairId}: scheduled sync failed: ${s.lastError}`);
        }
      }
    } finally {
      this.ticking = false;
    }
  }

  private save(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.schedulesFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify([...this.schedules.values()]), { mode: 0o600 });
    fs.renameSync(tmp, this.schedulesFile);
  }
}
