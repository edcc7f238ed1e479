/**
 * The person as told by the SSO proxy in front (oauth2-proxy's `X-Forwarded-User` and
 * `X-Forwarded-Email`, Pomerium, an ingress with external auth). Headers are just text any client
 * can send, so they are believed only when both hold:
 *
 * - the TCP peer is one of `allowed_peers` (the proxy's addresses), and
 * - the request carries the shared secret in `secret_header` (compared in constant time), so a
 *   process sharing the proxy's network, or a misrouted request that bypassed it, is not enough.
 *
 * The proxy must also strip these headers from what clients send (oauth2-proxy does for the
 * headers it sets). This is the simplest sound choice when an SSO proxy already guards the host;
 * without one, an upstream OIDC login is the implementation to add.
 *
 * @module
 */
import { hash, timingSafeEqual } from 'node:crypto';
import type { ConfigIssue } from '../core/errors.ts';
import { validIdentity } from '../core/identity.ts';
import { peerAllowed, peerList } from '../core/peers.ts';
import { sha256 } from '../issuer/secrets.ts';
import type { Authentication, Authenticator, PersonRequest } from './authenticator.ts';

export interface TrustedHeaderOptions {
  readonly user_header: string;
  readonly email_header: string;
  readonly subject_from: 'user' | 'email';
  readonly allowed_peers: readonly string[];
  readonly secret_header: string;
  readonly secret: string;
}

function header(headers: PersonRequest['headers'], name: string): string | undefined | null {
  const v = headers[name];
  if (v === undefined) return undefined;
  // Repeated: ambiguous, never guessed at. Node joins repeated custom headers with ", ", which the
  // identity pattern refuses (no spaces); an array would come from a header Node keeps separate.
  if (Array.isArray(v)) return null;
  return v;
}

export function createTrustedHeaderAuthenticator(options: TrustedHeaderOptions): Authenticator {
  const issues: ConfigIssue[] = [];
  const peers = peerList(options.allowed_peers, 'allowed_peers', issues);
  if (issues.length > 0) throw new TypeError(`trusted_header: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
  // Digests have one length, so the comparison takes the same time whatever was sent.
  const expected = hash('sha256', options.secret, 'buffer');
  // What names the subject: the header it is read from. The proxy's address and secret do not (a
  // new address or a rotated secret is the same proxy); a proxy now backed by another identity
  // provider behind the same header is beyond what Tessera can see (docs/token-service.md).
  const source = sha256(
    `tessera identity source v1\ntrusted_header\n${JSON.stringify([
      options.subject_from,
      options.subject_from === 'email' ? options.email_header : options.user_header,
    ])}`,
  );
  return {
    kind: 'trusted_header',
    source,
    authenticate(request): Authentication {
      if (!peerAllowed(peers, request.remoteAddress)) return { ok: false, reason: 'peer_not_trusted' };
      const secret = header(request.headers, options.secret_header);
      if (typeof secret !== 'string' || secret === '') return { ok: false, reason: 'proxy_secret_missing' };
      if (!timingSafeEqual(hash('sha256', secret, 'buffer'), expected)) return { ok: false, reason: 'proxy_secret_mismatch' };
      const user = header(request.headers, options.user_header);
      const email = header(request.headers, options.email_header);
      if (user === null || email === null) return { ok: false, reason: 'identity_invalid' };
      const subject = options.subject_from === 'email' ? email : user;
      if (subject === undefined || subject === '') return { ok: false, reason: 'identity_missing' };
      // Node decodes header bytes as latin1; an identity with characters outside it arrives mangled.
      if (!validIdentity(subject) || (email !== undefined && !validIdentity(email))) return { ok: false, reason: 'identity_invalid' };
      return { ok: true, subject, ...(email !== undefined && email !== '' ? { email } : {}) };
    },
  };
}
