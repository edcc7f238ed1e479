/**
 * The client registry: registration input checked once, records compiled for the hot path (scope
 * sets, audience sets, key sources) and cached until the store reports a change, and client
 * authentication at the token, revocation and introspection endpoints:
 * `client_secret_basic` and `client_secret_post` (RFC 6749 §2.3.1; only the one a client
 * registered for, when it did: RFC 7591 §2) and `private_key_jwt` (RFC 7523 §2.2, §3).
 *
 * @module
 */
import { Buffer, isUtf8 } from 'node:buffer';
import { hash, timingSafeEqual } from 'node:crypto';
import { quoted } from '../core/errors.ts';
import { CLIENT_ID } from '../core/identity.ts';
import { ASYMMETRIC_ALGORITHMS, isJwsAlgorithm, type JwsAlgorithm } from '../core/jose/algorithms.ts';
import { decodeJsonSegment, KEY_REFERENCE_HEADERS, splitCompact } from '../core/jose/compact.ts';
import { JwkError, rsaModulusBits, type VerificationKey } from '../core/jose/jwk.ts';
import { KeySet, parseJwks } from '../core/jose/keyset.ts';
import { normalizeTyp } from '../core/jose/typ.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import type { KeySource } from '../core/ports.ts';
import type { EffectiveScopes, ScopeModel } from '../core/scopes.ts';
import { holdsToken } from '../core/secret-shape.ts';
import { BoundedMap } from '../core/verify/bounded-map.ts';
import { STATIC_SUBJECT_PREFIX } from '../core/verify/principal.ts';
import { jtiDigest } from '../core/verify/replay.ts';
import {
  type ClientRecord,
  type ClientSecretMethod,
  GRANT_TYPES,
  type GrantType,
  PUBLIC_CLIENT_GRANT_TYPES,
  type Store,
} from '../store/contract.ts';
import { allowedOriginProblem, redirectUriProblem } from './redirect-uris.ts';
import { CLIENT_SECRET_PREFIX, randomSecret, type SecretHasher } from './secrets.ts';

/**
 * Prefix of the ids of clients registered through RFC 7591 dynamic registration (reserved: an
 * operator cannot give it to a client). Their redirect URIs are the registrant's word, not the
 * operator's, which is what the authorization endpoint needs to know (`src/issuer/authorize.ts`).
 */
export const DYNAMIC_CLIENT_ID_PREFIX = 'dcr_';

/**
 * The largest RSA modulus a client's private_key_jwt key may have, as a DPoP proof key
 * (`DPOP_MAX_RSA_BITS`): an assertion's signature is checked before anything else vouches for its
 * sender, and a check's cost grows with the modulus (16384 bits: ~2.6 ms, 40 ES256 checks).
 * Refused at registration, and at the token endpoint for a key a jwks_uri serves.
 */
export const CLIENT_KEY_MAX_RSA_BITS = 4096;

/** RFC 6749 §3.3 scope-token. */
export const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** `typ` values of a client assertion, lower case, without `application/`. */
const ASSERTION_TYPES: ReadonlySet<string> = new Set(['jwt', 'client-authentication+jwt']);

/** A client registration as the CLI or admin API gives it. */
export interface ClientInput {
  readonly id: string;
  readonly scopes: readonly string[];
  readonly audiences: readonly string[];
  readonly grantTypes?: readonly string[];
  /** Access-token lifetime, seconds. */
  readonly ttl?: number;
  /** Inline JWKS for private_key_jwt. */
  readonly jwks?: unknown;
  /** JWKS URL for private_key_jwt. */
  readonly jwksUri?: string;
  /** Token exchange may issue tokens for audiences outside the subject token's (default false). */
  readonly retargetAudiences?: boolean;
  /** Redirect URIs for the authorization code grant (https, or http on loopback only). */
  readonly redirectUris?: readonly string[];
  /**
   * A public client (`token_endpoint_auth_method: none`): no secret, no keys; only the
   * authorization code (with PKCE) and refresh token grants.
   */
  readonly public?: boolean;
  /** Name shown on the consent page. */
  readonly name?: string;
  /**
   * Origins whose pages may call the token, revocation and introspection endpoints as this client
   * (see {@link ClientRecord.allowedOrigins}); absent or empty, `token_service.cors` alone decides.
   */
  readonly allowedOrigins?: readonly string[];
  /**
   * A secret client's one way of sending its secret (RFC 7591 `token_endpoint_auth_method`); absent,
   * it may use either. Refused for a public or private_key_jwt client.
   */
  readonly secretMethod?: ClientSecretMethod;
  /**
   * RFC 9449 §5.2 `dpop_bound_access_tokens`: the client always uses DPoP, so each of its token
   * requests without a valid DPoP proof is refused (default false).
   */
  readonly dpopBound?: boolean;
}

/** Most origins one client may list: each is compared at every request of the client that carries `Origin`. */
export const MAX_ALLOWED_ORIGINS = 20;

/** Longest client name accepted (it is shown on the consent page). */
export const CLIENT_NAME_MAX = 100;

/**
 * Characters that show as nothing on their own: spaces, format characters (U+200B, tags), default
 * ignorables (the Hangul fillers U+115F, U+1160, U+3164, U+FFA0), combining marks (drawn on the
 * character before them: with none, a lone accent or nothing), the braille blank U+2800 and the
 * musical null notehead U+1D159 (symbols drawn empty).
 */
