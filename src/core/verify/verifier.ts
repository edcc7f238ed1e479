/**
 * The verifier core: options compiled once into closures; each request then runs extraction,
 * token validation (signature first, claims after), revocation, DPoP binding and policy.
 *
 * This module takes resolved options (key sources, an introspector, a compiled policy). The
 * public `createVerifier` in `src/verifier.ts` builds those from configuration.
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { timingSafeEqual } from 'node:crypto';
import { ArgumentError, type ErrorCode, kindOf, TesseraError } from '../errors.ts';
import type { JwsAlgorithm } from '../jose/algorithms.ts';
import { decodeBase64url, decodeBase64urlInto, encodeBinaryBase64url } from '../jose/base64url.ts';
import { KEY_REFERENCE_HEADERS, splitCompactInto } from '../jose/compact.ts';
import { type JsonObject, parseJsonBytes, parseJsonObject } from '../jose/json.ts';
import type { VerificationKey } from '../jose/jwk.ts';
import { normalizeTyp } from '../jose/typ.ts';
import type { CompiledRule, Policy } from '../policy.ts';
import type { Clock, IntrospectionResponse, Introspector, KeyMiss, KeySource } from '../ports.ts';
import { type EffectiveScopes, parseScopeClaim, type ScopeModel } from '../scopes.ts';
import { BoundedMap } from './bounded-map.ts';
import { type ChallengeOptions, challenges } from './challenge.ts';
import { checkDpopProof, type DpopCheckOptions, RECORDED_PROOFS, type WithRecordedProofs } from './dpop.ts';
import {
  checkRequest,
  extractTokenDeferred,
  isToken68,
  MULTIPLE,
  singleHeader,
  type TransportOptions,
  type VerifyRequest,
} from './extract.ts';
import { type Actor, deepFreeze, type Principal, VerifiedPrincipal } from './principal.ts';
import { type RevocationCheck, revocationAnswer } from './revocation.ts';
import { TokenDigest } from './token-digest.ts';

/** Seconds a caller is told to wait (`Retry-After`) when the introspection endpoint gives no answer. */
export const INTROSPECTION_RETRY_AFTER = 5;

/** Seconds a caller is told to wait (`Retry-After`) when the revocation check gives no answer. */
export const REVOCATION_RETRY_AFTER = 5;

/** One trusted JWT issuer, resolved. */
export interface IssuerOptions {
  /** Exact `iss` value. */
  readonly issuer: string;
  /** The token's `aud` must contain one of these. */
  readonly audiences: readonly string[];
  /** Algorithm allowlist for this issuer. */
  readonly algorithms: readonly JwsAlgorithm[];
  readonly keys: KeySource;
  /**
   * Claim (or claims, whose scopes are united) holding the granted scopes: `scope` must be a
   * space-delimited string (RFC 9068 §2.2.3), any other an array of strings or such a string.
   */
  readonly scopeClaim: string | readonly string[];
  /** Claim naming the client (`client_id`, RFC 9068 §2.2; `azp`, `appid`, `cid` of other providers). */
  readonly clientClaim: string;
  /**
   * Required `typ` header (e.g. `at+jwt`), compared as RFC 8725 §3.11 / RFC 9068 §4 say. When
   * `undefined`, any `typ` but one naming another kind of JWT (`<kind>+jwt` other than `at+jwt`).
   */
  readonly typ: string | undefined;
  /**
   * Claims that must be present besides `iss`, `exp` (always required) and `aud`; `iat` is also
   * required whenever {@link CoreVerifierOptions.revocation} is set (see the check in the JWT path).
   */
  readonly requiredClaims: readonly string[];
  /** Tolerated clock difference, seconds (at most 60). */
  readonly clockSkew: number;
  /** Longest accepted `exp - iat`, seconds. */
  readonly maxLifetime: number;
  /** Claim holding the delegation (grant) id. */
  readonly delegationClaim: string;
}

/** One accepted static (gateway) token, resolved. */
export interface StaticTokenOptions {
  readonly id: string;
  /** SHA-256 of the token; the token itself is not kept. */
  readonly digest: Buffer;
  readonly subject: string;
  readonly scopes: readonly string[];
}

export interface IntrospectionOptions {
  readonly introspector: Introspector;
  /**
   * The issuer principals from this endpoint carry: an answer with another `iss` is refused
   * (`token_issuer_unknown`), one without names this one.
   */
  readonly issuer: string;
  /** When set, the response `aud` must contain one of these. */
  readonly audiences: readonly string[] | undefined;
  /** Longest time an active result is cached, seconds (never past the token's `exp`). */
  readonly cacheMaxTtl: number;
  /** Tolerated clock difference for `nbf` and `iat`, seconds (at most 60). */
  readonly clockSkew: number;
  /** As {@link IssuerOptions.scopeClaim}; the client is always RFC 7662's `client_id`. */
  readonly scopeClaim: string | readonly string[];
}

export interface DpopOptions extends Omit<DpopCheckOptions, 'maxProofSize' | 'clockSkew'> {
  /** `allowed`: DPoP-bound tokens need proofs, bearer tokens pass; `required`: bearer refused. */
  readonly mode: 'disabled' | 'allowed' | 'required';
  /**
   * Tolerated clock difference for a proof's `iat`, seconds (default {@link dpopClockSkew} of the
   * issuers and introspection). A gateway gives every verifier it builds one value, so that all its
   * routes agree whatever checks their tokens.
   */
  readonly clockSkew?: number;
}

/** Resolved verifier options. */
export interface CoreVerifierOptions {
  readonly issuers: readonly IssuerOptions[];
  readonly staticTokens: readonly StaticTokenOptions[];
  readonly introspection: IntrospectionOptions | undefined;
  readonly transport: TransportOptions;
  /** Tokens longer than this are refused before any decoding. */
  readonly maxTokenSize: number;
  readonly scopes: ScopeModel;
  /** When set, `verify` also authorizes the request against these rules. */
  readonly policy: Policy | undefined;
  readonly dpop: DpopOptions;
  /** Verified-result cache size (0 disables it). */
  readonly cacheSize: number;
  readonly revocation: RevocationCheck | undefined;
  /**
   * Told why `revocation` gave no answer (`threw TypeError`), in words that name no value: never
   * the thrown error's message, which may quote the token. Called on every such request.
   */
  readonly onRevocationFailure?: ((why: string) => void) | undefined;
  readonly clock: Clock;
  readonly challenge: ChallengeOptions;
}

/** A successful verification. */
export interface VerifySuccess {
  readonly ok: true;
  readonly principal: Principal;
  /** The rule that allowed the request, when a policy is configured. */
  readonly rule?: CompiledRule;
  /**
   * With `dpop.nonce`: a fresh nonce to send in the response's `DPoP-Nonce` header (RFC 9449 §9),
   * set when the proof's nonce is older than the current one and expires sooner.
   */
  readonly dpopNonce?: string;
}

