/**
 * Differential test: Tessera's compact-JWS path against jose on generated tokens.
 *
 * Tessera verifies JWTs with its own thin compact-JWS code over `node:crypto`. This test proves it
 * equal to `jose` (`jwtVerify` with equivalent options): a seeded generator builds valid tokens and
 * mutations of them (flipped bits and bytes in each segment, swapped headers and algorithms, `alg`
 * case changes, truncations, extra and missing segments, re-encodings, duplicate members, other
 * keys' signatures, `kid` changes, claim mutations) across ES256, EdDSA, RS256, PS256 and HS256,
 * feeds every token to both, and requires the same accept/reject verdict.
 *
 * The only allowed disagreements are the rows of {@link DELIBERATE}: places where Tessera is
 * deliberately stricter than jose. For each, an independent oracle written here (not Tessera's
 * code) decides from the token alone whether the rule applies; on such a token jose may accept but
 * Tessera must reject, with one of the error codes the rule names. Tessera accepting a token jose
 * rejects is always a failure.
 *
 * Every base token is in Tessera's result cache before the generated tokens are checked, so the
 * mutations that keep a base's signature are looked up against a live entry for another spelling.
 *
 * Deterministic: the keys are fixed (test/fixtures/jose/differential-keys.json) and every choice
 * comes from a seeded PRNG. (OpenSSL's ECDSA signatures are randomized, so ES256 signature bytes
 * differ between runs; every mutation and every verdict does not.)
 *
 * DIFF_TOKENS (default 100000) and DIFF_SEED (default 20250611) override the size and the seed.
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { constants, createHmac, createPrivateKey, createPublicKey, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { createLocalJWKSet, type JWTVerifyGetKey, type JWTVerifyOptions, jwtVerify } from 'jose';
import type { ErrorCode } from '../../../src/core/errors.ts';
import { createVerifier } from '../../../src/verifier.ts';

const TOKENS = Number(process.env.DIFF_TOKENS ?? 100_000);
const SEED = Number(process.env.DIFF_SEED ?? 20250611);

// ---------------------------------------------------------------------------------------------
// The deliberate differences.

type RuleId =
  | 'token-size'
  | 'base64url-padding'
  | 'base64url-whitespace'
  | 'base64url-trailing-bits'
  | 'json-bom'
  | 'duplicate-members'
  | 'crit'
  | 'key-reference-header'
  | 'max-lifetime'
  | 'aud-member-type'
  | 'claim-type'
  | 'act-shape'
  | 'empty-identifier'
  | 'cnf-shape'
  | 'rsa-signature-length';

interface Deliberate {
  readonly id: RuleId;
  /** Why Tessera rejects what jose accepts. */
  readonly reason: string;
  /** The codes Tessera may answer with when this rule applies. */
  readonly codes: readonly ErrorCode[];
}

/**
 * Every way Tessera is stricter than jose 6 with the options below. Each row must be exercised by
 * at least one generated token that jose accepts and Tessera rejects. (One more, the HMAC secret
 * length, is a configuration-time difference: see the last test of this file.)
 */
export const DELIBERATE: readonly Deliberate[] = [
  {
    id: 'token-size',
    reason: 'tokens over max_token_size (8 KiB by default) are refused before any decoding, so a huge token costs nothing',
    codes: ['token_too_large'],
  },
  {
    id: 'base64url-padding',
    reason: 'RFC 7515 §2 / §7.1: segments are unpadded base64url; jose (atob) accepts "=" padding, a second spelling of one token',
    codes: ['token_malformed'],
  },
  {
    id: 'base64url-whitespace',
    reason: 'RFC 7515 §7.1: no whitespace in the compact serialization; jose (atob) skips it, a second spelling of one token',
    codes: ['token_malformed'],
  },
  {
    id: 'base64url-trailing-bits',
    reason: 'RFC 4648 §3.5 canonical encoding: non-zero unused bits in the last character decode to the same bytes, a second spelling',
    codes: ['token_malformed'],
  },
  {
    id: 'json-bom',
    reason: 'RFC 8259 §8.1: JSON text must not begin with a byte order mark; jose (TextDecoder) strips it silently',
    codes: ['token_header_invalid', 'token_payload_invalid'],
  },
  {
    id: 'duplicate-members',
    reason: 'RFC 7515 §4 / RFC 7519 §4: duplicate member names make parsers disagree (last-wins vs first-wins); Tessera rejects them',
    codes: ['token_header_invalid', 'token_payload_invalid'],
  },
  {
    id: 'crit',
    reason: 'RFC 7515 §4.1.11: Tessera implements no extension, so any crit is refused (jose accepts crit ["b64"] with b64 true)',
    codes: ['token_crit_unsupported'],
  },
  {
    id: 'key-reference-header',
    reason: 'RFC 8725 §3.10: jku, x5u, jwk and x5c let a token name its own key; Tessera refuses them outright instead of ignoring them',
    codes: ['token_key_reference_untrusted'],
  },
  {
    id: 'max-lifetime',
    reason: 'exp − iat above max_lifetime (24 h) is refused; jose bounds the age (maxTokenAge, now − iat) but not the lifetime',
    codes: ['token_lifetime_exceeded'],
  },
  {
    id: 'aud-member-type',
    reason: 'RFC 7519 §4.1.3: aud is a string or an array of strings; jose accepts an array with non-string members if one matches',
    codes: ['token_claim_invalid'],
  },
  {
    id: 'claim-type',
    reason:
      'RFC 7519 §4.1.2 / §4.1.7, RFC 9068 §2.2, RFC 8693 §4.2: sub, jti, client_id, the delegation claim and the scope claim have fixed types (scope a string, RFC 9068 §2.2.3); a wrong type is refused, never read as absent',
    codes: ['token_claim_invalid'],
  },
  {
    id: 'act-shape',
    reason: 'RFC 8693 §4.1: act is an object with a string sub (optional string iss, client_id), nested at most 32 deep',
    codes: ['token_claim_invalid'],
  },
  {
    id: 'empty-identifier',
    reason:
      'RFC 7519 §4.1.2 / §4.1.7, RFC 8693 §4.1: sub, jti, client_id, the delegation claim (and each act.sub, act.iss, act.client_id) name a party or a token; an empty one would be forwarded, audited, delegated and revoked as an id named "" (principals collide, revocation by jti is moot), so it is refused',
    codes: ['token_claim_invalid'],
  },
  {
    id: 'cnf-shape',
    reason:
      'RFC 7800 §3.1 / RFC 9449 §6.1: cnf is an object holding exactly one confirmation method, jkt, a non-empty string (a binding this verifier cannot check is refused, not ignored)',
    codes: ['token_claim_invalid'],
  },
  {
    id: 'rsa-signature-length',
    reason:
      'RFC 8017 §8.1.2 / §8.2.2 step 1: an RSA signature is exactly as long as the modulus; jose (node:crypto) verifies a PSS signature with its leading zero octet dropped, a second spelling of the token',
    codes: ['token_signature_invalid'],
  },
];

