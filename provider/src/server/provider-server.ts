/**
 * The Pulumi ResourceProvider gRPC service, written on the stubs that ship in @pulumi/pulumi/proto.
 * It decodes requests, calls the resource handlers, and encodes answers. Secrets come in wrapped
 * and go out wrapped; unknowns are passed through untouched. Only this folder and resources/ know Pulumi.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import * as pluginPb from "@pulumi/pulumi/proto/plugin_pb";
import * as providerRpc from "@pulumi/pulumi/proto/provider_grpc_pb";
import * as pb from "@pulumi/pulumi/proto/provider_pb";
import { type ProviderConfig, checkProviderConfig, resolveProviderConfig } from "../controller/config";
import type { Attachments } from "../controller/attachments";
import type { Controller } from "../controller/controller";
import type { Replication } from "../controller/replication";
import type { VolumeUpdates } from "../controller/update-volume";
import type { VolumePath } from "../connectors/connector";
import { Composition } from "../compose/composition";
import { findProjectDir } from "../compose/stack-config";
import { SdsError, UserError } from "../errors";
import type { ProviderContext, Severity } from "../resources/context";
import { diffProperties } from "../resources/properties";
import type { DiffKind, FunctionHandler, ResourceHandler } from "../resources/resource";
import { type Handlers, sdsHandlers } from "../resources/handlers";

export { type Handlers, sdsHandlers } from "../resources/handlers";
import { EngineLog } from "./engine-log";
import { type Props, containsUnknown, fromStruct, maskSecretTexts, reveal, rewrapSecrets, toStruct, unwrapSecrets } from "../resources/values";

/** Provider config keys whose non-string values the SDK sends JSON-encoded. */
const jsonConfigKeys = new Set(["backends", "hosts"]);

const kinds: Record<DiffKind, pb.PropertyDiff.Kind> = {
  add: pb.PropertyDiff.Kind.ADD,
  "add-replace": pb.PropertyDiff.Kind.ADD_REPLACE,
  delete: pb.PropertyDiff.Kind.DELETE,
  "delete-replace": pb.PropertyDiff.Kind.DELETE_REPLACE,
  update: pb.PropertyDiff.Kind.UPDATE,
  "update-replace": pb.PropertyDiff.Kind.UPDATE_REPLACE,
};

export interface ServerOptions {
  version: string;
  schema: string;
  engineAddress?: string;
  /** The resources and functions served; default: sds's. (The overhead benchmark serves a do-nothing set.) */
  handlers?: (ctx: ProviderContext) => Handlers;
}

/** Decode provider config as sent by the engine: JSON-encoded strings for objects, secrets wrapped. */
export function decodeProviderConfig(args: Props): Props {
  const out: Props = {};
  for (const [k, v] of Object.entries(args)) {
    if (k === "version" || k.startsWith("__")) continue;
    const plain = reveal(v);
    if (jsonConfigKeys.has(k) && typeof plain === "string" && !containsUnknown(plain)) {
      try {
        out[k] = JSON.parse(plain);
      } catch {
        out[k] = plain;
      }
    } else {
      out[k] = plain;
    }
  }
  return out;
}

export class ProviderServer implements ProviderContext {
  private readonly engineLog: EngineLog;
  /** The Pulumi project folder: relative paths in config are resolved against it. */
  private readonly rootDir = findProjectDir(process.cwd());
  private config?: ProviderConfig;
  private composition?: Composition;
  private readonly resources: Map<string, ResourceHandler>;
  private readonly functions: Map<string, FunctionHandler>;

  constructor(private readonly options: ServerOptions) {
    this.engineLog = new EngineLog(options.engineAddress);
    const { resources, functions } = (options.handlers ?? sdsHandlers)(this);
    this.resources = new Map(resources.map((h) => [h.token, h]));
    this.functions = new Map(functions.map((f) => [f.token, f]));
  }

  log(severity: Severity, message: string, urn?: string): void {
    this.engineLog.log(severity, message, urn);
  }

  readonly previewedMultiAttach = new Set<string>();

  status(message: string, urn: string): void {
    this.engineLog.log("info", message, urn, { ephemeral: true });
  }

  /** The parts, wired once per configuration (Configure may not have come: defaults then). */
  private parts(): Composition {
    if (!this.composition) {
      this.config ??= resolveProviderConfig({}, this.rootDir);
      this.composition = new Composition(this.config, (severity, message) => this.log(severity, message));
    }
    return this.composition;
  }

