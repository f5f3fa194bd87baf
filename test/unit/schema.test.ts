// Checks schema.json (the Pulumi package schema the Node.js SDK is generated from) against
// /work/shared/CONTRACT.md: tokens, properties, secrets, replace flags, and documentation on every property.
import * as fs from "fs";
import * as path from "path";
import type { z } from "zod";
import { backendSchema, poolSchema } from "../../provider/src/domain/backend";
import { ATTACHMENT_STATUSES, REPLICATION_STATUSES, VOLUME_STATUSES } from "../../provider/src/domain/status";
import { attachmentProperties } from "../../provider/src/resources/attachment";
import { profileProperties } from "../../provider/src/resources/profile";
import { pairProperties } from "../../provider/src/resources/replication-pair";
import { volumeProperties } from "../../provider/src/resources/volume";
import type { PropertySpecs } from "../../provider/src/resources/properties";

interface PropertySpec {
    type?: string;
    $ref?: string;
    items?: PropertySpec;
    additionalProperties?: PropertySpec;
    description?: string;
    secret?: boolean;
    willReplaceOnChanges?: boolean;
    replaceOnChanges?: boolean;
    [key: string]: unknown;
}

interface EnumValue {
    name?: string;
    value: string | number | boolean;
    description?: string;
}

interface ObjectSpec {
    description?: string;
    type?: string;
    enum?: EnumValue[];
    properties?: Record<string, PropertySpec>;
    required?: string[];
}

interface ResourceSpec extends ObjectSpec {
    inputProperties?: Record<string, PropertySpec>;
    requiredInputs?: string[];
}

interface FunctionSpec {
    description?: string;
    inputs?: ObjectSpec;
    outputs?: ObjectSpec;
}

interface PackageSpec {
    name: string;
    version?: string;
    description?: string;
    license?: string;
    config?: { variables?: Record<string, PropertySpec> };
    provider?: ResourceSpec;
    types?: Record<string, ObjectSpec>;
    resources?: Record<string, ResourceSpec>;
    functions?: Record<string, FunctionSpec>;
    language?: { nodejs?: Record<string, unknown> };
    [key: string]: unknown;
}

const schemaPath = path.join(__dirname, "..", "..", "schema.json");
const schema: PackageSpec = JSON.parse(fs.readFileSync(schemaPath, "utf8"));

const resources = schema.resources ?? {};
const functions = schema.functions ?? {};
const types = schema.types ?? {};

const RESOURCE_TOKENS = ["sds:index:Volume", "sds:index:Attachment", "sds:index:Profile", "sds:index:ReplicationPair"];
const FUNCTION_TOKENS = [
    "sds:index:getPools",
    "sds:index:getPlacement",
    "sds:index:getReplicationTargets",
    "sds:index:getVolumePaths",
];

// The contract's tables, copied by hand: inputs users set, and the outputs the contract adds.
const CONTRACT: Record<string, { inputs: string[]; requiredInputs: string[]; outputsAdded: string[] }> = {
    "sds:index:Profile": {
        inputs: ["name", "description", "storageType", "extraSpecs"],
        requiredInputs: [],
        outputsAdded: [],
    },
    "sds:index:Volume": {
        inputs: ["name", "sizeGib", "profile", "availabilityZone", "multiAttach", "sourceVolumeId", "description", "metadata"],
        requiredInputs: ["sizeGib"],
        outputsAdded: [
            "poolId",
            "backendName",
            "backendId",
            "sharedTargets",
            "status",
            "attachmentIds",
            "replicationStatus",
            "createdAt",
        ],
    },
    "sds:index:Attachment": {
        inputs: ["volumeId", "host", "mode", "connector", "connect"],
        requiredInputs: ["volumeId"],
        // statusReason: added in round 2 so refresh can say why an attachment is broken (CONTRACT.md has status only).
        outputsAdded: ["status", "statusReason", "connectionInfo", "devicePath", "sharedTargets", "backendId"],
    },
    "sds:index:ReplicationPair": {
        inputs: ["primaryVolumeId", "targetBackend", "targetPool", "mode", "rpoSeconds", "enabled", "activeSide"],
        requiredInputs: ["primaryVolumeId", "targetBackend"],
        outputsAdded: ["secondaryVolumeId", "replicationStatus", "lastSyncAt", "lagSeconds", "bytesTransferred"],
    },
};