const MAX_TOKEN_SIZE = 8192;
const MAX_LIFETIME = 86_400;
const SKEW = 30;
const NOW = 1_760_000_000;
const CLOCK_MS = NOW * 1000 + 737;
const ISSUER = 'https://issuer.diff.test';
const AUDIENCES = ['https://api.diff.test', 'urn:diff:api-2'];
const ALGS = ['ES256', 'EdDSA', 'RS256', 'PS256', 'HS256'] as const;
type Alg = (typeof ALGS)[number];

/** The independent oracle: which deliberate rules apply to a token. */
function deliberateRules(token: string): Set<RuleId> {
  const rules = new Set<RuleId>();
  if (token.length > MAX_TOKEN_SIZE) rules.add('token-size');
  const segments = token.split('.');
  if (segments.length !== 3) return rules;
  for (const s of segments) {
    if (s.includes('=')) rules.add('base64url-padding');
    if (/[\t\n\f\r ]/.test(s)) rules.add('base64url-whitespace');
    const bare = s.replace(/[\t\n\f\r =]/g, '');
    if (/^[A-Za-z0-9_-]*$/.test(bare) && bare.length % 4 !== 1 && Buffer.from(bare, 'base64url').toString('base64url') !== bare) {
      rules.add('base64url-trailing-bits');
    }
  }
  const [header, payload] = [looseJson(segments[0] as string, rules), looseJson(segments[1] as string, rules)];
  if (header !== undefined) {
    // Every RSA key here is 2048 bits: a signature is 256 octets.
    if ((header.alg === 'RS256' || header.alg === 'PS256') && looseBytes(segments[2] as string)?.length !== 256) {
      rules.add('rsa-signature-length');
    }
    if (Object.hasOwn(header, 'crit')) rules.add('crit');
    for (const name of ['jku', 'x5u', 'jwk', 'x5c']) if (Object.hasOwn(header, name)) rules.add('key-reference-header');
  }
  if (payload !== undefined) {
    const { exp, iat, aud } = payload;
    if (typeof exp === 'number' && typeof iat === 'number' && exp - iat > MAX_LIFETIME) rules.add('max-lifetime');
    if (Array.isArray(aud) && aud.some((a) => typeof a !== 'string')) rules.add('aud-member-type');
    for (const name of ['sub', 'jti', 'client_id', 'grant_id']) {
      if (Object.hasOwn(payload, name) && typeof payload[name] !== 'string') rules.add('claim-type');
    }
    // RFC 9068 §2.2.3: `scope` (the verifier's scope claim here) is one space-delimited string; an
    // array is refused (only other scope claims, `scp`, may be arrays).
    if (Object.hasOwn(payload, 'scope') && typeof payload.scope !== 'string') rules.add('claim-type');
    if (Object.hasOwn(payload, 'act') && !validActChain(payload.act)) rules.add('act-shape');
    if (['sub', 'jti', 'client_id', 'grant_id'].some((name) => payload[name] === '') || hasEmptyActorMember(payload.act)) {
      rules.add('empty-identifier');
    }
    if (Object.hasOwn(payload, 'cnf')) {
      const cnf = payload.cnf as Record<string, unknown>;
      const isObject = typeof cnf === 'object' && cnf !== null && !Array.isArray(cnf);
      const onlyJkt = isObject && Object.keys(cnf).every((k) => k === 'jkt');
      if (!isObject || !onlyJkt || typeof cnf.jkt !== 'string' || cnf.jkt === '') rules.add('cnf-shape');
    }
  }
  return rules;
}

function hasEmptyActorMember(act: unknown): boolean {
  for (let depth = 0; depth < 32 && typeof act === 'object' && act !== null; depth++) {
    const a = act as Record<string, unknown>;
    if (a.sub === '' || a.iss === '' || a.client_id === '') return true;
    act = (act as Record<string, unknown>).act;
  }
  return false;
}

function validActChain(act: unknown): boolean {
  for (let depth = 0; act !== undefined; depth++) {
    if (depth >= 32 || typeof act !== 'object' || act === null || Array.isArray(act)) return false;
    const a = act as Record<string, unknown>;
    if (typeof a.sub !== 'string') return false;
    if (a.iss !== undefined && typeof a.iss !== 'string') return false;
    if (a.client_id !== undefined && typeof a.client_id !== 'string') return false;
    act = a.act;
  }
  return true;
}

/** Decode a segment's bytes the way jose does (atob: whitespace skipped, padding and loose bits accepted). */
function looseBytes(segment: string): Buffer | undefined {
  if (segment.includes('+') || segment.includes('/')) return undefined;
  try {
    return Buffer.from(atob(segment.replace(/-/g, '+').replace(/_/g, '/')), 'latin1');
  } catch {
    return undefined;
  }
}

/** Decode a segment the way jose does and parse it as JSON. */
function looseJson(segment: string, rules: Set<RuleId>): Record<string, unknown> | undefined {
  const bytes = looseBytes(segment);
  if (bytes === undefined) return undefined;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) rules.add('json-bom');
  if (hasDuplicateMembers(text)) rules.add('duplicate-members');
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/** Duplicate member names at any depth, by a small recursive-descent walk (input is valid JSON). */
function hasDuplicateMembers(text: string): boolean {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i] as string)) i++;
  };
  const string = (): string => {
    const start = i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const value = (): boolean => {
    ws();
    const c = text[i];
    let dup = false;
    if (c === '{' || c === '[') {
      i++;
      ws();
      if (text[i] === (c === '{' ? '}' : ']')) {
        i++;
        return false;
      }
      const seen = new Set<string>();
      for (;;) {
        if (c === '{') {
          ws();
          const name = string();
          if (seen.has(name)) dup = true;
          seen.add(name);
          ws();
          i++; // ':'
        }
        if (value()) dup = true;
        ws();
        if (text[i++] !== ',') return dup;
      }
    }
    if (c === '"') string();
    else while (i < text.length && !',]} \t\n\r'.includes(text[i] as string)) i++;
    return false;
  };
  return value();
}

// ---------------------------------------------------------------------------------------------
// Keys, signing, and the two verifiers.