const BLANK = /[\p{White_Space}\p{Cf}\p{Default_Ignorable_Code_Point}\p{M}\u2800\u{1D159}]/gu;
/** A letter, digit, punctuation mark or symbol: what can be seen (not private use, unassigned or a surrogate). */
const GRAPHIC = /[\p{L}\p{N}\p{P}\p{S}]/u;
// \p{Cs} matches only a lone surrogate (JSON allows "\ud800"): the store writes it as U+FFFD, so
// the name shown would not be the one checked.
const REFUSED = /[\p{Cc}\p{Zl}\p{Zp}\p{Bidi_Control}\p{Cs}]/u;

/**
 * Whether `name` may be shown as a client's name: 1 to {@link CLIENT_NAME_MAX} characters, at
 * least one of them visible: a letter, digit, punctuation mark or symbol other than those that
 * render as nothing (not only spaces, format characters such as U+200B, fillers such as U+3164, the
 * braille blank U+2800, or combining marks with no base: the consent page would show a blank name),
 * well-formed UTF-16 (no lone surrogate), no control characters, no line or paragraph separators, and no bidirectional formatting
 * characters (U+202E and its kin, which would reorder what the consent page shows after the name,
 * in the person's eyes). A joiner between visible characters (an emoji sequence) and combining
 * marks on a visible base (`e` + U+0301) are kept. The consent page escapes whatever is left.
 */
export function isClientName(name: string): boolean {
  return name.length <= CLIENT_NAME_MAX && GRAPHIC.test(name.replace(BLANK, '')) && !REFUSED.test(name);
}

/**
 * The lower-case names a comparison that ignores case may read `subject` as: its plain lower case,
 * its Unicode case mapping (`ı` dotless i and `ſ` long s upper-case to I and S, the Kelvin sign
 * lower-cases to k: Java's `equalsIgnoreCase`, .NET, JavaScript, PostgreSQL's `lower()`) and its
 * compatibility form (full-width letters, ligatures: NFKC, as PRECIS' UsernameCaseMapped profile of
 * RFC 8265 compares identifiers). Usually one name: an ASCII subject reads only as itself.
 */
function readings(subject: string): Set<string> {
  return new Set([
    subject.toLowerCase(),
    subject.toUpperCase().toLowerCase(),
    subject.normalize('NFKC').toUpperCase().toLowerCase(),
    // `İ` (U+0130): JavaScript lower-cases it to `i` and a combining dot, Java's equalsIgnoreCase
    // and Turkish-aware collations to `i`.
    subject
      .replace(/\u0130/g, 'i')
      .normalize('NFKC')
      .toUpperCase()
      .toLowerCase(),
  ]);
}

/** What an operator may change on a registered client (`tessera clients update`). */
export interface ClientUpdate {
  /** Token exchange may issue tokens for audiences outside the subject token's (see {@link ClientInput.retargetAudiences}). */
  readonly retargetAudiences?: boolean;
  /** The client's own allowed origins, replaced whole (see {@link ClientInput.allowedOrigins}); empty removes them. */
  readonly allowedOrigins?: readonly string[];
  /** Every token request must carry a DPoP proof (see {@link ClientInput.dpopBound}). */
  readonly dpopBound?: boolean;
}

/**
 * A client's allowed origins as registered: each checked, repeats dropped.
 * @throws {ClientInputError} `allowed_origin_invalid`
 */
export function checkAllowedOrigins(origins: readonly string[]): string[] {
  const unique = [...new Set(origins)];
  const problems: ClientInputError[] = [];
  for (const origin of unique) {
    const problem = allowedOriginProblem(origin);
    if (problem !== undefined) problems.push(new ClientInputError('allowed_origin_invalid', problem, 'allowedOrigins'));
  }
  if (unique.length > MAX_ALLOWED_ORIGINS) {
    problems.push(
      new ClientInputError('allowed_origin_invalid', `a client lists at most ${MAX_ALLOWED_ORIGINS} origins`, 'allowedOrigins'),
    );
  }
  if (problems.length > 0) throw ClientInputError.all(problems);
  return unique;
}

/** The part of a {@link ClientInput} a refusal is about. */
export type ClientInputField =
  | 'id'
  | 'scopes'
  | 'audiences'
  | 'grantTypes'
  | 'ttl'
  | 'redirectUris'
  | 'name'
  | 'jwks'
  | 'jwksUri'
  | 'secretMethod'
  | 'allowedOrigins';

/** The codes of {@link ClientInputError}, one per reason a registration is refused. */
export const CLIENT_INPUT_ERROR_CODES = [
  'client_id_invalid',
  'client_id_reserved',
  'scope_invalid',
  'scope_unknown',
  'audience_missing',
  'audience_invalid',
  'grant_type_unsupported',
  'ttl_invalid',
  'jwks_conflict',
  'redirect_uri_invalid',
  'redirect_uri_missing',
  'public_client_keys',
  'public_client_grant_type',
  'client_name_invalid',
  'jwks_invalid',
  'jwks_uri_invalid',
  'auth_method_conflict',
  'jwks_key_ambiguous',
  'allowed_origin_invalid',
] as const;

/** The closed union of {@link ClientInputError} codes. */
export type ClientInputErrorCode = (typeof CLIENT_INPUT_ERROR_CODES)[number];

/**
 * A registration refused, with the reason (never a secret) and, when the refusal is about one
 * input, which (the CLI names its flag: `--scopes: …`).
 */
