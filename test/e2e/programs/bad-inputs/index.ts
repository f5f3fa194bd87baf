// Bad inputs the test sets through config: each must fail with the property named, creating nothing.
import * as pulumi from "@pulumi/pulumi";
import * as sds from "pulumi-sds";

const config = new pulumi.Config();
const ok = new sds.Volume("ok", { sizeGib: 1 });
const bad = new sds.Volume("bad", { sizeGib: config.requireNumber("size"), profile: config.get("profile") });
export const ids = [ok.id, bad.id];