interface FixtureJwk extends Record<string, unknown> {
  kid: string;
  kty: string;
}
const fixture = JSON.parse(readFileSync(new URL('../../fixtures/jose/differential-keys.json', import.meta.url), 'utf8')) as {
  keys: FixtureJwk[];
};
const PRIVATE = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi']);
const jwkByKid = new Map(fixture.keys.map((k) => [k.kid, k]));
const publicJwk = (kid: string): Record<string, unknown> => {
  const jwk = jwkByKid.get(kid) as FixtureJwk;
  return jwk.kty === 'oct' ? { ...jwk } : Object.fromEntries(Object.entries(jwk).filter(([m]) => !PRIVATE.has(m)));
};
const signingKeys = new Map<string, KeyObject | Buffer>(
  fixture.keys.map((k) => [
    k.kid,
    k.kty === 'oct' ? Buffer.from(k.k as string, 'base64url') : createPrivateKey({ key: k as never, format: 'jwk' }),
  ]),
);

/** Keys both verifiers trust. `-x` keys are untrusted; `hs256-short` is only used by the last test. */
const TRUSTED = ['es256-a', 'es256-b', 'eddsa-a', 'rs256-a', 'ps256-a', 'rsa-n', 'hs256-a'];
/** The natural signing keys per algorithm (`rsa-n` has no `alg`, so it signs both RS256 and PS256). */
const KEYS_FOR: Record<Alg, readonly string[]> = {
  ES256: ['es256-a', 'es256-b'],
  EdDSA: ['eddsa-a'],
  RS256: ['rs256-a', 'rsa-n'],
  PS256: ['ps256-a', 'rsa-n'],
  HS256: ['hs256-a'],
};
const UNTRUSTED_FOR: Record<Alg, string> = { ES256: 'es256-x', EdDSA: 'eddsa-x', RS256: 'rsa-x', PS256: 'rsa-x', HS256: 'hs256-x' };

let rsaSignatures = 0;
/** Sign a signing input (any text) with a key, as `alg`; PS256 may use another salt length. */
function signInput(kid: string, alg: Alg, input: string, pssSalt = 32): string {
  const key = signingKeys.get(kid) as KeyObject | Buffer;
  const data = Buffer.from(input, 'utf8');
  let sig: Buffer;
  if (alg === 'HS256') sig = createHmac('sha256', key).update(data).digest();
  else if (alg === 'ES256') sig = cryptoSign('sha256', data, { key: key as KeyObject, dsaEncoding: 'ieee-p1363' });
  else if (alg === 'EdDSA') sig = cryptoSign(null, data, key as KeyObject);
  else {
    rsaSignatures++;
    sig =
      alg === 'PS256'
        ? cryptoSign('sha256', data, { key: key as KeyObject, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pssSalt })
        : cryptoSign('sha256', data, key as KeyObject);
  }
  return sig.toString('base64url');
}

const tessera = createVerifier(
  {
    issuers: [
      {
        issuer: ISSUER,
        audiences: AUDIENCES,
        algorithms: [...ALGS],
        jwks: { keys: TRUSTED.map(publicJwk) },
        token_type: 'at+jwt',
        required_claims: ['iat'],
        clock_skew: SKEW,
        max_lifetime: MAX_LIFETIME,
      },
    ],
    max_token_size: MAX_TOKEN_SIZE,
  },
  { clock: () => CLOCK_MS },
);

const localJwks = createLocalJWKSet({ keys: TRUSTED.filter((k) => !k.startsWith('hs')).map(publicJwk) as never[] });
const hmacJwk = publicJwk('hs256-a');
const hmacSecret = Buffer.from(hmacJwk.k as string, 'base64url');
/**
 * jose's local JWKS refuses symmetric keys, so HS256 resolves here with jose's own candidate rule
 * (`isUsableJWK`: kid absent, or a string equal to the key's; the key's `alg` equal to the header's).
 */
const joseKey: JWTVerifyGetKey = async (header, token) => {
  if (header.alg === 'HS256') {
    const kid = header.kid;
    if (kid === undefined || (typeof kid === 'string' && kid === hmacJwk.kid)) return hmacSecret;
    throw new Error('no matching key');
  }
  return localJwks(header, token);
};
const joseOptions: JWTVerifyOptions = {
  algorithms: [...ALGS],
  issuer: ISSUER,
  audience: AUDIENCES,
  typ: 'at+jwt',
  requiredClaims: ['exp', 'iat'],
  clockTolerance: SKEW,
  // jose's iat rule equals Tessera's (not in the future beyond the skew) only with maxTokenAge set;
  // with it equal to max_lifetime, every token Tessera accepts is young enough for jose.
  maxTokenAge: MAX_LIFETIME,
  currentDate: new Date(CLOCK_MS),
};

// ---------------------------------------------------------------------------------------------
// The generator.

class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** mulberry32 */
  next(): number {
    this.#s = (this.#s + 0x6d2b79f5) | 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)] as T;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const enc = (s: string | Buffer) => Buffer.from(s).toString('base64url');
/** JSON with raw fragments: a string value `"\u0000raw:TEXT"` is written as TEXT (e.g. 1e400). */
const json = (v: unknown) => JSON.stringify(v).replace(/"\\u0000raw:((?:[^"\\]|\\.)*)"/g, (_, raw: string) => JSON.parse(`"${raw}"`));
const raw = (text: string) => `\u0000raw:${text}`;

interface Base {
  readonly alg: Alg;
  readonly kid: string;
  readonly header: Record<string, unknown>;
  readonly claims: Record<string, unknown>;
  readonly token: string;
}

function freshClaims(rng: Rng, n: number): Record<string, unknown> {
  const c: Record<string, unknown> = {
    iss: ISSUER,
    sub: `user-${n}`,
    aud: rng.pick([AUDIENCES[0], AUDIENCES[1], [AUDIENCES[0]], ['urn:other', AUDIENCES[1]], [...AUDIENCES]]),
    exp: NOW + 60 + rng.int(3000),
    iat: NOW - rng.int(600),
    jti: `jti-${n}-${rng.int(1e9)}`,
    client_id: rng.pick(['agent-1', 'agent-2', 'mcp-client']),
    scope: rng.pick(['api:read', 'api:read api:write', '', 'files:* tools:call']),
  };
  if (rng.chance(0.3)) c.grant_id = `g-${rng.int(100)}`;
  if (rng.chance(0.2)) c.nbf = NOW - rng.int(100);
  if (rng.chance(0.2)) c.act = { sub: 'agent-b', client_id: 'agent-b', act: { sub: 'agent-a' } };
  if (rng.chance(0.1)) c.cnf = { jkt: '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I' };
  if (rng.chance(0.2)) c.ext = { tenant: 't-1', roles: ['r1', 'r2'], n: 1.5, ok: true, none: null, name: 'Zoë ✓' };
  return c;
}

function freshHeader(rng: Rng, alg: Alg, kid: string): Record<string, unknown> {
  const h: Record<string, unknown> = { alg, kid, typ: rng.pick(['at+jwt', 'at+jwt', 'application/at+jwt', 'AT+JWT']) };
  if (rng.chance(0.1)) delete h.kid;
  if (rng.chance(0.1)) h.cty = 'JWT';
  return h;
}