export class ClientInputError extends Error {
  override readonly name = 'ClientInputError';
  /** Why, stable: callers switch on this, not on the message. */
  readonly code: ClientInputErrorCode;
  readonly field: ClientInputField | undefined;
  /**
   * Every problem found in the input, this one (the first) first: a registration is checked
   * whole, so that the operator can fix every flag at once.
   */
  readonly problems: readonly ClientInputError[];
  constructor(code: ClientInputErrorCode, message: string, field?: ClientInputField, others: readonly ClientInputError[] = []) {
    super(message);
    this.code = code;
    this.field = field;
    this.problems = [this, ...others];
  }

  /** One error for several problems (at least one): the first's code, message and field, and all of them. */
  static all(problems: readonly ClientInputError[]): ClientInputError {
    const [first, ...others] = problems.flatMap((p) => p.problems);
    if (first === undefined) throw new TypeError('ClientInputError.all needs a problem');
    return others.length === 0 ? first : new ClientInputError(first.code, first.message, first.field, others);
  }
}

/**
 * Check a registration and build its record. Secret clients get a fresh secret, returned once.
 * @throws {ClientInputError} naming the first problem, with every problem found in `problems`.
 */
export function buildClient(
  input: ClientInput,
  options: { readonly hasher: SecretHasher; readonly maxTtl: number; readonly now: number },
): { record: ClientRecord; secret: string | undefined } {
  const problems: ClientInputError[] = [];
  const refuse = (...args: ConstructorParameters<typeof ClientInputError>) => void problems.push(new ClientInputError(...args));
  if (holdsToken(input.id)) {
    // The id is public (clients list, every audit event of the client): a secret pasted there
    // (tcs_… of another client, a refresh token, a JWT: each fits the id pattern) is not kept, nor quoted.
    refuse(
      'client_id_invalid',
      `client id ${quoted(input.id)} looks like a token or a secret; a client id is public (clients list, the audit trail): choose a name`,
      'id',
    );
  } else if (!CLIENT_ID.test(input.id)) {
    refuse('client_id_invalid', `client id ${quoted(input.id)} must be 1-128 characters of letters, digits, ".", "_" or "-"`, 'id');
  }
  for (const s of input.scopes) {
    if (!SCOPE_TOKEN.test(s)) refuse('scope_invalid', `${quoted(s)} is not a valid scope (RFC 6749 §3.3)`, 'scopes');
  }
  if (input.audiences.length === 0) refuse('audience_missing', 'give at least one audience the client may request tokens for', 'audiences');
  for (const a of input.audiences) {
    if (a === '' || /[\s\p{Cc}]/u.test(a)) {
      refuse('audience_invalid', `audience ${quoted(a)} must be non-empty without whitespace or control characters`, 'audiences');
    } else if (URL.canParse(a) && (new URL(a).username !== '' || new URL(a).password !== '')) {
      // Every token issued for it would carry the password in `aud` (clients list, logs, every
      // resource server that sees the token): refused, and named without its user:password@ part.
      const shown = new URL(a);
      shown.username = '';
      shown.password = '';
      refuse(
        'audience_invalid',
        `audience ${shown.href} must not carry a user name or password; write it without user:password@`,
        'audiences',
      );
    }
  }
  const grantTypes = [...new Set(input.grantTypes ?? (input.public === true ? PUBLIC_CLIENT_GRANT_TYPES : ['client_credentials']))];
  for (const g of grantTypes) {
    if (!(GRANT_TYPES as readonly string[]).includes(g)) {
      refuse('grant_type_unsupported', `grant type ${quoted(g)} is not supported; use ${GRANT_TYPES.join(', ')}`, 'grantTypes');
    }
  }
  if (input.ttl !== undefined && (!Number.isInteger(input.ttl) || input.ttl < 1 || input.ttl > options.maxTtl)) {
    refuse('ttl_invalid', `ttl must be a whole number of seconds between 1 and ${options.maxTtl} (max_access_token_ttl)`, 'ttl');
  }
  if (input.jwks !== undefined && input.jwksUri !== undefined) refuse('jwks_conflict', 'give --jwks or --jwks-uri, not both');
  const redirectUris = [...new Set(input.redirectUris ?? [])];
  for (const uri of redirectUris) {
    const problem = redirectUriProblem(uri);
    if (problem !== undefined) refuse('redirect_uri_invalid', problem, 'redirectUris');
  }
  let allowedOrigins: string[] = [];
  try {
    allowedOrigins = checkAllowedOrigins(input.allowedOrigins ?? []);
  } catch (e) {
    if (!(e instanceof ClientInputError)) throw e;
    problems.push(...e.problems);
  }
  if (grantTypes.includes('authorization_code') && redirectUris.length === 0) {
    refuse('redirect_uri_missing', 'the authorization_code grant needs at least one redirect URI', 'redirectUris');
  }
  if (input.public === true) {
    if (input.jwks !== undefined || input.jwksUri !== undefined)
      refuse('public_client_keys', 'a public client has no keys; drop --jwks/--jwks-uri');
    // An unsupported grant type is refused as that, above.
    const other = grantTypes.find(
      (g) => (GRANT_TYPES as readonly string[]).includes(g) && !(PUBLIC_CLIENT_GRANT_TYPES as readonly string[]).includes(g),
    );
    if (other !== undefined) {
      refuse(
        'public_client_grant_type',
        `a public client may use only ${PUBLIC_CLIENT_GRANT_TYPES.join(' and ')}, not ${other}`,
        'grantTypes',
      );
    }
  }
  if (input.name !== undefined && !isClientName(input.name)) {
    refuse(
      'client_name_invalid',
      `a client name must be 1-${CLIENT_NAME_MAX} characters, some of them visible, without control, line separator or bidirectional formatting characters or unpaired surrogates`,
      'name',
    );
  }
  let jwks: ClientRecord['jwks'] = null;
  if (input.jwks !== undefined) {
    let parsed: ReturnType<typeof parseJwks> | undefined;
    try {
      parsed = parseJwks(input.jwks, { algorithms: ASYMMETRIC_ALGORITHMS, publicOnly: true, maxRsaBits: CLIENT_KEY_MAX_RSA_BITS });
    } catch (e) {
      refuse('jwks_invalid', `JWKS: ${e instanceof JwkError ? e.message : 'invalid'}`, 'jwks');
    }
    if (parsed !== undefined) {
      for (const problem of parsed.problems) {
        const named = problem.kid === undefined ? '' : ` (${JSON.stringify(problem.kid)})`;
        refuse('jwks_invalid', `JWKS key ${problem.index}${named}: ${problem.message}`, 'jwks');
      }
      if (parsed.problems.length === 0) {
        const unreachable = unreachableKey(parsed.keys);
        if (parsed.keys.length === 0) refuse('jwks_invalid', 'the JWKS holds no key', 'jwks');
        else if (unreachable !== undefined) refuse('jwks_key_ambiguous', unreachable, 'jwks');
        else jwks = { keys: parsed.keys.map((k) => ({ ...k.publicJwk })) };
      }
    }
  }
  if (input.jwksUri !== undefined) {
    const u = URL.canParse(input.jwksUri) ? new URL(input.jwksUri) : undefined;
    const ok =
      u !== undefined && (u.protocol === 'https:' || (u.protocol === 'http:' && ['localhost', '127.0.0.1', '[::1]'].includes(u.hostname)));
    if (!ok) refuse('jwks_uri_invalid', '--jwks-uri must be an https URL (http only on localhost)', 'jwksUri');
    // fetch refuses a URL with credentials (every fetch would fail), as an issuer's jwks_uri is refused.
    else if (u.username !== '' || u.password !== '')
      refuse('jwks_uri_invalid', '--jwks-uri must not hold a user:password@ part', 'jwksUri');
  }
  const keyClient = input.jwks !== undefined || input.jwksUri !== undefined;
  const publicClient = input.public === true;
  if (input.secretMethod !== undefined) {
    if (input.secretMethod !== 'client_secret_basic' && input.secretMethod !== 'client_secret_post') {
      refuse('auth_method_conflict', 'the secret method is client_secret_basic or client_secret_post', 'secretMethod');
    } else if (keyClient || publicClient) {
      refuse('auth_method_conflict', 'only a secret client has a secret method; drop it, or --public/--jwks/--jwks-uri', 'secretMethod');
    }
  }
  if (problems.length > 0) throw ClientInputError.all(problems);
  const secret = keyClient || publicClient ? undefined : randomSecret(CLIENT_SECRET_PREFIX);
  const record: ClientRecord = {
    id: input.id,
    authMethod: publicClient ? 'none' : keyClient ? 'private_key_jwt' : 'client_secret',
    secretMethod: input.secretMethod ?? null,
    secretHash: secret === undefined ? null : options.hasher.hash(secret),
    jwks,
    jwksUri: input.jwksUri ?? null,
    scopes: [...new Set(input.scopes)],
    audiences: [...new Set(input.audiences)],
    grantTypes: grantTypes as GrantType[],
    accessTokenTtl: input.ttl ?? null,
    exchangeRetargetAudiences: input.retargetAudiences === true,
    redirectUris,
    allowedOrigins,
    dpopBoundAccessTokens: input.dpopBound === true,
    name: input.name?.trim() ?? null,
    disabled: false,
    createdAt: options.now,
    updatedAt: options.now,
  };
  return { record, secret };
}

