/**
 * RFC 9449 attacks on sender-constrained tokens: a proof with each field wrong, a replayed proof,
 * a missing nonce, a proof key that is not the one the token is bound to, and a bound token
 * presented as a plain bearer token. Proofs are built with jose's SignJWT and exported JWKs.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { calculateJwkThumbprint, exportJWK, type JWTHeaderParameters, SignJWT } from 'jose';
import { denyResponse } from '../../../../src/adapters/response.ts';
import { ERROR_CODES, type ErrorCode } from '../../../../src/core/errors.ts';
import { createDpopNonces } from '../../../../src/core/verify/dpop.ts';
import type { VerifyRequest } from '../../../../src/core/verify/extract.ts';
import { MemoryReplayCache } from '../../../../src/core/verify/replay.ts';
import { createVerifier } from '../../../../src/verifier.ts';
import { type ProofKey, proofKey } from '../../../helpers/dpop-keys.ts';
import { AUDIENCE, b64json, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertDenied, bearerChallenge, fakeClock } from '../../../helpers/verify.ts';

const issuerKey = makeKey('ES256');
const clock = fakeClock();
const now = () => clock.seconds();
const ALGS = 'algs="ES256 EdDSA PS256 RS256"';
const URL_ = 'https://api.test/items/1';

const holder = await proofKey();
const stranger = await proofKey();

const issuers = [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [issuerKey.jwk] } }];
const verifier = createVerifier({ issuers, dpop: { mode: 'allowed' } }, { clock });
const nonces = createDpopNonces({ clock, rotationSeconds: 300 });
const withNonces = createVerifier({ issuers, dpop: { mode: 'allowed', nonce: true } }, { clock, dpopNonces: nonces });
const required = createVerifier({ issuers, dpop: { mode: 'required' } }, { clock });

const ath = (token: string) => createHash('sha256').update(token).digest('base64url');
const boundToken = (jkt = holder.jkt, extra: Record<string, unknown> = {}) => sign(issuerKey, claims({ cnf: { jkt }, ...extra }, now()));

interface ProofOptions {
  readonly key?: ProofKey;
  /** Key that actually signs (default: `key`). */
  readonly signer?: KeyObject;
  readonly header?: Record<string, unknown>;
  readonly claims?: Record<string, unknown>;
}

async function proof(token: string, options: ProofOptions = {}): Promise<string> {
  const key = options.key ?? holder;
  const payload: Record<string, unknown> = {
    htm: 'GET',
    htu: URL_,
    iat: now(),
    jti: randomBytes(12).toString('base64url'),
    ath: ath(token),
  };
  for (const [k, v] of Object.entries(options.claims ?? {})) {
    if (v === undefined) delete payload[k];
    else payload[k] = v;
  }
  const header: Record<string, unknown> = { typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk };
  for (const [k, v] of Object.entries(options.header ?? {})) {
    if (v === undefined) delete header[k];
    else header[k] = v;
  }
  return new SignJWT(payload).setProtectedHeader(header as JWTHeaderParameters).sign(options.signer ?? key.privateKey);
}

const dpopRequest = (token: string, dpop: string | string[] | undefined, init: { method?: string; url?: string } = {}): VerifyRequest => ({
  method: init.method ?? 'GET',
  url: init.url ?? URL_,
  headers: dpop === undefined ? { authorization: `DPoP ${token}` } : { authorization: `DPoP ${token}`, dpop },
});

/** The two challenges of a resource accepting Bearer and DPoP, for a proof error (on DPoP only). */
const proofChallenges = (error: string, code: ErrorCode) => [
  'Bearer',
  `DPoP ${ALGS}, error="${error}", error_description="${ERROR_CODES[code].description}"`,
];
/** The two challenges for a token error (on both schemes). */
const tokenChallenges = (code: ErrorCode) => [
  bearerChallenge('invalid_token', code),
  `DPoP ${ALGS}, error="invalid_token", error_description="${ERROR_CODES[code].description}"`,
];

