// One team's volumes on a pool that other stacks share through one PostgreSQL state (the state,
// the backends and the sealing key come from the runner's environment: SDS_STATE_URL,
// SDS_BACKENDS_FILE, SDS_SECRET_KEY). Every knob the tests turn is stack config.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const count = config.requireNumber("count");
const sizeGib = config.requireNumber("sizeGib");
// Sequential: each volume is made only once the one before it exists (its description names it),
// and pauseMs after that, so a test can act between two creates. Otherwise all at once.
const sequential = config.getBoolean("sequential") ?? false;
const pauseMs = config.getNumber("pauseMs") ?? 0;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const volumes: sds.Volume[] = [];
for (let i = 0; i < count; i++) {
    const previous = volumes[i - 1];
    const description = sequential && previous ? previous.name.apply(async (n) => {
        await sleep(pauseMs);
        return `after ${n}`;
    }) : "";
    // The stack in the resource name: two stacks' volumes never share a name in the shared state.
    volumes.push(new sds.Volume(`${pulumi.getStack()}-${i}`, { sizeGib, description }));
}

export const volumeIds = volumes.map((v) => v.id);
