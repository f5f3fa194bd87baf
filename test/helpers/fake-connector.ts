/**
 * A connector for unit tests of what drives connectors (the agent's routes, attachments): it keeps
 * connections in memory, records every call as [name, protocol, ...args], and fails the next call
 * with `FakeConnector.failNext` when a test sets it. No host is touched.
 */
import type { Connection, Connector, VolumePath } from "../../provider/src/connectors/connector";

type Protocol = Connection["protocol"];

/** A connector that keeps connections in memory and records every call (name, protocol, args). */
export class FakeConnector implements Connector {
  constructor(
    readonly protocol: Protocol,
    private readonly calls: unknown[][],
    private readonly connected: Map<string, string>,
  ) {}
  /** Set to make the next call throw it. */
  static failNext: unknown;
  private record(name: string, ...args: unknown[]): void {
    this.calls.push([name, this.protocol, ...args]);
    const f = FakeConnector.failNext;
    if (f) {
      FakeConnector.failNext = undefined;
      throw f;
    }
  }
  async getConnectorProperties() {
    this.record("getConnectorProperties");
    return { hostname: "host-1", initiator: "iqn.2026-11.io.sds:host-1", multipath: false, capabilities: { iscsiKernel: true, nbdKernel: false, userspace: true } };
  }
  async connectVolume(c: Connection) {
    this.record("connectVolume", c);
    const p = this.connected.get(c.volumeId) ?? `/dev/fake${this.connected.size}`;
    this.connected.set(c.volumeId, p);
    return { path: p };
  }
  async disconnectVolume(c: Connection, o?: { force?: boolean }) {
    this.record("disconnectVolume", c, o);
    this.connected.delete(c.volumeId);
  }
  async getVolumePaths(c: Connection): Promise<VolumePath[]> {
    this.record("getVolumePaths", c);
    const p = this.connected.get(c.volumeId);
    return p ? [{ volumeId: c.volumeId, path: p, protocol: this.protocol, via: "loop" }] : [];
  }
  async getAllVolumePaths(): Promise<VolumePath[]> {
    this.record("getAllVolumePaths");
    return [{ path: `/dev/all-${this.protocol}`, protocol: this.protocol, via: "kernel" }];
  }
  getSearchPath() {
    this.record("getSearchPath");
    return `/search/${this.protocol}`;
  }
  async extendVolume(c: Connection) {
    this.record("extendVolume", c);
    return 2 * 1024 ** 3;
  }
  async checkVolume(c: Connection) {
    this.record("checkVolume", c);
    const p = this.connected.get(c.volumeId);
    return p ? { path: p, healthy: false, reason: "qemu-nbd (pid 7) exited" } : { path: null, healthy: false, reason: "not connected" };
  }
  async fenceVolume(c: Connection) {
    this.record("fenceVolume", c);
    return { path: this.connected.get(c.volumeId) ?? null, healthy: true };
  }
}