const CONFIG_KEYS = ["stateUrl", "backendsFile", "backends", "hosts", "agentToken", "secretKey"];

const FUNCTION_CONTRACT: Record<string, { inputs: string[]; requiredInputs: string[]; outputs: string[] }> = {
    "sds:index:getPools": { inputs: ["backend"], requiredInputs: [], outputs: ["pools"] },
    "sds:index:getPlacement": {
        inputs: ["sizeGib", "profile", "availabilityZone", "multiAttach"],
        requiredInputs: ["sizeGib"],
        outputs: ["poolId", "backendName", "backendId", "poolName", "sharedTargets", "rejections"],
    },
    "sds:index:getReplicationTargets": { inputs: ["backend"], requiredInputs: ["backend"], outputs: ["targets"] },
    "sds:index:getVolumePaths": { inputs: ["host", "volumeId"], requiredInputs: ["host"], outputs: ["paths"] },
};

const TYPE_PROPERTIES: Record<string, string[]> = {
    Backend: ["name", "driver", "rbd", "node", "backendId", "sharedTargets", "export", "replicationTargets", "pools", "weigher"],
    Pool: [
        "name",
        "path",
        "totalCapacityGib",
        "maxOverSubscriptionRatio",
        "availabilityZone",
        "storageType",
        "multiAttach",
        "replication",
        "extras",
    ],
    HostAgent: ["url", "token", "caCert"],
    Connector: ["initiator", "nqn", "ip", "hostname", "multipath"],
    ConnectionInfo: [
        "protocol",
        "portals",
        "targetIqn",
        "targetLun",
        "exportName",
        "authMethod",
        "authUsername",
        "authPassword",
        "readOnly",
    ],
    PoolInfo: [
        "backendName",
        "backendId",
        "name",
        "id",
        "availabilityZone",
        "storageType",
        "multiAttach",
        "replication",
        "extras",
        "totalCapacityGib",
        "freeCapacityGib",
        "provisionedCapacityGib",
        "maxOverSubscriptionRatio",
    ],
    PlacementRejection: ["poolId", "filter", "reason"],
    ReplicationTarget: ["backend", "backendId", "pools"],
    VolumePath: ["volumeId", "path", "protocol"],
};

/** Every named property bag in the schema, with a readable location, so one walk covers all levels. */
function propertyBags(): Array<[string, Record<string, PropertySpec>]> {
    const bags: Array<[string, Record<string, PropertySpec>]> = [];
    bags.push(["config.variables", schema.config?.variables ?? {}]);
    bags.push(["provider.inputProperties", schema.provider?.inputProperties ?? {}]);
    bags.push(["provider.properties", schema.provider?.properties ?? {}]);
    for (const [token, r] of Object.entries(resources)) {
        bags.push([`resources.${token}.inputProperties`, r.inputProperties ?? {}]);
        bags.push([`resources.${token}.properties`, r.properties ?? {}]);
    }
    for (const [token, t] of Object.entries(types)) {
        bags.push([`types.${token}.properties`, t.properties ?? {}]);
    }
    for (const [token, f] of Object.entries(functions)) {
        bags.push([`functions.${token}.inputs`, f.inputs?.properties ?? {}]);
        bags.push([`functions.${token}.outputs`, f.outputs?.properties ?? {}]);
    }
    return bags;
}

function allProperties(): Array<[string, PropertySpec]> {
    return propertyBags().flatMap(([where, bag]) =>
        Object.entries(bag).map(([name, p]): [string, PropertySpec] => [`${where}.${name}`, p]),
    );
}

/** Follows array items and map values down to the innermost type reference. */
function innermost(p: PropertySpec): PropertySpec {
    if (p.type === "array" && p.items) return innermost(p.items);
    if (p.type === "object" && p.additionalProperties) return innermost(p.additionalProperties);
    return p;
}

function typeOf(token: string): ObjectSpec {
    const t = types[token];
    if (!t) throw new Error(`type ${token} is missing`);
    return t;
}

