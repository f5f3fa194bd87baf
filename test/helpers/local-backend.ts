/**
 * For e2e tests of the data path on this machine: a copy of a test program whose stack uses one
 * shared-target backend on a free portal of 127.0.0.1 (iSCSI or NBD), its teardown (destroy, then
 * the tgtd the provider left running: exports outlive `pulumi up`), and 1 MiB patterns written
 * and read with O_DIRECT through the devices.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { localTargets } from "../../provider/src/targets/local-targets";
import { freeTcpPort } from "./daemons";
import { PulumiProject } from "./pulumi";

export interface LocalBackendProject {
  p: PulumiProject;
  port: number;
  /** destroy, stop the portal's tgtd, remove the folder. */
  teardown(): Promise<void>;
}

/** `program` in a fresh folder, with a backends file of one shared-target backend on a free portal. */
export async function localBackendProject(program: string, name: string, protocol: "iscsi" | "nbd", chap: boolean): Promise<LocalBackendProject> {
  const p = await PulumiProject.create(program, { name });
  const port = await freeTcpPort();
  fs.writeFileSync(
    path.join(p.dir, "backends.yaml"),
    `backends:\n  - name: array\n    driver: file\n    sharedTargets: true\n    export: {protocol: ${protocol}, portal: "127.0.0.1:${port}", chap: ${chap}}\n    pools:\n      - {name: p0, path: pools/p0, totalCapacityGib: 20, multiAttach: true}\n`,
  );
  await p.config({ "sds:backendsFile": "backends.yaml" });
  return {
    p,
    port,
    async teardown() {
      await p.run(["destroy", "--yes"]);
      if (protocol === "iscsi") await localTargets(path.join(p.dir, ".sds/run")).iscsi(`127.0.0.1:${port}`).stop();
      p.remove();
    },
  };
}

/** Write a 1 MiB pattern of `fill` at MiB `at` of `dev` (O_DIRECT, fsync); returns the pattern. */
export function ddWrite(dir: string, dev: string, fill: number, at: number): Buffer {
  const pattern = Buffer.alloc(1024 * 1024, fill);
  const file = path.join(dir, `pattern-${fill}.bin`);
  fs.writeFileSync(file, pattern);
  execFileSync("dd", [`if=${file}`, `of=${dev}`, "bs=1M", "count=1", `seek=${at}`, "oflag=direct", "conv=fsync", "status=none"], { timeout: 60_000 });
  return pattern;
}

/** Read 1 MiB at MiB `at` of `dev` (O_DIRECT). */
export function ddRead(dev: string, at: number): Buffer {
  return execFileSync("dd", [`if=${dev}`, "bs=1M", "count=1", `skip=${at}`, "iflag=direct", "status=none"], { timeout: 60_000 });
}
