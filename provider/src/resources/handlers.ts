/** The resources and functions sds serves (the contract's tokens), made for one provider context. */
import { AttachmentResource } from "./attachment";
import type { ProviderContext } from "./context";
import { GetPlacement, GetPools, GetReplicationTargets, GetVolumePaths } from "./functions";
import { ProfileResource } from "./profile";
import { ReplicationPairResource } from "./replication-pair";
import type { FunctionHandler, ResourceHandler } from "./resource";
import { VolumeResource } from "./volume";

export interface Handlers {
  resources: ResourceHandler[];
  functions: FunctionHandler[];
}

/** The resources and functions of the contract. */
export function sdsHandlers(ctx: ProviderContext): Handlers {
  return {
    resources: [new VolumeResource(ctx), new ProfileResource(ctx), new AttachmentResource(ctx), new ReplicationPairResource(ctx)],
    functions: [new GetPools(ctx), new GetPlacement(ctx), new GetReplicationTargets(ctx), new GetVolumePaths(ctx)],
  };
}
