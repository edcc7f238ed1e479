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
import { type ForwardCallbacks, ForwardHandler, rawHeader } from '../proxy/forward.ts';
import { EventIdSigner, isEventStream } from './events.ts';
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

/** How the caller's ids are signed on one exchange of an MCP route. */
export interface McpSigning {
  /** The id the caller receives for an upstream session id. */
  readonly session: (id: string) => string;
  /** The id the caller receives for an SSE event id on `session` (the upstream's own id, or `null`). */
  readonly event: (session: string | null, id: string) => string;
  /** The upstream session the request named, if any. */
  readonly requestSession: string | undefined;
}

/**
 * Signs the upstream's session id for the caller before the head reaches it, and the event ids
 * of an event stream as they pass (see `events.ts`).
 */
export class SessionForwardHandler extends ForwardHandler {
  readonly #sign: McpSigning;
  readonly #ownCredential: boolean;
  #events: EventIdSigner | undefined;

  constructor(res: ServerResponse, cb: ForwardCallbacks, extra: readonly string[], sign: McpSigning, ownCredential = false) {
    super(res, cb, extra, ownCredential);
    this.#sign = sign;
    this.#ownCredential = ownCredential;
  }

  override onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    // A 401 to the gateway's own credential is refused whole (no head reaches the caller).
    if (status < 200 || (status === 401 && this.#ownCredential)) return super.onHeaders(status, raw, resume);
    const head = signedHead(raw, this.#sign.session);
    if (head === undefined) {
      this.abort(new UpstreamSessionInvalid('the upstream sent an invalid Mcp-Session-Id'));
      return false;
    }
    // An upstream compressing anyway (it was asked for identity): its ids cannot be read, so they
    // pass unsigned (a resume from one is then refused), and its bytes are never rewritten.
    const encoding = rawHeader(raw, 'content-encoding');
    if (
      isEventStream(rawHeader(raw, 'content-type') ?? undefined) &&
      (encoding === undefined || encoding?.trim().toLowerCase() === 'identity')
    ) {
      // The stream's events belong to the session the response opens, or else the one the request named.
      const session = rawHeader(raw, 'mcp-session-id') ?? this.#sign.requestSession ?? null;
      const event = this.#sign.event;
      this.#events = new EventIdSigner((id) => event(session, id));
    }
    return super.onHeaders(status, head, resume);
  }

  override onData(chunk: Buffer): boolean {
    if (this.#events === undefined) return super.onData(chunk);
    const out = this.#events.push(chunk);
    return out.length === 0 ? true : super.onData(out);
  }

  override onComplete(): void {
    const rest = this.#events?.end();
    if (rest !== undefined && rest.length > 0) super.onData(rest);
    super.onComplete();
  }
}