async function assertProofError(request: VerifyRequest, code: ErrorCode, v = verifier): Promise<void> {
  assertDenied(await v.verify(request), v, {
    status: 401,
    code,
    error: 'invalid_dpop_proof',
    challenges: proofChallenges('invalid_dpop_proof', code),
  });
}

async function assertAccepted(request: VerifyRequest, v = verifier): Promise<void> {
  const result = await v.verify(request);
  assert.equal(result.ok, true, result.ok ? '' : result.error.code);
}

describe('DPoP: a valid proof', () => {
  it('accepts a bound token with a matching proof and exposes the confirmation', async () => {
    const token = await boundToken();
    const result = await verifier.verify(dpopRequest(token, await proof(token)));
    assert.ok(result.ok, result.ok ? '' : result.error.code);
    assert.deepEqual(result.principal.confirmation, { jkt: holder.jkt });
  });

  it('requires a fresh proof on every request, even when the token result is cached', async () => {
    const token = await boundToken();
    await assertAccepted(dpopRequest(token, await proof(token)));
    await assertAccepted(dpopRequest(token, await proof(token)));
    await assertProofError(dpopRequest(token, undefined), 'dpop_proof_missing');
  });
});

describe('attack: DPoP proof with a wrong field', () => {
  it('rejects typ JWT and a missing typ', async () => {
    const token = await boundToken();
    await assertProofError(dpopRequest(token, await proof(token, { header: { typ: 'JWT' } })), 'dpop_proof_invalid');
    await assertProofError(dpopRequest(token, await proof(token, { header: { typ: undefined } })), 'dpop_proof_invalid');
  });

  it('takes typ as a media type: DPoP+JWT and application/dpop+jwt are dpop+jwt (RFC 7515 §4.1.9), application/jwt and dpop+jwt+x are not', async () => {
    const token = await boundToken();
    await assertAccepted(dpopRequest(token, await proof(token, { header: { typ: 'DPoP+JWT' } })));
    await assertAccepted(dpopRequest(token, await proof(token, { header: { typ: 'application/dpop+jwt' } })));
    await assertProofError(dpopRequest(token, await proof(token, { header: { typ: 'application/jwt' } })), 'dpop_proof_invalid');
    await assertProofError(dpopRequest(token, await proof(token, { header: { typ: 'dpop+jwt+x' } })), 'dpop_proof_invalid');
    await assertProofError(dpopRequest(token, await proof(token, { header: { typ: 7 } })), 'dpop_proof_invalid');
  });

  it('rejects alg none, signed or not', async () => {
    const token = await boundToken();
    const claimsPart = b64json({ htm: 'GET', htu: URL_, iat: now(), jti: 'n1', ath: ath(token) });
    const head = b64json({ typ: 'dpop+jwt', alg: 'none', jwk: holder.jwk });
    await assertProofError(dpopRequest(token, `${head}.${claimsPart}.`), 'dpop_proof_invalid');
    await assertProofError(dpopRequest(token, `${head}.${claimsPart}.AAAA`), 'dpop_proof_invalid');
  });

  it('rejects an HS256 proof keyed with a symmetric jwk', async () => {
    const token = await boundToken();
    const secret = randomBytes(32);
    const jwk = { kty: 'oct', k: secret.toString('base64url') };
    const hs = await new SignJWT({ htm: 'GET', htu: URL_, iat: now(), jti: 'h1', ath: ath(token) })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'HS256', jwk } as unknown as JWTHeaderParameters)
      .sign(secret);
    await assertProofError(dpopRequest(token, hs), 'dpop_proof_invalid');
  });

  it('rejects a jwk carrying the private key', async () => {
    const token = await boundToken();
    const privateJwk = await exportJWK(holder.privateKey);
    await assertProofError(dpopRequest(token, await proof(token, { header: { jwk: privateJwk } })), 'dpop_proof_invalid');
  });

  it('rejects a proof without jwk, or naming its key by jku, x5u or x5c', async () => {
    const token = await boundToken();
    await assertProofError(dpopRequest(token, await proof(token, { header: { jwk: undefined } })), 'dpop_proof_invalid');
    for (const extra of [{ jku: 'https://evil.test/jwks' }, { x5u: 'https://evil.test/c' }, { x5c: ['MIIB'] }]) {
      await assertProofError(dpopRequest(token, await proof(token, { header: extra })), 'dpop_proof_invalid');
    }
  });

  it('rejects a bad signature (jwk of the holder, signed by another key)', async () => {
    const token = await boundToken();
    await assertProofError(dpopRequest(token, await proof(token, { signer: stranger.privateKey })), 'dpop_proof_invalid');
  });

  it('rejects a proof for another method', async () => {
    const token = await boundToken();
    await assertProofError(dpopRequest(token, await proof(token, { claims: { htm: 'POST' } })), 'dpop_htm_mismatch');
    await assertProofError(dpopRequest(token, await proof(token, { claims: { htm: 'get' } })), 'dpop_htm_mismatch');
  });

  for (const [name, htu] of [
    ['another host', 'https://evil.test/items/1'],
    ['a host suffix', 'https://api.test.evil/items/1'],
    ['another scheme', 'http://api.test/items/1'],
    ['another port', 'https://api.test:8443/items/1'],
    ['another path', 'https://api.test/items/2'],
    ['a path prefix', 'https://api.test/items'],
    ['a trailing slash', 'https://api.test/items/1/'],
    ['a relative URI', '/items/1'],
    ['an encoded slash for the path separator', 'https://api.test/items%2F1'],
    ['another encoded character', 'https://api.test/items/%32'],
  ] as const) {
    it(`rejects a proof whose htu has ${name}`, async () => {
      const token = await boundToken();
      await assertProofError(dpopRequest(token, await proof(token, { claims: { htu } })), 'dpop_htu_mismatch');
    });
  }

  // RFC 9110 §4.2.4: userinfo is not allowed in http(s) URIs. Dropped before comparing, it would
  // make a second (and third…) spelling of the request URI pass.
  for (const htu of [
    'https://user@api.test/items/1',
    'https://user:pw@api.test/items/1',
    'https://:pw@api.test/items/1',
    'https://@api.test/items/1',
    'https://:@api.test/items/1',
    'https://evil.test@api.test/items/1',
    'HTTPS://User@API.TEST:443/items/1',
    'https:\\\\user@api.test/items/1',
  ]) {
    it(`attack: userinfo in htu, another spelling of the request URI (${htu}), is refused`, async () => {
      const token = await boundToken();
      await assertProofError(dpopRequest(token, await proof(token, { claims: { htu } })), 'dpop_htu_mismatch');
    });
  }

  it('attack: userinfo in the request URL itself matches no proof', async () => {
    const token = await boundToken();
    const url = 'https://user@api.test/items/1';
    await assertProofError(dpopRequest(token, await proof(token, { claims: { htu: url } }), { url }), 'dpop_htu_mismatch');
  });

  it('ignores query and fragment on both sides and normalizes case and default port', async () => {
    const token = await boundToken();
    await assertAccepted(dpopRequest(token, await proof(token, { claims: { htu: `${URL_}?a=1#f` } })));
    await assertAccepted(dpopRequest(token, await proof(token), { url: `${URL_}?b=2#g` }));
    await assertAccepted(dpopRequest(token, await proof(token, { claims: { htu: 'https://API.TEST:443/items/1' } })));
  });

  it('compares paths after RFC 3986 §6.2.2 normalization: encoded unreserved characters and hex case', async () => {
    const token = await boundToken();
    const url = 'https://api.test/~a/b%2fc';
    await assertAccepted(dpopRequest(token, await proof(token, { claims: { htu: 'https://api.test/%7Ea/b%2Fc' } }), { url }));
    await assertAccepted(dpopRequest(token, await proof(token, { claims: { htu: 'https://api.test/%7ea/%62%2fc' } }), { url }));
  });

  it('rejects iat older than the window plus skew, accepts it at the edge', async () => {
    const token = await boundToken();
    // iat_window 60 s + clock_skew 30 s.
    await assertProofError(dpopRequest(token, await proof(token, { claims: { iat: now() - 91 } })), 'dpop_iat_invalid');
    await assertAccepted(dpopRequest(token, await proof(token, { claims: { iat: now() - 90 } })));
  });

  it('rejects iat in the future beyond the skew, accepts it at the edge', async () => {
    const token = await boundToken();
    await assertProofError(dpopRequest(token, await proof(token, { claims: { iat: now() + 31 } })), 'dpop_iat_invalid');
    await assertAccepted(dpopRequest(token, await proof(token, { claims: { iat: now() + 30 } })));
  });

  it("an introspected token's proof gets introspection.clock_skew as an issuer's would (edges of the window)", async () => {
    const opaque = 'opaque-bound-token';
    const introspecting = createVerifier(
      {
        introspection: { endpoint: 'https://as.test/introspect', client_id: 'rs', client_secret: 'secret', clock_skew: '20s' },
        dpop: { mode: 'allowed' },
      },
      { clock, introspector: { introspect: async () => ({ active: true, sub: 'u', exp: now() + 600, cnf: { jkt: holder.jkt } }) } },
    );
    const at = async (iat: number) => dpopRequest(opaque, await proof(opaque, { claims: { iat } }));
    await assertAccepted(await at(now() + 20), introspecting);
    await assertAccepted(await at(now() - 80), introspecting);
    await assertProofError(await at(now() + 21), 'dpop_iat_invalid', introspecting);
    await assertProofError(await at(now() - 81), 'dpop_iat_invalid', introspecting);
  });

  it('attack: a dpopClockSkew that is not a number of seconds from 0 to 60 is refused when building (NaN would pass every iat)', () => {
    for (const dpopClockSkew of [Number.NaN, -1, 61, Number.POSITIVE_INFINITY]) {
      assert.throws(() => createVerifier({ issuers, dpop: { mode: 'allowed' } }, { clock, dpopClockSkew }), TypeError);
    }
  });

  it('rejects a missing or non-numeric iat, and a missing jti', async () => {
    const token = await boundToken();
    await assertProofError(dpopRequest(token, await proof(token, { claims: { iat: undefined } })), 'dpop_proof_invalid');
    await assertProofError(dpopRequest(token, await proof(token, { claims: { iat: String(now()) } })), 'dpop_proof_invalid');
    await assertProofError(dpopRequest(token, await proof(token, { claims: { jti: undefined } })), 'dpop_proof_invalid');
  });

  it('rejects a proof whose ath is for another token, or missing', async () => {
    const token = await boundToken();
    const other = await boundToken();
    await assertProofError(dpopRequest(token, await proof(other)), 'dpop_ath_mismatch');
    await assertProofError(dpopRequest(token, await proof(token, { claims: { ath: undefined } })), 'dpop_ath_mismatch');
    await assertProofError(dpopRequest(token, await proof(token, { claims: { ath: ath(token).toUpperCase() } })), 'dpop_ath_mismatch');
  });

  it('rejects an ath of the right length in characters but not in bytes (no exception)', async () => {
    const token = await boundToken();
    const wide = `é${ath(token).slice(1)}`;
    await assertProofError(dpopRequest(token, await proof(token, { claims: { ath: wide } })), 'dpop_ath_mismatch');
  });

  it('rejects a replayed proof (same jti)', async () => {
    const token = await boundToken();
    const once = await proof(token);
    await assertAccepted(dpopRequest(token, once));
    await assertProofError(dpopRequest(token, once), 'dpop_replayed');
  });

  it('rejects a proof replayed in the last second its iat is still accepted', async () => {
    const token = await boundToken();
    const once = await proof(token);
    await assertAccepted(dpopRequest(token, once));
    // iat_window 60 s + clock_skew 30 s: at +90.5 s the proof's iat is still inside the window.
    clock.advance(90.5);
    try {
      await assertProofError(dpopRequest(token, once), 'dpop_replayed');
      await assertProofError(dpopRequest(token, once), 'dpop_replayed');
    } finally {
      clock.advance(-90.5);
    }
  });

  it('rejects two DPoP headers', async () => {
    const token = await boundToken();
    const p = await proof(token);
    assertDenied(await verifier.verify(dpopRequest(token, [p, p])), verifier, {
      status: 400,
      code: 'request_multiple_dpop_proofs',
      error: 'invalid_request',
      challenges: tokenChallenges('request_multiple_dpop_proofs').map((c) => c.replace('invalid_token', 'invalid_request')),
    });
  });

  it('rejects a proof larger than the token size limit', async () => {
    const token = await boundToken();
    await assertProofError(dpopRequest(token, await proof(token, { claims: { pad: 'x'.repeat(9000) } })), 'dpop_proof_invalid');
  });
});

