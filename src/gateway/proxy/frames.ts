/**
 * Just enough of RFC 6455 §5.2 to relay a WebSocket byte stream transparently (extensions and
 * subprotocols untouched) while knowing where frames end, so the gateway can insert its own close
 * frame between two frames when a token is revoked or expires.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';

/**
 * Follows frame boundaries in one direction of a WebSocket stream. It reads only frame headers
 * (2 to 14 bytes) and skips payloads by length.
 */
export class FrameBoundaries {
  /** Payload bytes left in the current frame. */
  #payload = 0;
  /** Bytes of a frame header seen so far (a header can be split across chunks). */
  #header: number[] = [];

  /** True between frames: a frame inserted now would not split another. */
  get atBoundary(): boolean {
    return this.#payload === 0 && this.#header.length === 0;
  }

  /**
   * Consume `chunk` from `offset`. With `stopAtBoundary`, stop at the first frame boundary reached
   * (possibly `offset` itself) and return its index; otherwise consume everything and return
   * `chunk.length`.
   */
  consume(chunk: Uint8Array, offset = 0, stopAtBoundary = false): number {
    let i = offset;
    const n = chunk.length;
    while (i < n) {
      if (stopAtBoundary && this.atBoundary) return i;
      if (this.#payload > 0) {
        const take = Math.min(this.#payload, n - i);
        this.#payload -= take;
        i += take;
        continue;
      }
      this.#header.push(chunk[i] as number);
      i++;
      const need = headerLength(this.#header);
      if (need !== undefined && this.#header.length === need) {
        this.#payload = payloadLength(this.#header);
        this.#header = [];
      }
    }
    return stopAtBoundary && !this.atBoundary ? -1 : i;
  }
}

/** Total header length once the first two (or enough) bytes are known. */
function headerLength(h: readonly number[]): number | undefined {
  if (h.length < 2) return undefined;
  const b1 = h[1] as number;
  const len7 = b1 & 0x7f;
  const masked = (b1 & 0x80) !== 0 ? 4 : 0;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + masked;
}

function payloadLength(h: readonly number[]): number {
  const len7 = (h[1] as number) & 0x7f;
  if (len7 < 126) return len7;
  if (len7 === 126) return ((h[2] as number) << 8) | (h[3] as number);
  let v = 0;
  for (let i = 2; i < 10; i++) v = v * 256 + (h[i] as number);
  return v;
}

/**
 * A close frame (opcode 0x8) with a status code and a short reason. Frames from a client to a
 * server must be masked (§5.3); frames from a server must not be.
 *
 * @example
 * ```ts
 * socket.write(closeFrame(1008, 'token revoked', false));
 * ```
 */
export function closeFrame(code: number, reason: string, mask: boolean): Buffer {
  const text = Buffer.from(reason, 'utf8').subarray(0, 123);
  const payload = Buffer.alloc(2 + text.length);
  payload.writeUInt16BE(code, 0);
  text.copy(payload, 2);
  const head = Buffer.from([0x88, (mask ? 0x80 : 0) | payload.length]);
  if (!mask) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (key[i & 3] as number);
  return Buffer.concat([head, key, payload]);
}