describe("schema.json: package", () => {
    test("names, version and Node.js settings", () => {
        expect(schema.name).toBe("sds");
        expect(schema.version).toBe("0.1.0");
        expect(schema.license).toBe("Apache-2.0");
        expect(schema.description?.trim()).toBeTruthy();
        expect(schema.language?.nodejs?.packageName).toBe("pulumi-sds");
        expect(schema.language?.nodejs?.respectSchemaVersion).toBe(true);
    });

    test("language.nodejs uses only options pulumi's nodejs codegen knows", () => {
        // NodePackageInfo in pkg/codegen/nodejs/importer.go (pulumi v3.259.0).
        const known = new Set([
            "packageName",
            "packageDescription",
            "readme",
            "dependencies",
            "devDependencies",
            "peerDependencies",
            "resolutions",
            "typescriptVersion",
            "moduleToPackage",
            "compatibility",
            "disableUnionOutputTypes",
            "containsEnums",
            "providerNameToModuleName",
            "extraTypeScriptFiles",
            "liftSingleValueMethodReturns",
            "respectSchemaVersion",
            "useTypeOnlyReferences",
        ]);
        for (const key of Object.keys(schema.language?.nodejs ?? {})) {
            expect(known).toContain(key);
        }
    });

    test("the four resource tokens and the four function tokens exist, and nothing else", () => {
        expect(Object.keys(resources).sort()).toEqual([...RESOURCE_TOKENS].sort());
        expect(Object.keys(functions).sort()).toEqual([...FUNCTION_TOKENS].sort());
    });

    test("tokens are well formed (pattern from pulumi.json)", () => {
        const token = /^[a-zA-Z][-a-zA-Z0-9_]*:([^0-9][a-zA-Z0-9._/-]*)?:[^0-9][a-zA-Z0-9._/]*$/;
        for (const t of [...Object.keys(resources), ...Object.keys(types), ...Object.keys(functions)]) {
            expect(t).toMatch(token);
            expect(t.startsWith("sds:index:")).toBe(true);
        }
    });
});

describe("schema.json: documentation", () => {
    test("every resource, type and function has a description", () => {
        const missing: string[] = [];
        const check = (where: string, d?: string) => {
            if (!d || !d.trim()) missing.push(where);
        };
        check("provider", schema.provider?.description);
        for (const [t, r] of Object.entries(resources)) check(`resources.${t}`, r.description);
        for (const [t, ty] of Object.entries(types)) check(`types.${t}`, ty.description);
        for (const [t, f] of Object.entries(functions)) {
            check(`functions.${t}`, f.description);
            check(`functions.${t}.inputs`, f.inputs?.description);
            check(`functions.${t}.outputs`, f.outputs?.description);
        }
        expect(missing).toEqual([]);
    });

    test("every property at every level has a non-empty description", () => {
        const props = allProperties();
        expect(props.length).toBeGreaterThan(100);
        const missing = props.filter(([, p]) => !p.description || !p.description.trim()).map(([where]) => where);
        expect(missing).toEqual([]);
    });

    test("no description would end a generated JSDoc comment early", () => {
        const offending = allProperties()
            .filter(([, p]) => (p.description ?? "").includes("*/"))
            .map(([where]) => where);
        expect(offending).toEqual([]);
    });

    test("no description points at the inside of the project (repo paths, source files, issues, tests)", () => {
        const internal = /(provider|test|tests|sdk|docs|scripts|tools|deploy|bench)\/[\w.-]|\.(ts|js)\b|\bissue\s*#?\d|#\d{1,4}\b|\bseed\b|CONTRACT|\bround \d|shared\//i;
        const descriptions: Array<[string, string]> = [
            ["description", schema.description ?? ""],
            ["provider", schema.provider?.description ?? ""],
            ...Object.entries(resources).map(([t, r]): [string, string] => [`resources.${t}`, r.description ?? ""]),
            ...Object.entries(types).flatMap(([t, ty]): Array<[string, string]> => [
                [`types.${t}`, ty.description ?? ""],
                ...(ty.enum ?? []).map((v): [string, string] => [`types.${t}.${String(v.value)}`, v.description ?? ""]),
            ]),
            ...Object.entries(functions).map(([t, f]): [string, string] => [`functions.${t}`, f.description ?? ""]),
            ...allProperties().map(([where, p]): [string, string] => [where, p.description ?? ""]),
        ];
        const offending = descriptions.filter(([, d]) => internal.test(d)).map(([where, d]) => `${where}: ${d.match(internal)![0]}`);
        expect(offending).toEqual([]);
    });

    test("every resource input says what a change does (replace or in place) and, when optional, its default", () => {
        const unsaid: string[] = [];
        for (const [t, r] of Object.entries(resources)) {
            for (const [n, p] of Object.entries(r.inputProperties ?? {})) {
                const d = p.description ?? "";
                if (!/replace|in place/i.test(d)) unsaid.push(`${t}.${n}: change`);
                if (!(r.requiredInputs ?? []).includes(n) && !/Default/.test(d)) unsaid.push(`${t}.${n}: default`);
            }
        }
        expect(unsaid).toEqual([]);
    });

    test("extraSpecs documents the operator syntax with examples", () => {
        const d = resources["sds:index:Profile"].inputProperties!.extraSpecs.description!;
        expect(d).toContain('"capabilities:multiAttach": "<is> true"');
        expect(d).toContain('"diskType": "<or> SSD <or> NVMe"');
        expect(d).toContain('"maxIOPS": ">= 5000"');
    });

    test("config descriptions state defaults and environment fallbacks", () => {
        for (const bag of [schema.config!.variables!, schema.provider!.inputProperties!]) {
            expect(bag.stateUrl.description).toContain("sqlite:.sds/state.db");
            expect(bag.stateUrl.description).toContain("SDS_STATE_URL");
            expect(bag.backendsFile.description).toContain(".sds/backends.yaml");
            expect(bag.backendsFile.description).toContain("SDS_BACKENDS_FILE");
        }
    });
});