function build(header: string, payload: string, kid: string, alg: Alg): string {
  const input = `${header}.${payload}`;
  return `${input}.${signInput(kid, alg, input)}`;
}

function makeBase(rng: Rng, alg: Alg, n: number): Base {
  const kid = rng.pick(KEYS_FOR[alg]);
  const header = freshHeader(rng, alg, kid);
  delete header.cty;
  header.kid = kid; // bases always carry their kid, so mutations start from an accepted token
  const claims = freshClaims(rng, n);
  return { alg, kid, header, claims, token: build(enc(json(header)), enc(json(claims)), kid, alg) };
}

const TIMES = [
  NOW - SKEW - 1,
  NOW - SKEW,
  NOW - SKEW + 1,
  NOW - 1,
  NOW,
  NOW + 1,
  NOW + SKEW - 1,
  NOW + SKEW,
  NOW + SKEW + 1,
  NOW + SKEW + 0.5,
  NOW - SKEW - 0.5,
  NOW - SKEW + 0.5,
  NOW + 600,
  NOW + MAX_LIFETIME,
  NOW - MAX_LIFETIME,
  NOW + 2 * MAX_LIFETIME,
  0,
  -1,
  2 ** 53,
  1e21,
  raw('1e400'),
  raw('-1e400'),
  raw(`${NOW}.0`),
  raw(`${NOW + 300}e0`),
  raw('-0'),
];
const WRONG_TYPES: readonly unknown[] = ['x', '', `${NOW + 300}`, null, true, false, [], {}, [NOW + 300], { n: 1 }];
const STRINGISH: readonly unknown[] = ['x', '', 'user-1', 5, 0, null, true, [], {}, ['x'], { sub: 'x' }];
const SCOPES: readonly unknown[] = ['a b', '', ' a  b ', 'a\tb', ['a', 'b'], [], ['a b'], [''], [1], ['a', null], 5, null, {}, true];
const AUDS: readonly unknown[] = [
  AUDIENCES[0],
  AUDIENCES[1],
  [AUDIENCES[0]],
  ['urn:x', AUDIENCES[1]],
  ['urn:x'],
  [],
  [AUDIENCES[0], 5],
  [5, AUDIENCES[1]],
  [null, AUDIENCES[0]],
  [[AUDIENCES[0]]],
  {},
  null,
  5,
  '',
  `${AUDIENCES[0]}/`,
  'https://api.diff.tes',
  'HTTPS://api.diff.test',
  'https://api.diff.test.evil.test',
  `${AUDIENCES[0]}\u0000`,
  `${AUDIENCES[0]} `,
];
const ISSUERS: readonly unknown[] = [
  ISSUER,
  `${ISSUER}/`,
  'https://other.test',
  'HTTPS://issuer.diff.test',
  '',
  5,
  null,
  [ISSUER],
  {},
  raw('"https:\\/\\/issuer.diff.test"'),
  raw('"\\u0068ttps://issuer.diff.test"'),
];
const deepAct = (depth: number): unknown => {
  let act: unknown;
  for (let i = depth; i > 0; i--) act = act === undefined ? { sub: `a${i}` } : { sub: `a${i}`, act };
  return act;
};
const ACTS: readonly unknown[] = [
  { sub: 'a' },
  { sub: 'a', iss: ISSUER, client_id: 'c', act: { sub: 'b' } },
  deepAct(32),
  deepAct(33),
  { sub: 5 },
  {},
  'x',
  [],
  null,
  { sub: 'a', iss: 5 },
  { sub: 'a', client_id: [] },
  { sub: 'a', iss: '' },
  { sub: 'a', client_id: '' },
  { sub: 'a', act: { sub: 'b', iss: '' } },
  { sub: 'a', act: 'x' },
  { sub: 'a', act: { sub: 'b', act: null } },
];
const CNFS: readonly unknown[] = [{ jkt: 'abc' }, { jkt: '' }, { jkt: 5 }, {}, 'x', [], null, { x5t: 'a' }, { jkt: ['abc'] }];

/** Claim mutations: each changes one claim of a copy. */
function mutateClaims(rng: Rng, claims: Record<string, unknown>): void {
  const remove = rng.chance(0.12);
  const claim = rng.pick([
    'exp',
    'exp',
    'nbf',
    'iat',
    'iat',
    'iss',
    'aud',
    'aud',
    'sub',
    'jti',
    'client_id',
    'grant_id',
    'scope',
    'act',
    'cnf',
    'lifetime',
    'extra',
  ]);
  if (remove && claim !== 'lifetime' && claim !== 'extra') {
    delete claims[claim];
    return;
  }
  switch (claim) {
    case 'exp':
    case 'nbf':
    case 'iat':
      claims[claim] = rng.chance(0.8) ? rng.pick(TIMES) : rng.pick(WRONG_TYPES);
      return;
    case 'lifetime': {
      const exp = NOW + 60 + rng.int(600);
      claims.exp = exp;
      claims.iat = exp - MAX_LIFETIME + rng.pick([-1, 0, 1, -0.5, 0.5, -3600]);
      return;
    }
    case 'iss':
      claims.iss = rng.pick(ISSUERS);
      return;
    case 'aud':
      claims.aud = rng.pick(AUDS);
      return;
    case 'scope':
      claims.scope = rng.pick(SCOPES);
      return;
    case 'act':
      claims.act = rng.pick(ACTS);
      return;
    case 'cnf':
      claims.cnf = rng.pick(CNFS);
      return;
    case 'extra':
      claims[rng.pick(['x', 'tenant', 'roles', '__proto__', 'constructor', 'é'])] = rng.pick([...STRINGISH, ...ACTS]);
      return;
    default:
      claims[claim] = rng.pick(STRINGISH);
  }
}

const ALG_NAMES: readonly unknown[] = [
  ...ALGS,
  'none',
  'None',
  'NONE',
  'nOnE',
  '',
  'ES384',
  'RS512',
  'Ed25519',
  'HS512',
  'PS384',
  5,
  null,
  ['ES256'],
];
const KIDS: readonly unknown[] = [
  ...TRUSTED,
  'es256-x',
  'unknown',
  '',
  5,
  null,
  ['es256-a'],
  '../../../dev/null',
  "' OR '1'='1",
  'es256-a ',
];
const TYPS: readonly unknown[] = [
  'at+jwt',
  'AT+JWT',
  'application/at+jwt',
  'Application/At+JWT',
  'JWT',
  'jwt',
  'at+jwt ',
  '',
  5,
  null,
  'application/application/at+jwt',
  'x/at+jwt',
  'at+jwt; charset=utf-8',
];
const untrustedJwk = publicJwk('es256-x');

