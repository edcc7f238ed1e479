/**
 * The person as signed in at an upstream OpenID Connect provider (Google, Entra ID, Okta, Auth0,
 * Keycloak, Dex, …), Tessera being its relying party: authorization code flow with PKCE S256,
 * `state` and `nonce` (OIDC Core §3.1, RFC 9700 §2.1), the ID token verified with `jose` against
 * the provider's JWKS.
 *
 * Two cookies, both HttpOnly, SameSite=Lax, `__Host-` prefixed (Secure, Path=/, no Domain) when
 * the issuer is https, and MAC'd under keys derived from the master key:
 *
 * - the login state cookie (`tessera-login`), set when the browser is sent upstream: the random
 *   `state`, the authorization request to come back to and an expiry. The callback's `state` must
 *   equal the cookie's (a login started in another browser, i.e. login CSRF, fails), and each state
 *   is used once. The PKCE verifier and the nonce are MACs of the state, so nothing else is kept.
 * - the login session cookie (`tessera-session`), set after a verified ID token: a random session
 *   id, the subject, the e-mail (only one the provider verified), when the person signed in and an expiry (`session_ttl`), MAC'd together with the upstream's issuer, client_id,
 *   subject_claim and allowed_domains (a session outlives no change of them). It says who the person
 *   is to the authorization endpoint and nothing else: it is not a JWT, its key serves no other
 *   purpose, and no other endpoint reads it. Signing out records its id as ended in the store, so a
 *   copy of the cookie taken elsewhere signs no one in afterwards (checked by the authorization endpoint).
 *
 * The authorization request is carried in the MAC'd state cookie, never in a `return_to`
 * parameter: the callback can only send the browser back to this issuer's authorization endpoint.
 *
 * @module
 */
import { createHmac, hash, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
import { createRemoteJWKSet, customFetch, type JWTPayload, errors as joseErrors, jwtVerify } from 'jose';
import { validIdentity } from '../core/identity.ts';
import { ASYMMETRIC_ALGORITHMS } from '../core/jose/algorithms.ts';
import { STRICT_JSON_REFUSALS, type StrictJsonFault, strictJsonFault } from '../core/jose/json.ts';
import { printable } from '../core/printable.ts';
import { addressKey, TokenBucketLimiter } from '../core/ratelimit.ts';
import { sha256 } from '../issuer/secrets.ts';
import { readLimited } from '../jwks/remote.ts';
import type { Store } from '../store/contract.ts';
import {
  type Authentication,
  type Authenticator,
  type InteractiveLogin,
  LOGIN_COOKIES,
  type LoginCallbackOutcome,
  type LoginFailure,
  type LoginRedirect,
  type PersonRequest,
} from './authenticator.ts';

export interface OidcOptions {
  readonly issuer: string;
  readonly client_id: string;
  readonly client_secret: string;
  readonly scopes: readonly string[];
  readonly subject_claim: 'sub' | 'email';
  readonly allowed_domains?: readonly string[] | undefined;
  /** Seconds. */
  readonly session_ttl: number;
  /** Seconds. */
  readonly login_ttl: number;
  /** Most token requests to the provider in flight at once (default 32). */
  readonly max_token_requests_in_flight?: number | undefined;
  /**
   * Token bucket per connecting address (an IPv6 address by its /64) at the callback, spent by each
   * callback whose login state verifies (default off; on: 0.2 a second, 20 at once).
   */
  readonly callback_rate_limit?: { readonly enabled: boolean; readonly rate: number; readonly burst: number } | undefined;
}

export interface OidcRuntime {
  /** This issuer's identifier: the callback is `<issuer>/oauth2/login/callback`. */
  readonly tesseraIssuer: string;
  readonly keys: { readonly state: KeyObject; readonly session: KeyObject };
  /** Where each state is marked used. */
  readonly store: Pick<Store, 'useOnce'>;
  /** Epoch seconds. */
  readonly now: () => number;
  readonly fetch?: typeof fetch;
  /** Told why discovery or the token request failed (status codes and URLs, never a secret). */
  readonly onWarning?: (message: string) => void;
  /** Upstream request timeout, ms (default 5000). */
  readonly timeoutMs?: number;
}

/** A login that could not start (the upstream unreachable, a request too long to carry). */
export class LoginError extends Error {
  readonly reason: LoginFailure;
  constructor(reason: LoginFailure) {
    super(reason);
    this.name = 'LoginError';
    this.reason = reason;
  }
}

interface UpstreamMetadata {
  readonly issuer: string;
  readonly authorization_endpoint: string;
  readonly token_endpoint: string;
  readonly jwks_uri: string;
  readonly iss_parameter: boolean;
}

/** RFC 6749 §4.1.2.1: the `error` value's characters. */
const ERROR_CODE = /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}$/;
const STATE = /^[A-Za-z0-9_-]{43}$/;
/** A login session's id: 128 random bits, base64url (never the shape of a token's `jti`, a UUID). */
const SESSION_ID = /^[A-Za-z0-9_-]{22}$/;
/** Seconds the provider's clock may be off from this server's, for the ID token's iat, exp, nbf and auth_time. */
const CLOCK_LEEWAY = 30;
/** Longest authorization request carried through the login (browsers keep cookies up to 4096 bytes). */
const MAX_REQUEST = 2048;
/** Largest discovery document or token response read, bytes; a larger one is refused once this much has arrived. */
const MAX_RESPONSE = 262_144;
/** Largest provider JWKS read, bytes (as for an issuer's `jwks_uri`). */
const MAX_JWKS = 524_288;
const METADATA_TTL_MS = 3_600_000;
/** Hosts a plain-http provider and its endpoints may be on (as the config's `secureUrl`). */
const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(['localhost', '127.0.0.1', '[::1]']);

