/**
 * The authorization endpoint's decisions, without HTTP (RFC 6749 §4.1.1-§4.1.2, OAuth 2.1 §4.1,
 * RFC 7636, RFC 8707, RFC 9207, RFC 9449 §10): check an authorization request, and turn an
 * approved one into a single-use code bound to the client, the redirect URI, the PKCE challenge,
 * the scopes and the resources, and to a DPoP key when the request names one (`dpop_jkt`).
 *
 * The order of the checks matters: until the client and its redirect URI are known to be good, an
 * error is shown to the person and never sent to the redirect URI (an unchecked one would make the
 * server an open redirector, RFC 6749 §4.1.2.1, RFC 9700 §4.11); after that, errors go back to the
 * client on its redirect URI with `state` and `iss`.
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import type { ResolvedTokenServiceConfig } from '../config/token-service-schema.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import { isWildcard } from '../core/scopes.ts';
import type { Store } from '../store/contract.ts';
import { type ClientRegistry, type CompiledClient, DYNAMIC_CLIENT_ID_PREFIX } from './clients.ts';
import type { BaseContext } from './context.ts';
import { TOKEN_EXCHANGE } from './grants/exchange.ts';
import { confineAdminScope, covers, param, parseScope, targetsFor } from './params.ts';
import { isS256Challenge } from './pkce.ts';
import { isLoopbackRedirectUri, matchRedirectUri, redirectUriProblem } from './redirect-uris.ts';
import type { ApprovingPerson } from './remembered-consent.ts';
import { randomSecret, sha256, tokenHash } from './secrets.ts';

/** Prefix of authorization codes, so a leaked one is recognisable. */
export const AUTHORIZATION_CODE_PREFIX = 'tac_';
/** Longest `state` echoed back; longer ones are refused rather than truncated. */
const STATE_MAX = 1024;

/** A checked authorization request: everything the consent page shows and the code binds. */
export interface AuthorizationRequest {
  readonly client: CompiledClient;
  /** The redirect URI to send the result to (the requested one, or the only one registered). */
  readonly redirectUri: string;
  /** Whether the request named it (then the token request must repeat it, RFC 6749 §4.1.3). */
  readonly redirectUriGiven: boolean;
  readonly state: string | undefined;
  readonly scopes: readonly string[];
  readonly audiences: readonly string[];
  readonly codeChallenge: string;
  /**
   * RFC 9449 §10 `dpop_jkt`: the RFC 7638 thumbprint of the DPoP key the code is bound to (it
   * redeems only with a proof of that key), or `undefined` when the request named none.
   */
  readonly dpopJkt: string | undefined;
  /** OIDC Core §3.1.2.1 `prompt`: its values (`none` alone, or any of `login`, `consent`, others ignored). */
  readonly prompt: ReadonlySet<string>;
  /** OIDC Core §3.1.2.1 `max_age`, seconds: a sign-in older than this must be made afresh. */
  readonly maxAge: number | undefined;
  /**
   * Whether an error found from here on goes back to the redirect URI (`false` for a dynamically
   * registered client's non-loopback one: shown as a page, RFC 9700 §4.11.2).
   */
  readonly errorsToClient: boolean;
}

/** Where an authorization error goes: to the person (no trusted redirect URI yet) or back to the client. */
export type AuthorizeOutcome =
  | { readonly ok: true; readonly request: AuthorizationRequest }
  | {
      readonly ok: false;
      readonly error: OAuthError;
      readonly redirect: { readonly uri: string; readonly state: string | undefined } | undefined;
      /** The client, once it and the redirect URI are known to be its own (for the audit trail). */
      readonly clientId?: string;
    };

export interface AuthorizeContext extends BaseContext {
  readonly issuer: string;
  readonly config: Pick<ResolvedTokenServiceConfig, 'authorization' | 'admin' | 'adminAudience'>;
  readonly store: Pick<Store, 'createAuthorizationCode'>;
  readonly clients: Pick<ClientRegistry, 'get'>;
}