/** Header mutations: each changes one member of a copy; returns the algorithm to sign with. */
function mutateHeader(rng: Rng, header: Record<string, unknown>, alg: Alg): void {
  const what = rng.pick(['alg', 'alg-case', 'kid', 'kid', 'typ', 'typ', 'crit', 'keyref', 'extra', 'remove']);
  switch (what) {
    case 'alg':
      header.alg = rng.pick(ALG_NAMES);
      return;
    case 'alg-case':
      header.alg = rng.pick([alg.toLowerCase(), alg.toUpperCase(), alg[0] + alg.slice(1).toLowerCase(), ` ${alg}`, `${alg}\u0000`]);
      return;
    case 'kid':
      header.kid = rng.pick(KIDS);
      return;
    case 'typ':
      header.typ = rng.pick(TYPS);
      return;
    case 'crit': {
      const crit = rng.pick<unknown>([['b64'], ['b64'], ['exp'], [], 'b64', [5], ['b64', 'b64'], ['']]);
      header.crit = crit;
      if (rng.chance(0.8)) header.b64 = rng.chance(0.8);
      return;
    }
    case 'keyref': {
      const name = rng.pick(['jku', 'x5u', 'jwk', 'x5c']);
      header[name] =
        name === 'jwk' ? untrustedJwk : name === 'x5c' ? ['MIIBszCCAVmgAwIBAgIUJ'] : rng.pick(['https://evil.test/jwks.json', null, '']);
      return;
    }
    case 'extra':
      header[rng.pick(['cty', 'foo', 'b64', 'zip', 'x5t', 'nonce', '__proto__'])] = rng.pick<unknown>([
        'JWT',
        true,
        false,
        1,
        null,
        { a: 1 },
        [],
      ]);
      return;
    default:
      delete header[rng.pick(['alg', 'kid', 'typ'])];
  }
}

/** The algorithm a mutated header would be signed with: its own when it fits the key, else the base's. */
function signingAlg(rng: Rng, header: Record<string, unknown>, base: Base): Alg {
  const named = header.alg;
  if (typeof named === 'string' && (ALGS as readonly string[]).includes(named) && rng.chance(0.6)) {
    const a = named as Alg;
    if (KEYS_FOR[a].includes(base.kid) || UNTRUSTED_FOR[a] === base.kid) return a;
  }
  return base.alg;
}

/** JSON texts that parse to (nearly) the same object but are spelled differently, or are broken. */
function jsonVariant(rng: Rng, value: Record<string, unknown>): { text: string | Buffer; note: string } {
  const text = json(value);
  const keys = Object.keys(value);
  const key = keys.length > 0 ? rng.pick(keys) : 'x';
  switch (rng.int(16)) {
    case 0:
      return { text: JSON.stringify(value, null, rng.pick([1, 2, '\t'])), note: 'pretty' };
    case 1:
      return { text: ` \n${text}\r\n `, note: 'surrounding whitespace' };
    case 2:
      return {
        text: text.replace(`"${key}"`, `"${[...key].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"`),
        note: 'escaped key',
      };
    case 3:
      return { text: text.replace(/\//g, '\\/'), note: 'escaped solidus' };
    case 4:
      return { text: `${text.slice(0, -1)},"${key}":${json(value[key] ?? 1)}}`, note: 'duplicate member (same value)' };
    case 5:
      return { text: `${text.slice(0, -1)},"${key}":${json(rng.pick(STRINGISH))}}`, note: 'duplicate member (other value)' };
    case 6:
      return {
        text: text.replace(/\{"sub":"([^"]*)"/, '{"sub":"$1","sub":"$1"').replace(`"${key}":`, `"${key}":{"a":1,"a":2},"${key}x":`),
        note: 'nested duplicate',
      };
    case 7:
      return { text: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]), note: 'BOM' };
    case 8:
      return {
        text: Buffer.concat([
          Buffer.from(text.slice(0, -1)),
          Buffer.from(',"bad":"'),
          Buffer.from(
            rng.pick([
              [0xff],
              [0xc0],
              [0xed],
              [0x80],
              [0xc0, 0xaf],
              [0xe0, 0x80, 0xaf],
              [0xed, 0xa0, 0x80],
              [0xf4, 0x90, 0x80, 0x80],
              [0xf8, 0x88, 0x80, 0x80, 0x80],
            ]),
          ),
          Buffer.from('x"}'),
        ]),
        note: 'invalid UTF-8',
      };
    case 9:
      return { text: `${text.slice(0, -1)},"u":"\\ud800 \\u0000 \\u00e9 é ✓ 😀"}`, note: 'escapes and non-ASCII' };
    case 10:
      return {
        text: rng.pick(['[]', '"x"', '1', 'null', 'true', '', '{', '{}', `[${text}]`, `${text}x`, `${text},`, `${text.slice(0, -1)},}`]),
        note: 'not one JSON object',
      };
    case 11:
      return { text: text.replace(/:(-?\d+)([,}])/, ':$1.0$2'), note: 'number spelling' };
    case 12:
      return { text: `${text.slice(0, -1)},"${key}${rng.pick(['', ' ', '\u0000'])}":1}`, note: 'look-alike member' };
    case 13:
      return { text: text.replace('{', '{"__proto__":{"kid":"es256-b","alg":"none"},'), note: '__proto__ member' };
    case 14:
      return { text: `\uFEFF${text}`.replace('\uFEFF', '\\ufeff'), note: 'escaped BOM text (invalid JSON)' };
    default:
      return { text: text.replace(/"([^"]*)"/, (_m, s: string) => `"${s}\\u0020"`), note: 'escaped space in a key' };
  }
}

/** Base64url spelling variants of a segment (the decoded bytes stay the same unless noted). */
function encodingVariant(rng: Rng, segment: string): string {
  switch (rng.int(8)) {
    case 0: {
      const pad = (4 - (segment.length % 4)) % 4;
      return segment + '='.repeat(pad || rng.pick([1, 2, 4]));
    }
    case 1: {
      const at = rng.int(segment.length + 1);
      return segment.slice(0, at) + rng.pick([' ', '\t', '\n', '\r', '\f', '  ']) + segment.slice(at);
    }
    case 2:
      return nonCanonicalTail(rng, segment) ?? `${segment}A`;
    case 3:
      return segment.replace(/-/g, '+').replace(/_/g, '/');
    case 4:
      return Buffer.from(segment, 'base64url').toString('base64');
    case 5:
      return segment + rng.pick(['A', 'AA', 'AAA', 'AAAA']);
    case 6:
      return `${segment.slice(0, -1)}${rng.pick(['!', '.', '~', '%', 'é', '\u0000', '+'])}`;
    default:
      return segment.slice(0, segment.length - 1 - rng.int(3));
  }
}

