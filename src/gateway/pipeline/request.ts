/**
 * What every pipeline stage sees of a request, whichever way it arrived (proxied HTTP, a
 * WebSocket upgrade, or a forward-auth check from nginx, Traefik or Envoy).
 *
 * @module
 */
import type { HeaderBag } from '../../core/verify/extract.ts';

export interface GatewayRequest {
  /** Upper-case method. */
  readonly method: string;
  /** Lower-case host without port. */
  readonly host: string;
  /** Normalized path (see `normalizeTarget`). */
  readonly path: string;
  /** Query to forward (`''` or `?…`), `access_token` removed. */
  readonly query: string;
  /**
   * The absolute URL of the request at the gateway (`absoluteUrl`: `server.public_url`, a trusted
   * proxy's, or the gateway's own; never the caller's Host), or, for a forward-auth check, the URL
   * the proxy describes: the verifier compares a DPoP proof's `htu` with it and reads query tokens
   * from it.
   */
  readonly url: string;
  /** Inbound headers, duplicates visible where they matter (Authorization, DPoP). */
  readonly headers: HeaderBag;
  /** Caller address (or the trusted proxy's `X-Forwarded-For` first hop). */
  readonly remoteAddress: string;
}