describe("schema.json: structure", () => {
    test("every $ref points at a type of this package or a pulumi.json built-in", () => {
        const dangling: string[] = [];
        for (const [where, p] of allProperties()) {
            const inner = innermost(p);
            if (!inner.$ref) continue;
            if (inner.$ref.startsWith("pulumi.json#/")) {
                if (!["pulumi.json#/Any", "pulumi.json#/Asset", "pulumi.json#/Archive"].includes(inner.$ref)) {
                    dangling.push(`${where}: ${inner.$ref}`);
                }
                continue;
            }
            const m = /^#\/types\/(.+)$/.exec(inner.$ref);
            if (!m || !types[m[1]]) dangling.push(`${where}: ${inner.$ref}`);
        }
        expect(dangling).toEqual([]);
    });

    test("every property has a type Pulumi knows", () => {
        const bad: string[] = [];
        const ok = (p: PropertySpec, where: string): void => {
            if (p.$ref) return;
            if (["boolean", "integer", "number", "string"].includes(p.type ?? "")) return;
            if (p.type === "array" && p.items) return ok(p.items, `${where}[]`);
            if (p.type === "object") return p.additionalProperties ? ok(p.additionalProperties, `${where}{}`) : undefined;
            bad.push(where);
        };
        for (const [where, p] of allProperties()) ok(p, where);
        expect(bad).toEqual([]);
    });

    test("required lists only name existing properties", () => {
        const bad: string[] = [];
        const check = (where: string, names: string[] | undefined, bag: Record<string, PropertySpec> | undefined) => {
            for (const n of names ?? []) if (!bag || !bag[n]) bad.push(`${where}: ${n}`);
        };
        for (const [t, r] of Object.entries(resources)) {
            check(`${t}.requiredInputs`, r.requiredInputs, r.inputProperties);
            check(`${t}.required`, r.required, r.properties);
        }
        for (const [t, ty] of Object.entries(types)) check(`${t}.required`, ty.required, ty.properties);
        for (const [t, f] of Object.entries(functions)) {
            check(`${t}.inputs.required`, f.inputs?.required, f.inputs?.properties);
            check(`${t}.outputs.required`, f.outputs?.required, f.outputs?.properties);
        }
        expect(bad).toEqual([]);
    });

    test("types are objects or string enums whose values each have a name and a description", () => {
        for (const [t, ty] of Object.entries(types)) {
            if (ty.enum === undefined) {
                expect([t, ty.type]).toEqual([t, "object"]);
                continue;
            }
            expect([t, ty.type]).toEqual([t, "string"]);
            expect(ty.enum.length).toBeGreaterThan(0);
            for (const v of ty.enum) {
                expect([t, typeof v.value]).toEqual([t, "string"]);
                expect([t, v.value, v.name]).toEqual([t, v.value, expect.stringMatching(/^[A-Z][A-Za-z]*$/)]);
                expect([t, v.value, (v.description ?? "").trim().length > 0]).toEqual([t, v.value, true]);
            }
        }
    });

    test("every property with a closed set of values is an enum, not a free string", () => {
        // A property of one of these names takes one of a few words the provider accepts or returns.
        const ENUM_LIKE = ["mode", "activeSide", "protocol", "status", "replicationStatus", "weigher", "driver", "authMethod", "replication"];
        const loose = allProperties()
            .filter(([where]) => ENUM_LIKE.includes(where.split(".").pop()!))
            .filter(([, p]) => {
                const inner = innermost(p);
                const m = /^#\/types\/(.+)$/.exec(inner.$ref ?? "");
                return !m || types[m[1]]?.enum === undefined;
            })
            .map(([where]) => where);
        expect(loose).toEqual([]);
    });

    test("every default is a value the property's type accepts", () => {
        const bad: string[] = [];
        for (const [where, p] of allProperties()) {
            if (p.default === undefined) continue;
            const m = /^#\/types\/(.+)$/.exec(p.$ref ?? "");
            if (m) {
                if (!(types[m[1]].enum ?? []).some((v) => v.value === p.default)) bad.push(where);
            } else if (p.type === "integer" ? !Number.isInteger(p.default) : typeof p.default !== p.type) {
                bad.push(where);
            }
        }
        expect(bad).toEqual([]);
    });
});