/** The same bytes with non-zero unused bits in the last character, when the length allows. */
function nonCanonicalTail(rng: Rng, segment: string): string | undefined {
  const rem = segment.length % 4;
  if (rem !== 2 && rem !== 3) return undefined;
  const last = B64.indexOf(segment[segment.length - 1] as string);
  const unused = rem === 2 ? 0x0f : 0x03;
  const bits = 1 + rng.int(unused);
  return segment.slice(0, -1) + B64[(last & ~unused) | bits];
}

/** Pad a JSON object's spelling until its base64url length leaves unused bits, for trailing-bit tests. */
function withUnusedBits(value: Record<string, unknown>): string {
  let text = json(value);
  while (enc(text).length % 4 === 0) text = `${text.slice(0, -1)} }`;
  return enc(text);
}

const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const toHex32 = (n: bigint) => n.toString(16).padStart(64, '0');

/** Signature-segment mutations, no re-signing. */
function mutateSignature(rng: Rng, base: Base, other: Base): string {
  const dot = base.token.lastIndexOf('.');
  const input = base.token.slice(0, dot);
  const sig = base.token.slice(dot + 1);
  const bytes = Buffer.from(sig, 'base64url');
  switch (rng.int(12)) {
    case 0: {
      const b = Buffer.from(bytes);
      const i = rng.int(b.length);
      b[i] = (b[i] as number) ^ (1 << rng.int(8));
      return `${input}.${enc(b)}`;
    }
    case 1: {
      const i = rng.int(sig.length);
      // Sometimes a two-byte character with the same low byte: a byte-truncating decoder keeps the signature.
      const c = rng.chance(0.2) ? String.fromCharCode(0x100 | sig.charCodeAt(i)) : rng.pick([...B64]);
      return `${input}.${sig.slice(0, i)}${c}${sig.slice(i + 1)}`;
    }
    case 2:
      return `${input}.${encodingVariant(rng, sig)}`;
    case 3:
      return `${input}.${nonCanonicalTail(rng, sig) ?? sig.slice(0, -2)}`;
    case 4:
      return `${input}.${sig.slice(0, rng.int(sig.length))}`;
    case 5:
      return `${input}.${enc(Buffer.concat([rng.chance(0.5) ? Buffer.from([0]) : Buffer.alloc(0), bytes, rng.chance(0.5) ? Buffer.from([0]) : Buffer.alloc(0)]))}`;
    case 6:
      return `${input}.${other.token.slice(other.token.lastIndexOf('.') + 1)}`;
    case 7:
      return `${input}.${enc(Buffer.alloc(bytes.length))}`;
    case 8: {
      if (base.alg !== 'ES256') return `${input}.${enc(Buffer.from(bytes).reverse())}`;
      const r = BigInt(`0x${bytes.subarray(0, 32).toString('hex')}`);
      const s = BigInt(`0x${bytes.subarray(32).toString('hex')}`);
      const variant = rng.int(4);
      const [r2, s2] = variant === 0 ? [r, P256_N - s] : variant === 1 ? [P256_N, P256_N] : variant === 2 ? [r + P256_N, s] : [0n, 0n];
      if (r2 >= 2n ** 256n) return `${input}.${enc(Buffer.from(`01${toHex32(r2 - 2n ** 256n)}${toHex32(s2)}`, 'hex'))}`;
      return `${input}.${enc(Buffer.from(toHex32(r2) + toHex32(s2), 'hex'))}`;
    }
    case 9: {
      // ECDSA signature in DER instead of P1363 (RFC 7518 §3.4 requires r || s).
      if (base.alg !== 'ES256') return `${input}.${sig}${sig}`;
      const der = cryptoSign('sha256', Buffer.from(input), signingKeys.get(base.kid) as KeyObject);
      return `${input}.${enc(der)}`;
    }
    case 10:
      return `${input}.`;
    default:
      return `${input}.${sig}${rng.pick(['.', '.x', '..', `.${sig}`])}`;
  }
}

/** Header or payload segment mutations, no re-signing. */
function mutateSegment(rng: Rng, base: Base, other: Base): string {
  const [h, p, s] = base.token.split('.') as [string, string, string];
  const [oh, op] = other.token.split('.') as [string, string, string];
  const which = rng.int(2);
  const seg = which === 0 ? h : p;
  let out: string;
  switch (rng.int(7)) {
    case 0: {
      const b = Buffer.from(seg, 'base64url');
      const i = rng.int(b.length);
      b[i] = (b[i] as number) ^ (1 << rng.int(8));
      out = enc(b);
      break;
    }
    case 1: {
      const i = rng.int(seg.length);
      const c = rng.chance(0.2) ? String.fromCharCode(0xff00 | seg.charCodeAt(i)) : rng.pick([...B64]);
      out = `${seg.slice(0, i)}${c}${seg.slice(i + 1)}`;
      break;
    }
    case 2:
      out = encodingVariant(rng, seg);
      break;
    case 3:
      // Swap in another token's header (an algorithm swap) or payload.
      return which === 0 ? `${oh}.${p}.${s}` : `${h}.${op}.${s}`;
    case 4: {
      // The same header with another algorithm (or its case changed), signature kept.
      const header = { ...base.header, alg: rng.pick([...ALGS, base.alg.toLowerCase(), 'none']) };
      return `${enc(json(header))}.${p}.${rng.chance(0.2) ? '' : s}`;
    }
    case 5:
      out = seg.slice(0, rng.int(seg.length));
      break;
    default:
      out = nonCanonicalTail(rng, seg) ?? `${seg}A`;
  }
  return which === 0 ? `${out}.${p}.${s}` : `${h}.${out}.${s}`;
}

/** Whole-token structural mutations. */
function mutateStructure(rng: Rng, base: Base, other: Base): string {
  const t = base.token;
  const [h, p, s] = t.split('.') as [string, string, string];
  switch (rng.int(10)) {
    case 0:
      return t.slice(0, rng.int(t.length));
    case 1:
      return t.slice(rng.int(t.length));
    case 2:
      return rng.pick([`${h}.${p}`, `${p}.${s}`, `${h}..${s}`, `.${p}.${s}`, `${h}.${p}.`, `${h}.${p}.${s}.`, `${h}.${p}.${s}.${s}`]);
    case 3:
      return rng.pick([` ${t}`, `${t} `, `${t}\n`, `Bearer ${t}`, `\t${t}`, `"${t}"`]);
    case 4: {
      const i = rng.int(t.length + 1);
      // Ł (U+0141) and ａ (U+FF41) end in the byte of 'A': a decoder that truncates to bytes would read them as 'A'.
      return t.slice(0, i) + rng.pick(['.', '..', '=', ' ', '\u0000', 'é', '\uD800', '😀', '%2E', 'Ł', 'ａ', '\u0130']) + t.slice(i);
    }
    case 5:
      return `${h}.${enc('{"enc":"A256GCM"}')}.${p}.${s}.${h}`;
    case 6:
      return `${t}${other.token}`;
    case 7:
      return rng.pick(['', '.', '..', '...', 'a.b.c', `${h}.${h}.${h}`, `${s}.${p}.${h}`]);
    case 8: {
      const i = rng.int(t.length);
      return t.slice(0, i) + t.slice(i + 1);
    }
    default: {
      const i = rng.int(t.length - 1);
      return t.slice(0, i) + t[i + 1] + t[i] + t.slice(i + 2);
    }
  }
}