describe('attack: DPoP nonce missing when nonces are on', () => {
  it('answers 401 use_dpop_nonce with a DPoP-Nonce header, then accepts the proof with the nonce', async () => {
    const token = await boundToken();
    const result = await withNonces.verify(dpopRequest(token, await proof(token)));
    const error = assertDenied(result, withNonces, {
      status: 401,
      code: 'dpop_nonce_required',
      error: 'use_dpop_nonce',
      challenges: proofChallenges('use_dpop_nonce', 'dpop_nonce_required'),
    });
    const nonce = error.details.dpopNonce;
    assert.equal(typeof nonce, 'string');
    const response = denyResponse(error, withNonces.challenges);
    assert.equal(response.headers['dpop-nonce'], nonce);
    assert.equal(response.headers['www-authenticate'], proofChallenges('use_dpop_nonce', 'dpop_nonce_required').join(', '));
    await assertAccepted(dpopRequest(token, await proof(token, { claims: { nonce } })), withNonces);
  });

  it('rejects a forged nonce and a nonce two rotations old', async () => {
    const token = await boundToken();
    const stale = nonces.current();
    for (const nonce of ['AAAAAAAAAAAAAAAAAAAAAAAAAAA', `${stale.slice(0, -2)}AA`]) {
      const result = await withNonces.verify(dpopRequest(token, await proof(token, { claims: { nonce } })));
      assertDenied(result, withNonces, {
        status: 401,
        code: 'dpop_nonce_required',
        error: 'use_dpop_nonce',
        challenges: proofChallenges('use_dpop_nonce', 'dpop_nonce_required'),
      });
    }
    clock.advance(600);
    try {
      const fresh = await boundToken();
      const result = await withNonces.verify(dpopRequest(fresh, await proof(fresh, { claims: { nonce: stale } })));
      assert.ok(!result.ok);
      assert.equal(result.error.code, 'dpop_nonce_required');
    } finally {
      clock.advance(-600);
    }
  });

  it('rejects another spelling of a valid nonce (padding, standard base64, other unused bits of the last character)', () => {
    const nonce = nonces.current();
    assert.ok(nonces.isValid(nonce));
    const last = nonce.at(-1) as string;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    // The last of 27 characters carries 2 bits of the 20 bytes: its low 4 bits are unused.
    const sibling = alphabet[alphabet.indexOf(last) ^ 1] as string;
    const spellings = [
      `${nonce}=`,
      `${nonce.slice(0, -1)}${sibling}`,
      Buffer.from(nonce, 'base64url').toString('base64'),
      ` ${nonce}`,
      `${nonce}\n`,
    ];
    for (const s of spellings) {
      if (s === nonce) continue;
      assert.equal(nonces.isValid(s), false, JSON.stringify(s));
    }
  });
});