/** The one value of a parameter that must not repeat, `null` when repeated, `undefined` when absent or empty. */
function single(params: URLSearchParams, name: string): string | undefined | null {
  const all = params.getAll(name);
  if (all.length > 1) return null;
  return all[0] === '' ? undefined : all[0];
}

/** Check an authorization request's query (or form) parameters. */
export async function checkAuthorizationRequest(ctx: AuthorizeContext, params: URLSearchParams): Promise<AuthorizeOutcome> {
  const page = (code: ConstructorParameters<typeof OAuthError>[0], clientId?: string): AuthorizeOutcome => ({
    ok: false,
    error: new OAuthError(code),
    redirect: undefined,
    ...(clientId !== undefined ? { clientId } : {}),
  });
  const clientId = single(params, 'client_id');
  if (typeof clientId !== 'string') return page('authorize_client_invalid');
  const client = await ctx.clients.get(clientId);
  if (client === undefined || client.record.disabled || !client.grantTypes.has('authorization_code')) {
    return page('authorize_client_invalid');
  }
  const requested = single(params, 'redirect_uri');
  if (requested === null) return page('authorize_redirect_uri_invalid');
  const registered = client.record.redirectUris;
  // OAuth 2.1 §4.1.1: may be omitted only when exactly one is registered.
  const redirectUri =
    requested === undefined ? (registered.length === 1 ? registered[0] : undefined) : matchRedirectUri(registered, requested);
  // One registered before the rules of redirectUriProblem tightened must not receive codes either.
  if (redirectUri === undefined || redirectUriProblem(redirectUri) !== undefined) return page('authorize_redirect_uri_invalid');

  // From here on the redirect URI is the client's own: errors go back to it, with no page in
  // between. Except for a dynamically registered client's https URI: anyone may have registered
  // it, and sending the browser there at once would make this server an open redirector for
  // whoever did (RFC 9700 §4.11.2: redirect automatically only to URIs the server trusts). Its
  // errors are shown to the person; a loopback URI is their own machine.
  const state = single(params, 'state');
  const trusted = !client.id.startsWith(DYNAMIC_CLIENT_ID_PREFIX) || isLoopbackRedirectUri(redirectUri);
  const back = (code: ConstructorParameters<typeof OAuthError>[0]): AuthorizeOutcome => (trusted ? toClient(code) : page(code, client.id));
  const toClient = (code: ConstructorParameters<typeof OAuthError>[0]): AuthorizeOutcome => ({
    ok: false,
    error: new OAuthError(code),
    redirect: { uri: redirectUri, state: typeof state === 'string' && state.length <= STATE_MAX ? state : undefined },
    clientId: client.id,
  });
  if (state === null || (state !== undefined && state.length > STATE_MAX)) return back('request_parameter_invalid');
  for (const name of [
    'response_type',
    'response_mode',
    'scope',
    'code_challenge',
    'code_challenge_method',
    'dpop_jkt',
    'prompt',
    'max_age',
  ]) {
    if (single(params, name) === null) return back('request_parameter_repeated');
  }
  // RFC 6749 §4.1.2.1: a missing parameter is invalid_request; only a value other than code is unsupported.
  const responseType = param(params, 'response_type');
  if (responseType === undefined) return back('request_parameter_missing');
  if (responseType !== 'code') return back('authorize_response_type_unsupported');
  // A client asking for form_post or fragment keeps the code out of URLs; answering in the query
  // anyway would put it there behind its back (node-oidc-provider refuses an unsupported mode too).
  const mode = param(params, 'response_mode');
  if (mode !== undefined && mode !== 'query') return back('authorize_response_mode_unsupported');
  // RFC 9101 (JAR) and RFC 9126 (PAR) are not supported: ignoring them would answer the bare
  // parameters while the client believes its signed or pushed ones apply (OIDC Core §6).
  if (params.has('request')) return back('authorize_request_object_unsupported');
  if (params.has('request_uri')) return back('authorize_request_uri_unsupported');
  // RFC 9449 §10: `dpop_jkt` binds the code to a DPoP key, so that it redeems only with a proof of
  // that key. A value that is no SHA-256 thumbprint could never match a proof's key: refused rather
  // than answered with a code nothing can redeem.
  const dpopJkt = param(params, 'dpop_jkt');
  if (dpopJkt !== undefined && !isJwkThumbprint(dpopJkt)) return back('authorize_dpop_jkt_invalid');
  // OIDC Core §3.1.2.1: `none` must stand alone (it asks for no page, the others ask for one).
  const prompt = new Set((param(params, 'prompt') ?? '').split(' ').filter((v) => v !== ''));
  if (prompt.has('none') && prompt.size > 1) return back('authorize_prompt_invalid');
  const maxAgeText = param(params, 'max_age');
  if (maxAgeText !== undefined && !/^\d{1,10}$/.test(maxAgeText)) return back('authorize_max_age_invalid');
  const challenge = param(params, 'code_challenge');
  if (challenge === undefined) return back('pkce_challenge_missing');
  // RFC 7636 §4.3: an absent method means plain, which is refused like an explicit one.
  if (param(params, 'code_challenge_method') !== 'S256') return back('pkce_method_unsupported');
  if (!isS256Challenge(challenge)) return back('pkce_challenge_malformed');
  let scopes: readonly string[];
  let audiences: readonly string[];
  try {
    const wanted = parseScope(param(params, 'scope'));
    // RFC 6749 §3.3: without a scope, the client's registered (concrete) scopes are the default;
    // beyond them, the request is narrowed to them (the server "MAY partially ignore" it; the
    // consent page and the token response name what is granted). MCP clients ask for every scope
    // the resource's metadata lists. Nothing left is refused.
    if (wanted) {
      scopes = wanted.filter((s) => covers(client.scopes, s));
      if (scopes.length === 0) throw new OAuthError('scope_not_allowed');
    } else scopes = client.record.scopes.filter((s) => !isWildcard(s));
    const admin = ctx.config;
    // What is asked for by name: the request's scopes the client holds.
    const named = wanted ? scopes : undefined;
    audiences = targetsFor(params, client.audiences, named, admin);
    scopes = confineAdminScope(scopes, audiences, named, admin);
  } catch (e) {
    if (e instanceof OAuthError) return back(e.code);
    throw e;
  }
  return {
    ok: true,
    request: {
      client,
      redirectUri,
      redirectUriGiven: requested !== undefined,
      state,
      scopes,
      audiences,
      codeChallenge: challenge,
      dpopJkt,
      prompt,
      maxAge: maxAgeText === undefined ? undefined : Number(maxAgeText),
      errorsToClient: trusted,
    },
  };
}

