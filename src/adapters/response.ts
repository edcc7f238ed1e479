/**
 * The HTTP answer to a refused request, shared by every adapter: status, `WWW-Authenticate`
 * (for 400/401/403, RFC 6750 §3), `DPoP-Nonce`, `Retry-After`, and a JSON body holding only the
 * RFC error and its fixed description.
 */
import type { TesseraError } from '../core/errors.ts';

export interface DenyResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Render a refusal. `challenges` is `verifier.challenges`. */
export function denyResponse(error: TesseraError, challenges: (e?: TesseraError) => string[]): DenyResponse {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store' };
  if (error.status === 400 || error.status === 401 || error.status === 403) {
    // A route without a verifier (a public gateway route) has no challenge: no header, not an empty one.
    const challenge = challenges(error.code === 'credentials_missing' ? undefined : error).join(', ');
    if (challenge !== '') headers['www-authenticate'] = challenge;
  }
  if (error.details.dpopNonce !== undefined) headers['dpop-nonce'] = error.details.dpopNonce;
  if (error.details.retryAfter !== undefined) headers['retry-after'] = String(error.details.retryAfter);
  return { status: error.status, headers, body: JSON.stringify(error.toJSON()) };
}