/** Tokens signed by keys the verifier does not trust for them. */
function wrongKey(rng: Rng, base: Base): string {
  const h = base.token.slice(0, base.token.indexOf('.'));
  const p = base.token.split('.')[1] as string;
  switch (rng.int(5)) {
    case 0:
      // An untrusted key, the trusted kid.
      return build(h, p, UNTRUSTED_FOR[base.alg], base.alg);
    case 1: {
      // Another trusted key of the same algorithm under this kid, or its own kid (accepted).
      const others = KEYS_FOR[base.alg].filter((k) => k !== base.kid);
      const signer = others.length > 0 ? rng.pick(others) : UNTRUSTED_FOR[base.alg];
      const header = rng.chance(0.5) ? h : enc(json({ ...base.header, kid: signer }));
      return build(header, p, signer, base.alg);
    }
    case 2: {
      // HS256 keyed with a public key's bytes (RS/HS and EC/HS confusion).
      const pub = rng.pick(['rs256-a', 'es256-a', 'eddsa-a', 'rsa-n']);
      const publicKey = createPublicKey(signingKeys.get(pub) as KeyObject);
      const pubKey = rng.pick([
        Buffer.from(json(publicJwk(pub))),
        Buffer.from(publicKey.export({ format: 'pem', type: 'spki' }) as string),
        publicKey.export({ format: 'der', type: 'spki' }),
      ]);
      const header = enc(json({ alg: 'HS256', kid: rng.chance(0.7) ? pub : undefined, typ: 'at+jwt' }));
      const input = `${header}.${p}`;
      return `${input}.${createHmac('sha256', pubKey).update(input).digest('base64url')}`;
    }
    case 3: {
      // alg none, with and without a signature.
      const header = enc(json({ alg: rng.pick(['none', 'None', 'NONE']), kid: base.kid, typ: 'at+jwt' }));
      return `${header}.${p}.${rng.chance(0.5) ? '' : base.token.slice(base.token.lastIndexOf('.') + 1)}`;
    }
    default:
      if (base.alg !== 'PS256') return build(h, p, UNTRUSTED_FOR[base.alg], base.alg);
      // A genuine PS256 signature with its leading zero octet dropped (RFC 8017 §8.1.2 step 1: a
      // signature is k octets). PSS is randomized, so signing again finds one (1 in 256 tries).
      if (rng.chance(0.3)) {
        for (;;) {
          const signature = Buffer.from(signInput(base.kid, 'PS256', `${h}.${p}`), 'base64url');
          if (signature[0] === 0) return `${h}.${p}.${enc(signature.subarray(1))}`;
        }
      }
      // PS256 with another salt length (RFC 7518 §3.5: the salt is as long as the hash).
      return `${h}.${p}.${signInput(base.kid, 'PS256', `${h}.${p}`, rng.pick([0, 20, 64, 222]))}`;
  }
}

interface Generated {
  readonly category: string;
  readonly token: string;
}

/** One generated token. Categories re-signing with RSA are drawn less often (RSA signing is slow). */
function generate(rng: Rng, bases: readonly Base[], n: number): Generated {
  const base = rng.pick(bases);
  const other = rng.pick(bases);
  const rsa = base.alg === 'RS256' || base.alg === 'PS256';
  let roll = rng.next();
  // Categories below 0.604 sign a new token; for RSA keys only a quarter of them do.
  if (roll < 0.604 && rsa && !rng.chance(0.25)) roll = 0.604 + rng.next() * 0.396;
  if (roll < 0.1) {
    const alg = base.alg;
    const kid = rng.pick(KEYS_FOR[alg]);
    const header = freshHeader(rng, alg, kid);
    return { category: 'valid (fresh claims)', token: build(enc(json(header)), enc(json(freshClaims(rng, n))), kid, alg) };
  }
  if (roll < 0.3) {
    const claims = structuredClone(base.claims);
    const count = 1 + (rng.chance(0.3) ? rng.int(3) : 0);
    for (let i = 0; i < count; i++) mutateClaims(rng, claims);
    return { category: 'claims (re-signed)', token: build(enc(json(base.header)), enc(json(claims)), base.kid, base.alg) };
  }
  if (roll < 0.42) {
    const header = structuredClone(base.header);
    mutateHeader(rng, header, base.alg);
    if (rng.chance(0.15)) mutateHeader(rng, header, base.alg);
    const alg = signingAlg(rng, header, base);
    return { category: 'header (re-signed)', token: build(enc(json(header)), enc(json(base.claims)), base.kid, alg) };
  }
  if (roll < 0.5) {
    const inHeader = rng.chance(0.35);
    const variant = jsonVariant(rng, inHeader ? base.header : base.claims);
    const h = inHeader ? enc(variant.text) : enc(json(base.header));
    const p = inHeader ? enc(json(base.claims)) : enc(variant.text);
    return { category: `JSON spelling (re-signed): ${variant.note}`, token: build(h, p, base.kid, base.alg) };
  }
  if (roll < 0.56) {
    const inHeader = rng.chance(0.4);
    let h = enc(json(base.header));
    let p = enc(json(base.claims));
    if (rng.chance(0.4)) {
      if (inHeader) h = nonCanonicalTail(rng, withUnusedBits(base.header)) as string;
      else p = nonCanonicalTail(rng, withUnusedBits(base.claims)) as string;
    } else if (inHeader) h = encodingVariant(rng, h);
    else p = encodingVariant(rng, p);
    return { category: 'base64url spelling (re-signed)', token: build(h, p, base.kid, base.alg) };
  }
  if (roll < 0.6) {
    return { category: 'wrong key / alg confusion', token: wrongKey(rng, base) };
  }
  if (roll < 0.6 + 0.004) {
    // Big tokens on both sides of the size limit.
    const claims = { ...base.claims, pad: 'x'.repeat(rng.pick([5000, 5800, 6200, 7000])) };
    return { category: 'size limit', token: build(enc(json(base.header)), enc(json(claims)), base.kid, base.alg) };
  }
  if (roll < 0.8) return { category: 'signature bits and spelling', token: mutateSignature(rng, base, other) };
  if (roll < 0.92) return { category: 'header/payload bits and swaps', token: mutateSegment(rng, base, other) };
  return { category: 'structure', token: mutateStructure(rng, base, other) };
}

// ---------------------------------------------------------------------------------------------