/**
 * A refused verification. `principal` is set when the token was authentic (its signature
 * verified) but is refused anyway: revoked, or not authorized for this request. It is there so the
 * audit trail can name who was refused; it never means the caller is authenticated. Check `ok`.
 */
export interface VerifyFailure {
  readonly ok: false;
  readonly error: TesseraError;
  readonly principal?: Principal;
  readonly rule?: CompiledRule;
}

/** What {@link Verifier.verify} answers: check `ok`. */
export type VerifyResult = VerifySuccess | VerifyFailure;

/** Counters for metrics. */
export interface VerifierStats {
  cacheHits: number;
  cacheMisses: number;
}

/** A compiled verifier. */
export interface Verifier {
  /**
   * Extract the token, validate it, check DPoP binding and revocation, and, when rules are
   * configured, authorize the request. Every refusal of the request is a result (`ok: false`,
   * with a {@link TesseraError} and its stable code), never a rejection.
   *
   * @throws {ArgumentError} (the promise rejects, `ERR_INVALID_ARGUMENT`) when `request` is not of
   *   the {@link VerifyRequest} shape: not an object, `method` or `url` not a string, no `headers`
   *   object, or a header the verifier reads (`authorization`, `dpop`, `content-type`) whose value
   *   is neither a string nor an array of strings, which `node:http` never gives. A programming
   *   error, not a deny.
   */
  verify(request: VerifyRequest): Promise<VerifyResult>;
  /** Like {@link Verifier.verify} without the rules; rejects with the same {@link ArgumentError}. */
  authenticate(request: VerifyRequest): Promise<VerifyResult>;
  /**
   * Validate a bare token (no transport, no DPoP proof): for token exchange subject tokens and
   * `tessera token decode`. A DPoP-bound token is returned as valid; its binding is the caller's
   * business.
   *
   * @throws {ArgumentError} (the promise rejects, `ERR_INVALID_ARGUMENT`) when `token` is not a string.
   */
  verifyToken(token: string): Promise<VerifyResult>;
  /** `WWW-Authenticate` values for an error (or a bare challenge). */
  challenges(error?: TesseraError): string[];
  /**
   * How the configured rules match paths, for adapters that must agree with their router;
   * `undefined` when `verify` has no rules.
   */
  readonly rules: { readonly caseInsensitivePaths: boolean } | undefined;
  readonly stats: Readonly<VerifierStats>;
}

interface Header {
  readonly alg: JwsAlgorithm | string;
  readonly kid: string | undefined;
  /** `typ` lower-cased without an `application/` prefix (RFC 7515 §4.1.9), computed once per header. */
  readonly typ: string | undefined;
  /**
   * `typ` names a kind of JWT other than an access token (`<kind>+jwt` but `at+jwt`), read as a
   * media type: without its parameters (`; charset=utf-8`) and the spaces around them.
   */
  readonly otherKind: boolean;
}

/** {@link Header.otherKind} of a normalized `typ`. */
function namesOtherKind(typ: string | undefined): boolean {
  if (typ === undefined) return false;
  const semicolon = typ.indexOf(';');
  const type = (semicolon < 0 ? typ : typ.slice(0, semicolon)).trim();
  return type.endsWith('+jwt') && type !== 'at+jwt';
}

interface CacheEntry {
  /**
   * For a JWT, the token: its key (the end of its signature) only locates the entry, and comparing
   * the token itself (tens of nanoseconds) proves it is the token's where hashing it would cost
   * most of a hit. The entry is served no longer than the token is valid; a stale one stays in
   * memory until it is presented again or evicted. `undefined` for a token keyed by its digest,
   * which alone proves the match: an opaque token may stay valid at its authorization server long
   * after its entry went stale, so no copy of it is kept.
   */
  readonly token: string | undefined;
  readonly principal: Principal;
  /** The answer to a hit, built once (frozen, like the principal). */
  readonly result: VerifySuccess;
  /** Epoch ms after which the entry is stale (exp + skew). */
  readonly validUntil: number;
  /** The token is RFC 7235 token68 (always, for a JWT), so a header hit needs no syntax check. */
  readonly token68: boolean;
  /** For a JWT: its issuer's key source's {@link KeySource.refreshIfStale}, called on every hit. */
  readonly refreshKeys: (() => void) | undefined;
  epoch: number;
}

/** Granted scopes as read from a claim, with their expansion. */
interface Grant {
  readonly granted: readonly string[];
  readonly effective: EffectiveScopes;
}

/**
 * A token's granted scopes as its issuer's scope claims give them, or the name of the claim whose
 * shape is wrong. Made once per issuer from its configuration.
 */
type ScopeReader = (claims: JsonObject) => Grant | string;

const NO_ACTORS: readonly Actor[] = Object.freeze([]);
const NO_AUDIENCE: readonly string[] = Object.freeze([]);

// A token's `aud` is nearly always the one string its API expects: share its frozen list.
const audiences = new BoundedMap<string, readonly string[]>(256);
function audienceOf(aud: string): readonly string[] {
  let list = audiences.get(aud);
  if (list === undefined) {
    list = Object.freeze([aud]);
    audiences.set(aud, list);
  }
  return list;
}

/** A cached result's resolved promise, so a hit allocates none. */
const SETTLED: unique symbol = Symbol('settled');

/** What the JWT path answers, when introspection is configured, for a token that is no compact JWS. */
const NOT_JWS: unique symbol = Symbol('not a JWS');

/** `result` as a promise: the cached one for a cached result, else a new one. */
function settle(result: VerifyResult | Promise<VerifyResult>): Promise<VerifyResult> {
  if (result instanceof Promise) return result;
  return (result as { [SETTLED]?: Promise<VerifyResult> })[SETTLED] ?? Promise.resolve(result);
}
const SCOPE_MEMO_LIMIT = 1024;

/**
 * Characters from a JWT's end (its signature's) that key its cache entry: 72 bits, enough to
 * locate an entry (a hit compares the whole token). Under 13 characters V8 copies a substring
 * instead of making a slice that holds the whole token alive while the key is kept.
 */
const JWT_CACHE_KEY_LENGTH = 12;

const claimDetails = (issuer: string, claim: string) => ({ issuer, claim });

/**
 * `token_type` values of an introspection answer that name an access token, lower-cased (RFC 6749
 * §5.1: case-insensitive): RFC 7662 §2.2 gives the RFC 6749 §7.1 type, `Bearer` or `DPoP` (RFC
 * 9449) being the ones checked here; some servers name the kind of token instead. Anything else is
 * refused: Tessera's own endpoint answers `refresh_token` to the client owning one, RFC 8693 says
 * `N_A` for "not an access token" and `urn:ietf:params:oauth:token-type:refresh_token`
 * (`…:id_token`) for other tokens, and a type this verifier cannot check (`PoP`) must not pass as
 * a bearer token.
 */