/** RFC 6265 §5.2: the whitespace trimmed around a cookie's name and value, SP and HTAB only. */
const trimWsp = (v: string) => v.replace(/^[ \t]+|[ \t]+$/g, '');

/**
 * Parse the `Cookie` header; a name sent twice is `null` (ambiguous, never guessed at). Names are
 * compared as the browser stored them: `String.prototype.trim` would also strip U+00A0 (a 0xA0
 * byte as Node reads headers), VT and FF, so `\xA0__Host-tessera-session`, a cookie any sibling
 * subdomain may set (no prefix rule applies to its name), would be read as the `__Host-` one.
 */
function cookie(headers: PersonRequest['headers'], name: string): string | undefined | null {
  const raw = headers.cookie;
  if (raw === undefined) return undefined;
  let found: string | undefined;
  for (const part of raw.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || trimWsp(part.slice(0, eq)) !== name) continue;
    if (found !== undefined) return null;
    found = trimWsp(part.slice(eq + 1));
  }
  return found;
}

function mac(key: KeyObject, label: string, data: string): Buffer {
  return createHmac('sha256', key).update(`${label}\n${data}`, 'utf8').digest();
}

/** `payload.mac`, both base64url, the payload JSON. */
function seal(key: KeyObject, label: string, payload: object): string {
  const body = Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url');
  return `${body}.${mac(key, label, body).toString('base64url')}`;
}