describe("schema.json: provider configuration", () => {
    test("config.variables and provider.inputProperties hold the same keys from the contract", () => {
        expect(Object.keys(schema.config?.variables ?? {}).sort()).toEqual([...CONFIG_KEYS].sort());
        expect(Object.keys(schema.provider?.inputProperties ?? {}).sort()).toEqual([...CONFIG_KEYS].sort());
        expect(schema.config!.variables).toEqual(schema.provider!.inputProperties);
    });

    test("types of the settings", () => {
        const v = schema.config!.variables!;
        expect(v.stateUrl.type).toBe("string");
        expect(v.backendsFile.type).toBe("string");
        expect(v.agentToken.type).toBe("string");
        expect(v.backends).toMatchObject({ type: "array", items: { $ref: "#/types/sds:index:Backend" } });
        expect(v.hosts).toMatchObject({ type: "object", additionalProperties: { $ref: "#/types/sds:index:HostAgent" } });
    });
});

describe("schema.json: secrets", () => {
    test("every secret of the contract is marked secret", () => {
        expect(schema.config!.variables!.agentToken.secret).toBe(true);
        expect(schema.provider!.inputProperties!.agentToken.secret).toBe(true);
        expect(typeOf("sds:index:HostAgent").properties!.token.secret).toBe(true);
        expect(typeOf("sds:index:ConnectionInfo").properties!.authPassword.secret).toBe(true);
        // The Node.js SDK JSON-encodes object-valued provider settings, which drops a nested secret flag,
        // so the whole hosts map (it carries tokens) is secret too.
        expect(schema.config!.variables!.hosts.secret).toBe(true);
        expect(schema.provider!.inputProperties!.hosts.secret).toBe(true);
    });

    test("Attachment.connectionInfo is the type whose authPassword is secret", () => {
        const a = resources["sds:index:Attachment"];
        expect(a.properties!.connectionInfo.$ref).toBe("#/types/sds:index:ConnectionInfo");
    });

    test("nothing else is secret", () => {
        const secret = allProperties()
            .filter(([, p]) => p.secret)
            .map(([where]) => where)
            .sort();
        expect(secret).toEqual(
            [
                "config.variables.agentToken",
                "config.variables.hosts",
                "config.variables.secretKey",
                "config.variables.stateUrl",
                "provider.inputProperties.agentToken",
                "provider.inputProperties.hosts",
                "provider.inputProperties.secretKey",
                "provider.inputProperties.stateUrl",
                // An inline cephx key; as with hosts, set the whole sds:backends as a secret (the SDK drops nested flags).
                "types.sds:index:BackendRbd.properties.key",
                "types.sds:index:ConnectionInfo.properties.authPassword",
                "types.sds:index:HostAgent.properties.token",
            ].sort(),
        );
    });
});