  controller(): Promise<Controller> {
    return this.parts().controller();
  }

  replication(): Promise<Replication> {
    return this.parts().replicationStarted();
  }

  volumeUpdates(): Promise<VolumeUpdates> {
    return this.parts().volumeUpdates();
  }

  attachments(options: { reconcile?: boolean } = {}): Promise<Attachments> {
    return this.parts().attachmentsReconciled(options.reconcile !== false);
  }

  hostNames(): string[] {
    return Object.keys(this.config?.hosts ?? {});
  }

  hostPaths(host: string, volumeId?: string): Promise<VolumePath[]> {
    return this.parts().hostPaths(host, volumeId);
  }

  private resource(type: string, urn: string): ResourceHandler {
    const token = type || urn.split("::")[2]?.split("$").pop() || "";
    const h = this.resources.get(token);
    if (!h) throw new UserError("INVALID_INPUT", `unknown resource type "${token}"`);
    return h;
  }

  // ------------------------------------------------------------------ the service

  /** The grpc-js implementation object, one async function per RPC. */
  service(): grpc.UntypedServiceImplementation {
    // `secrets`: the strings the request carried as secrets (filled as it is decoded), masked in
    // every message of the answer.
    const unary = <Req, Res>(fn: (req: Req, secrets: Set<string>) => Promise<Res>) =>
      ((call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>) => {
        const secrets = new Set<string>();
        fn(call.request, secrets).then(
          (res) => callback(null, res),
          (err) => callback(this.toGrpcError(err, secrets)),
        );
      }) as grpc.handleUnaryCall<Req, Res>;

    return {
      // The handshake's root directory is the plugin's own folder, not the project's: the engine
      // starts plugins in the project folder, so the project is found from the working directory.
      handshake: unary(async () => {
        const res = new pb.ProviderHandshakeResponse();
        res.setAcceptSecrets(true);
        res.setAcceptResources(true);
        res.setAcceptOutputs(false);
        res.setSupportsAutonamingConfiguration(true);
        return res;
      }),
      getPluginInfo: unary(async () => {
        const res = new pluginPb.PluginInfo();
        res.setVersion(this.options.version);
        return res;
      }),
      getSchema: unary(async () => {
        const res = new pb.GetSchemaResponse();
        res.setSchema(this.options.schema);
        return res;
      }),
      checkConfig: unary(async (req: pb.CheckRequest, secrets) => {
        const news = fromStruct(req.getNews());
        for (const t of unwrapSecrets(news).secretTexts) secrets.add(t);
        const failures: Array<[string, string]> = [];
        const known = Object.fromEntries(Object.entries(news).filter(([, v]) => !containsUnknown(v)));
        const decoded = decodeProviderConfig(known);
        failures.push(...checkProviderConfig(decoded));
        if (failures.length === 0) {
          try {
            resolveProviderConfig(decoded, this.rootDir);
          } catch (err) {
            if (!(err instanceof UserError)) throw err;
            failures.push([err.property ?? "", err.message]);
          }
        }
        const res = new pb.CheckResponse();
        res.setInputs(toStruct(news));
        // A failure of a value that came from the environment (SDS_STATE_URL) names no input: sent
        // with no property, the engine prints the reason (which names it) instead of `value {<nil>}`.
        const named = failures.map(([p, r]) => underTopLevelKey(p, r, news)).map(([p, r]): [string, string] => (Object.hasOwn(news, p) ? [p, r] : ["", r]));
        res.setFailuresList(named.map(([p, r]) => checkFailure(p, r, secrets)));
        return res;
      }),
      diffConfig: unary(async (req: pb.DiffRequest) => {
        const olds = req.hasOldInputs() ? fromStruct(req.getOldInputs()) : fromStruct(req.getOlds());
        const news = fromStruct(req.getNews());
        const strip = (p: Props) => Object.fromEntries(Object.entries(p).filter(([k]) => k !== "version" && !k.startsWith("__")));
        const d = diffProperties({}, strip(olds), strip(news), req.getIgnorechangesList());
        return this.diffResponse(d);
      }),
      configure: unary(async (req: pb.ConfigureRequest, secrets) => {
        const args = req.hasArgs() ? fromStruct(req.getArgs()) : Object.fromEntries(req.getVariablesMap().toArray().map(([k, v]) => [k.split(":").pop() as string, v]));
        for (const t of unwrapSecrets(args).secretTexts) secrets.add(t);
        const decoded = decodeProviderConfig(Object.fromEntries(Object.entries(args).filter(([, v]) => !containsUnknown(v))));
        this.config = resolveProviderConfig(decoded, this.rootDir);
        this.composition = undefined;
        this.log("debug", `sds: state ${this.parts().stateShown}, backends from ${this.config.backendsSource}`);
        // Every command on a damaged state fails, a no-change `up` too (it may read no damaged page).
        this.parts().refuseDamagedState();
        const res = new pb.ConfigureResponse();
        res.setAcceptsecrets(true);
        res.setAcceptresources(true);
        res.setAcceptoutputs(false);
        res.setSupportspreview(true);
        res.setSupportsAutonamingConfiguration(true);
        return res;
      }),
      check: unary(async (req: pb.CheckRequest, secrets) => {
        const h = this.resource(req.getType(), req.getUrn());
        const an = req.getAutonaming();
        const modes = ["propose", "enforce", "disable"] as const;
        const news = decode(req.getNews(), secrets);
        const olds = decode(req.getOlds(), secrets);
        const r = await h.check({
          urn: req.getUrn(),
          name: req.getName() || req.getUrn().split("::").pop() || "",
          olds: olds.plain,
          news: news.plain,
          randomSeed: req.getRandomseed_asU8(),
          autonaming: an ? { proposedName: an.getProposedName(), mode: modes[an.getMode()] ?? "propose" } : undefined,
        });
        const res = new pb.CheckResponse();
        // A value settled from the old inputs (the name) keeps the secrecy it had there.
        const settled = olds.secretPaths.filter((p) => !(String(p[0]) in news.plain));
        res.setInputs(toStruct(rewrapSecrets(r.inputs, [...news.secretPaths, ...settled])));
        res.setFailuresList(r.failures.map((f) => checkFailure(...underTopLevelKey(f.property, f.reason, news.plain), secrets)));
        return res;
      }),
      diff: unary(async (req: pb.DiffRequest, secrets) => {
        const h = this.resource(req.getType(), req.getUrn());
        const oldOutputs = decode(req.getOlds(), secrets).plain;
        const d = await h.diff({
          id: req.getId(),
          urn: req.getUrn(),
          oldInputs: req.hasOldInputs() ? decode(req.getOldInputs(), secrets).plain : oldOutputs,
          oldOutputs,
          news: decode(req.getNews(), secrets).plain,
          ignoreChanges: req.getIgnorechangesList(),
        });
        return this.diffResponse(d);
      }),
      create: unary(async (req: pb.CreateRequest, secrets) => {
        const h = this.resource(req.getType(), req.getUrn());
        if (!req.getPreview()) await this.parts().allowWrites();
        const inputs = decode(req.getProperties(), secrets);
        const r = await h.create({ urn: req.getUrn(), name: req.getName(), inputs: inputs.plain, preview: req.getPreview() });
        const res = new pb.CreateResponse();
        res.setId(r.id);
        res.setProperties(toStruct(rewrapSecrets(r.outs, inputs.secretPaths)));
        return res;
      }),
      read: unary(async (req: pb.ReadRequest, secrets) => {
        const h = this.resource(req.getType(), req.getUrn());
        if (await this.parts().stateMissing()) {
          throw new UserError(
            "NOT_FOUND",
            `stateUrl: ${req.getId()} cannot be read: this runner's controller state ${this.parts().stateShown} does not exist, so it is not the state that made it; set sds:stateUrl (or SDS_STATE_URL) to the stack's state`,
            "stateUrl",
          );
        }
        const state = decode(req.getProperties(), secrets);
        const inputs = decode(req.getInputs(), secrets);
        const r = await h.read({ id: req.getId(), urn: req.getUrn(), state: state.plain, inputs: inputs.plain });
        const res = new pb.ReadResponse();
        if (r) {
          // What was secret in the old state or the old inputs stays secret in both answers.
          const secretPaths = [...state.secretPaths, ...inputs.secretPaths];
          res.setId(r.id);
          res.setProperties(toStruct(rewrapSecrets(r.outs, secretPaths)));
          res.setInputs(toStruct(rewrapSecrets(r.inputs, secretPaths)));
        }
        return res;
      }),
      update: unary(async (req: pb.UpdateRequest, secrets) => {
        const h = this.resource(req.getType(), req.getUrn());
        if (!req.getPreview()) await this.parts().allowWrites();
        const oldOutputs = decode(req.getOlds(), secrets);
        const news = decode(req.getNews(), secrets);
        const outs = await h.update({
          id: req.getId(),
          urn: req.getUrn(),
          oldOutputs: oldOutputs.plain,
          oldInputs: req.hasOldInputs() ? decode(req.getOldInputs(), secrets).plain : oldOutputs.plain,
          news: news.plain,
          preview: req.getPreview(),
        });
        const res = new pb.UpdateResponse();
        // An output secret before (the CHAP password) or a secret input stays secret.
        res.setProperties(toStruct(rewrapSecrets(outs, [...oldOutputs.secretPaths, ...news.secretPaths])));
        return res;
      }),
      delete: unary(async (req: pb.DeleteRequest, secrets) => {
        const h = this.resource(req.getType(), req.getUrn());
        await this.parts().allowWrites();
        await h.delete({ id: req.getId(), urn: req.getUrn(), state: decode(req.getProperties(), secrets).plain });
        return new Empty();
      }),
      invoke: unary(async (req: pb.InvokeRequest, secrets) => {
        const f = this.functions.get(req.getTok());
        if (!f) throw new UserError("INVALID_INPUT", `unknown function "${req.getTok()}"`);
        const args = decode(req.getArgs(), secrets).plain;
        const res = new pb.InvokeResponse();
        try {
          const r = await f.invoke(args, { preview: req.getPreview() });
          res.setReturn(toStruct(r.outputs));
          res.setFailuresList((r.failures ?? []).map((x) => checkFailure(x.property, x.reason, secrets)));
        } catch (err) {
          if (!(err instanceof UserError)) throw err;
          res.setFailuresList([checkFailure(err.property ?? "", err.message, secrets)]);
        }
        return res;
      }),
      cancel: unary(async () => {
        this.log("debug", "sds: cancel requested");
        return new Empty();
      }),
      attach: unary(async () => new Empty()),
      parameterize: unary(async () => {
        throw Object.assign(new Error("sds does not support parameterization"), { code: grpc.status.UNIMPLEMENTED });
      }),
      getMapping: unary(async () => new pb.GetMappingResponse()),
      getMappings: unary(async () => new pb.GetMappingsResponse()),
      construct: unary(async () => {
        throw Object.assign(new Error("sds has no component resources"), { code: grpc.status.UNIMPLEMENTED });
      }),
      call: unary(async () => {
        throw Object.assign(new Error("sds has no resource methods"), { code: grpc.status.UNIMPLEMENTED });
      }),
    };
  }

