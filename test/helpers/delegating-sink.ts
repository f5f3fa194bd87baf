/** A replication sink that passes every call to another: tests override the calls they watch or break. */
import type { SinkChunk, SyncSink } from "../../provider/src/replication/sync-sink";

export class DelegatingSink implements SyncSink {
  constructor(protected readonly inner: SyncSink) {}
  get description() {
    return this.inner.description;
  }
  sizeBytes() {
    return this.inner.sizeBytes();
  }
  resize(bytes: number) {
    return this.inner.resize(bytes);
  }
  writeChunks(chunks: readonly SinkChunk[]) {
    return this.inner.writeChunks(chunks);
  }
  zeroRanges(ranges: Parameters<SyncSink["zeroRanges"]>[0]) {
    return this.inner.zeroRanges(ranges);
  }
  flush() {
    return this.inner.flush();
  }
  readDigests(...args: Parameters<SyncSink["readDigests"]>) {
    return this.inner.readDigests(...args);
  }
  close() {
    return this.inner.close();
  }
}
