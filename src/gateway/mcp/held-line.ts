/**
 * The start of an event-stream line that a rewriter holds back while it cannot yet tell whether the
 * line is one it rewrites (`id:` for {@link EventIdSigner}, `event:` / `data:` for
 * {@link EndpointSigner}): kept as the chunks it arrived in, joined only when read.
 *
 * @module
 */

export class HeldLine {
  #parts: Buffer[] = [];
  /** Bytes held. */
  size = 0;

  hold(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.#parts.push(bytes);
    this.size += bytes.length;
  }

  /** The bytes held, joined; still held. */
  peek(): Buffer {
    const held = this.#parts.length === 1 ? (this.#parts[0] as Buffer) : Buffer.concat(this.#parts);
    this.#parts = [held];
    return held;
  }

  /** The bytes held, joined; no longer held. */
  release(): Buffer {
    const held = this.#parts.length === 1 ? (this.#parts[0] as Buffer) : Buffer.concat(this.#parts);
    this.#parts = [];
    this.size = 0;
    return held;
  }
}
