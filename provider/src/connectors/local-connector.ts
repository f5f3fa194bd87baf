/**
 * The `local` connector: the volume file is on this host (`exportName` is its path), so the
 * block device is a loop device over it: `losetup -f --show [--read-only] FILE`, detached with
 * `losetup -d`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { invalidInput } from "../errors";
import { BaseConnector, orphanLoops } from "./base-connector";
import type { Connection, PathHealth, VolumePath } from "./connector";
import { type ConnectionRecord, modeOf, newRecord, type Teardown } from "./records";


/** The local connector (a loop device over the volume file). */
export class LocalConnector extends BaseConnector {
  readonly protocol = "local";

  async connectVolume(c: Connection): Promise<{ path: string }> {
    const file = localFile(c);
    const mode = modeOf(c);
    const rec = this.host.records.read(c.volumeId, mode);
    if (rec && (await this.host.loopFor(rec.device, file))) return { path: rec.device };
    const device = await this.host.attachLoop(file, c.readOnly);
    this.host.records.write(newRecord(c, "loop", device, { backingFile: file }));
    return { path: device };
  }

  protected teardownSteps(t: Teardown, rec: ConnectionRecord): Promise<void> {
    return this.detachLoop(t, rec);
  }

  /** The loop device still maps the volume file, which is still there. */
  protected async checkRecord(rec: ConnectionRecord): Promise<PathHealth> {
    const path = rec.device;
    if (!(await this.host.loopFor(rec.device, rec.backingFile))) return { path, healthy: false, reason: `${rec.device} no longer maps ${rec.backingFile}` };
    if (!rec.backingFile || !fs.existsSync(rec.backingFile)) return { path, healthy: false, reason: `the volume file ${rec.backingFile} is gone` };
    return { path, healthy: true };
  }

  /** Loop devices are named /dev/loopN; they appear in /dev. */
  getSearchPath(): string {
    return "/dev";
  }

  protected livePaths(rec: ConnectionRecord): Promise<VolumePath[]> {
    return this.liveLoop(rec);
  }

  /** Loop devices over files inside the state folder that no record explains. */
  protected async orphanPaths(explained: Set<string>): Promise<VolumePath[]> {
    const s = this.host.stateDir;
    return orphanLoops(this.host, this.protocol, explained, s, [path.join(s, "nbd"), path.join(s, "iscsi")]);
  }

  /** Also: loop devices of this volume file made outside a record. */
  async getVolumePaths(c: Connection): Promise<VolumePath[]> {
    const out = await super.getVolumePaths(c);
    if (!c.exportName) return out;
    const file = path.resolve(c.exportName);
    for (const l of await this.host.loops()) {
      if (l.backFile === file && !out.some((p) => p.path === l.name)) out.push({ volumeId: c.volumeId, path: l.name, protocol: "local", via: "loop" });
    }
    return out;
  }
}

function localFile(c: Connection): string {
  if (c.protocol !== "local") throw invalidInput("protocol", `the local connector cannot connect ${c.protocol}`);
  if (!c.exportName || !path.isAbsolute(c.exportName)) throw invalidInput("exportName", "a local connection needs the absolute path of the volume file");
  return path.resolve(c.exportName);
}
