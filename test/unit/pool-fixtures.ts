/** Pool states for scheduler tests. */
import type { PoolState } from "../../provider/src/scheduler/types";

export function pool(over: Partial<PoolState> & { id: string }): PoolState {
  const [backendName, poolName] = over.id.split("/");
  return {
    backendName,
    backendId: `id-${backendName}`,
    poolName,
    sharedTargets: true,
    availabilityZone: "default",
    storageType: "block",
    multiAttach: false,
    extras: {},
    totalGib: 100,
    freeGib: 100,
    provisionedGib: 0,
    maxOverSubscriptionRatio: 20,
    provisioning: "thin",
    weigher: "spread",
    ...over,
  };
}