describe.each(Object.entries(CONTRACT))("schema.json: resource %s", (token, c) => {
    const r = resources[token];

    test("inputs are exactly the contract's", () => {
        expect(Object.keys(r.inputProperties ?? {}).sort()).toEqual([...c.inputs].sort());
        expect([...(r.requiredInputs ?? [])].sort()).toEqual([...c.requiredInputs].sort());
    });

    test("outputs echo every input and add the contract's outputs", () => {
        expect(Object.keys(r.properties ?? {}).sort()).toEqual([...c.inputs, ...c.outputsAdded].sort());
        for (const name of c.inputs) {
            const { description: _in, willReplaceOnChanges: _w, default: _d, ...inType } = r.inputProperties![name];
            const { description: _out, ...outType } = r.properties![name];
            expect([name, outType]).toEqual([name, inType]);
        }
    });

    test("required outputs include every required input", () => {
        for (const name of c.requiredInputs) expect(r.required).toContain(name);
    });

    test("no id or urn property (reserved by Pulumi)", () => {
        expect(r.properties).not.toHaveProperty("id");
        expect(r.properties).not.toHaveProperty("urn");
        expect(r.inputProperties).not.toHaveProperty("id");
    });
});

describe("schema.json: property types and replace flags", () => {
    const volume = resources["sds:index:Volume"];
    const attachment = resources["sds:index:Attachment"];
    const pair = resources["sds:index:ReplicationPair"];
    const profile = resources["sds:index:Profile"];

    test("integers, maps and arrays", () => {
        expect(volume.inputProperties!.sizeGib.type).toBe("integer");
        expect(volume.properties!.sizeGib.type).toBe("integer");
        expect(pair.inputProperties!.rpoSeconds.type).toBe("integer");
        expect(typeOf("sds:index:ConnectionInfo").properties!.targetLun.type).toBe("integer");
        expect(functions["sds:index:getPlacement"].inputs!.properties!.sizeGib.type).toBe("integer");
        expect(volume.inputProperties!.metadata).toMatchObject({ type: "object", additionalProperties: { type: "string" } });
        expect(profile.inputProperties!.extraSpecs).toMatchObject({ type: "object", additionalProperties: { type: "string" } });
        expect(volume.properties!.attachmentIds).toMatchObject({ type: "array", items: { type: "string" } });
        expect(typeOf("sds:index:ConnectionInfo").properties!.portals).toMatchObject({ type: "array", items: { type: "string" } });
        expect(attachment.inputProperties!.connector.$ref).toBe("#/types/sds:index:Connector");
    });

    /** The values of the enum type a property refers to. */
    const enumValues = (p: PropertySpec): unknown[] => {
        const m = /^#\/types\/(.+)$/.exec(innermost(p).$ref ?? "");
        expect(m).not.toBeNull();
        return (typeOf(m![1]).enum ?? []).map((v) => v.value);
    };
    /** What a zod schema accepts among a closed set of words (z.enum, z.literal, behind .optional()/.default()). */
    const accepted = (schema: z.ZodType): unknown[] => {
        let s: unknown = schema;
        for (;;) {
            const x = s as { options?: unknown[]; values?: Set<unknown>; unwrap?: () => unknown };
            if (Array.isArray(x.options)) return [...x.options];
            if (x.values instanceof Set) return [...x.values];
            if (typeof x.unwrap !== "function") throw new Error("not an enum schema");
            s = x.unwrap();
        }
    };
    const sorted = (xs: unknown[]) => [...xs].map(String).sort();

    test("enums hold exactly the values the provider accepts", () => {
        const b = backendSchema.shape;
        const exportShape = (b.export.unwrap() as unknown as { shape: Record<string, z.ZodType> }).shape;
        const cases: Array<[string, PropertySpec, unknown[]]> = [
            ["Attachment.mode", attachment.inputProperties!.mode, accepted(attachmentProperties.mode.schema)],
            ["ReplicationPair.mode", pair.inputProperties!.mode, accepted(pairProperties.mode.schema)],
            ["ReplicationPair.activeSide", pair.inputProperties!.activeSide, accepted(pairProperties.activeSide.schema)],
            ["Backend.driver", typeOf("sds:index:Backend").properties!.driver, accepted(b.driver)],
            ["Backend.weigher", typeOf("sds:index:Backend").properties!.weigher, accepted(b.weigher)],
            ["BackendExport.protocol", typeOf("sds:index:BackendExport").properties!.protocol, accepted(exportShape.protocol)],
            ["Pool.replication", typeOf("sds:index:Pool").properties!.replication, accepted(poolSchema.shape.replication)],
        ];
        for (const [where, p, values] of cases) expect([where, sorted(enumValues(p))]).toEqual([where, sorted(values)]);
    });

    test("status enums hold exactly the statuses the provider returns", () => {
        expect(sorted(enumValues(volume.properties!.status))).toEqual(sorted([...VOLUME_STATUSES]));
        // `broken` is computed by refresh's probes, never stored.
        expect(sorted(enumValues(attachment.properties!.status))).toEqual(sorted([...ATTACHMENT_STATUSES, "broken"]));
        expect(sorted(enumValues(pair.properties!.replicationStatus))).toEqual(sorted([...REPLICATION_STATUSES]));
        expect(sorted(enumValues(volume.properties!.replicationStatus))).toEqual(sorted([...REPLICATION_STATUSES]));
        // Outputs that echo an input use the input's enum.
        expect(enumValues(attachment.properties!.mode)).toEqual(enumValues(attachment.inputProperties!.mode));
        expect(enumValues(pair.properties!.activeSide)).toEqual(enumValues(pair.inputProperties!.activeSide));
        for (const p of [typeOf("sds:index:ConnectionInfo").properties!.protocol, typeOf("sds:index:VolumePath").properties!.protocol]) {
            expect(enumValues(p)).toEqual(enumValues(typeOf("sds:index:BackendExport").properties!.protocol));
        }
    });

    test("resource input defaults are the provider's defaults", () => {
        const specs: Record<string, PropertySpecs> = {
            "sds:index:Volume": volumeProperties,
            "sds:index:Attachment": attachmentProperties,
            "sds:index:Profile": profileProperties,
            "sds:index:ReplicationPair": pairProperties,
        };
        const withDefault = (token: string) =>
            Object.entries(resources[token].inputProperties ?? {})
                .filter(([, p]) => p.default !== undefined)
                .map(([n, p]) => [n, p.default]);
        for (const [token, spec] of Object.entries(specs)) {
            for (const [n, d] of withDefault(token)) expect([token, n, d]).toEqual([token, n, spec[n as string].default]);
        }
        expect(withDefault("sds:index:Attachment")).toEqual([["host", "localhost"], ["mode", "rw"], ["connect", true]]);
        expect(withDefault("sds:index:ReplicationPair")).toEqual([["mode", "async"], ["rpoSeconds", 60], ["enabled", true], ["activeSide", "primary"]]);
        expect(withDefault("sds:index:Profile")).toEqual([["storageType", "block"]]);
        // A volume's multiAttach is settled by its profile when the program leaves it out: an SDK
        // default would send `false` and override the profile.
        expect(volume.inputProperties!.multiAttach.default).toBeUndefined();
        // An SDK default inside a replacing input (the connector) would change old attachments' inputs and replace them.
        expect(typeOf("sds:index:Connector").properties!.multipath.default).toBeUndefined();
    });

    test("willReplaceOnChanges: Volume profile/availabilityZone/sourceVolumeId and every Attachment input", () => {
        const replacing = (r: ResourceSpec) =>
            Object.entries(r.inputProperties ?? {})
                .filter(([, p]) => p.willReplaceOnChanges)
                .map(([n]) => n)
                .sort();
        expect(replacing(volume)).toEqual(["availabilityZone", "profile", "sourceVolumeId"]);
        expect(replacing(attachment)).toEqual(Object.keys(attachment.inputProperties!).sort());
        expect(replacing(profile)).toEqual([]);
        // sizeGib grows in place and must never be a replace (shrink is a check failure).
        expect(volume.inputProperties!.sizeGib.willReplaceOnChanges).toBeUndefined();
        // activeSide, enabled and rpoSeconds are in-place updates.
        for (const n of ["activeSide", "enabled", "rpoSeconds"]) {
            expect(pair.inputProperties![n].willReplaceOnChanges).toBeUndefined();
        }
    });

    test("replaceOnChanges (the SDK resource option) is not used: the provider decides replaces", () => {
        expect(allProperties().filter(([, p]) => p.replaceOnChanges)).toEqual([]);
    });
});