const ACCESS_TOKEN_TYPES: ReadonlySet<string> = new Set([
  'bearer',
  'dpop',
  'access_token',
  'urn:ietf:params:oauth:token-type:access_token',
]);
/**
 * `token_use` values (not in RFC 7662) that name an access token: AWS Cognito says `access` (`id`,
 * `refresh` otherwise), Ory Hydra `access_token` (`refresh_token`, `id_token`, …).
 */
const ACCESS_TOKEN_USES: ReadonlySet<string> = new Set(['access', 'access_token']);

const deny = (code: ErrorCode, details?: TesseraError['details']): VerifyFailure => ({
  ok: false,
  error: new TesseraError(code, details),
});

/**
 * Parse a header segment already known to be canonical base64url; `undefined` when it is no JSON
 * object (so the token is no JWS at all).
 */
function parseHeader(bytes: Buffer): Header | ErrorCode | undefined {
  const h = parseJsonObject(bytes);
  if (!h) return undefined;
  const { alg, kid, typ } = h;
  if (typeof alg !== 'string' || alg === '') return 'token_header_invalid';
  if (h.crit !== undefined) return 'token_crit_unsupported';
  for (const name of KEY_REFERENCE_HEADERS) if (h[name] !== undefined) return 'token_key_reference_untrusted';
  if (kid !== undefined && typeof kid !== 'string') return 'token_header_invalid';
  if (typ !== undefined && typeof typ !== 'string') return 'token_header_invalid';
  const normalized = typ === undefined ? undefined : normalizeTyp(typ);
  return { alg, kid, typ: normalized, otherKind: namesOtherKind(normalized) };
}

const MAX_ACT_DEPTH = 32;

function parseActors(act: unknown): readonly Actor[] | undefined {
  if (act === undefined) return NO_ACTORS;
  const actors: Actor[] = [];
  let cur: unknown = act;
  while (cur !== undefined) {
    if (typeof cur !== 'object' || cur === null || Array.isArray(cur) || actors.length >= MAX_ACT_DEPTH) return undefined;
    const a = cur as JsonObject;
    // Every member names a party: "" names none (and an `iss` of "" read as absent would put the
    // actor in the token issuer's namespace, RFC 8693 §4.1).
    if (typeof a.sub !== 'string' || a.sub === '') return undefined;
    if (a.iss !== undefined && (typeof a.iss !== 'string' || a.iss === '')) return undefined;
    if (a.client_id !== undefined && (typeof a.client_id !== 'string' || a.client_id === '')) return undefined;
    const actor: { subject: string; issuer?: string; clientId?: string } = { subject: a.sub };
    if (a.iss !== undefined) actor.issuer = a.iss as string;
    if (a.client_id !== undefined) actor.clientId = a.client_id as string;
    actors.push(actor);
    cur = a.act;
  }
  return actors;
}

/**
 * Deep-freeze a value fresh from JSON.parse (so acyclic and unfrozen): {@link deepFreeze} without
 * its per-value frozenness test.
 */
function freezeParsed<T extends object>(value: T): T {
  Object.freeze(value);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      if (typeof v === 'object' && v !== null) freezeParsed(v);
    }
  } else {
    for (const key in value) {
      const v: unknown = value[key];
      if (typeof v === 'object' && v !== null) freezeParsed(v);
    }
  }
  return value;
}

/** An optional identifier claim: absent, a non-empty string, or `false` for anything else ("" included). */
function optionalId(v: unknown): string | undefined | false {
  return v === undefined ? undefined : typeof v === 'string' && v !== '' ? v : false;
}

/**
 * Build a principal from validated claims. Returns the failing claim name when a claim has the
 * wrong shape.
 */
function principalFrom(
  kind: Principal['kind'],
  claims: JsonObject,
  issuer: string,
  clientClaim: string,
  readScopes: ScopeReader,
  delegationClaim: string,
  digest: TokenDigest,
  expiresAt: number,
): Principal | string {
  // Identifiers are absent or non-empty strings, and "" is refused rather than read as absent
  // (fail closed). RFC 7519 §4.1.2: `sub` identifies the principal; "" names nobody, yet would
  // enter the delegation chain, the audit trail and the identity headers as a subject. An empty
  // client (`client_id`, or the issuer's `client_claim`) makes every such token's client one
  // principal (policy conditions, rate-limit keys, revocation by client). An empty `jti` (RFC 7519 §4.1.7) or delegation id is no id: revoking ""
  // would revoke every such token of every issuer, and nothing else can revoke one by id.
  const sub = optionalId(claims.sub);
  if (sub === false) return 'sub';
  const clientId = optionalId(Object.hasOwn(claims, clientClaim) ? claims[clientClaim] : undefined);
  if (clientId === false) return clientClaim;
  const jti = optionalId(claims.jti);
  if (jti === false) return 'jti';
  // Configured claim names are read as the payload's own members only: a name such as
  // `constructor` or `toString` would otherwise read a function every object inherits.
  const delegationId = optionalId(Object.hasOwn(claims, delegationClaim) ? claims[delegationClaim] : undefined);
  if (delegationId === false) return delegationClaim;
  const grant = readScopes(claims);
  if (typeof grant === 'string') return grant;
  const actors = parseActors(claims.act);
  if (actors === undefined) return 'act';
  const aud = claims.aud;
  const audience = aud === undefined ? NO_AUDIENCE : typeof aud === 'string' ? audienceOf(aud) : Object.freeze(aud as string[]);
  let confirmation: { jkt: string } | undefined;
  if (claims.cnf !== undefined) {
    const cnf = claims.cnf;
    if (typeof cnf !== 'object' || cnf === null || Array.isArray(cnf)) return 'cnf';
    // A token bound by a method not checked here (RFC 8705 x5t#S256, RFC 7800 jwk/jku/kid) would
    // otherwise pass as a bearer token, its binding ignored: only DPoP's jkt, alone, is accepted.
    for (const member in cnf as JsonObject) if (member !== 'jkt') return 'cnf';
    const jkt = (cnf as JsonObject).jkt;
    if (typeof jkt !== 'string' || jkt === '') return 'cnf';
    confirmation = { jkt };
  }
  const iat = claims.iat;
  return new VerifiedPrincipal(
    {
      kind,
      issuer,
      subject: sub,
      clientId,
      audience,
      scopes: grant.granted,
      effectiveScopes: grant.effective,
      actors: actors === NO_ACTORS ? actors : Object.freeze(actors),
      delegationId,
      tokenId: jti,
      expiresAt,
      issuedAt: typeof iat === 'number' ? iat : undefined,
      confirmation,
      staticTokenId: undefined,
      claims: kind === 'jwt' ? freezeParsed(claims) : deepFreeze(claims),
    },
    digest,
  );
}

/**
 * The clock skew DPoP proofs get: the largest a configuration tolerates, the issuers' and the
 * introspection endpoint's. A proof's `iat` is the client's clock, not the token's: it gets that
 * one value whichever way its token is checked.
 */
