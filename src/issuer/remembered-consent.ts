/**
 * Remembered consent (`authorization.remember_consent`, off by default), as Auth0's user grants
 * and Ory Hydra's `remember`/`remember_for`: an approval on the consent page is kept for the
 * person and the client, and a later authorization request that asks for no more is approved
 * without the page until it expires.
 *
 * "No more" is what the consent page's own answer checks for a client that changed since the page
 * was shown, applied to the remembered approval: the request, re-read against the client as it is
 * now, must go to the same redirect URI and ask for a subset of the approved scopes and resources;
 * and the client's registration must be the one the person approved (its fingerprint). OIDC Core
 * §3.1.2.1: `prompt=consent` always shows the page, and so does a request whose client nothing
 * proves (a public client on a loopback redirect URI, RFC 8252 §8.6). Revocations forget (the store's
 * `revokeGrants`), so a revoked delegation never comes back through a skipped page.
 *
 * @module
 */
import type { ResolvedTokenServiceConfig } from '../config/token-service-schema.ts';
import type { RevocationCheck } from '../core/verify/revocation.ts';
import type { ClientRecord, RememberedConsentRecord, Store } from '../store/contract.ts';
import type { AuthorizationRequest } from './authorize.ts';
import type { BaseContext } from './context.ts';
import { isLoopbackRedirectUri, matchRedirectUri } from './redirect-uris.ts';
import { loginSessionScope } from './revoke.ts';
import { sha256 } from './secrets.ts';

export interface RememberedConsentContext extends BaseContext {
  readonly issuer: string;
  readonly config: Pick<ResolvedTokenServiceConfig, 'authorization'>;
  readonly store: Pick<Store, 'rememberConsent' | 'getRememberedConsent'>;
  readonly revocations: Pick<RevocationCheck, 'isRevoked'>;
}

/**
 * A fingerprint of what a client is: everything registered about it but whether it is enabled and
 * when it last changed (disabling it forgets its consents anyway). A client changed in any way
 * since the approval (re-registered under the same id, given more scopes, audiences or redirect
 * URIs, renamed, new credentials) is asked about again.
 */
export function clientFingerprint(r: ClientRecord): string {
  return sha256(
    JSON.stringify([
      r.id,
      r.authMethod,
      r.secretHash,
      r.jwks,
      r.jwksUri,
      r.scopes,
      r.audiences,
      r.grantTypes,
      r.accessTokenTtl,
      r.exchangeRetargetAudiences,
      r.redirectUris,
      r.name,
      r.createdAt,
    ]),
  );
}

/**
 * Whether nothing but the person could tell this client from another: a public client (no
 * authentication at the token endpoint) sending the code to a loopback address, where any local
 * process can listen, on any port (RFC 8252 §7.3), and redeem it with its own PKCE verifier. Such a
 * request is never approved without the page, however often the client was approved before
 * (RFC 8252 §8.6, client impersonation), and its approval is not remembered.
 */
function identityUnproven(request: AuthorizationRequest): boolean {
  return request.client.record.authMethod === 'none' && isLoopbackRedirectUri(request.redirectUri);
}

/** OIDC Core §3.1.2.1: `prompt=consent` asks for the page whatever was approved before. */
export function forcesConsent(params: URLSearchParams): boolean {
  return params.getAll('prompt').some((p) => p.split(' ').includes('consent'));
}

/** Keep the person's approval of `request` on the consent page (a no-op when remembering is off). */
export async function rememberApproval(
  ctx: RememberedConsentContext,
  request: AuthorizationRequest,
  subject: string,
  approvalHash: string,
): Promise<void> {
  const ttl = ctx.config.authorization.remember_consent;
  if (ttl <= 0 || identityUnproven(request)) return;
  const now = ctx.now();
  await ctx.store.rememberConsent({
    subject,
    clientId: request.client.id,
    issuer: ctx.issuer,
    scopes: request.scopes,
    audiences: request.audiences,
    redirectUri: request.redirectUri,
    clientFingerprint: clientFingerprint(request.client.record),
    approvalHash,
    createdAt: now,
    expiresAt: now + ttl,
  });
}

/**
 * The remembered approval that covers `request` by `subject`, or `undefined` when the page must be
 * shown: remembering is off, `prompt=consent`, a public client redirecting to a loopback address,
 * nothing remembered (or expired, or forgotten), the client changed or is disabled, another
 * redirect URI, or more scopes or resources than approved.
 */
export async function rememberedApproval(
  ctx: RememberedConsentContext,
  request: AuthorizationRequest,
  subject: string,
  params: URLSearchParams,
): Promise<RememberedConsentRecord | undefined> {
  if (ctx.config.authorization.remember_consent <= 0 || forcesConsent(params) || identityUnproven(request)) return undefined;
  const client = request.client;
  if (client.record.disabled) return undefined;
  const remembered = await ctx.store.getRememberedConsent(subject, client.id, ctx.now());
  if (remembered === undefined || remembered.issuer !== ctx.issuer) return undefined;
  // A revocation of the subject forgets its consents in its transaction, but an approval racing it
  // can write one after: like a login session, a consent from no later than the revocation's second
  // approves nothing.
  if (
    ctx.revocations.isRevoked({
      issuer: loginSessionScope(ctx.issuer),
      subject,
      clientId: undefined,
      delegationId: undefined,
      tokenId: undefined,
      issuedAt: remembered.createdAt,
      expiresAt: Number.POSITIVE_INFINITY,
    })
  ) {
    return undefined;
  }
  if (remembered.clientFingerprint !== clientFingerprint(client.record)) return undefined;
  // The same redirect URI by the rule the request itself is matched with: a loopback IP literal's
  // port may differ (RFC 8252 §7.3, a native app listens on whatever port it is given).
  if (matchRedirectUri([remembered.redirectUri], request.redirectUri) === undefined) return undefined;
  const scopes = new Set(remembered.scopes);
  const audiences = new Set(remembered.audiences);
  if (!request.scopes.every((s) => scopes.has(s)) || !request.audiences.every((a) => audiences.has(a))) return undefined;
  return remembered;
}