/**
 * Why a key of a client's JWKS could never verify an assertion, or undefined when each can: a key
 * is picked by the assertion's `kid` and `alg` (or its `alg` alone, without `kid`) only when no
 * other key fits as well ({@link KeySet.lookup}), so two keys with one kid for one algorithm, or a
 * key without kid beside another key of its algorithm, leave it unpicked for every assertion (they
 * would fail as `client_assertion_key_ambiguous`). The kid is named: it is public.
 */
function unreachableKey(keys: readonly VerificationKey[]): string | undefined {
  const set = new KeySet(keys);
  for (const [i, key] of keys.entries()) {
    const algs = [...key.checks.keys()];
    if (algs.some((alg) => set.lookup(key.kid, alg) === key || set.lookup(undefined, alg) === key)) continue;
    for (const alg of algs) {
      const j = keys.findIndex((other, n) => n !== i && other.checks.has(alg) && (key.kid === undefined || other.kid === key.kid));
      if (j < 0) continue;
      const [first, second] = [Math.min(i, j), Math.max(i, j)];
      if (key.kid !== undefined) {
        return `JWKS keys ${first} and ${second} both have kid ${JSON.stringify(key.kid)} for ${alg}: an assertion naming it could not tell which of them signed it; give each key its own kid`;
      }
      const otherKid = (keys[j] as VerificationKey).kid;
      return otherKid === undefined
        ? `JWKS keys ${first} and ${second} both have no kid for ${alg}: an assertion could not tell which of them signed it; give each key a kid`
        : `JWKS key ${i} has no kid and key ${j} also verifies ${alg}: an assertion without kid could not tell which of them signed it; give key ${i} a kid`;
    }
  }
  return undefined;
}

