/**
 * Remembered consent (`authorization.remember_consent`, off by default), as Auth0's user grants
 * and Ory Hydra's `remember`/`remember_for`: an approval on the consent page is kept for the
 * person and the client, and a later authorization request that asks for no more is approved
 * without the page until it expires.
 *
 * "No more" is what the consent page's own answer checks for a client that changed since the page
 * was shown, applied to the remembered approval: the request, re-read against the client as it is
 * now, must go to the same redirect URI and ask for a subset of the approved scopes and resources;
 * and the client's registration must be the one the person approved (its fingerprint). What the
 * approval meant is bound too: the subject's identity source (a subject is unique only within it)
 * and the approved scopes' expansion under the scope catalogue. OIDC Core §3.1.2.1:
 * `prompt=consent` always shows the page, and so does a request whose client nothing proves (a
 * public client on a loopback redirect URI, RFC 8252 §8.6) or, unless the operator opts in, one
 * from a dynamically registered client. Revocations forget (the store's `revokeGrants`), so a
 * revoked delegation never comes back through a skipped page.
 *
 * @module
 */
import type { ResolvedTokenServiceConfig } from '../config/token-service-schema.ts';
import type { ScopeModel } from '../core/scopes.ts';
import type { RevocationCheck } from '../core/verify/revocation.ts';
import type { ClientRecord, RememberedConsentRecord, Store } from '../store/contract.ts';
import type { AuthorizationRequest } from './authorize.ts';
import { DYNAMIC_CLIENT_ID_PREFIX } from './clients.ts';
import type { BaseContext } from './context.ts';
import { isLoopbackRedirectUri, matchRedirectUri } from './redirect-uris.ts';
import { loginSessionScope } from './revoke.ts';
import { sha256 } from './secrets.ts';

export interface RememberedConsentContext extends BaseContext {
  readonly issuer: string;
  readonly config: Pick<ResolvedTokenServiceConfig, 'authorization'>;
  readonly store: Pick<Store, 'rememberConsent' | 'getRememberedConsent'>;
  readonly revocations: Pick<RevocationCheck, 'isRevoked'>;
  readonly scopes: ScopeModel;
}

/** The person approving, as the authenticator says: the subject and where subjects come from. */
export interface ApprovingPerson {
  readonly subject: string;
  /** The authenticator's `source`: the same subject from another source may be another person. */
  readonly source: string;
  /**
   * When the person was checked for this request (epoch seconds, taken before the login-session
   * revocation check): the remembered consent is dated then, not when it is written, so a
   * `tessera revoke --subject` landing between that check and the write voids it whatever second
   * the write falls in.
   */
  readonly checkedAt?: number;
  /**
   * When the person's login session began (the authenticator's `authenticatedAt`), for an
   * authenticator that keeps one: the code is dated then, so a subject revocation from that second
   * on refuses its redemption, also when this instance had not read the revocation when it approved.
   */
  readonly authenticatedAt?: number;
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
      // Appended only when set, so clients registered before it existed keep their fingerprint.
      ...(r.secretMethod !== null ? [r.secretMethod] : []),
      // Likewise: the pages the client's app may run from.
      ...(r.allowedOrigins.length > 0 ? [r.allowedOrigins] : []),
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

/**
 * Whether an approval of this request may be remembered or answer a later one at all: remembering
 * is on, the client's identity is proven, and the client was not registered by just anyone (RFC
 * 7591) unless `remember_consent_dynamic_clients`. Anyone may register a client with any name and
 * redirect URI, so the page, with its name, id and redirect host, is the person's only look at
 * what a dynamic client is; a page skipped for it is a request nobody saw (RFC 8252 §8.6, the MCP
 * security best practices' consent per dynamically registered client).
 */
function rememberable(ctx: RememberedConsentContext, request: AuthorizationRequest): boolean {
  const az = ctx.config.authorization;
  if (az.remember_consent <= 0 || identityUnproven(request)) return false;
  return !request.client.id.startsWith(DYNAMIC_CLIENT_ID_PREFIX) || az.remember_consent_dynamic_clients;
}

/**
 * A digest of what `scopes` grant now: their effective expansion under the scope catalogue
 * (inheritance and wildcards), sorted. An operator's edit that makes an approved scope imply more
 * changes it, and the wider meaning is asked about again.
 */
export function scopesDigest(model: ScopeModel, scopes: readonly string[]): string {
  const effective = model.expand([...scopes].sort());
  return sha256(JSON.stringify([effective.list, [...effective.wildcards].sort()]));
}

/** OIDC Core §3.1.2.1: `prompt=consent` asks for the page whatever was approved before. */
export function forcesConsent(params: URLSearchParams): boolean {
  return params.getAll('prompt').some((p) => p.split(' ').includes('consent'));
}

/** Keep the person's approval of `request` on the consent page (a no-op when remembering is off). */
export async function rememberApproval(
  ctx: RememberedConsentContext,
  request: AuthorizationRequest,
  person: ApprovingPerson,
  approvalHash: string,
): Promise<void> {
  if (!rememberable(ctx, request)) return;
  const now = ctx.now();
  await ctx.store.rememberConsent({
    subject: person.subject,
    clientId: request.client.id,
    issuer: ctx.issuer,
    identitySource: person.source,
    scopes: request.scopes,
    scopesDigest: scopesDigest(ctx.scopes, request.scopes),
    audiences: request.audiences,
    redirectUri: request.redirectUri,
    clientFingerprint: clientFingerprint(request.client.record),
    approvalHash,
    createdAt: Math.min(person.checkedAt ?? now, now),
    expiresAt: now + ctx.config.authorization.remember_consent,
  });
}

/**
 * The remembered approval that covers `request` by `person`, or `undefined` when the page must be
 * shown: remembering is off, `prompt=consent`, a public client redirecting to a loopback address,
 * a dynamically registered client (unless `remember_consent_dynamic_clients`), nothing remembered
 * (or expired, or forgotten), the subject now from another identity source, an approved scope
 * that means more now, the client changed or is disabled, another redirect URI, or more scopes or
 * resources than approved.
 */
export async function rememberedApproval(
  ctx: RememberedConsentContext,
  request: AuthorizationRequest,
  person: ApprovingPerson,
  params: URLSearchParams,
): Promise<RememberedConsentRecord | undefined> {
  if (!rememberable(ctx, request) || forcesConsent(params)) return undefined;
  const client = request.client;
  if (client.record.disabled) return undefined;
  const subject = person.subject;
  const remembered = await ctx.store.getRememberedConsent(subject, client.id, ctx.now());
  if (remembered === undefined || remembered.issuer !== ctx.issuer) return undefined;
  // Another provider, subject claim or header (or trusted_header ↔ oidc): the same subject may be
  // someone else, who approved nothing.
  if (remembered.identitySource !== person.source) return undefined;
  // The approval was of what the scopes meant then, not of their names.
  if (remembered.scopesDigest !== scopesDigest(ctx.scopes, remembered.scopes)) return undefined;
  // A revocation of the subject (or of the client) forgets its consents in its transaction, but an
  // approval racing it can write one after: like a login session, a consent from no later than the
  // revocation's second approves nothing.
  if (
    ctx.revocations.isRevoked({
      issuer: loginSessionScope(ctx.issuer),
      subject,
      clientId: client.id,
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