describe('attack: proof key does not match the token binding', () => {
  it("rejects a valid proof by another key than the token's cnf.jkt", async () => {
    const token = await boundToken(holder.jkt);
    const result = await verifier.verify(dpopRequest(token, await proof(token, { key: stranger })));
    assertDenied(result, verifier, {
      status: 401,
      code: 'dpop_binding_mismatch',
      error: 'invalid_token',
      challenges: tokenChallenges('dpop_binding_mismatch'),
    });
  });

  it('attack: a thief with a bound token sending proofs by keys of its choosing has no signature checked under them (a 16384-bit RSA key costs milliseconds a check)', async () => {
    const token = await boundToken(holder.jkt);
    const valid = await proof(token, { key: stranger });
    // The stranger's proof with a signature that would not verify: refused for its key, the
    // signature never looked at.
    const junk = `${valid.slice(0, valid.lastIndexOf('.'))}.${Buffer.alloc(64, 7).toString('base64url')}`;
    const result = await verifier.verify(dpopRequest(token, junk));
    assertDenied(result, verifier, {
      status: 401,
      code: 'dpop_binding_mismatch',
      error: 'invalid_token',
      challenges: tokenChallenges('dpop_binding_mismatch'),
    });
  });
});

describe('attack: filling the replay cache with proofs by a key the token is not bound to', () => {
  it('records no jti for a proof by another key, so a stolen bound token cannot lock its holder out', async () => {
    const replay = new MemoryReplayCache({ maxEntries: 3, clock });
    const small = createVerifier({ issuers, dpop: { mode: 'allowed' } }, { clock, replay });
    // A thief holds the bound token (not its key) and sends proofs by a key of its own.
    const token = await boundToken(holder.jkt);
    for (let i = 0; i < 5; i++) {
      const result = await small.verify(dpopRequest(token, await proof(token, { key: stranger })));
      assert.ok(!result.ok);
      assert.equal(result.error.code, 'dpop_binding_mismatch');
    }
    assert.equal(replay.size, 0, 'the refused proofs left no entry');
    await assertAccepted(dpopRequest(token, await proof(token)), small);
  });
});