  private diffResponse(d: { changed: boolean; replaces: string[]; deleteBeforeReplace: boolean; detailed: Record<string, DiffKind> }): pb.DiffResponse {
    const res = new pb.DiffResponse();
    res.setChanges(d.changed ? pb.DiffResponse.DiffChanges.DIFF_SOME : pb.DiffResponse.DiffChanges.DIFF_NONE);
    res.setReplacesList(d.replaces);
    res.setDeletebeforereplace(d.deleteBeforeReplace);
    res.setDiffsList(Object.keys(d.detailed));
    res.setHasdetaileddiff(true);
    const map = res.getDetaileddiffMap();
    for (const [k, kind] of Object.entries(d.detailed)) {
      const pd = new pb.PropertyDiff();
      pd.setKind(kinds[kind]);
      pd.setInputdiff(true);
      map.set(k, pd);
    }
    return res;
  }

  /**
   * A clean gRPC status: one line of well-formed text. Our errors (user errors, backend faults)
   * keep their message; anything else is a bug, reported as "sds internal error: …" with its
   * stack sent to the engine's debug log (`pulumi up --logtostderr -v=9`), not to the user.
   */
  private toGrpcError(err: unknown, secrets: ReadonlySet<string> = new Set()): grpc.ServiceError {
    const e = err instanceof Error ? err : new Error(String(err));
    // A failure whose clean-up failed too (attach's rollback): the first error says what kind it is.
    const head = e instanceof AggregateError && e.errors[0] instanceof Error ? e.errors[0] : e;
    const code = (e as { code?: unknown }).code;
    const status = typeof code === "number" ? code : head instanceof UserError ? grpc.status.INVALID_ARGUMENT : grpc.status.UNKNOWN;
    // A deliberate status (UNIMPLEMENTED for construct, …) is not a bug either.
    const ours = head instanceof SdsError || typeof code === "number";
    let message: string;
    if (ours) {
      // An error about an input names it (the engine shows the message, not the property).
      const property = head instanceof UserError ? head.property : undefined;
      message = oneLine(maskSecretTexts(property && !e.message.includes(property) ? `${property}: ${e.message}` : e.message, secrets));
    } else {
      const first = oneLine(maskSecretTexts(e.message.split("\n")[0] || e.name || "error", secrets));
      message = `${first.startsWith("sds internal error") ? first : `sds internal error: ${first}`} (details in the debug log)`;
      this.log("debug", wellFormed(maskSecretTexts(`sds internal error: ${e.stack ?? e.message}`, secrets)));
    }
    return Object.assign(new Error(message), { code: status, details: message, metadata: new grpc.Metadata() }) as grpc.ServiceError;
  }