export function dpopClockSkew(
  issuers: readonly Pick<IssuerOptions, 'clockSkew'>[],
  introspection?: Pick<IntrospectionOptions, 'clockSkew'> | undefined,
): number {
  return Math.max(0, ...issuers.map((i) => i.clockSkew), introspection?.clockSkew ?? 0);
}

/**
 * Compile resolved options into a verifier.
 *
 * Everything that can be decided from options alone is decided here: issuer lookup tables,
 * allowlists as sets, static token digests; the returned closures only do per-token work.
 */
export function compileVerifier(options: CoreVerifierOptions): Verifier {
  const { clock, scopes, policy, revocation, staticTokens, introspection, maxTokenSize } = options;
  // Most tokens of one client carry the same scope string: parse and expand it once.
  const grants = new BoundedMap<string, Grant>(SCOPE_MEMO_LIMIT);
  /** The grant a scope claim names; an array only where `arrays` (any claim but `scope`). */
  const grantOf = (claim: unknown, arrays: boolean): Grant | undefined => {
    if (typeof claim === 'string') {
      let grant = grants.get(claim);
      if (grant === undefined) {
        const granted = Object.freeze(parseScopeClaim(claim) as string[]);
        grant = { granted, effective: scopes.expand(granted) };
        grants.set(claim, grant);
      }
      return grant;
    }
    if (!arrays && claim !== undefined) return undefined;
    const granted = parseScopeClaim(claim);
    return granted === undefined ? undefined : { granted: Object.freeze(granted), effective: scopes.expand(granted) };
  };
  const noGrant = grantOf(undefined, true) as Grant;
  /**
   * The reader of `claim`: RFC 9068 §2.2.3 and RFC 7662 §2.2 make `scope` one space-delimited
   * string; the others (`scp`, `scopes`, `roles`, `permissions`) may be arrays. Of several claims,
   * the scopes of those present are united; each claim present must have its shape.
   */
  const scopeReader = (claim: string | readonly string[]): ScopeReader => {
    const names = typeof claim === 'string' ? [claim] : [...claim];
    if (names.length === 1) {
      const name = names[0] as string;
      const arrays = name !== 'scope';
      return (claims) => grantOf(Object.hasOwn(claims, name) ? claims[name] : undefined, arrays) ?? name;
    }
    return (claims) => {
      let first: Grant | undefined;
      let united: Set<string> | undefined;
      for (const name of names) {
        if (!Object.hasOwn(claims, name)) continue;
        const grant = grantOf(claims[name], name !== 'scope');
        if (grant === undefined) return name;
        if (first === undefined) first = grant;
        else {
          united ??= new Set(first.granted);
          for (const s of grant.granted) united.add(s);
        }
      }
      // Scopes hold no space (parseScopeClaim): the united set as a scope string is the memo's key.
      if (united !== undefined) return grantOf([...united].join(' '), false) as Grant;
      return first ?? noGrant;
    };
  };

  const issuers = new Map(
    options.issuers.map((i) => [
      i.issuer,
      {
        ...i,
        readScopes: scopeReader(i.scopeClaim),
        algorithmSet: new Set<string>(i.algorithms),
        refreshKeys: i.keys.refreshIfStale?.bind(i.keys),
      },
    ]),
  );
  const soleIssuer = options.issuers.length === 1 ? issuers.get((options.issuers[0] as IssuerOptions).issuer) : undefined;
  const readIntrospectedScopes = introspection === undefined ? undefined : scopeReader(introspection.scopeClaim);
  const dpop = options.dpop;
  const dpopCheck: DpopCheckOptions = {
    ...dpop,
    clockSkew: dpop.clockSkew ?? dpopClockSkew(options.issuers, introspection),
    maxProofSize: maxTokenSize,
  };
  const headerCache = new BoundedMap<string, Header>(256);
  let lastHeader: { readonly segment: string; readonly header: Header } | undefined;
  const cache = options.cacheSize > 0 ? new BoundedMap<string, CacheEntry>(options.cacheSize) : undefined;
  // Results cached for tokens a withdrawn key signed must not outlive the key (rare: drop them all).
  if (cache) for (const i of options.issuers) i.keys.onKeysRemoved?.(() => cache.clear());
  const stats: VerifierStats = { cacheHits: 0, cacheMisses: 0 };
  // Introspections under way, by token digest: concurrent requests with one token not yet cached
  // (a client's burst on a new token, or many clients after an entry expired) share one call to
  // the endpoint instead of making one each. An entry lives only until its answer arrives.
  const introspecting = new Map<string, Promise<VerifyResult>>();
  // The token's bytes (whose prefix is the signing input), the decoded payload and the decoded
  // signature are written here rather than into fresh buffers. Everything from the writes to the
  // signature check is synchronous (a key refresh writes them again), so no two verifications
  // ever share them.
  const inputScratch = Buffer.allocUnsafeSlow(maxTokenSize + 4);
  const payloadScratch = Buffer.allocUnsafeSlow(Math.ceil((maxTokenSize * 3) / 4));
  const signatureScratch = Buffer.allocUnsafeSlow(Math.ceil((maxTokenSize * 3) / 4));
  // Views of their first n bytes, made once per length: a signature's length is fixed by its
  // algorithm and key, and signing inputs vary by a few bytes, so these nearly always hit.
  const inputViews = new BoundedMap<number, Buffer>(64);
  const signatureViews = new BoundedMap<number, Buffer>(16);
  const viewOf = (views: BoundedMap<number, Buffer>, scratch: Buffer, length: number): Buffer => {
    let view = views.get(length);
    if (view === undefined) {
      view = scratch.subarray(0, length);
      views.set(length, view);
    }
    return view;
  };

  /** The refusal of `p`'s token when the revocation check gave no answer; `onRevocationFailure` is told `why`. */
  const revocationUnavailable = (p: Principal, why: string): VerifyFailure => {
    try {
      options.onRevocationFailure?.(why);
    } catch {
      // a warning that fails changes no refusal
    }
    return {
      ok: false,
      error: new TesseraError('revocation_unavailable', { issuer: p.issuer, retryAfter: REVOCATION_RETRY_AFTER }),
      principal: p,
    };
  };

  /**
   * The refusal revocation gives `p`'s token, or `undefined`: `token_revoked`, or, fail closed,
   * `revocation_unavailable` when the check gives no answer (`revocation_state_stale` when its
   * `isStale` says it cannot vouch for the token now): it throws, or answers anything but
   * `true` or `false`. A promise (an `async` check) is no answer: it is not awaited, and its
   * rejection is handled here (unhandled, it would end the process). The refusal carries nothing
   * of what was thrown (its message may quote the token); `onRevocationFailure` is told its class.
   */
  const revocationRefusal = (p: Principal): VerifyFailure | undefined => {
    if (revocation === undefined) return undefined;
    const answer = revocationAnswer(revocation, p);
    if (answer === false) return undefined;
    if (answer === true) return { ok: false, error: new TesseraError('token_revoked', { issuer: p.issuer }), principal: p };
    // Its source has not been read for too long (told once by whoever feeds it, not per request).
    if (answer === 'stale') {
      return {
        ok: false,
        error: new TesseraError('revocation_state_stale', { issuer: p.issuer, retryAfter: REVOCATION_RETRY_AFTER }),
        principal: p,
      };
    }
    return revocationUnavailable(p, answer.unanswered);
  };

  const remember = (
    key: string,
    token: string | undefined,
    principal: Principal,
    validUntil: number,
    token68: boolean,
    refreshKeys?: () => void,
  ): VerifySuccess => {
    const result: VerifySuccess = { ok: true, principal };
    // The promise a hit answers with is made once too (hidden, not enumerable).
    Object.defineProperty(result, SETTLED, { value: Promise.resolve(result) });
    Object.freeze(result);
    cache?.set(key, { token, principal, result, validUntil, token68, refreshKeys, epoch: revocation?.epoch ?? 0 });
    return result;
  };

  // Admission: a JWT enters the result cache on its second presentation. A token used once (a
  // flood of distinct tokens, a job minting one per call) then costs no entry, so it neither
  // keeps its principal alive for the garbage collector to promote and sweep nor pushes the
  // entries of tokens in steady use out of the FIFO. The doorkeeper is a fixed table of 32-bit
  // fingerprints of cache keys: no allocation; a collision only admits a token one use early,
  // and an overwrite makes one wait for a third.
  const doorkeeperMask = cache ? 2 ** Math.ceil(Math.log2(Math.max(1024, options.cacheSize * 2))) - 1 : 0;
  const doorkeeper = new Int32Array(doorkeeperMask + 1);
  const admit = (key: string): boolean => {
    // Two FNV-1a hashes of the key (signature characters or a digest): one picks the slot, the
    // other is the fingerprint kept there.
    let a = 0x811c9dc5;
    let b = 0x050c5d1f;
    for (let i = 0; i < key.length; i++) {
      const c = key.charCodeAt(i);
      a = Math.imul(a ^ c, 0x01000193);
      b = Math.imul(b ^ c, 0x01000193);
    }
    const slot = (a ^ (a >>> 15)) & doorkeeperMask;
    const fingerprint = b ^ (b >>> 13);
    if (doorkeeper[slot] === fingerprint) return true;
    doorkeeper[slot] = fingerprint;
    return false;
  };

  /**
   * A token with a dot that is no compact JWS (three base64url segments, a JSON object header):
   * refused as a malformed JWT, or, when introspection is configured, {@link NOT_JWS}, an opaque
   * token (Ory's `ory_at_….…`) that the endpoint may know.
   */
  const notJws = (code: ErrorCode): VerifyFailure | typeof NOT_JWS => (introspection === undefined ? deny(code) : NOT_JWS);

  /**
   * JWT validation. Synchronous except when the key is unknown and the key source may refetch;
   * then the lookup and everything after it continue once the refresh settles.
   */
  function verifyJwt(token: string, key: string, digest: TokenDigest): VerifyResult | Promise<VerifyResult> | typeof NOT_JWS {
    // Syntax first, for all three segments (any fault is token_malformed), then the header and
    // payload JSON, the issuer, the key, the signature and the claims.
    const split = splitCompactInto(token, inputScratch);
    if (!split) return notJws('token_malformed');
    const { dot1, dot2 } = split;
    // Most tokens carry the header of the one before, and a header seen before was checked then.
    let header: Header | undefined;
    let headerSegment: string | undefined;
    let headerBytes: Buffer | undefined;
    if (lastHeader !== undefined && dot1 === lastHeader.segment.length && token.slice(0, dot1) === lastHeader.segment) {
      header = lastHeader.header;
    } else {
      // Read back from the token's bytes (ASCII, written by the split), not sliced: a slice of the
      // token keeps the whole token alive for as long as the header cache (or the last header) keeps it.
      headerSegment = inputScratch.toString('latin1', 0, dot1);
      header = headerCache.get(headerSegment);
      if (header === undefined) {
        headerBytes = decodeBase64url(headerSegment);
        if (headerBytes === undefined) return notJws('token_malformed');
      }
    }
    const payloadLength = decodeBase64urlInto(token, dot1 + 1, dot2, payloadScratch);
    if (payloadLength < 0 || decodeBase64urlInto(token, dot2 + 1, token.length, signatureScratch) < 0) return notJws('token_malformed');
    if (header === undefined) {
      const parsed = parseHeader(headerBytes as Buffer);
      if (parsed === undefined) return notJws('token_header_invalid');
      if (typeof parsed === 'string') return deny(parsed);
      header = parsed;
      headerCache.set(headerSegment as string, header);
    }
    if (headerSegment !== undefined) lastHeader = { segment: headerSegment, header };
    const claims = parseJsonBytes(payloadScratch, payloadLength);
    if (!claims) return deny('token_payload_invalid');

    // The issuer is read before the signature only to choose whose keys to use; every claim is
    // validated after the signature. A token without a string `iss` can still be checked against
    // the only configured issuer, so a forgery reports a bad signature rather than a claim.
    const iss = claims.iss;
    const issuer =
      typeof iss !== 'string' ? soleIssuer : soleIssuer !== undefined && iss === soleIssuer.issuer ? soleIssuer : issuers.get(iss);
    if (!issuer) return deny('token_issuer_unknown');
    const alg = header.alg as JwsAlgorithm;
    if (!issuer.algorithmSet.has(alg)) return deny('token_alg_not_allowed', { issuer: issuer.issuer, claim: 'alg' });

    const found = issuer.keys.lookup(header.kid, alg);
    if (found === 'unknown' && issuer.keys.refreshAfterMiss) {
      const kid = header.kid;
      const known = header;
      // Look the key up again whatever this refresh reports: a concurrent one may have loaded it
      // (the same fix as on branch verifier-tests).
      return issuer.keys.refreshAfterMiss().then(() => {
        // Other verifications ran meanwhile: write the signing input and signature again.
        inputScratch.write(token, 0, dot2, 'latin1');
        signatureScratch.write(token.slice(dot2 + 1), 0, 'base64url');
        return checkSignedJwt(token, key, digest, dot2, claims, known, issuer, issuer.keys.lookup(kid, alg));
      });
    }
    return checkSignedJwt(token, key, digest, dot2, claims, header, issuer, found);
  }

  /** The rest of a JWT's validation; the signing input and signature are in the scratch buffers. */
  function checkSignedJwt(
    token: string,
    cacheKey: string,
    digest: TokenDigest,
    dot2: number,
    claims: JsonObject,
    header: Header,
    issuer: IssuerOptions & { readonly refreshKeys: (() => void) | undefined; readonly readScopes: ScopeReader },
    key: VerificationKey | KeyMiss,
  ): VerifyResult {
    if (key === 'unknown') return deny('token_kid_unknown', { issuer: issuer.issuer, claim: 'kid' });
    if (key === 'ambiguous') return deny('token_key_ambiguous', { issuer: issuer.issuer, claim: 'kid' });
    if (key === 'unavailable') return deny('keys_unavailable', { issuer: issuer.issuer, retryAfter: 5 });
    if (key === 'stale') return deny('keys_stale', { issuer: issuer.issuer, retryAfter: 5 });
    const check = key.checks.get(header.alg as JwsAlgorithm);
    const input = viewOf(inputViews, inputScratch, dot2);
    const signature = viewOf(signatureViews, signatureScratch, ((token.length - dot2 - 1) * 3) >> 2);
    if (!check?.(input, signature)) return deny('token_signature_invalid', { issuer: issuer.issuer });
    const iss = claims.iss;

    // Claims (RFC 7519 §4.1, RFC 9068 §4), now that they are known to come from the issuer.
    const name = issuer.issuer;
    // RFC 8725 §3.11: explicit typing keeps one kind of JWT from being taken for another. Without a
    // configured `typ`, untyped and `JWT` tokens are accepted (most identity providers type their
    // access tokens so), but not one its issuer typed as another kind (`logout+jwt`, `secevent+jwt`,
    // `dpop+jwt`, also with media type parameters): the issuer signed it, for the same audience,
    // and it grants nothing.
    if (issuer.typ === undefined ? header.otherKind : header.typ !== issuer.typ) {
      return deny('token_typ_invalid', claimDetails(name, 'typ'));
    }
    if (typeof iss !== 'string') return deny(iss === undefined ? 'token_claim_missing' : 'token_claim_invalid', claimDetails(name, 'iss'));
    const required = issuer.requiredClaims;
    for (let i = 0; i < required.length; i++) {
      if (!Object.hasOwn(claims, required[i] as string)) return deny('token_claim_missing', claimDetails(name, required[i] as string));
    }
    const { exp, nbf, iat, aud } = claims;
    // Where revocations apply, a token must say when it was issued: a subject or client revoked as
    // of a time refuses the tokens issued until then, for as long as one of those can be valid
    // (`exp - iat` <= max_lifetime), and then the entry is dropped. Without `iat`, a token signed
    // before the revocation would be accepted again once it was, however `required_claims` reads.
    if (iat === undefined && revocation !== undefined) return deny('token_claim_missing', claimDetails(name, 'iat'));
    if (exp === undefined) return deny('token_claim_missing', claimDetails(name, 'exp'));
    if (typeof exp !== 'number') return deny('token_claim_invalid', claimDetails(name, 'exp'));
    if (nbf !== undefined && typeof nbf !== 'number') return deny('token_claim_invalid', claimDetails(name, 'nbf'));
    if (iat !== undefined && typeof iat !== 'number') return deny('token_claim_invalid', claimDetails(name, 'iat'));
    const nowMs = clock();
    const now = Math.floor(nowMs / 1000);
    const skew = issuer.clockSkew;
    if (exp <= now - skew) return deny('token_expired', claimDetails(name, 'exp'));
    if (nbf !== undefined && nbf > now + skew) return deny('token_not_yet_valid', claimDetails(name, 'nbf'));
    if (iat !== undefined && iat > now + skew) return deny('token_iat_in_future', claimDetails(name, 'iat'));
    if (exp - (iat ?? now) > issuer.maxLifetime) return deny('token_lifetime_exceeded', claimDetails(name, 'exp'));
    if (aud === undefined) return deny('token_claim_missing', claimDetails(name, 'aud'));
    if (typeof aud === 'string') {
      if (!issuer.audiences.includes(aud)) return deny('token_audience_invalid', claimDetails(name, 'aud'));
    } else if (Array.isArray(aud) && aud.every((a) => typeof a === 'string')) {
      if (!issuer.audiences.some((a) => aud.includes(a))) return deny('token_audience_invalid', claimDetails(name, 'aud'));
    } else return deny('token_claim_invalid', claimDetails(name, 'aud'));

    const principal = principalFrom('jwt', claims, iss, issuer.clientClaim, issuer.readScopes, issuer.delegationClaim, digest, exp);
    if (typeof principal === 'string') return deny('token_claim_invalid', claimDetails(name, principal));
    // Authentic but revoked (or its revocation unknown): the principal goes with the refusal so the
    // audit trail names who was refused.
    const refused = revocationRefusal(principal);
    if (refused !== undefined) return refused;
    if (cache !== undefined && admit(cacheKey)) return remember(cacheKey, token, principal, (exp + skew) * 1000, true, issuer.refreshKeys);
    return { ok: true, principal };
  }

  function verifyStatic(digest: TokenDigest): Principal | undefined {
    const bytes = Buffer.from(digest.binary, 'latin1');
    let match: StaticTokenOptions | undefined;
    // Compare against every configured token without stopping early (constant time per entry).
    for (const s of staticTokens) if (timingSafeEqual(s.digest, bytes) && !match) match = s;
    if (!match) return undefined;
    return new VerifiedPrincipal(
      {
        kind: 'static',
        issuer: 'static',
        subject: match.subject,
        clientId: undefined,
        audience: Object.freeze([]),
        scopes: match.scopes,
        effectiveScopes: scopes.expand(match.scopes),
        actors: Object.freeze([]),
        delegationId: undefined,
        tokenId: undefined,
        expiresAt: Number.POSITIVE_INFINITY,
        issuedAt: undefined,
        confirmation: undefined,
        staticTokenId: match.id,
        claims: Object.freeze({}),
      },
      digest,
    );
  }

  async function verifyIntrospection(token: string, key: string, digest: TokenDigest, config: IntrospectionOptions): Promise<VerifyResult> {
    let response: IntrospectionResponse;
    try {
      response = await config.introspector.introspect(token);
    } catch {
      return deny('introspection_unavailable', { retryAfter: INTROSPECTION_RETRY_AFTER });
    }
    if (response.active !== true) return deny('token_inactive');
    // The endpoint may describe a token that is no access token (a refresh token, often without
    // `aud`): active says it is valid, not that it is for a resource server.
    const { token_type: tokenType, token_use: tokenUse } = response;
    if (tokenType !== undefined) {
      if (typeof tokenType !== 'string') return deny('token_claim_invalid', { claim: 'token_type' });
      if (!ACCESS_TOKEN_TYPES.has(tokenType.toLowerCase())) return deny('token_typ_invalid', { claim: 'token_type' });
    }
    if (tokenUse !== undefined) {
      if (typeof tokenUse !== 'string') return deny('token_claim_invalid', { claim: 'token_use' });
      if (!ACCESS_TOKEN_USES.has(tokenUse.toLowerCase())) return deny('token_typ_invalid', { claim: 'token_use' });
    }
    const nowMs = clock();
    const now = Math.floor(nowMs / 1000);
    const { exp, nbf, iat, aud } = response;
    if (exp !== undefined && typeof exp !== 'number') return deny('token_claim_invalid', { claim: 'exp' });
    if (nbf !== undefined && typeof nbf !== 'number') return deny('token_claim_invalid', { claim: 'nbf' });
    if (iat !== undefined && typeof iat !== 'number') return deny('token_claim_invalid', { claim: 'iat' });
    // `active` is the endpoint's judgement by its own clock. `nbf` and `iat` are checked again as
    // a JWT's are, with the same tolerance (an endpoint may ignore `nbf`); a past `exp` is refused
    // without one, as a cached answer is never served past it.
    if (typeof exp === 'number' && exp <= now) return deny('token_expired', { claim: 'exp' });
    if (typeof nbf === 'number' && nbf > now + config.clockSkew) return deny('token_not_yet_valid', { claim: 'nbf' });
    if (typeof iat === 'number' && iat > now + config.clockSkew) return deny('token_iat_in_future', { claim: 'iat' });
    // RFC 7662 §2.2 / RFC 7519 §4.1.3: a string or an array of strings, checked whether or not
    // audiences are configured, since it becomes the principal's audience.
    if (aud !== undefined && typeof aud !== 'string' && !(Array.isArray(aud) && aud.every((a) => typeof a === 'string'))) {
      return deny('token_claim_invalid', { claim: 'aud' });
    }
    if (config.audiences) {
      const list = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
      if (!config.audiences.some((a) => list.includes(a))) return deny('token_audience_invalid', { claim: 'aud' });
    }
    // An empty `iss` is no issuer: it would name the principal's issuer "" (revocation by subject
    // or client is keyed by issuer), not stand for the configured one.
    if (response.iss !== undefined && (typeof response.iss !== 'string' || response.iss === '')) {
      return deny('token_claim_invalid', { claim: 'iss' });
    }
    // The answer's `iss` is the endpoint's word, not a signature: the endpoint of one authorization
    // server would otherwise claim another's identity space (a trusted JWT issuer's, this
    // process's token service's), which revocation by subject or client, rate-limit keys, identity
    // headers and the audit trail key on. Only the configured issuer is believed (as Ory
    // Oathkeeper's `trusted_issuers`), compared exactly as a JWT's `iss` is.
    if (response.iss !== undefined && response.iss !== config.issuer) return deny('token_issuer_unknown', { claim: 'iss' });
    const iss = config.issuer;
    const cacheUntil = Math.min(typeof exp === 'number' ? exp : Number.POSITIVE_INFINITY, now + config.cacheMaxTtl);
    const claims = { ...response } as JsonObject;
    const principal = principalFrom(
      'introspection',
      claims,
      iss,
      'client_id',
      readIntrospectedScopes as ScopeReader,
      'grant_id',
      digest,
      typeof exp === 'number' ? exp : cacheUntil,
    );
    if (typeof principal === 'string') return deny('token_claim_invalid', { claim: principal });
    // RFC 9449 §6.2: a DPoP token's answer carries the key it is bound to; without it the token
    // would pass as a bearer token.
    if (principal.confirmation === undefined && typeof tokenType === 'string' && tokenType.toLowerCase() === 'dpop') {
      return deny('token_claim_missing', { claim: 'cnf' });
    }
    // Authentic but revoked (or its revocation unknown): the principal goes with the refusal so the
    // audit trail names who was refused.
    const refused = revocationRefusal(principal);
    if (refused !== undefined) return refused;
    if (cacheUntil > now) return remember(key, undefined, principal, cacheUntil * 1000, isToken68(token));
    return { ok: true, principal };
  }

  /**
   * Validate a token: cache, then static tokens, JWT, introspection. `digest` is its SHA-256, made
   * only when something needs it. `unchecked`: an Authorization header token whose token68 syntax
   * is still to be checked.
   *
   * A JWT's cache key is the end of its signature, which no other token of the issuer's shares and
   * which costs nothing to take, where hashing the token would cost as much as the rest of a
   * first verification besides the signature. Another token that ends alike only finds an entry
   * for a token that is not itself. Any other token's key is its digest (an opaque token's end
   * may be a fixed suffix), which alone makes a hit, so its entry keeps no copy of the token; the
   * two kinds of key differ in length, and an entry of either kind answers only its own kind.
   *
   * A token with a dot is taken for a JWT until the JWT path finds it is no compact JWS; with
   * introspection configured it is then validated again as an opaque token (`jwt` false), so a
   * JWT's hit costs nothing more.
   */
  function validate(token: string, digest: TokenDigest, unchecked: boolean): VerifyResult | Promise<VerifyResult> {
    const jwt = issuers.size > 0 && token.indexOf('.') > 0;
    const key = jwt ? token.slice(-JWT_CACHE_KEY_LENGTH) : digest.binary;
    if (cache) {
      const hit = cache.get(key);
      if (hit !== undefined && hit.token === (jwt ? token : undefined)) {
        const cached = cachedResult(hit, key, token, unchecked);
        if (cached !== undefined) return cached;
      }
      stats.cacheMisses++;
    }
    const result = validateUncached(token, jwt, key, digest, unchecked);
    // Only a failure needs the token68 check of a header token: a JWT that verified is strict
    // base64url, and static and introspected tokens were checked before use.
    if (unchecked && !(result instanceof Promise) && !result.ok && !isToken68(token)) return deny('request_malformed_authorization');
    return result;
  }

  /** A cache entry's result while it holds (counted as a hit); `undefined` once it no longer does (it is then dropped). */
  function cachedResult(hit: CacheEntry, key: string, token: string, unchecked: boolean): VerifyResult | undefined {
    if (unchecked && !hit.token68 && !isToken68(token)) return deny('request_malformed_authorization');
    if (clock() < hit.validUntil) {
      // The key set that vouched for a JWT is refreshed when stale, as a miss would (a
      // removed key then clears the cache).
      hit.refreshKeys?.();
      // A key set dropped just now (past jwks_cache.max_stale) cleared the cache: this hit with it.
      if (hit.refreshKeys !== undefined && cache?.has(key) !== true) return undefined;
      if (revocation === undefined || hit.epoch === revocation.epoch) {
        stats.cacheHits++;
        return hit.result;
      }
      const refused = revocationRefusal(hit.principal);
      if (refused === undefined) {
        hit.epoch = revocation.epoch;
        stats.cacheHits++;
        return hit.result;
      }
      // A check that gave no answer, or cannot vouch now, refuses this request; the entry stays,
      // to be checked again.
      if (refused.error.code === 'revocation_unavailable' || refused.error.code === 'revocation_state_stale') return refused;
    }
    cache?.delete(key);
    return undefined;
  }

  /**
   * A token with a dot that the JWT path found is no compact JWS, with introspection configured:
   * an opaque token (Ory's `ory_at_….…`), looked up under its digest and introspected on a miss.
   * (The miss under its end was counted already.)
   */
  function validateOpaque(token: string, digest: TokenDigest, unchecked: boolean): VerifyResult | Promise<VerifyResult> {
    const key = digest.binary;
    const hit = cache?.get(key);
    if (hit !== undefined && hit.token === undefined) {
      const cached = cachedResult(hit, key, token, unchecked);
      if (cached !== undefined) {
        stats.cacheMisses--;
        return cached;
      }
    }
    return validateUncached(token, false, key, digest, unchecked);
  }

  function validateUncached(
    token: string,
    jwt: boolean,
    key: string,
    digest: TokenDigest,
    unchecked: boolean,
  ): VerifyResult | Promise<VerifyResult> {
    if (staticTokens.length > 0) {
      const principal = verifyStatic(digest);
      if (principal) return unchecked && !isToken68(token) ? deny('request_malformed_authorization') : { ok: true, principal };
    }
    if (jwt) {
      const result = verifyJwt(token, key, digest);
      return result === NOT_JWS ? validateOpaque(token, digest, unchecked) : result;
    }
    if (introspection) {
      // The token leaves the process here, so its syntax is checked first.
      if (unchecked && !isToken68(token)) return deny('request_malformed_authorization');
      let pending = introspecting.get(key);
      if (pending === undefined) {
        pending = verifyIntrospection(token, key, digest, introspection).finally(() => introspecting.delete(key));
        introspecting.set(key, pending);
      }
      return pending;
    }
    return deny(staticTokens.length > 0 ? 'token_unknown' : 'token_malformed');
  }

  function authenticateInner(request: VerifyRequest): VerifyResult | Promise<VerifyResult> {
    const extracted = extractTokenDeferred(request, options.transport);
    if (extracted instanceof TesseraError) return { ok: false, error: extracted };
    const { token, unchecked } = extracted;
    if (token.length > maxTokenSize) {
      return deny(unchecked && !isToken68(token) ? 'request_malformed_authorization' : 'token_too_large');
    }
    const digest = new TokenDigest(token);
    const result = validate(token, digest, unchecked);
    return result instanceof Promise
      ? result.then((r) => bind(r, extracted.scheme, request, digest))
      : bind(result, extracted.scheme, request, digest);
  }

  /** RFC 9449: check the token's sender binding against how it was presented. */
  function bind(
    result: VerifyResult,
    scheme: 'bearer' | 'dpop',
    request: VerifyRequest,
    digest: TokenDigest,
  ): VerifyResult | Promise<VerifyResult> {
    if (!result.ok) return result;
    const { principal } = result;
    const jkt = principal.confirmation?.jkt;
    if (scheme === 'bearer') {
      // §7.2: a bound token presented as a bearer token is refused, else the binding is moot.
      if (jkt !== undefined) return { ok: false, error: new TesseraError('token_dpop_bound_as_bearer'), principal };
      if (dpop.mode === 'required') return { ok: false, error: new TesseraError('token_dpop_required'), principal };
      return result;
    }
    if (dpop.mode === 'disabled' || jkt === undefined) return { ok: false, error: new TesseraError('token_not_dpop_bound'), principal };
    const proof = singleHeader(request.headers, 'dpop');
    if (proof === MULTIPLE) return { ok: false, error: new TesseraError('request_multiple_dpop_proofs'), principal };
    if (proof === undefined || proof === '') return { ok: false, error: new TesseraError('dpop_proof_missing'), principal };
    return checkDpopProof(
      proof,
      { method: request.method, url: request.url, accessTokenHash: encodeBinaryBase64url(digest.binary), jkt },
      dpopCheck,
      Math.floor(clock() / 1000),
      (request as WithRecordedProofs)[RECORDED_PROOFS],
    ).then((checked): VerifyResult => {
      if (checked instanceof TesseraError) return { ok: false, error: checked, principal };
      return checked.nonce === undefined ? result : { ...result, dpopNonce: checked.nonce };
    });
  }

  function pathOf(url: string): string {
    let start = 0;
    let from = 0;
    if (url.charCodeAt(0) !== 0x2f) {
      const scheme = url.indexOf('://');
      from = scheme < 0 ? 0 : scheme + 3;
      start = scheme < 0 ? 0 : url.indexOf('/', from);
      if (start < 0) return '/';
    }
    let end = url.length;
    // Searched from the authority, not from the first '/': RFC 3986 §3.2 ends the authority at the
    // first '/', '?' or '#', so in `https://host?next=/admin` the path is empty, not `/admin`.
    const q = url.indexOf('?', from);
    if (q >= 0) end = q;
    const h = url.indexOf('#', from);
    if (h >= 0 && h < end) end = h;
    return end < start ? '/' : url.slice(start, end);
  }

  function authorize(request: VerifyRequest, result: VerifyResult, activePolicy: Policy): VerifyResult {
    if (!result.ok) return result;
    const decision = activePolicy.evaluate({ method: request.method, path: request.path ?? pathOf(request.url) }, result.principal);
    if (decision.allowed) {
      const allowed: VerifySuccess = { ok: true, principal: result.principal, rule: decision.rule };
      return result.dpopNonce === undefined ? allowed : { ...allowed, dpopNonce: result.dpopNonce };
    }
    const details: { scope?: string; claim?: string } = {};
    if (decision.code === 'scope_insufficient' && decision.rule?.scopeHint) details.scope = decision.rule.scopeHint;
    if (decision.claim) details.claim = decision.claim;
    const failure: VerifyFailure = { ok: false, error: new TesseraError(decision.code, details), principal: result.principal };
    return decision.rule ? { ...failure, rule: decision.rule } : failure;
  }

  // verify and authenticate are not `async`: a cache hit answers with the entry's settled promise.
  // Like async functions, they never throw; a failure becomes a rejected promise.
  function verify(request: VerifyRequest): Promise<VerifyResult> {
    try {
      checkRequest('verify', request);
      const result = authenticateInner(request);
      if (!policy) return settle(result);
      const rules = policy;
      return result instanceof Promise
        ? result.then((r) => authorize(request, r, rules))
        : Promise.resolve(authorize(request, result, rules));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  function authenticate(request: VerifyRequest): Promise<VerifyResult> {
    try {
      checkRequest('authenticate', request);
      return settle(authenticateInner(request));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async function verifyToken(token: string): Promise<VerifyResult> {
    if (typeof token !== 'string') throw new ArgumentError('token', `verifyToken(token): token must be a string, got ${kindOf(token)}`);
    if (token === '') return deny('request_empty_token');
    if (token.length > maxTokenSize) return deny('token_too_large');
    return validate(token, new TokenDigest(token), false);
  }

  return Object.freeze({
    verify,
    authenticate,
    verifyToken,
    challenges: (error?: TesseraError) => challenges(error, options.challenge),
    rules: policy === undefined ? undefined : Object.freeze({ caseInsensitivePaths: policy.caseInsensitivePaths }),
    stats,
  });
}