describe("schema.json: types", () => {
    test.each(Object.entries(TYPE_PROPERTIES))("%s has the contract's properties", (name, props) => {
        expect(Object.keys(typeOf(`sds:index:${name}`).properties ?? {}).sort()).toEqual([...props].sort());
    });

    test("Backend export, replicationTargets and pools", () => {
        const b = typeOf("sds:index:Backend").properties!;
        expect(b.export.$ref).toBe("#/types/sds:index:BackendExport");
        expect(Object.keys(typeOf("sds:index:BackendExport").properties!).sort()).toEqual(["chap", "portal", "protocol"]);
        expect(b.replicationTargets).toMatchObject({ type: "array", items: { $ref: "#/types/sds:index:BackendReplicationTarget" } });
        expect(Object.keys(typeOf("sds:index:BackendReplicationTarget").properties!)).toEqual(["backend"]);
        expect(b.pools).toMatchObject({ type: "array", items: { $ref: "#/types/sds:index:Pool" } });
    });

    test("pool extras are free-form maps", () => {
        const extras = typeOf("sds:index:Pool").properties!.extras;
        expect(extras.$ref).toBe("#/types/sds:index:PoolExtras");
        const groups = typeOf("sds:index:PoolExtras").properties!;
        expect(Object.keys(groups).sort()).toEqual(["advanced", "dataStorage", "ioConnectivity"]);
        for (const g of Object.values(groups)) {
            expect(g).toMatchObject({ type: "object", additionalProperties: { $ref: "pulumi.json#/Any" } });
        }
    });

    test("numbers for capacities and ratios", () => {
        const pool = typeOf("sds:index:Pool").properties!;
        expect(pool.totalCapacityGib.type).toBe("number");
        expect(pool.maxOverSubscriptionRatio.type).toBe("number");
        expect(pool.maxOverSubscriptionRatio.description).toContain("`20`");
        const info = typeOf("sds:index:PoolInfo").properties!;
        for (const n of ["totalCapacityGib", "freeCapacityGib", "provisionedCapacityGib", "maxOverSubscriptionRatio"]) {
            expect(info[n].type).toBe("number");
        }
    });
});

describe.each(Object.entries(FUNCTION_CONTRACT))("schema.json: function %s", (token, c) => {
    const f = functions[token];

    test("inputs and outputs", () => {
        expect(Object.keys(f.inputs?.properties ?? {}).sort()).toEqual([...c.inputs].sort());
        expect([...(f.inputs?.required ?? [])].sort()).toEqual([...c.requiredInputs].sort());
        expect(Object.keys(f.outputs?.properties ?? {}).sort()).toEqual([...c.outputs].sort());
    });

    test("list outputs are arrays of the function's output types", () => {
        const out = f.outputs!.properties!;
        const expected: Record<string, [string, string]> = {
            "sds:index:getPools": ["pools", "PoolInfo"],
            "sds:index:getPlacement": ["rejections", "PlacementRejection"],
            "sds:index:getReplicationTargets": ["targets", "ReplicationTarget"],
            "sds:index:getVolumePaths": ["paths", "VolumePath"],
        };
        const [prop, type] = expected[token];
        expect(out[prop]).toMatchObject({ type: "array", items: { $ref: `#/types/sds:index:${type}` } });
        expect(f.outputs!.required).toContain(prop);
    });
});
