/**
 * The one place that wires concrete parts: the store, the controller and its node drivers, the
 * replication use cases and their node agents, attachments with this machine's targets and
 * connectors and other hosts' agents. The provider server and the `sds` CLI both build theirs
 * here, so an operator command runs against the same controller `pulumi up` does.
 *
 * Everything is made lazily, on first use, and once. Side effects that touch the world (the
 * reconciliation of exports at start, replication syncs that are due) run only from `start*`
 * methods that the caller calls on purpose, never from a getter.
 *
 * A run writes nothing until {@link Composition.allowWrites} (the provider calls it before a
 * create, update or delete that is not a preview; operator commands that change things call it
 * first): a `pulumi preview`, `preview --refresh` or `refresh` only reads. No state file, key
 * file or pool folder is made, no backend row recorded, no export re-made, no sync started.
 *
 * Where the state is (`stateUrl`): `sqlite:<path>` (one person, one machine; the run folder and
 * the key file beside the database) or `postgres://…` (teams and CI runners sharing one state;
 * the run folder in the project's `.sds/run`, the sealing key from `secretKey`).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { AgentClient } from "../agent/client";
import { RemoteDriver, remoteTargets } from "../agent/remote-node";
import type { Connector, VolumePath } from "../connectors/connector";
import { connectorFor as makeConnector } from "../connectors/factory";
import { Attachments, type RemoteHost } from "../controller/attachments";
import type { ProviderConfig } from "../controller/config";
import { Controller } from "../controller/controller";
import { Replication } from "../controller/replication";
import { SecretBox } from "../controller/secret-box";
import { VolumeUpdates } from "../controller/update-volume";
import { makeFolder } from "../domain/user-paths";
import { UserError } from "../errors";
import { PostgresStore, redactUrl } from "../store/postgres-store";
import { SqliteStore, checkSqliteState, sqlitePathFromUrl } from "../store/sqlite-store";
import type { Store } from "../store/store";
import { localRbdTargets, localTargets } from "../targets/local-targets";
import type { TargetFactory } from "../targets/target";

/**
 * What damages the SQLite state `file` ("database disk image is malformed (SQLITE_CORRUPT)"), read
 * by `sds state check`'s full read; undefined when it is sound or missing. A busy or unreadable
 * file is not called damaged: whoever opens it next names that.
 */
