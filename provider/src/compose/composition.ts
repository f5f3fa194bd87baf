/**
 * The one place that wires concrete parts: the store, the controller and its node drivers, the
 * replication use cases and their node agents, attachments with this machine's targets and
 * connectors and other hosts' agents. The provider server and the `sds` CLI both build theirs
 * here, so an operator command runs against the same controller `pulumi up` does.
 *
 * Everything is made lazily, on first use, and once. Side effects that touch the world (the
 * reconciliation of exports at start, replication syncs that are due) run only from `start*`
 * methods that the caller calls on purpose, never from a getter.
 */
import * as os from "node:os";
import * as path from "node:path";
import { AgentClient } from "../agent/client";
import { RemoteDriver, remoteTargets } from "../agent/remote-node";
import type { Connector, VolumePath } from "../connectors/connector";
import { connectorFor as makeConnector } from "../connectors/factory";
import { Attachments, type RemoteHost } from "../controller/attachments";
import type { ProviderConfig } from "../controller/config";
import { Controller } from "../controller/controller";
import { Replication, replicationDir } from "../controller/replication";
import { SecretBox } from "../controller/secret-box";
import { VolumeUpdates } from "../controller/update-volume";
import { UserError } from "../errors";
import { SqliteStore, sqlitePathFromUrl } from "../store/sqlite-store";
import { localTargets } from "../targets/local-targets";

export type Log = (severity: "debug" | "info" | "warning" | "error", message: string) => void;

/** How to reach the agent of a host in the provider's `hosts`. */
export interface AgentEndpoint {
  url: string;
  token: string;
  caCert?: string;
}

export class Composition {
  private controllerPromise?: Promise<Controller>;
  private replicationPromise?: Promise<Replication>;
  private attachmentsPromise?: Promise<Attachments>;
  private storeInstance?: SqliteStore;
  private stateFileName?: string;
  private readonly connectors = new Map<string, Connector>();
  private readonly agents = new Map<string, AgentClient>();

  constructor(
    readonly config: ProviderConfig,
    private readonly log: Log,
  ) {}

  /** The state database file (after {@link controller} resolved). */
  get stateFile(): string {
    if (!this.stateFileName) throw new Error("sds internal error: the state is not open yet");
    return this.stateFileName;
  }

  get store(): SqliteStore {
    if (!this.storeInstance) throw new Error("sds internal error: the state is not open yet");
    return this.storeInstance;
  }

  /** The controller on this config's state, its pools discovered. */
  controller(): Promise<Controller> {
    this.controllerPromise ??= (async () => {
      const file = sqlitePathFromUrl(this.config.stateUrl, this.config.projectDir);
      this.stateFileName = file;
      this.storeInstance = new SqliteStore(file);
      const c = new Controller({
        store: this.storeInstance,
        backends: this.config.backends,
        log: (m) => this.log("info", m),
        nodeDriver: (node, kind) => new RemoteDriver(this.agent(node), kind as "file"),
      });
      await c.discover();
      return c;
    })();
    this.controllerPromise.catch(() => undefined);
    return this.controllerPromise;
  }

  /** Replication pairs and their sync, on the controller's store. */
  replication(): Promise<Replication> {
    this.replicationPromise ??= (async () => {
      const controller = await this.controller();
      return new Replication({
        store: this.store,
        controller,
        stateDir: replicationDir(this.stateFile),
        log: (m) => this.log("info", m),
        nodeAgent: (node) => this.agent(node),
      });
    })();
    this.replicationPromise.catch(() => undefined);
    return this.replicationPromise;
  }

  /** Attach and detach, with this machine's targets and connectors and the hosts' agents. */
  attachments(): Promise<Attachments> {
    this.attachmentsPromise ??= (async () => {
      const controller = await this.controller();
      const runDir = this.runDir();
      return new Attachments({
        store: this.store,
        controller,
        targets: localTargets(runDir),
        box: SecretBox.forDatabase(this.stateFile),
        connectorFor: (protocol) => this.connectorFor(protocol),
        remoteHost: (host) => (this.config.hosts[host] ? this.remoteHost(host) : undefined),
        nodeTargets: (node) => remoteTargets(this.agent(node)),
        activeVolume: async (id) => (await this.replication()).activeVolume(id),
      });
    })();
    this.attachmentsPromise.catch(() => undefined);
    return this.attachmentsPromise;
  }

