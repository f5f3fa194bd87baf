// Bad inputs the test sets through config: each must fail with the property named, creating nothing.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const ok = new sds.Volume("ok", { sizeGib: 1 });
const bad = new sds.Volume("bad", { sizeGib: config.requireNumber("size"), profile: config.get("profile") });
// A profile only when the test sets `specs` (a JSON object of extra specs).
const specs = config.getObject<Record<string, string>>("specs");
const gold = specs ? new sds.Profile("gold", { extraSpecs: specs }) : undefined;
export const ids = [ok.id, bad.id, ...(gold ? [gold.id] : [])];
