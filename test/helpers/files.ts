/** Small file helpers for data-path tests. */
import * as fs from "node:fs";

/** A sparse file of `sizeBytes` (default 16 MiB): a volume's bytes without allocating them. */
export function sparseFile(file: string, sizeBytes = 16 * 1024 * 1024): string {
  fs.writeFileSync(file, "");
  fs.truncateSync(file, sizeBytes);
  return file;
}

/** `length` bytes of `file` at `offset`. */
export function bytesAt(file: string, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const fd = fs.openSync(file, "r");
  try {
    fs.readSync(fd, buf, 0, length, offset);
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

/** Write `data` into `file` at `offset` (the file must exist). */
export function writeAt(file: string, offset: number, data: Buffer): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, data, 0, data.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}