/** A client compiled for the request path. */
export interface CompiledClient {
  readonly record: ClientRecord;
  readonly id: string;
  readonly scopes: EffectiveScopes;
  readonly audiences: ReadonlySet<string>;
  readonly grantTypes: ReadonlySet<string>;
  /** Keys for private_key_jwt. */
  readonly keys: KeySource | undefined;
  /** The stored secret hash, decoded once. */
  readonly secretHash: Buffer | null;
}

/** A client whose credentials were checked, but for the single use of its assertion (see `ClientRegistry.authenticateUnspent`). */
export interface ClientAuthentication {
  readonly client: CompiledClient;
  /**
   * Record the private_key_jwt assertion's `jti` as used (atomically, in the store's replay cache;
   * nothing to do for another method).
   * @throws {OAuthError} `client_assertion_replayed` when it was used already.
   */
  readonly spend: () => Promise<void>;
}

const SPENT = (): Promise<void> => Promise.resolve();

/** What client authentication reads from a request. */
export interface ClientAuthRequest {
  readonly params: URLSearchParams;
  readonly authorization: string | undefined;
  /** Absolute URL of the endpoint called (no longer an accepted assertion `aud`; see {@link ClientRegistryOptions.assertionAudience}). */
  readonly endpointUrl: string;
  /**
   * The `Origin` header of a browser's request (not of a preflight): a client with allowed origins
   * of its own ({@link ClientRecord.allowedOrigins}) is refused, once identified, from any other.
   * Absent from a server's request, which sends none.
   */
  readonly origin?: string | undefined;
  /**
   * Told the identified client's own allowed origins before they are checked, so the HTTP adapter
   * names back (`Access-Control-Allow-Origin`) only an origin the client allows.
   */
  readonly onClientOrigins?: ((origins: readonly string[]) => void) | undefined;
}

export interface ClientRegistryOptions {
  readonly store: Store;
  /** Absent in processes without the master key; secret authentication then always fails. */
  readonly hasher: SecretHasher | undefined;
  readonly scopes: ScopeModel;
  /**
   * A scope a client holds only when its record names it (the admin scope): neither a wildcard nor
   * a scope implying it grants it, so no token carrying it is issued to a client not given it by name.
   */
  readonly namedOnly?: string;
  /** Builds a key source for a client's `jwks_uri` (an adapter: it fetches over HTTP). */
  readonly remoteKeys: ((uri: string) => KeySource) | undefined;
  /** The one audience a client assertion may name: the issuer identifier (RFC 7523bis, RFC 9700 §2.8). */
  readonly assertionAudience: string;
  readonly assertionMaxLifetime: number;
  /** Epoch seconds. */
  readonly now: () => number;
  /** Most compiled clients kept (default {@link CLIENT_CACHE_SIZE}; oldest evicted first). */
  readonly cacheSize?: number;
}

/**
 * Compiled clients kept in memory. Open dynamic registration lets anyone add clients to the store
 * (a few per address), and each one used at the authorization or token endpoint would otherwise
 * stay compiled for the life of the process; an evicted client costs one store read.
 */
export const CLIENT_CACHE_SIZE = 10_000;

/** `scopes` without `reserved` unless `named` lists it (see {@link ClientRegistryOptions.namedOnly}). */
export function withoutUnnamed(scopes: EffectiveScopes, named: readonly string[], reserved: string | undefined): EffectiveScopes {
  if (reserved === undefined || named.includes(reserved) || !scopes.has(reserved)) return scopes;
  return Object.freeze({
    has: (scope: string) => scope !== reserved && scopes.has(scope),
    list: scopes.list.filter((x) => x !== reserved),
    wildcards: scopes.wildcards,
  });
}

