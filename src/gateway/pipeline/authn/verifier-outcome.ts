/**
 * Shared by the verifier-backed authenticators: read the presented token cheaply (to decide
 * responsibility) and turn a verifier result into an outcome.
 *
 * @module
 */

import { queryAccessTokens, readHeader } from '../../../core/verify/extract.ts';
import type { VerifyResult } from '../../../core/verify/verifier.ts';
import type { GatewayRequest } from '../request.ts';
import type { AuthnOutcome } from './authenticator.ts';

/**
 * The token in a single `Authorization: Bearer|DPoP` header, else the one `access_token` of the
 * query (RFC 6750 §2.3, where `transport.query` lets the verifier read it: browser WebSocket
 * clients), or `undefined` when there is none or the header is unusual (the verifier then reports
 * the precise transport error).
 */
export function peekToken(request: GatewayRequest): string | undefined {
  const v = readHeader(request.headers, 'authorization');
  if (v === undefined) return queryToken(request.url);
  if (typeof v !== 'string') return undefined;
  const sp = v.indexOf(' ');
  if (sp !== 6 && sp !== 4) return undefined;
  const scheme = v.slice(0, sp).toLowerCase();
  if (scheme !== 'bearer' && scheme !== 'dpop') return undefined;
  return v.slice(sp + 1).trim();
}

/** The one `access_token` of `url`'s query, as the verifier reads it; `undefined` when there is none or several. */
function queryToken(url: string): string | undefined {
  const all = queryAccessTokens(url);
  return all.length === 1 ? all[0] : undefined;
}

/**
 * A JWS compact serialization: exactly two dots, and a header segment whose first byte is `{`
 * (base64url `e` then one of `w`-`z`, `0`-`9`, `-`, `_`: every JOSE library writes the header
 * without leading whitespace). Opaque tokens of three dot-separated parts (PASETO's `v4.local.…`)
 * are left to the route's next strategy (`[jwt, introspection]`).
 */
export function looksLikeJws(token: string): boolean {
  if (token.charCodeAt(0) !== 0x65) return false;
  const c = token.charCodeAt(1);
  if (!((c >= 0x77 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f)) return false;
  const a = token.indexOf('.');
  if (a <= 0) return false;
  const b = token.indexOf('.', a + 1);
  return b > a + 1 && token.indexOf('.', b + 1) < 0;
}

export function outcomeOf(result: VerifyResult): AuthnOutcome {
  if (result.ok)
    return result.dpopNonce === undefined
      ? { ok: true, principal: result.principal }
      : { ok: true, principal: result.principal, dpopNonce: result.dpopNonce };
  return result.principal ? { ok: false, error: result.error, principal: result.principal } : { ok: false, error: result.error };
}
