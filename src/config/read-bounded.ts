/**
 * Read an open file descriptor up to a bound, for files an operator names (the configuration, a
 * JWKS file): never more than `max + 1` bytes, so a file larger than allowed, or one that never
 * ends (`/dev/zero`, a pipe), is known to be too large without being read whole.
 *
 * @module
 */
import { readSync } from 'node:fs';

/**
 * The first bytes of `fd`, at most `max + 1` of them: a result longer than `max` means the file
 * holds more than `max` bytes.
 */
export function readBounded(fd: number, max: number): Buffer {
  const buffer = Buffer.alloc(max + 1);
  let length = 0;
  while (length < buffer.length) {
    const n = readSync(fd, buffer, length, buffer.length - length, null);
    if (n === 0) break;
    length += n;
  }
  return buffer.subarray(0, length);
}