/**
 * What a client registered to re-target (`--allow-retarget`, `exchange_retarget_audiences`) may do
 * with a token approved for `request`: exchange it (RFC 8693) for one to any audience of its own,
 * not only to those approved. Those other audiences, for the consent page to name (empty when it
 * has none besides); `undefined` when it cannot re-target (the flag unset, or no token-exchange grant).
 */
export function retargetAudiences(request: AuthorizationRequest): readonly string[] | undefined {
  const client = request.client;
  if (!client.record.exchangeRetargetAudiences || !client.grantTypes.has(TOKEN_EXCHANGE)) return undefined;
  return client.record.audiences.filter((a) => !request.audiences.includes(a));
}

/**
 * An RFC 7638 SHA-256 JWK thumbprint as `dpop_jkt` carries it: the unpadded base64url of 32 bytes,
 * in its one spelling (43 characters, the last one's unused bits zero), as a proof's key
 * thumbprint is computed.
 */
function isJwkThumbprint(value: string): boolean {
  if (!/^[A-Za-z0-9_-]{43}$/.test(value)) return false;
  return Buffer.from(value, 'base64url').toString('base64url') === value;
}

/**
 * Issue the code for an approved request: 256 random bits, stored only as its SHA-256, valid for
 * `authorization.code_ttl` (at most 60 s), dated by what the approval rests on (`approvalSince`:
 * the person's login session, or the check for this request when the authenticator keeps none, or
 * the remembered consent when earlier; a subject revocation from then on refuses the redemption,
 * see `Store.redeemAuthorizationCode`), and audited (`authorization.approved`, by its hash,
 * with how it was approved: `detail.method` is `consent_page`, or `remembered` with
 * `detail.remembered_from`, the hash of the code the consent page approval issued; and
 * `detail.dpop_jkt`, the thumbprint of the DPoP key the code is bound to, when it is).
 */
