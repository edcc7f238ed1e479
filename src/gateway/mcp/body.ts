/**
 * Reading a request body into memory with a bound, for the MCP routes that decide on it.
 *
 * @module
 */
import type { IncomingMessage } from 'node:http';

/** The body passed the limit; what was read so far is dropped. */
export const TOO_LARGE: unique symbol = Symbol('too large');

/**
 * Read `req`'s body, at most `limit` bytes. Resolves {@link TOO_LARGE} as soon as the limit is
 * passed (the rest is not read); rejects when the caller goes away before the end.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer | typeof TOO_LARGE> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total > limit) {
        cleanup();
        req.pause();
        resolve(TOO_LARGE);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total));
    };
    const onClose = () => {
      cleanup();
      reject(new Error('client closed'));
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onClose);
      req.off('close', onClose);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onClose);
    req.on('close', onClose);
  });
}
