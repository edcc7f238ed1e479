/** Time-ordered event ids: UUIDv7 (RFC 9562 §5.7), so ids sort by creation time. */
import { randomBytes } from 'node:crypto';

let lastMs = -1;
let seq = 0;

/**
 * A UUIDv7 for `ms` (default now). Within one millisecond a 12-bit counter in `rand_a` keeps ids
 * from one process strictly increasing.
 */
export function uuidv7(ms = Date.now()): string {
  if (ms <= lastMs) {
    seq++;
    if (seq > 0xfff) {
      lastMs++;
      seq = 0;
    }
    ms = lastMs;
  } else {
    lastMs = ms;
    seq = 0;
  }
  const b = randomBytes(16);
  b.writeUIntBE(ms, 0, 6);
  b[6] = 0x70 | (seq >> 8);
  b[7] = seq & 0xff;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