  /** Close the state (after a transaction in flight ends) and the engine log. */
  async close(): Promise<void> {
    try {
      await this.composition?.close();
    } finally {
      this.engineLog.close();
    }
  }
}

/**
 * A check failure on a nested path (`extraSpecs["diskTyp"]`, `connector.initiator`) sent under its
 * top-level key, the full path leading the reason. Why: the engine prints a failure as
 * `property P value {inputs[P]}`, looking P up as a top-level key only, so a nested path showed
 * `value {<nil>}` instead of the value the user wrote.
 */
export function underTopLevelKey(property: string, reason: string, inputs: Props): [string, string] {
  const head = /^[^.[]+/.exec(property)?.[0];
  if (head === undefined || head === property || !Object.hasOwn(inputs, head)) return [property, reason];
  return [head, reason.startsWith(`${property}:`) ? reason : `${property}: ${reason}`];
}

function checkFailure(property: string, reason: string, secrets: ReadonlySet<string>): pb.CheckFailure {
  const f = new pb.CheckFailure();
  f.setProperty(wellFormed(property));
  f.setReason(wellFormed(maskSecretTexts(reason, secrets)));
  return f;
}

/** Decode a request's properties, secret wrappers removed (their paths kept) and their strings added to `secrets`. */
function decode(s: Parameters<typeof fromStruct>[0], secrets: Set<string>): ReturnType<typeof unwrapSecrets> {
  const r = unwrapSecrets(fromStruct(s));
  for (const t of r.secretTexts) secrets.add(t);
  return r;
}

/**
 * Lone UTF-16 surrogates (from an input such as "\ud800" echoed in a message) replaced by U+FFFD.
 * Why: grpc-js percent-encodes the status message with encodeURIComponent, which throws on them,
 * and that throw escapes every handler and ends the plugin.
 */
export function wellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}

