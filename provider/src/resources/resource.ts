/**
 * What a resource handler implements. The gRPC server decodes requests into these shapes and
 * encodes the answers; handlers never see protobuf.
 */
import type { Props } from "./values";

export interface CheckFailure {
  property: string;
  reason: string;
}

export interface CheckRequest {
  urn: string;
  /** The resource's name in the program (the last part of the URN). */
  name: string;
  /** Old inputs (empty on create). */
  olds: Props;
  news: Props;
  randomSeed: Uint8Array;
  autonaming?: { proposedName: string; mode: "propose" | "enforce" | "disable" };
}

export interface CheckResult {
  inputs: Props;
  failures: CheckFailure[];
}

export type DiffKind = "add" | "add-replace" | "delete" | "delete-replace" | "update" | "update-replace";

export interface DiffRequest {
  id: string;
  urn: string;
  oldInputs: Props;
  oldOutputs: Props;
  news: Props;
  ignoreChanges: string[];
}

export interface DiffResult {
  changed: boolean;
  replaces: string[];
  deleteBeforeReplace: boolean;
  detailed: Record<string, DiffKind>;
}

export interface CreateRequest {
  urn: string;
  name: string;
  inputs: Props;
  preview: boolean;
}

export interface ReadRequest {
  id: string;
  urn: string;
  state: Props;
  /** Old inputs; empty on import. */
  inputs: Props;
}

export interface UpdateRequest {
  id: string;
  urn: string;
  oldOutputs: Props;
  oldInputs: Props;
  news: Props;
  preview: boolean;
}

export interface DeleteRequest {
  id: string;
  urn: string;
  state: Props;
}

export interface ResourceHandler {
  readonly token: string;
  check(req: CheckRequest): Promise<CheckResult>;
  diff(req: DiffRequest): Promise<DiffResult>;
  create(req: CreateRequest): Promise<{ id: string; outs: Props }>;
  /** `undefined` when the resource is gone. */
  read(req: ReadRequest): Promise<{ id: string; outs: Props; inputs: Props } | undefined>;
  update(req: UpdateRequest): Promise<Props>;
  delete(req: DeleteRequest): Promise<void>;
}

/** A function (invoke) handler. */
export interface FunctionHandler {
  readonly token: string;
  invoke(args: Props, options: { preview: boolean }): Promise<{ outputs: Props; failures?: CheckFailure[] }>;
}
