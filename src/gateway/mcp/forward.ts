/**
 * The forwarder of MCP routes: the same streaming forwarder, reading `Mcp-Session-Id` from the
 * upstream's response head before it goes to the caller (so the session is bound before the
 * caller can use it).
 *
 * @module
 */
import type { ServerResponse } from 'node:http';
import { type ForwardCallbacks, ForwardHandler } from '../proxy/forward.ts';

// MCP Streamable HTTP: a session id is visible ASCII (0x21-0x7E).
const SESSION_ID = /^[\x21-\x7e]{1,512}$/;

/** The upstream's `Mcp-Session-Id`, when it sent one well-formed value. */
export function sessionIdOf(raw: readonly (Buffer | string)[]): string | undefined {
  let found: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = String(raw[i]);
    if (name.length !== 14 || name.toLowerCase() !== 'mcp-session-id') continue;
    if (found !== undefined) return undefined; // repeated: ambiguous
    found = String(raw[i + 1]);
  }
  return found !== undefined && SESSION_ID.test(found) ? found : undefined;
}

/** Reports the response status and session id to `onHead` before the head reaches the caller. */
export class SessionForwardHandler extends ForwardHandler {
  readonly #onHead: (status: number, sessionId: string | undefined) => void;

  constructor(
    res: ServerResponse,
    cb: ForwardCallbacks,
    extra: readonly string[],
    onHead: (status: number, sessionId: string | undefined) => void,
  ) {
    super(res, cb, extra);
    this.#onHead = onHead;
  }

  override onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    if (status >= 200) this.#onHead(status, sessionIdOf(raw));
    return super.onHeaders(status, raw, resume);
  }
}