interface Tally {
  total: number;
  bothAccept: number;
  bothReject: number;
  deliberate: number;
}

describe('differential: Tessera vs jose', () => {
  it(`gives jose's verdict on ${TOKENS} generated tokens, except the deliberate differences`, async (t) => {
    const started = Date.now();
    const rng = new Rng(SEED);
    const bases: Base[] = [];
    let n = 0;
    for (const alg of ALGS) {
      const count = alg === 'RS256' || alg === 'PS256' ? 8 : 24;
      for (let i = 0; i < count; i++) bases.push(makeBase(rng, alg, n++));
    }
    // Every base enters the result cache (a JWT is admitted on its second presentation, served from
    // it on the third), so each mutation that keeps a base's signature (a header or payload
    // re-spelled, re-encoded or swapped, a segment added) finds a live entry under its cache key,
    // the signature's end: it must be refused all the same, never served the base's result.
    const hitsBefore = tessera.stats.cacheHits;
    for (const base of bases) {
      for (let i = 0; i < 3; i++) assert.ok((await tessera.verifyToken(base.token)).ok, 'a base token is valid');
    }
    assert.equal(tessera.stats.cacheHits - hitsBefore, bases.length, 'every base token is served from the result cache');

    const seen = new Set<string>();
    const tallies = new Map<string, Tally>();
    const ruleCounts = new Map<RuleId, number>(DELIBERATE.map((d) => [d.id, 0]));
    const failures: string[] = [];
    const byId = new Map(DELIBERATE.map((d) => [d.id, d]));
    let bothAccept = 0;

    // Tokens are checked in batches: jose's WebCrypto work runs on libuv's thread pool, so a batch
    // in flight keeps both cores busy while Tessera's synchronous path runs on the main thread.
    const check = async ({ category, token }: Generated): Promise<void> => {
      const [joseOk, result] = await Promise.all([
        jwtVerify(token, joseKey, joseOptions).then(
          () => true,
          () => false,
        ),
        tessera.verifyToken(token),
      ]);
      const tally = tallies.get(category) ?? { total: 0, bothAccept: 0, bothReject: 0, deliberate: 0 };
      tallies.set(category, tally);
      tally.total++;
      if (joseOk === result.ok) {
        if (joseOk) {
          tally.bothAccept++;
          bothAccept++;
          // jose accepted it, so no deliberate rule may apply (or Tessera was wrong to accept).
          const rules = deliberateRules(token);
          if (rules.size > 0)
            failures.push(describeFailure('Tessera accepted a token a deliberate rule rejects', category, token, [...rules]));
        } else tally.bothReject++;
        return;
      }
      if (result.ok) {
        failures.push(describeFailure('Tessera accepted a token jose rejects', category, token, []));
        return;
      }
      const rules = deliberateRules(token);
      const code = result.error.code;
      if (rules.size === 0) {
        failures.push(
          describeFailure(`Tessera rejected (${code}) a token jose accepts, and no deliberate rule applies`, category, token, []),
        );
        return;
      }
      const allowed = [...rules].flatMap((r) => (byId.get(r) as Deliberate).codes);
      if (!allowed.includes(code)) {
        failures.push(describeFailure(`Tessera rejected with ${code}, not one of ${allowed.join(', ')}`, category, token, [...rules]));
        return;
      }
      tally.deliberate++;
      for (const r of rules) ruleCounts.set(r, (ruleCounts.get(r) ?? 0) + 1);
    };

    while (seen.size < TOKENS) {
      const batch: Generated[] = [];
      while (batch.length < 128 && seen.size < TOKENS) {
        const generated = generate(rng, bases, n++);
        if (seen.has(generated.token)) continue;
        seen.add(generated.token);
        batch.push(generated);
      }
      await Promise.all(batch.map(check));
    }

    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    t.diagnostic(`${seen.size} distinct tokens (seed ${SEED}) in ${seconds} s; ${rsaSignatures} RSA signatures`);
    t.diagnostic('category | tokens | both accept | both reject | deliberate difference');
    for (const [category, c] of [...tallies].sort((a, b) => b[1].total - a[1].total)) {
      t.diagnostic(`${category} | ${c.total} | ${c.bothAccept} | ${c.bothReject} | ${c.deliberate}`);
    }
    const sum = (f: keyof Tally) => [...tallies.values()].reduce((a, c) => a + c[f], 0);
    t.diagnostic(`all | ${sum('total')} | ${sum('bothAccept')} | ${sum('bothReject')} | ${sum('deliberate')}`);
    t.diagnostic('deliberate difference | tokens jose accepts and Tessera rejects');
    for (const d of DELIBERATE) t.diagnostic(`${d.id} | ${ruleCounts.get(d.id)}`);

    assert.deepEqual(failures.slice(0, 10), [], `${failures.length} disagreements`);
    for (const d of DELIBERATE) assert.ok((ruleCounts.get(d.id) ?? 0) > 0, `deliberate difference "${d.id}" was never exercised`);
    assert.ok(bothAccept > TOKENS / 20, `only ${bothAccept} tokens were valid for both; the generator lost its footing`);
  });

  it('refuses an HMAC secret shorter than the hash at load, which jose would use (RFC 7518 §3.2)', async () => {
    const short = publicJwk('hs256-short');
    const header = enc(json({ alg: 'HS256', kid: 'hs256-short', typ: 'at+jwt' }));
    const payload = enc(json(freshClaims(new Rng(1), 1)));
    const token = `${header}.${payload}.${createHmac('sha256', Buffer.from(short.k as string, 'base64url'))
      .update(`${header}.${payload}`)
      .digest('base64url')}`;
    const verdict = await jwtVerify(token, Buffer.from(short.k as string, 'base64url'), joseOptions).then(
      () => true,
      () => false,
    );
    assert.equal(verdict, true, 'jose accepts a 128-bit HS256 secret');
    assert.throws(
      () =>
        createVerifier(
          { issuers: [{ issuer: ISSUER, audiences: AUDIENCES, algorithms: ['HS256'], jwks: { keys: [short] } }] },
          { clock: () => CLOCK_MS },
        ),
      (e: Error) => e.name === 'ConfigError' && /HMAC secret is 128 bits; HS256 requires at least 256/.test(e.message),
    );
  });
});

/** A failure report: the category, the rules, and the decoded segments (a fixture token; never a real one). */
function describeFailure(what: string, category: string, token: string, rules: string[]): string {
  const parts = token.split('.');
  const show = (s: string | undefined) => (s === undefined ? '-' : JSON.stringify(Buffer.from(s, 'base64url').toString('latin1')));
  return `${what} [${category}] rules=${rules.join(',') || '-'} segments=${parts.length} header=${show(parts[0])} payload=${show(parts[1])} sig=${JSON.stringify(parts[2] ?? '')} length=${token.length}`;
}