export async function issueAuthorizationCode(
  ctx: AuthorizeContext,
  request: AuthorizationRequest,
  person: Pick<ApprovingPerson, 'subject' | 'checkedAt' | 'authenticatedAt'>,
  extra: IssueExtra = {},
): Promise<string> {
  const issued = await storeAuthorizationCode(ctx, request, person, extra);
  issued.audit();
  return issued.code;
}

/** What {@link issueAuthorizationCode} records of the request besides the approval. */
type IssueExtra = {
  readonly requestId?: string | undefined;
  readonly remoteAddr?: string | undefined;
  /**
   * Approved from a remembered consent: the `token_hash` of the code its page approval issued,
   * and when that consent was given.
   */
  readonly remembered?: { readonly from: string; readonly since: number } | undefined;
};

/**
 * {@link issueAuthorizationCode} in two steps: the code stored, and `audit()`, which emits its
 * `authorization.approved`. For an approval with more work after the code's write that can fail
 * (remembering it): the event is emitted once all of it has succeeded, so a failure part-way
 * leaves the trail with its `authorization.denied` alone, not an approval of a code nobody received.
 */
export async function storeAuthorizationCode(
  ctx: AuthorizeContext,
  request: AuthorizationRequest,
  person: Pick<ApprovingPerson, 'subject' | 'checkedAt' | 'authenticatedAt'>,
  extra: IssueExtra = {},
): Promise<{ readonly code: string; audit(): void }> {
  const code = randomSecret(AUTHORIZATION_CODE_PREFIX);
  const now = ctx.now();
  const subject = person.subject;
  await ctx.store.createAuthorizationCode({
    hash: sha256(code),
    clientId: request.client.id,
    redirectUri: request.redirectUriGiven ? request.redirectUri : null,
    codeChallenge: request.codeChallenge,
    subject,
    issuer: ctx.issuer,
    scopes: request.scopes,
    audiences: request.audiences,
    createdAt: now,
    expiresAt: now + ctx.config.authorization.code_ttl,
    consumedAt: null,
    grantId: null,
    jkt: request.dpopJkt ?? null,
    approvalSince: Math.min(person.authenticatedAt ?? person.checkedAt ?? now, extra.remembered?.since ?? now, now),
  });
  const audit = () =>
    ctx.emit({
      kind: 'authorization.approved',
      reason: 'ok',
      subject,
      client_id: request.client.id,
      token_hash: tokenHash(code),
      scopes_granted: request.scopes,
      ...(extra.requestId !== undefined ? { request_id: extra.requestId } : {}),
      ...(extra.remoteAddr !== undefined ? { remote_addr: extra.remoteAddr } : {}),
      detail: {
        aud: [...request.audiences],
        redirect_uri: request.redirectUri,
        ...(request.dpopJkt !== undefined ? { dpop_jkt: request.dpopJkt } : {}),
        ...(extra.remembered === undefined ? { method: 'consent_page' } : { method: 'remembered', remembered_from: extra.remembered.from }),
      },
    });
  return { code, audit };
}

/**
 * The redirect that answers an authorization request: `code` or `error`, with `state` and, per
 * RFC 9207, `iss`, added to the redirect URI's own query.
 */
export function authorizationResponseUrl(
  redirectUri: string,
  issuer: string,
  result: { readonly code: string } | { readonly error: OAuthError },
  state: string | undefined,
): string {
  const u = new URL(redirectUri);
  if ('code' in result) u.searchParams.append('code', result.code);
  else {
    u.searchParams.append('error', result.error.error);
    u.searchParams.append('error_description', result.error.description);
  }
  if (state !== undefined) u.searchParams.append('state', state);
  u.searchParams.append('iss', issuer);
  return u.href;
}
