/**
 * UUIDv7 (RFC 9562 §5.7) for audit event ids: 48-bit Unix milliseconds, then a 12-bit counter
 * seeded randomly each millisecond (§6.2 method 1) so ids from one process sort in creation
 * order, then 62 random bits.
 *
 * @module
 */
import { randomFillSync } from 'node:crypto';

const POOL = Buffer.alloc(4096);
let poolAt = POOL.length;
const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

let lastMs = -1;
let counter = 0;

function random(n: number): number {
  if (poolAt + n > POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  const at = poolAt;
  poolAt += n;
  return at;
}

/**
 * A UUIDv7 for `ms` (default now). Ids created in one process are strictly increasing as long as
 * the clock does not go backwards.
 *
 * @example
 * ```ts
 * uuidv7(); // '0192b0c4-6f4e-7a3c-9d2e-5b7f1a2c3d4e'
 * ```
 */
export function uuidv7(ms: number = Date.now()): string {
  if (ms > lastMs) {
    lastMs = ms;
    const r = random(2);
    counter = ((POOL[r] as number) << 4) | ((POOL[r + 1] as number) >> 4); // 12 bits, leaves room to count
    counter &= 0x7ff;
  } else {
    ms = lastMs;
    counter++;
    if (counter > 0xfff) {
      // 4096 ids in one millisecond: borrow the next millisecond rather than repeat.
      lastMs++;
      ms = lastMs;
      counter = 0;
    }
  }
  const r = random(8);
  const t = Math.floor(ms);
  const hi = Math.floor(t / 0x10000); // upper 32 bits of the 48-bit timestamp
  const lo = t % 0x10000;
  const b8 = ((POOL[r] as number) & 0x3f) | 0x80;
  return (
    hi.toString(16).padStart(8, '0') +
    '-' +
    lo.toString(16).padStart(4, '0') +
    '-' +
    (0x7000 | counter).toString(16) +
    '-' +
    HEX[b8] +
    HEX[POOL[r + 1] as number] +
    '-' +
    HEX[POOL[r + 2] as number] +
    HEX[POOL[r + 3] as number] +
    HEX[POOL[r + 4] as number] +
    HEX[POOL[r + 5] as number] +
    HEX[POOL[r + 6] as number] +
    HEX[POOL[r + 7] as number]
  );
}