export function sqliteDamage(file: string): string | undefined {
  if (!fs.existsSync(file)) return undefined;
  const r = checkSqliteState(file);
  const damaged = `${file}: damaged: `;
  return !r.ok && r.line.startsWith(damaged) ? r.line.slice(damaged.length).replace(/; restore it from a backup$/, "") : undefined;
}

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
  private storeInstance?: Store;
  /** The SQLite database that does not exist yet, opened at {@link allowWrites} (reads see an empty state until then). */
  private deferredFile?: { file: string; swap: (s: Store) => void };
  private writing = false;
  private boxInstance?: SecretBox;
  private readonly connectors = new Map<string, Connector>();
  private readonly agents = new Map<string, AgentClient>();

  constructor(
    readonly config: ProviderConfig,
    private readonly log: Log,
  ) {}

  /** Where the state is: a SQLite file (`:memory:` too) or a PostgreSQL URL. */
  get state(): { kind: "sqlite"; file: string } | { kind: "postgres"; url: string } {
    const url = this.config.stateUrl;
    if (/^postgres(ql)?:\/\//.test(url)) return { kind: "postgres", url };
    return { kind: "sqlite", file: sqlitePathFromUrl(url, this.config.projectDir) };
  }

  /** The state, for humans and logs (a PostgreSQL URL without its password). */
  get stateShown(): string {
    const s = this.state;
    return s.kind === "postgres" ? redactUrl(s.url) : s.file;
  }

  get store(): Store {
    if (!this.storeInstance) throw new Error("sds internal error: the state is not open yet");
    return this.storeInstance;
  }

  /** The controller on this config's state, its pools discovered. */
  controller(): Promise<Controller> {
    this.controllerPromise ??= (async () => {
      this.storeInstance = await this.openStore();
      const c = new Controller({
        store: this.storeInstance,
        backends: this.config.backends,
        backendsSource: this.config.backendsSource,
        log: (m) => this.log("info", m),
        warn: (m) => this.log("warning", `sds: ${m}`),
        nodeDriver: (node, kind) => new RemoteDriver(this.agent(node), kind as "file"),
        // The rbd driver's client confs and keyrings (0600): this machine's, beside the run folder's records.
        rbdDir: path.join(this.runDir(), "rbd"),
      });
      await c.discover();
      return c;
    })();
    this.controllerPromise.catch(() => undefined);
    return this.controllerPromise;
  }

  /**
   * Refuse a damaged SQLite state, in one line naming `stateUrl` (once per composition; a missing
   * state is fine). Why every page is read: a run that changes nothing reads only a few rows, so
   * a damaged file passed unnoticed and `pulumi up` exited 0 on it. The provider calls this at
   * Configure, so every command on such a state fails; it is cheap (a full read of a small file).
   */
  refuseDamagedState(): void {
    const s = this.state;
    if (this.stateChecked || s.kind !== "sqlite" || s.file === ":memory:") return;
    const damage = sqliteDamage(s.file);
    if (damage !== undefined) {
      throw new UserError(
        "INVALID_STATE",
        `stateUrl: the state database ${s.file} is damaged: ${damage}; restore it from a backup (README, "When the state is damaged"); \`sds state check\` tells a sound file from a damaged one`,
        "stateUrl",
      );
    }
    this.stateChecked = true;
  }
  private stateChecked = false;

  private async openStore(): Promise<Store> {
    const s = this.state;
    if (s.kind === "postgres") return PostgresStore.open(s.url, { onLockLost: (m) => this.log("warning", `sds: ${m}`) });
    if (s.file === ":memory:") return new SqliteStore(s.file);
    this.refuseDamagedState();
    if (this.writing || fs.existsSync(s.file)) return SqliteStore.open(s.file);
    // No state yet and nothing to write: an empty state in memory, until allowWrites opens the file.
    let current: Store = new SqliteStore(":memory:");
    const store = new Proxy({} as Store, {
      get: (_t, k) => {
        const v = (current as unknown as Record<string | symbol, unknown>)[k];
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(current) : v;
      },
    });
    this.deferredFile = {
      file: s.file,
      swap: (next) => {
        void current.close();
        current = next;
      },
    };
    return store;
  }

  /**
   * From now on this run may write: the state file is made (SQLite), backends recorded, the
   * sealing key checked against the state (and its check value kept), exports reconciled once.
   * Idempotent; concurrent callers wait for the first.
   */
  allowWrites(): Promise<void> {
    this.writesReady ??= (async () => {
      this.writing = true;
      const controller = await this.controller();
      if (this.deferredFile) {
        this.deferredFile.swap(await SqliteStore.open(this.deferredFile.file));
        this.deferredFile = undefined;
      }
      // This machine's run folder, private (pidfiles, CHAP hashes, connection records): beside a
      // SQLite state, in the project's .sds for a PostgreSQL one (or SDS_RUN_DIR); made 0700 here,
      // before a target or connector makes it with the default mode.
      const s = this.state;
      if (s.kind === "postgres" || s.file !== ":memory:") {
        const where = s.kind === "postgres" ? "the project's .sds, or SDS_RUN_DIR" : "beside the state, or SDS_RUN_DIR";
        await makeFolder(this.runDir(), { mode: 0o700 }).catch((err: Error) => {
          throw new UserError("INVALID_INPUT", `stateUrl: cannot make the run folder ${this.runDir()} (${where}): ${err.message}`, "stateUrl", { cause: err });
        });
      }
      // The key first: a runner with another key records nothing, not even its backends.
      const box = this.box();
      const check = await this.store.getInfo("key_check");
      if (check !== undefined) box.verify(check);
      await controller.prepareWrites();
      if (check === undefined && (box.hasKey || this.state.kind === "sqlite")) await this.store.setInfo("key_check", box.checkValue());
    })();
    this.writesReady.catch(() => (this.writesReady = undefined));
    return this.writesReady;
  }
  private writesReady?: Promise<void>;

  /**
   * Whether the state this runner opened does not exist (a SQLite file not made yet): a Read of a
   * resource Pulumi remembers then means the runner is on the wrong state (a CI job without
   * SDS_STATE_URL), not that the resource is gone.
   */
  async stateMissing(): Promise<boolean> {
    await this.controller();
    return this.deferredFile !== undefined;
  }

  /** The sealing box of this state's secrets (see controller/secret-box.ts). */
  box(): SecretBox {
    if (!this.boxInstance) {
      const s = this.state;
      this.boxInstance = SecretBox.forState({
        secretKey: this.config.secretKey,
        sqliteFile: s.kind === "sqlite" ? s.file : undefined,
        why: "secretKey: a PostgreSQL state keeps no key file: set the team's key as sds:secretKey (pulumi config set --secret sds:secretKey …) or SDS_SECRET_KEY",
      });
    }
    return this.boxInstance;
  }

  /** Where this machine keeps what is not shared: the run folder's parent (beside a SQLite state, else the project's `.sds`). */
  private localDir(): string {
    const s = this.state;
    if (s.kind === "postgres") return path.join(this.config.projectDir, ".sds");
    return s.file === ":memory:" ? os.tmpdir() : path.dirname(s.file);
  }

  /** Replication pairs and their sync, on the controller's store. */
  replication(): Promise<Replication> {
    this.replicationPromise ??= (async () => {
      const controller = await this.controller();
      return new Replication({
        store: this.store,
        controller,
        stateDir: process.env.SDS_RUN_DIR ? path.join(process.env.SDS_RUN_DIR, "replication") : path.join(this.localDir(), "replication"),
        log: (m) => this.log("info", m),
        nodeAgent: (node) => this.agent(node),
      });
    })();
    this.replicationPromise.catch(() => undefined);
    return this.replicationPromise;
  }

  /** This machine's iSCSI/NBD targets (their pidfiles and records in the run folder). */
  targets(): TargetFactory {
    this.targetFactory ??= localTargets(this.runDir());
    return this.targetFactory;
  }
  private targetFactory?: TargetFactory;

  /** This machine's targets for `driver: rbd` backends: the same tgtd, qemu-nbd for NBD. */
  rbdTargets(): TargetFactory {
    this.rbdTargetFactory ??= localRbdTargets(this.runDir(), this.targets());
    return this.rbdTargetFactory;
  }
  private rbdTargetFactory?: TargetFactory;

  /** Attach and detach, with this machine's targets and connectors and the hosts' agents. */
  attachments(): Promise<Attachments> {
    this.attachmentsPromise ??= (async () => {
      const controller = await this.controller();
      return new Attachments({
        store: this.store,
        controller,
        targets: this.targets(),
        rbdTargets: this.rbdTargets(),
        box: this.box(),
        log: (m) => this.log("info", `sds: ${m}`),
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
      if (r.reaped.length > 0) this.log("warning", `sds: cleaned up after a crash on this machine: ${r.reaped.join("; ")}`);
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
    if (!this.dueSyncsStarted && this.writing) {
      this.dueSyncsStarted = true;
      void this.startDueSyncs().catch(() => undefined);
    }
    return this.replication();
  }
  private dueSyncsStarted = false;

  /** Attachments; once writes are allowed and unless `reconcile` is false, the first use reconciles the exports once. */
  async attachmentsReconciled(reconcile = true): Promise<Attachments> {
    if (reconcile && this.writing) {
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

  /** Pidfiles, export state and connection records of this machine (`SDS_RUN_DIR`, else {@link localDir}/run). */
  runDir(): string {
    return process.env.SDS_RUN_DIR || path.join(this.localDir(), "run");
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
