/** Time-ordered ids: UUIDv7 (RFC 9562 §5.7), so ids sort by creation time and index inserts append. */
import { randomFillSync } from 'node:crypto';

let lastMs = -1;
let seq = 0;
// Random bytes are drawn in blocks: one getrandom call per 256 ids instead of one per id.
const pool = Buffer.alloc(10 * 256);
let poolOffset = pool.length;
const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
// The 48-bit time field formatted once per millisecond: ids made in the same millisecond share it.
let prefixMs = -1;
let prefix = '';

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
  if (poolOffset === pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const r = poolOffset;
  poolOffset += 10;
  if (ms !== prefixMs) {
    const t = ms.toString(16).padStart(12, '0');
    prefix = `${t.slice(0, 8)}-${t.slice(8, 12)}-7`;
    prefixMs = ms;
  }
  const h = (i: number) => HEX[pool[r + i] as number] as string;
  const variant = HEX[((pool[r + 2] as number) & 0x3f) | 0x80] as string;
  return `${prefix}${HEX[seq >> 8]?.slice(1)}${HEX[seq & 0xff]}-${variant}${h(3)}-${h(4)}${h(5)}${h(6)}${h(7)}${h(8)}${h(9)}`;
}

/**
 * The lowest id {@link uuidv7} can give an event of time `ms` or later (its 48-bit time prefix),
 * to bound a query by id: an id's time is never before the time it was made for.
 */
export function idFloor(ms: number): string {
  const t = Math.max(0, Math.floor(ms)).toString(16).padStart(12, '0');
  return `${t.slice(0, 8)}-${t.slice(8)}`;
}