describe('attack: one proof key filling the replay cache', () => {
  it("a holder of one bound token sending proofs with fresh jtis is refused past its key's share; other keys are still accepted", async () => {
    // 16000 entries: a share of 1000 for each key (max(1000, 16000 / 16)).
    const replay = new MemoryReplayCache({ maxEntries: 16_000, clock });
    const v = createVerifier({ issuers, dpop: { mode: 'allowed' } }, { clock, replay });
    const token = await boundToken(holder.jkt);
    for (let i = 0; i < 1000; i++) await assertAccepted(dpopRequest(token, await proof(token)), v);
    const over = await v.verify(dpopRequest(token, await proof(token)));
    assert.ok(!over.ok, 'a proof past the share was accepted');
    assert.equal(over.error.code, 'dpop_key_rate_limited');
    const overResponse = denyResponse(over.error, (e) => v.challenges(e));
    assert.equal(overResponse.status, 429);
    assert.equal(overResponse.headers['retry-after'], '1');
    assert.deepEqual(JSON.parse(overResponse.body), {
      error: 'rate_limited',
      error_description: 'Too many recent DPoP proofs by this key; retry later.',
    });
    assert.equal(replay.size, 1000, 'the refused proof was not recorded');
    // Another client, its token bound to its own key, is not locked out.
    const other = await boundToken(stranger.jkt);
    await assertAccepted(dpopRequest(other, await proof(other, { key: stranger })), v);
    // The holder's proofs are accepted again once its earlier ones expired (iat_window + clock_skew).
    clock.advance(92);
    try {
      await assertAccepted(dpopRequest(token, await proof(token)), v);
    } finally {
      clock.advance(-92);
    }
  });

  it('a cache full of live proofs refuses a new one with 503 dpop_replay_unavailable and Retry-After, not as a replay', async () => {
    const replay = new MemoryReplayCache({ maxEntries: 2, clock });
    const v = createVerifier({ issuers, dpop: { mode: 'allowed' } }, { clock, replay });
    const token = await boundToken(holder.jkt);
    await assertAccepted(dpopRequest(token, await proof(token)), v);
    const other = await boundToken(stranger.jkt);
    await assertAccepted(dpopRequest(other, await proof(other, { key: stranger })), v);
    const full = await v.verify(dpopRequest(token, await proof(token)));
    assert.ok(!full.ok, 'a proof was accepted unrecorded');
    assert.equal(full.error.code, 'dpop_replay_unavailable');
    const response = denyResponse(full.error, (e) => v.challenges(e));
    assert.equal(response.status, 503);
    assert.equal(response.headers['retry-after'], '5');
  });
});