  /**
   * Reconciliation at provider start: exports the state knows are made again, strays of this
   * state are removed (see Attachments.ensureExports). Failures are warnings: the run goes on.
   */
  async startExports(): Promise<void> {
    try {
      const r = await (await this.attachments()).ensureExports();
      if (r.removed.length > 0) this.log("warning", `sds: removed ${r.removed.length} export(s) of this state that it no longer knows (left by a crash): ${r.removed.join(", ")}`);
      if (r.kept.length > 0) {
        this.log("warning", `sds: left ${r.kept.length} export(s) of this state that it no longer knows, because initiators are still logged in: ${r.kept.join(", ")}; log them out, then the next run removes them`);
      }
    } catch (err) {
      this.log("warning", `sds: could not re-ensure exports at start: ${(err as Error).message}`);
    }
  }

  /** The embedded controller has no agent to run syncs: pairs past their RPO sync while the provider runs. */
  async startDueSyncs(): Promise<void> {
    const done = await (await this.replication()).syncDue();
    for (const d of done) if (!d.ok) this.log("warning", `replication ${d.id}: scheduled sync failed: ${d.error}`);
  }

  /** Replication, with the syncs that are due started once, in the background (the embedded controller has no agent to run them on a timer). */
  replicationStarted(): Promise<Replication> {
    if (!this.dueSyncsStarted) {
      this.dueSyncsStarted = true;
      void this.startDueSyncs().catch(() => undefined);
    }
    return this.replication();
  }
  private dueSyncsStarted = false;

  /** Attachments; unless `reconcile` is false (a preview only looks), the first use reconciles the exports once. */
  async attachmentsReconciled(reconcile = true): Promise<Attachments> {
    if (reconcile) {
      this.exportsReconciled ??= this.startExports();
      await this.exportsReconciled;
    }
    return this.attachments();
  }
  private exportsReconciled?: Promise<void>;

  /** The volume update use case, on these parts (replication and attachments opened only when a grow needs them). */
  async volumeUpdates(): Promise<VolumeUpdates> {
    return new VolumeUpdates({ controller: await this.controller(), replication: () => this.replicationStarted(), attachments: () => this.attachmentsReconciled() });
  }

  /** Pidfiles, export state and connection records of this machine (`SDS_RUN_DIR`, else beside the state). */
  runDir(): string {
    const file = this.stateFile;
    return process.env.SDS_RUN_DIR || path.join(file === ":memory:" ? os.tmpdir() : path.dirname(file), "run");
  }

  /** This machine's connectors (host "localhost"); their records live in the run folder. */
  connectorFor(protocol: "iscsi" | "nbd" | "local"): Connector {
    const c = this.connectors.get(protocol) ?? makeConnector(protocol, { stateDir: this.runDir() });
    this.connectors.set(protocol, c);
    return c;
  }

  /** The sds-agent of a host or storage node in the provider's `hosts`, one client per host. */
  agent(host: string): AgentClient {
    let client = this.agents.get(host);
    if (client) return client;
    client = new AgentClient(this.agentEndpoint(host));
    this.agents.set(host, client);
    return client;
  }

  /** How to reach the agent of a host in `hosts`: its url, token (its own or agentToken), CA. */
  agentEndpoint(host: string): AgentEndpoint {
    const h = this.config.hosts[host];
    if (!h) throw new UserError("NOT_FOUND", `host: no host named "${host}" in the provider's hosts (known: ${["localhost", ...Object.keys(this.config.hosts)].join(", ")})`, "host");
    const token = h.token ?? this.config.agentToken;
    if (!token) throw new UserError("INVALID_INPUT", `host: host "${host}" has no token and the provider has no agentToken`, "host");
    return { url: h.url, token, ...(h.caCert ? { caCert: h.caCert } : {}) };
  }

  /** A host other than localhost as attachments see it: its agent's connector API. */
  private remoteHost(host: string): RemoteHost {
    const agent = this.agent(host);
    return {
      connector: () => agent,
      properties: async (protocol) => {
        const p = await agent.getConnectorProperties(protocol);
        return { initiator: p.initiator, nqn: p.nqn, ip: p.ip, hostname: p.hostname, multipath: p.multipath };
      },
    };
  }

  /** The paths on a host (this machine for `localhost`, else its agent), of one volume or all. */
  async hostPaths(host: string, volumeId?: string): Promise<VolumePath[]> {
    let paths: VolumePath[];
    if (host === "localhost") {
      await this.controller();
      paths = (await Promise.all((["iscsi", "nbd", "local"] as const).map((p) => this.connectorFor(p).getAllVolumePaths()))).flat();
    } else {
      paths = await this.agent(host).getAllVolumePaths();
    }
    return volumeId === undefined ? paths : paths.filter((p) => p.volumeId === volumeId);
  }

  /** Close the state (waits for a transaction in flight to end). */
  async close(): Promise<void> {
    await this.storeInstance?.close();
  }
}