/**
 * One line, well-formed: a status message is shown as one line and must never carry a stack.
 * A line break after a colon (a list that follows) becomes a space, any other one "; ".
 */
function oneLine(text: string): string {
  return wellFormed(text)
    .trim()
    .replace(/([:;,])?[ \t]*\r?\n\s*/g, (_m, punct: string | undefined) => (punct ? `${punct} ` : "; "));
}

/** Start the server on 127.0.0.1, random port; resolves with the port. */
export async function serve(server: ProviderServer): Promise<{ port: number; grpcServer: grpc.Server }> {
  const grpcServer = new grpc.Server({ "grpc.max_receive_message_length": 400 * 1024 * 1024 });
  grpcServer.addService(providerRpc.ResourceProviderService, server.service());
  const port = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { port, grpcServer };
}

/** The schema.json shipped with the provider: the repo root (two folders above dist/server), or beside lib/ in the packaged plugin. */
export function loadSchema(): string {
  for (const candidate of [path.resolve(__dirname, "../../../schema.json"), path.resolve(__dirname, "../../schema.json"), path.resolve(__dirname, "../schema.json")]) {
    if (fs.existsSync(candidate)) return fs.readFileSync(candidate, "utf8");
  }
  throw new Error("schema.json not found next to the provider");
}