describe('attack: a proof key cached by one verifier', () => {
  it("does not narrow the algorithms another verifier accepts for that key (a junk proof with the holder's jwk)", async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = await exportJWK(rsa.publicKey);
    const key: ProofKey = { privateKey: rsa.privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) };
    const rsOnly = createVerifier({ issuers, dpop: { mode: 'allowed', algorithms: ['RS256'] } }, { clock });
    const psOnly = createVerifier({ issuers, dpop: { mode: 'allowed', algorithms: ['PS256'] } }, { clock });
    const token = await boundToken(key.jkt);
    // The holder's public JWK is in every proof it sends: anyone can replay it with a junk signature.
    const [head, body] = (await proof(token, { key, header: { alg: 'RS256' } })).split('.');
    const junk = await rsOnly.verify(dpopRequest(token, `${head}.${body}.AAAA`));
    assert.ok(!junk.ok);
    assert.equal(junk.error.code, 'dpop_proof_invalid');
    await assertAccepted(dpopRequest(token, await proof(token, { key, header: { alg: 'PS256' } })), psOnly);
  });
});

describe('attack: DPoP-bound token presented as Bearer', () => {
  it('rejects a bound token sent with the Bearer scheme', async () => {
    const token = await boundToken();
    const result = await verifier.verify({ method: 'GET', url: URL_, headers: { authorization: `Bearer ${token}` } });
    assertDenied(result, verifier, {
      status: 401,
      code: 'token_dpop_bound_as_bearer',
      error: 'invalid_token',
      challenges: tokenChallenges('token_dpop_bound_as_bearer'),
    });
  });

  it('rejects a bound token sent as Bearer even with a valid DPoP proof header', async () => {
    const token = await boundToken();
    const result = await verifier.verify({
      method: 'GET',
      url: URL_,
      headers: { authorization: `Bearer ${token}`, dpop: await proof(token) },
    });
    assert.ok(!result.ok);
    assert.equal(result.error.code, 'token_dpop_bound_as_bearer');
  });

  it('rejects an unbound token sent with the DPoP scheme', async () => {
    const token = await sign(issuerKey, claims({}, now()));
    const result = await verifier.verify(dpopRequest(token, await proof(token)));
    assertDenied(result, verifier, {
      status: 401,
      code: 'token_not_dpop_bound',
      error: 'invalid_token',
      challenges: tokenChallenges('token_not_dpop_bound'),
    });
  });

  it('rejects unbound bearer tokens when DPoP is required, with a DPoP-only challenge', async () => {
    const token = await sign(issuerKey, claims({}, now()));
    const result = await required.verify({ method: 'GET', url: URL_, headers: { authorization: `Bearer ${token}` } });
    assertDenied(result, required, {
      status: 401,
      code: 'token_dpop_required',
      error: 'invalid_token',
      challenges: [`DPoP ${ALGS}, error="invalid_token", error_description="${ERROR_CODES.token_dpop_required.description}"`],
    });
  });
});