function formDecode(s: string): string | undefined {
  // Generated ids and secrets need no decoding; skip the work for them.
  if (s.indexOf('%') < 0 && s.indexOf('+') < 0) return s;
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

/** The client registry with its cache and the authentication methods. */
export class ClientRegistry {
  readonly #o: ClientRegistryOptions;
  readonly #cache: BoundedMap<string, CompiledClient>;
  /** Bumped by every {@link ClientRegistry.invalidate}: a read begun before one is not cached. */
  #generation = 0;
  readonly #remote = new Map<string, KeySource>();
  /**
   * SHA-256 of the secret that last passed the HMAC check, per compiled client (so a changed or
   * disabled client, recompiled after a store change, starts afresh). A client presenting the same
   * secret again is checked by one SHA-256 and a constant-time comparison instead of an HMAC; a
   * secret carries 256 random bits, so the digest is as binding as the HMAC and, unlike the secret,
   * useless if memory leaked. Anything else takes the full HMAC path.
   */
  readonly #verified = new WeakMap<CompiledClient, Buffer>();
  readonly #dummyDigest = Buffer.alloc(32);
  /** {@link ClientRegistry.corsOrigins}, read at a generation. */
  #origins: { readonly generation: number; readonly value: Promise<ReadonlySet<string>> } | undefined;

  constructor(options: ClientRegistryOptions) {
    this.#o = options;
    this.#cache = new BoundedMap(options.cacheSize ?? CLIENT_CACHE_SIZE);
  }

  /** Compiled clients held (for tests of the bound). */
  get cached(): number {
    return this.#cache.size;
  }

  /** Forget cached clients (all, or one) after a change. */
  invalidate(id?: string): void {
    this.#generation++;
    if (id === undefined) this.#cache.clear();
    else this.#cache.delete(id);
  }

  compile(record: ClientRecord): CompiledClient {
    let keys: KeySource | undefined;
    if (record.jwks !== null) {
      keys = new KeySet(parseJwks(record.jwks, { algorithms: ASYMMETRIC_ALGORITHMS, publicOnly: true }).keys);
    } else if (record.jwksUri !== null && this.#o.remoteKeys) {
      keys = this.#remote.get(record.jwksUri);
      if (keys === undefined) {
        keys = this.#o.remoteKeys(record.jwksUri);
        this.#remote.set(record.jwksUri, keys);
      }
    }
    return Object.freeze({
      record,
      id: record.id,
      scopes: withoutUnnamed(this.#o.scopes.expand(record.scopes), record.scopes, this.#o.namedOnly),
      audiences: new Set(record.audiences),
      grantTypes: new Set<string>(record.grantTypes),
      keys,
      secretHash: record.secretHash === null ? null : Buffer.from(record.secretHash, 'base64url'),
    });
  }

  /** The compiled client, from the cache or the store. */
  async get(id: string): Promise<CompiledClient | undefined> {
    // No client has another id (registration checks it): a NUL, which PostgreSQL refuses in a
    // query's text, would otherwise turn an unknown client into a 500, and garbage into a read.
    if (!CLIENT_ID.test(id)) return undefined;
    const hit = this.#cache.get(id);
    if (hit !== undefined) return hit;
    const generation = this.#generation;
    const record = await this.#o.store.getClient(id);
    if (record === undefined) return undefined;
    const compiled = this.compile(record);
    // A change noticed while the read was in flight (this process's, or another instance's at the
    // next sync) may postdate what it read: that answer serves this call only, or it would outlive
    // the invalidation (a removed client's old secret accepted until the next client change).
    if (generation === this.#generation) this.#cache.set(id, compiled);
    return compiled;
  }

  /**
   * True when `subject`, as a person's or another issuer's subject, could pass for a client or a
   * static token: a client's id in any case (RFC 9068 §5: a client_credentials token's `sub` is
   * its client id; a resource server or a database collation comparing without case reads `MCPC`
   * as client `mcpc`; Unicode spellings too, see {@link readings}), or the `static:` form of a
   * static token's subject, in any case. Read from the store, so a client registered by another
   * instance counts at once.
   */
  async couldPassForClient(subject: string): Promise<boolean> {
    for (const name of readings(subject)) {
      if (name.startsWith(STATIC_SUBJECT_PREFIX)) return true;
      // No client id is longer, or holds anything but ASCII letters, digits, '.', '_' and '-'.
      if (CLIENT_ID.test(name) && (await this.#o.store.findClientIdIgnoringCase(name)) !== undefined) return true;
    }
    return false;
  }

  /**
   * After {@link ClientRegistry.authenticateUnspent}, whether the page calling may act as `client`.
   * @throws {OAuthError} `cors_origin_not_allowed_for_client` (401 invalid_client) when the client
   *   allows origins of its own and the request's `Origin` is none of them.
   */
  checkOrigin(client: CompiledClient, req: ClientAuthRequest): void {
    // Per-client CORS (Hydra's allowed_cors_origins): a page of another origin, even one
    // token_service.cors lists or another client allows, may not act as this client. Refused rather
    // than answered without CORS headers: the browser could not read the answer either way, but a
    // form POST needs no preflight, and answered, it would still redeem a code or revoke a token.
    const own = client.record.allowedOrigins;
    req.onClientOrigins?.(own);
    if (req.origin !== undefined && own.length > 0 && !own.includes(req.origin)) {
      throw new OAuthError('cors_origin_not_allowed_for_client', {
        basic: req.authorization !== undefined && /^basic(?:\s|$)/i.test(req.authorization),
      });
    }
  }

  /**
   * The origins any enabled client allows of its own: what a preflight, which names no client, is
   * answered for beside `token_service.cors.allowed_origins`. Read once per change of the clients
   * (this process's, or another's noticed at a sync: {@link ClientRegistry.invalidate}).
   */
  corsOrigins(): Promise<ReadonlySet<string>> {
    const generation = this.#generation;
    if (this.#origins?.generation === generation) return this.#origins.value;
    const value = this.#o.store
      .listClients()
      .then((clients) => new Set(clients.filter((c) => !c.disabled).flatMap((c) => c.allowedOrigins)) as ReadonlySet<string>);
    this.#origins = { generation, value };
    // A failed read (the store down) is not kept: the next preflight reads again.
    value.catch(() => {
      if (this.#origins?.value === value) this.#origins = undefined;
    });
    return value;
  }

  /**
   * Authenticate the client of a request. Exactly one method must be used (RFC 6749 §2.3); an
   * Authorization header of another scheme than Basic counts as one, and is refused. The single use
   * of a private_key_jwt assertion's `jti` (RFC 7523 §3) is left to
   * {@link ClientAuthentication.spend}, which the caller runs once it has admitted the client (its
   * rate limit): an endpoint refusing the authenticated client first leaves the assertion unspent,
   * and the client may send it again. There is no variant spending it here: it would bring back
   * that order (an assertion burnt by a 429).
   * @throws {OAuthError} `invalid_client` (401, with a Basic challenge when Basic was tried) or
   *   `invalid_request` when several methods are combined.
   */
  async authenticateUnspent(req: ClientAuthRequest, options: { readonly allowPublic?: boolean } = {}): Promise<ClientAuthentication> {
    const { params, authorization } = req;
    const basic = authorization !== undefined && /^basic(?:\s|$)/i.test(authorization);
    const postSecret = params.get('client_secret');
    const assertion = params.get('client_assertion');
    // An Authorization header of any scheme is a credential: one not read here (Bearer, DPoP,
    // Digest, …) is refused, never ignored while the body's method (or none, for a public client)
    // decides; its sender learns that only Basic is read.
    const methods = (authorization !== undefined ? 1 : 0) + (postSecret ? 1 : 0) + (assertion ? 1 : 0);
    if (methods > 1) throw new OAuthError('client_auth_multiple_methods', { basic });
    const bodyClientId = params.get('client_id') || undefined;
    if (methods === 0) {
      // A public client identifies itself by client_id alone (RFC 6749 §2.3, §3.2.1); a client
      // registered with a credential must present it.
      if (options.allowPublic !== true || bodyClientId === undefined) throw new OAuthError('client_auth_missing');
      const client = await this.get(bodyClientId);
      if (client === undefined) throw new OAuthError('client_unknown');
      if (client.record.authMethod !== 'none') throw new OAuthError('client_auth_missing');
      if (client.record.disabled) throw new OAuthError('client_disabled');
      return { client, spend: SPENT };
    }

    if (authorization !== undefined && !basic) throw new OAuthError('client_auth_malformed');
    if (basic) {
      const parsed = this.#parseBasic(authorization as string);
      if (!parsed) throw new OAuthError('client_auth_malformed', { basic: true });
      if (bodyClientId !== undefined && bodyClientId !== parsed.id) throw new OAuthError('client_auth_malformed', { basic: true });
      return { client: await this.#checkSecret(parsed.id, parsed.secret, true), spend: SPENT };
    }
    if (postSecret) {
      if (bodyClientId === undefined) throw new OAuthError('client_auth_malformed');
      return { client: await this.#checkSecret(bodyClientId, postSecret, false), spend: SPENT };
    }
    if (params.get('client_assertion_type') !== JWT_BEARER) throw new OAuthError('client_auth_malformed');
    return this.#checkAssertion(assertion as string, bodyClientId);
  }

  #parseBasic(header: string): { id: string; secret: string } | undefined {
    const m = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header);
    if (!m) return undefined;
    // RFC 7617 §2: the base64 of RFC 4648 §4, padded, in its one spelling. Node decodes anything
    // (padding missing or extra, stray bits in the last character) and reads bytes that are not
    // UTF-8 as U+FFFD: refused instead, as form bodies are.
    const bytes = Buffer.from(m[1] as string, 'base64');
    if (bytes.toString('base64') !== m[1] || !isUtf8(bytes)) return undefined;
    const decoded = bytes.toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 1) return undefined;
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    const id = formDecode(decoded.slice(0, colon));
    const secret = formDecode(decoded.slice(colon + 1));
    if (!id || !secret) return undefined;
    return { id, secret };
  }

  async #checkSecret(id: string, secret: string, basic: boolean): Promise<CompiledClient> {
    const client = await this.get(id);
    const stored = client?.record.authMethod === 'client_secret' ? client.secretHash : null;
    let ok = false;
    if (this.#o.hasher !== undefined && secret.length <= 512) {
      // Every request pays one SHA-256 and comparison; a miss then pays one HMAC and comparison
      // too, whether or not the client exists, so the secret check's time says nothing about which
      // clients exist. The read before it does: a cached client costs no store read, an id no
      // client has costs one each time (a round trip to PostgreSQL). Client ids are no secret
      // (RFC 6749 §2.2), and the answer is the same either way.
      const digest = hash('sha256', secret, 'buffer');
      const known = client === undefined ? undefined : this.#verified.get(client);
      const same = timingSafeEqual(digest, known ?? this.#dummyDigest) && known !== undefined;
      ok = same || this.#o.hasher.verify(secret, stored);
      if (ok && !same && client !== undefined && stored !== null) this.#verified.set(client, digest);
    }
    if (!client) throw new OAuthError('client_unknown', { basic });
    if (client.record.authMethod !== 'client_secret') throw new OAuthError('client_auth_method_not_allowed', { basic });
    if (!ok) throw new OAuthError('client_secret_mismatch', { basic });
    // Checked once the secret is known to be right, so the audit tells a client sending its secret
    // the way it did not register for (RFC 7591 §2) from a guessed secret.
    const method = client.record.secretMethod;
    if (method !== null && method !== (basic ? 'client_secret_basic' : 'client_secret_post')) {
      throw new OAuthError('client_auth_method_mismatch', { basic });
    }
    if (client.record.disabled) throw new OAuthError('client_disabled', { basic });
    return client;
  }

  async #checkAssertion(assertion: string, bodyClientId: string | undefined): Promise<ClientAuthentication> {
    if (assertion.length > 8192) throw new OAuthError('client_assertion_invalid');
    const split = splitCompact(assertion);
    if (!split) throw new OAuthError('client_assertion_invalid');
    const header = decodeJsonSegment(assertion.slice(0, split.dot1));
    const claims = decodeJsonSegment(assertion.slice(split.dot1 + 1, split.dot2));
    if (!header || !claims) throw new OAuthError('client_assertion_invalid');
    const { alg, kid } = header;
    if (!isJwsAlgorithm(alg) || !ASYMMETRIC_ALGORITHMS.includes(alg)) throw new OAuthError('client_assertion_invalid');
    if (kid !== undefined && typeof kid !== 'string') throw new OAuthError('client_assertion_invalid');
    if (header.crit !== undefined || KEY_REFERENCE_HEADERS.some((h) => header[h] !== undefined)) {
      throw new OAuthError('client_assertion_invalid');
    }
    // A JWT typed as something else (an access token, a DPoP proof, a request object) the client's
    // key signed is not a client assertion, whatever its claims (RFC 8725 §3.11). Untyped, a plain
    // JWT, or RFC 7523bis' client-authentication+jwt; a media type, so any case, `application/` optional.
    if (header.typ !== undefined && (typeof header.typ !== 'string' || !ASSERTION_TYPES.has(normalizeTyp(header.typ)))) {
      throw new OAuthError('client_assertion_invalid');
    }
    // RFC 7523 §3: iss and sub are both the client id.
    const { iss, sub } = claims;
    if (typeof iss !== 'string' || iss !== sub) throw new OAuthError('client_assertion_invalid');
    if (bodyClientId !== undefined && bodyClientId !== iss) throw new OAuthError('client_assertion_invalid');
    const client = await this.get(iss);
    if (!client) throw new OAuthError('client_unknown');
    if (client.record.authMethod !== 'private_key_jwt' || client.keys === undefined) {
      throw new OAuthError('client_auth_method_not_allowed');
    }

    let key = client.keys.lookup(kid as string | undefined, alg as JwsAlgorithm);
    if (key === 'unknown' && client.keys.refreshAfterMiss) {
      // Looked up again whatever the refresh reports: a failed fetch makes the source answer
      // `unavailable` (not a bad signature), and a concurrent refresh may have loaded the key.
      await client.keys.refreshAfterMiss();
      key = client.keys.lookup(kid as string | undefined, alg as JwsAlgorithm);
    }
    if (key === 'unavailable' || key === 'stale') throw new OAuthError('client_keys_unavailable');
    // Several keys fit the assertion's kid and alg (or its alg, without kid): not a bad signature,
    // but keys the client must tell apart (registration refuses such a JWKS; a jwks_uri may serve one).
    if (key === 'ambiguous') throw new OAuthError('client_assertion_key_ambiguous');
    if (typeof key === 'string') throw new OAuthError('client_assertion_signature_invalid');
    // Registration refuses such a key; a jwks_uri may serve one (or a record may predate the cap).
    if ((rsaModulusBits(key) ?? 0) > CLIENT_KEY_MAX_RSA_BITS) throw new OAuthError('client_assertion_key_too_large');
    const check = key.checks.get(alg as JwsAlgorithm);
    const signature = Buffer.from(assertion.slice(split.dot2 + 1), 'base64url');
    if (!check?.(Buffer.from(assertion.slice(0, split.dot2), 'latin1'), signature)) {
      throw new OAuthError('client_assertion_signature_invalid');
    }

    // Claims, now that they are known to come from the client.
    const now = this.#o.now();
    const skew = 30;
    const { exp, nbf, iat, aud, jti } = claims;
    if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new OAuthError('client_assertion_invalid');
    if (exp <= now - skew) throw new OAuthError('client_assertion_expired');
    if (nbf !== undefined && (typeof nbf !== 'number' || nbf > now + skew)) throw new OAuthError('client_assertion_invalid');
    if (iat !== undefined && (typeof iat !== 'number' || iat > now + skew)) throw new OAuthError('client_assertion_invalid');
    // A far-future exp would make the assertion a long-lived credential and hold its jti in the
    // replay cache until then. Bounded from now, and from iat when it has one: an assertion made
    // to live a year is refused in its last minutes too, when its exp alone is near enough (one
    // stolen, or logged, when it was made, kept for then).
    const max = this.#o.assertionMaxLifetime + skew;
    if (exp > now + max || (typeof iat === 'number' && exp - iat > max)) throw new OAuthError('client_assertion_lifetime_too_long');
    // The issuer identifier and nothing else: an endpoint URL, or an array naming other servers too,
    // lets an assertion made for (or captured by) another server be replayed here (RFC 9700 §2.8,
    // draft-ietf-oauth-rfc7523bis). A one-element array holding the issuer is tolerated.
    const only = typeof aud === 'string' ? aud : Array.isArray(aud) && aud.length === 1 ? aud[0] : undefined;
    if (only !== this.#o.assertionAudience) throw new OAuthError('client_assertion_audience_invalid');
    if (typeof jti !== 'string' || jti === '' || jti.length > 256) throw new OAuthError('client_assertion_invalid');
    if (client.record.disabled) throw new OAuthError('client_disabled');
    // Recorded by its SHA-256, as every other key of the replay cache: the jti is any JSON string,
    // and PostgreSQL refuses a NUL in text (a 500 where SQLite records it).
    const replayKey = `client_assertion:${client.id}:${jtiDigest(jti)}`;
    const expiresAt = Math.ceil(exp) + skew;
    return {
      client,
      spend: async () => {
        if (!(await this.#o.store.useOnce(replayKey, expiresAt, now))) throw new OAuthError('client_assertion_replayed');
      },
    };
  }
}
