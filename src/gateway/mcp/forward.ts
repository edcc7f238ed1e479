/**
 * The forwarder of MCP routes: the same streaming forwarder, replacing the upstream's
 * `Mcp-Session-Id` in the response head with the id the caller receives (the session signed for
 * the caller, see `sessions.ts`) before the head goes out. An upstream session id that is not
 * visible ASCII, too long or repeated fails the exchange (502): it could not be signed, and
 * passing it on would let the caller see an id the gateway cannot check.
 *
 * @module
 */
import type { ServerResponse } from 'node:http';
import { type ForwardCallbacks, ForwardHandler } from '../proxy/forward.ts';
import { validSessionId } from './sessions.ts';

/** The upstream answered with a session id the gateway refuses to pass on. */
export class UpstreamSessionInvalid extends Error {
  override readonly name = 'UpstreamSessionInvalid';
  readonly code = 'mcp_upstream_session_invalid';
}

/**
 * The upstream's response head with its `Mcp-Session-Id` replaced by `sign(id)`: unchanged
 * without one, `undefined` when it is invalid or repeated.
 */
export function signedHead(raw: readonly Buffer[], sign: (id: string) => string): Buffer[] | undefined {
  let at = -1;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as Buffer;
    if (name.length !== 14 || name.toString('latin1').toLowerCase() !== 'mcp-session-id') continue;
    if (at >= 0) return undefined; // repeated: ambiguous
    at = i;
  }
  if (at < 0) return raw as Buffer[];
  const id = (raw[at + 1] as Buffer).toString('latin1');
  if (!validSessionId(id)) return undefined;
  const out = raw.slice();
  out[at + 1] = Buffer.from(sign(id), 'latin1');
  return out;
}

/** Signs the upstream's session id for the caller before the head reaches it. */
export class SessionForwardHandler extends ForwardHandler {
  readonly #sign: (id: string) => string;
  readonly #ownCredential: boolean;

  constructor(res: ServerResponse, cb: ForwardCallbacks, extra: readonly string[], sign: (id: string) => string, ownCredential = false) {
    super(res, cb, extra, ownCredential);
    this.#sign = sign;
    this.#ownCredential = ownCredential;
  }

  override onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    // A 401 to the gateway's own credential is refused whole (no head reaches the caller).
    if (status < 200 || (status === 401 && this.#ownCredential)) return super.onHeaders(status, raw, resume);
    const head = signedHead(raw, this.#sign);
    if (head === undefined) {
      this.abort(new UpstreamSessionInvalid('the upstream sent an invalid Mcp-Session-Id'));
      return false;
    }
    return super.onHeaders(status, head, resume);
  }
}
