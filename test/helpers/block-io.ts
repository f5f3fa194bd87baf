/**
 * One-block I/O on a block device for data-path tests: dd with O_DIRECT (so it reaches the
 * target, not the page cache), always with a timeout, and a timed read that reports how long a
 * failing read took instead of throwing (a read that hangs is what some tests look for).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { run } from "../../provider/src/exec/run";

const BLOCK = 4096;

/** dd one block onto the device, O_DIRECT and fsync'd. */
export async function writeBlock(dev: string, blockNo: number, data: Buffer, tmp: string): Promise<void> {
  const src = path.join(tmp, `block-${Math.random()}`);
  fs.writeFileSync(src, data);
  try {
    await run("dd", [`if=${src}`, `of=${dev}`, `bs=${BLOCK}`, `seek=${blockNo}`, "count=1", "oflag=direct", "conv=fsync,notrunc"], { timeoutMs: 30_000 });
  } finally {
    fs.rmSync(src, { force: true });
  }
}

/** One block read with O_DIRECT. */
export async function readBlock(dev: string, blockNo: number, tmp: string): Promise<Buffer> {
  const dst = path.join(tmp, `read-${Math.random()}`);
  try {
    await run("dd", [`if=${dev}`, `of=${dst}`, `bs=${BLOCK}`, `skip=${blockNo}`, "count=1", "iflag=direct"], { timeoutMs: 30_000 });
    return fs.readFileSync(dst);
  } finally {
    fs.rmSync(dst, { force: true });
  }
}

/**
 * A read that may fail: how it ended and after how long. (A reader stuck in D state cannot be
 * killed, so a hang shows as the test's own timeout.)
 */
export async function timedRead(dev: string, blockNo: number, tmp: string): Promise<{ ok: boolean; ms: number; error?: string }> {
  const t0 = Date.now();
  try {
    await readBlock(dev, blockNo, tmp);
    return { ok: true, ms: Date.now() - t0 };
  } catch (err) {
    return { ok: false, ms: Date.now() - t0, error: (err as Error).message };
  }
}