function unseal(key: KeyObject, label: string, value: string): Record<string, unknown> | undefined {
  const m = /^([A-Za-z0-9_-]{1,4000})\.([A-Za-z0-9_-]{43})$/.exec(value);
  if (!m) return undefined;
  const given = Buffer.from(m[2] as string, 'base64url');
  const expected = mac(key, label, m[1] as string);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  try {
    const v = JSON.parse(Buffer.from(m[1] as string, 'base64url').toString('utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Why the strict JSON Tessera reads tokens with refuses the header or the claims of a compact JWS:
 * a repeated member name (`{"sub":"a","sub":"b"}`, which `jose` would read as the last), nesting
 * too deep to check, or bytes that are not UTF-8. Anything else wrong with them is left to `jwtVerify`.
 */
function jwtJsonFault(jwt: string): StrictJsonFault | undefined {
  const parts = jwt.split('.');
  if (parts.length !== 3) return undefined;
  for (const part of parts.slice(0, 2)) {
    const bytes = Buffer.from(part as string, 'base64url');
    let value: unknown;
    try {
      value = JSON.parse(bytes.toString('utf8'));
    } catch {
      continue; // Not JSON: jwtVerify refuses it.
    }
    const fault = strictJsonFault(bytes, value);
    if (fault !== undefined) return fault;
  }
  return undefined;
}

/**
 * `fetch` for the upstream's JWKS (given to `jose`): a key set that repeats a member name (two
 * `x` in one key, two `keys` arrays) fails the fetch, as a key set that is not JSON does.
 */
async function strictJwksFetch(url: string, init: RequestInit): Promise<Response> {
  const res = await fetch(url, init);
  if (res.status !== 200) return res;
  const text = await readLimited(res, MAX_JWKS);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const fault = strictJsonFault(text, value);
  if (fault !== undefined) throw new Error(`response ${STRICT_JSON_REFUSALS[fault]}`);
  return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } });
}

function sameText(a: string, b: string): boolean {
  return timingSafeEqual(hash('sha256', a, 'buffer'), hash('sha256', b, 'buffer'));
}

/** Build the authenticator; `runtime.keys` come from the token service (the master key). */
export function createOidcAuthenticator(options: OidcOptions, runtime: OidcRuntime): Authenticator & { readonly login: InteractiveLogin } {
  const doFetch = runtime.fetch ?? fetch;
  const timeoutMs = runtime.timeoutMs ?? 5000;
  // What the provider said (its metadata's URLs, an error) is quoted: the library user's logger gets it escaped.
  const onWarning = runtime.onWarning;
  const warn = onWarning === undefined ? () => {} : (m: string) => onWarning(printable(m));
  const self = new URL(runtime.tesseraIssuer);
  const secure = self.protocol === 'https:';
  // The config check says this first; a cookie that can be neither Secure nor __Host- is readable
  // on the wire and settable by anyone on the path, so plain http is for loopback only.
  if (!secure && !['localhost', '127.0.0.1', '[::1]'].includes(self.hostname)) {
    throw new TypeError(`oidc: the login cookies need an https issuer, not ${self.origin}`);
  }
  // RFC 6265bis §4.1.3.2: a __Host- cookie is Secure, host-only and Path=/, so no sibling
  // subdomain or plain-http page can set (toss) one the callback would then believe.
  const prefix = secure ? '__Host-' : '';
  const stateCookie = `${prefix}${LOGIN_COOKIES.state}`;
  const sessionCookie = `${prefix}${LOGIN_COOKIES.session}`;
  const attributes = `Path=/; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`;
  const setCookie = (name: string, value: string, maxAge: number) => `${name}=${value}; ${attributes}; Max-Age=${maxAge}`;
  const clearState = setCookie(stateCookie, '', 0);
  const callbackUrl = `${runtime.tesseraIssuer}/oauth2/login/callback`;
  const allowed = options.allowed_domains === undefined ? undefined : new Set(options.allowed_domains);
  // A session holds for the upstream and the rules it was signed in under: `sub` is unique only
  // per issuer (OIDC Core §2), so after a switch of provider (or of subject_claim, or a narrower
  // allowed_domains) an earlier session could name someone else, or someone no longer allowed.
  const rules = JSON.stringify([
    options.issuer,
    options.client_id,
    options.subject_claim,
    allowed === undefined ? null : [...allowed].sort(),
  ]);
  const sessionLabel = `tessera oidc session v1\n${rules}`;
  // A remembered consent holds under the same rules as a session (the client_id too: a provider
  // with pairwise subject identifiers, OIDC Core §8.1, gives each client its own `sub`s).
  const source = sha256(`tessera identity source v1\noidc\n${rules}`);
  const credentials = `Basic ${Buffer.from(`${encodeURIComponent(options.client_id)}:${encodeURIComponent(options.client_secret)}`).toString('base64')}`;
  const loopbackHttp = new URL(options.issuer).protocol === 'http:';

  // The PKCE verifier and the nonce are MACs of the state: only this server can compute them, and
  // nothing needs to be stored between the redirect and the callback.
  const verifierFor = (state: string) => mac(runtime.keys.state, 'tessera oidc pkce v1', state).toString('base64url');
  const nonceFor = (state: string) => mac(runtime.keys.state, 'tessera oidc nonce v1', state).toString('base64url');

  // Anyone may begin a login and call the callback with any code: each call is one token request
  // with the client secret, waiting up to `timeoutMs`. Bounded, so they cannot pile up without end.
  const maxTokenRequests = options.max_token_requests_in_flight ?? 32;
  let tokenRequests = 0;
  // The cap is shared: one address could hold every slot (each other person's login refused busy)
  // and have the provider sent token requests without end. Each connecting address has a bucket,
  // keyed as the token service's other per-address buckets are (registration, a public client's).
  const callbackLimit = options.callback_rate_limit ?? { enabled: false, rate: 0.2, burst: 20 };
  const callbacks = callbackLimit.enabled
    ? new TokenBucketLimiter({ rate: callbackLimit.rate, burst: callbackLimit.burst, maxKeys: 10_000, clock: () => runtime.now() * 1000 })
    : undefined;

  let metadata: { value: Promise<UpstreamMetadata>; at: number } | undefined;
  let jwks: { uri: string; set: ReturnType<typeof createRemoteJWKSet> } | undefined;

  /** An upstream JSON response; `fault` when the strict JSON Tessera reads tokens with refuses it (see {@link strictJsonFault}). */
  const upstreamJson = async (
    url: string,
    init: RequestInit = {},
  ): Promise<{ status: number; body: unknown; fault: StrictJsonFault | undefined }> => {
    const res = await doFetch(url, { ...init, redirect: 'error', signal: AbortSignal.timeout(timeoutMs) });
    // Refused as soon as it is too large: read whole first, a provider's endless answer would fill memory.
    const text = await readLimited(res, MAX_RESPONSE);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    return { status: res.status, body, fault: strictJsonFault(text, body) };
  };

  // Plain http as the provider's issuer is for one on this machine (the config accepts it on
  // loopback only); its endpoints may be plain http on this machine too, never elsewhere: a key
  // set or token response read over plain http from another host could be swapped on the way.
  const endpoint = (value: unknown, name: string): string => {
    if (typeof value !== 'string' || !URL.canParse(value)) throw new Error(`metadata has no valid ${name}`);
    const u = new URL(value);
    if (u.protocol !== 'https:' && !(loopbackHttp && u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname))) {
      throw new Error(`metadata ${name} is not https`);
    }
    return value;
  };

  const discover = async (): Promise<UpstreamMetadata> => {
    const url = `${options.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    const { status, body, fault } = await upstreamJson(url, { headers: { accept: 'application/json' } });
    if (status !== 200 || typeof body !== 'object' || body === null) throw new Error(`${url} answered ${status}`);
    if (fault !== undefined) throw new Error(`${url} ${STRICT_JSON_REFUSALS[fault]}`);
    const m = body as Record<string, unknown>;
    // OIDC Discovery §4.3: the issuer in the document is exactly the one configured.
    if (m.issuer !== options.issuer) throw new Error(`${url} names another issuer`);
    return {
      issuer: options.issuer,
      authorization_endpoint: endpoint(m.authorization_endpoint, 'authorization_endpoint'),
      token_endpoint: endpoint(m.token_endpoint, 'token_endpoint'),
      jwks_uri: endpoint(m.jwks_uri, 'jwks_uri'),
      iss_parameter: m.authorization_response_iss_parameter_supported === true,
    };
  };

  /** The upstream's metadata, cached for an hour; a failure is not cached. */
  const upstream = async (): Promise<UpstreamMetadata> => {
    const now = Date.now();
    if (metadata === undefined || now - metadata.at > METADATA_TTL_MS) {
      const value = discover();
      metadata = { value, at: now };
      value.catch(() => {
        if (metadata?.value === value) metadata = undefined;
      });
    }
    try {
      return await metadata.value;
    } catch (e) {
      warn(`oidc: discovery of ${options.issuer} failed: ${(e as Error).message}`);
      throw new LoginError('login_upstream_unavailable');
    }
  };

  const keySet = (uri: string) => {
    if (jwks?.uri !== uri) {
      jwks = {
        uri,
        set: createRemoteJWKSet(new URL(uri), { timeoutDuration: timeoutMs, cooldownDuration: 30_000, [customFetch]: strictJwksFetch }),
      };
    }
    return jwks.set;
  };

  const fail = (
    reason: LoginFailure,
    upstreamError?: string,
    detail?: Readonly<Record<string, string | number | boolean>>,
  ): LoginCallbackOutcome => ({
    ok: false,
    reason,
    ...(upstreamError !== undefined ? { upstreamError } : {}),
    ...(detail !== undefined ? { detail } : {}),
    cookies: [clearState],
  });

  const login: InteractiveLogin = {
    callbackUrl,
    logoutUrl: `${runtime.tesseraIssuer}/oauth2/logout`,
    logoutCookies: [clearState, setCookie(sessionCookie, '', 0)],

    async start(request: string, startOptions = {}): Promise<LoginRedirect> {
      if (request.length > MAX_REQUEST) throw new LoginError('login_state_invalid');
      const m = await upstream();
      const state = randomBytes(32).toString('base64url');
      const exp = runtime.now() + options.login_ttl;
      const url = new URL(m.authorization_endpoint);
      url.searchParams.set('response_type', 'code');
      url.searchParams.set('client_id', options.client_id);
      url.searchParams.set('redirect_uri', callbackUrl);
      url.searchParams.set('scope', options.scopes.join(' '));
      url.searchParams.set('state', state);
      url.searchParams.set('nonce', nonceFor(state));
      url.searchParams.set('code_challenge', hash('sha256', verifierFor(state), 'base64url'));
      url.searchParams.set('code_challenge_method', 'S256');
      // OIDC Core §3.1.2.1: a fresh sign-in here is one at the upstream too, not its session reused;
      // with max_age the upstream's ID token must carry auth_time (§2), checked at the callback.
      if (startOptions.fresh === true) url.searchParams.set('prompt', 'login');
      const maxAge = startOptions.maxAge;
      if (maxAge !== undefined) url.searchParams.set('max_age', String(maxAge));
      // `t`, `a`: when the login began, and the oldest sign-in (seconds before then) it accepts.
      const sealed = { s: state, e: exp, r: request, ...(maxAge !== undefined ? { t: runtime.now(), a: maxAge } : {}) };
      return {
        location: url.href,
        cookies: [setCookie(stateCookie, seal(runtime.keys.state, 'tessera oidc state v1', sealed), options.login_ttl)],
      };
    },

    async finish(query, request): Promise<LoginCallbackOutcome> {
      const now = runtime.now();
      // The state first, before anything the upstream (or an attacker posing as it) said.
      const raw = cookie(request.headers, stateCookie);
      if (raw === undefined || raw === '') return fail('login_state_missing');
      const sealed = raw === null ? undefined : unseal(runtime.keys.state, 'tessera oidc state v1', raw);
      if (sealed === undefined || typeof sealed.s !== 'string' || typeof sealed.e !== 'number' || typeof sealed.r !== 'string') {
        return fail('login_state_invalid');
      }
      const state = sealed.s;
      const given = query.getAll('state');
      if (given.length !== 1 || !STATE.test(given[0] as string) || !sameText(given[0] as string, state))
        return fail('login_state_mismatch');
      if (sealed.e <= now) return fail('login_state_expired');
      // Before the state is spent: refused, the same callback reloaded finishes the login later.
      // The state cookie is kept for that.
      if (tokenRequests >= maxTokenRequests) return { ok: false, reason: 'login_upstream_busy', cookies: [] };
      // Before the state is spent too, and kept: reloaded after Retry-After, the callback finishes.
      // A state that does not verify (above) spends nothing: it stores nothing and sends nothing.
      const wait = callbacks?.take(addressKey(request.clientAddress ?? request.remoteAddress)) ?? 0;
      if (wait > 0) return { ok: false, reason: 'login_rate_limited', retryAfter: wait, cookies: [] };
      tokenRequests++;
      let tokenResponse: { status: number; body: unknown; fault: StrictJsonFault | undefined };
      let m: UpstreamMetadata;
      try {
        if (!(await runtime.store.useOnce(`oidc-state:${sha256(state)}`, sealed.e, now))) return fail('login_state_replayed');
        const found = await upstream().catch(() => undefined);
        if (found === undefined) return fail('login_upstream_unavailable');
        m = found;
        // RFC 9207: the answer names the server that gave it (mix-up defence). Its own reason: the
        // state matched, so this is no login CSRF but an answer from, or relayed as from, another server.
        const iss = query.getAll('iss');
        if (iss.length > 1 || (iss.length === 1 && iss[0] !== m.issuer) || (iss.length === 0 && m.iss_parameter)) {
          return fail('login_issuer_mismatch');
        }
        const error = query.get('error');
        if (error !== null) return fail('login_upstream_error', ERROR_CODE.test(error) ? error : 'invalid_request');
        const codes = query.getAll('code');
        if (codes.length !== 1 || codes[0] === '') return fail('login_code_rejected');

        try {
          tokenResponse = await upstreamJson(m.token_endpoint, {
            method: 'POST',
            headers: { authorization: credentials, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
            body: new URLSearchParams({
              grant_type: 'authorization_code',
              code: codes[0] as string,
              redirect_uri: callbackUrl,
              code_verifier: verifierFor(state),
            }).toString(),
          });
        } catch (e) {
          warn(`oidc: token request to ${m.token_endpoint} failed: ${(e as Error).name}`);
          return fail('login_upstream_unavailable');
        }
      } finally {
        tokenRequests--;
      }
      if (tokenResponse.fault !== undefined) {
        // Two id_token (or error) members: which one the provider meant is not ours to guess.
        warn(`oidc: the token endpoint's response (${tokenResponse.status}) ${STRICT_JSON_REFUSALS[tokenResponse.fault]}`);
        return fail('login_code_rejected');
      }
      const body = (typeof tokenResponse.body === 'object' && tokenResponse.body !== null ? tokenResponse.body : {}) as Record<
        string,
        unknown
      >;
      if (tokenResponse.status !== 200 || typeof body.id_token !== 'string') {
        const code = typeof body.error === 'string' && ERROR_CODE.test(body.error) ? body.error : 'none';
        warn(`oidc: the token endpoint answered ${tokenResponse.status} (error ${code})`);
        return fail('login_code_rejected');
      }

      // jose reads {"sub":"a","sub":"b"} as b; the strict JSON Tessera reads tokens with refuses it.
      const idTokenFault = jwtJsonFault(body.id_token);
      if (idTokenFault !== undefined) {
        warn(`oidc: the ID token ${STRICT_JSON_REFUSALS[idTokenFault]} (header or claims)`);
        return fail('login_id_token_invalid');
      }
      let claims: JWTPayload;
      try {
        const verified = await jwtVerify(body.id_token, keySet(m.jwks_uri), {
          issuer: m.issuer,
          audience: options.client_id,
          // Asymmetric only: never `none`, never an HMAC keyed by something the client also knows.
          algorithms: [...ASYMMETRIC_ALGORITHMS],
          requiredClaims: ['sub', 'exp', 'iat'],
          currentDate: new Date(now * 1000),
          // iat within the login (its nonce is this login's): not before it began, nor in the
          // future, each with the leeway (jose checks iat only given a maximum age).
          maxTokenAge: Math.max(0, now - (sealed.e - options.login_ttl)),
          clockTolerance: CLOCK_LEEWAY,
        });
        claims = verified.payload;
      } catch (e) {
        // The key set could not be had (unreachable, timed out, not 200, not a JWKS): the provider
        // is down, which says nothing against the ID token. Only the remote JWKS throws a bare JOSEError.
        if (
          !(e instanceof joseErrors.JOSEError) ||
          e.code === 'ERR_JOSE_GENERIC' ||
          e instanceof joseErrors.JWKSTimeout ||
          e instanceof joseErrors.JWKSInvalid
        ) {
          warn(`oidc: fetching the key set ${m.jwks_uri} failed: ${(e as Error).name}: ${(e as Error).message}`);
          return fail('login_upstream_unavailable');
        }
        // A time claim out of bounds (the signature verified): the provider's clock may be off
        // rather than the token forged or replayed. Which claim, and by how much against this
        // server's clock, goes to the log and the audit detail (numbers only, no token).
        if (e instanceof joseErrors.JWTClaimValidationFailed || e instanceof joseErrors.JWTExpired) {
          const claim = e.claim;
          const value = (e.payload as Record<string, unknown>)[claim];
          if ((claim === 'iat' || claim === 'exp' || claim === 'nbf') && typeof value === 'number' && Number.isFinite(value)) {
            const skew = Math.round(value - now);
            const began = typeof sealed.t === 'number' ? sealed.t : sealed.e - options.login_ttl;
            warn(
              `oidc: the ID token's ${claim} is ${Math.abs(skew)} s ${skew >= 0 ? 'ahead of' : 'behind'} this server's clock ` +
                `(${CLOCK_LEEWAY} s leeway; this login began ${Math.max(0, Math.round(now - began))} s ago): ` +
                "refused; if it keeps happening, the provider's clock or this server's may be off",
            );
            return fail('login_id_token_invalid', undefined, { claim, skew_seconds: skew });
          }
        }
        return fail('login_id_token_invalid');
      }
      // OIDC Core §2: sub is a string (jose checks its presence only). `["alice"]` would pass the
      // identity check as the text it joins to, and a number would throw there.
      if (typeof claims.sub !== 'string') return fail('login_id_token_invalid');
      // OIDC Core §3.1.3.7: several audiences need azp; azp, when present, is this client.
      if (Array.isArray(claims.aud) && claims.aud.length > 1 && claims.azp === undefined) return fail('login_id_token_invalid');
      if (claims.azp !== undefined && claims.azp !== options.client_id) return fail('login_id_token_invalid');
      if (typeof claims.nonce !== 'string' || !sameText(claims.nonce, nonceFor(state))) return fail('login_nonce_mismatch');
      // A fresh sign-in was asked for (prompt=login, max_age): a provider may ignore that and answer
      // from its own session. OIDC Core §2, §3.1.2.1: auth_time is then required, and must show a
      // sign-in no older than the login's start less max_age (and the clock leeway).
      if (typeof sealed.a === 'number' && typeof sealed.t === 'number') {
        const oldest = sealed.t - sealed.a - CLOCK_LEEWAY;
        const authTime = claims.auth_time;
        if (typeof authTime !== 'number' || !Number.isFinite(authTime) || authTime < oldest) {
          const seen = typeof authTime === 'number' && Number.isFinite(authTime) ? Math.round(sealed.t - authTime) : undefined;
          warn(
            seen === undefined
              ? 'oidc: a fresh sign-in was asked for (prompt=login or max_age) and the ID token has no auth_time'
              : `oidc: a fresh sign-in was asked for (max_age ${sealed.a} s) and the ID token's auth_time is ${seen} s before the login began (${CLOCK_LEEWAY} s leeway)`,
          );
          return fail('login_not_fresh', undefined, {
            claim: 'auth_time',
            ...(seen !== undefined ? { before_login_seconds: seen } : { missing: true }),
          });
        }
      }

      // An address the provider has not verified is just text its user typed: it is no subject, no
      // domain to allow, and not shown as who signed in (the consent page shows the subject then).
      const email = typeof claims.email === 'string' && claims.email_verified === true ? claims.email : undefined;
      if (options.subject_claim === 'email' || allowed !== undefined) {
        if (email === undefined) return fail('login_email_unverified');
      }
      const subject = options.subject_claim === 'email' ? email : claims.sub;
      if (subject === undefined || !validIdentity(subject) || (email !== undefined && !validIdentity(email))) {
        return fail('login_identity_invalid');
      }
      if (allowed !== undefined) {
        const domain = (email as string).slice((email as string).lastIndexOf('@') + 1).toLowerCase();
        if (!allowed.has(domain)) return fail('login_domain_not_allowed');
      }
      const session = seal(runtime.keys.session, sessionLabel, {
        d: randomBytes(16).toString('base64url'),
        // The request this sign-in was made for: it answers that request's prompt=login or max_age.
        f: sha256(sealed.r),
        // When the provider last signed the person in (auth_time), for max_age; never after now.
        ...(typeof claims.auth_time === 'number' && Number.isFinite(claims.auth_time) ? { u: Math.min(claims.auth_time, now) } : {}),
        s: subject,
        // `v`, the verified e-mail. A session from before held any e-mail as `m`, verified or not:
        // that one is no longer read (its consent page shows the subject).
        ...(email !== undefined ? { v: email } : {}),
        i: now,
        e: now + options.session_ttl,
      });
      return {
        ok: true,
        request: sealed.r,
        subject,
        provider: options.issuer,
        cookies: [clearState, setCookie(sessionCookie, session, options.session_ttl)],
      };
    },
  };

  return {
    kind: 'oidc',
    source,
    login,
    authenticate(request): Authentication {
      const raw = cookie(request.headers, sessionCookie);
      if (raw === undefined || raw === '') return { ok: false, reason: 'session_missing' };
      const v = raw === null ? undefined : unseal(runtime.keys.session, sessionLabel, raw);
      if (
        v === undefined ||
        // No session id: a cookie from before sessions had one, which signing out could not end.
        typeof v.d !== 'string' ||
        !SESSION_ID.test(v.d) ||
        typeof v.s !== 'string' ||
        typeof v.i !== 'number' ||
        typeof v.e !== 'number' ||
        (v.v !== undefined && typeof v.v !== 'string') ||
        (v.f !== undefined && typeof v.f !== 'string') ||
        (v.u !== undefined && typeof v.u !== 'number')
      ) {
        return { ok: false, reason: 'session_invalid' };
      }
      // Ends at its own expiry, or sooner when session_ttl was shortened since it began.
      const now = runtime.now();
      const endsAt = Math.min(v.e, v.i + options.session_ttl);
      if (endsAt <= now) return { ok: false, reason: 'session_expired' };
      return {
        ok: true,
        subject: v.s,
        authenticatedAt: v.i,
        sessionId: v.d,
        sessionEndsAt: endsAt,
        ...(typeof v.f === 'string' ? { signedInFor: v.f } : {}),
        ...(typeof v.u === 'number' ? { upstreamAuthenticatedAt: v.u } : {}),
        ...(typeof v.v === 'string' ? { email: v.v } : {}),
      };
    },
  };
}
