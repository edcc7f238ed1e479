/**
 * Attack: header parameters a verifier must not ignore. `crit` (RFC 7515 §4.1.11) names
 * extensions the recipient must understand; Tessera understands none, so any `crit` is refused.
 * `typ` (RFC 8725 §3.11, RFC 9068 §4) keeps other JWTs of the same issuer (ID tokens, logout
 * tokens) from being used as access tokens when configured, and one typed as another kind
 * (`logout+jwt`) when not.
 */
import assert from 'node:assert/strict';
import { sign as cryptoSign, type KeyObject } from 'node:crypto';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { signRaw } from '../../../helpers/raw.ts';
import { AUDIENCE, b64json, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidRequest, assertInvalidToken } from '../../../helpers/verify.ts';

const key = makeKey('ES256');
const issuer = { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] } };
const verifier = createVerifier({ issuers: [issuer], dpop: { mode: 'disabled' } });
const typed = createVerifier({ issuers: [{ ...issuer, token_type: 'at+jwt' }], dpop: { mode: 'disabled' } });

describe('attack: crit header', () => {
  const cases: Record<string, Record<string, unknown>> = {
    'crit naming an unknown extension': { crit: ['http://evil.test/ext'], 'http://evil.test/ext': true },
    'crit b64 (RFC 7797 unencoded payload)': { crit: ['b64'], b64: false },
    'crit naming exp': { crit: ['exp'], exp: 1 },
    'an empty crit': { crit: [] },
    'crit that is not an array': { crit: 'b64' },
  };
  for (const [name, extra] of Object.entries(cases)) {
    it(`rejects ${name}`, async () => {
      const token = signRaw(key, JSON.stringify({ alg: 'ES256', kid: key.kid, ...extra }), JSON.stringify(claims()));
      assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_crit_unsupported');
    });
  }
});

describe('attack: b64 false without crit (RFC 7797 §6: the unencoded payload needs crit)', () => {
  it('rejects a genuine signature over the raw JSON payload as malformed: b64 is not read without crit', async () => {
    const input = `${b64json({ alg: 'ES256', kid: key.kid, b64: false })}.${JSON.stringify(claims())}`;
    const signature = cryptoSign('sha256', Buffer.from(input), { key: key.privateKey as KeyObject, dsaEncoding: 'ieee-p1363' });
    const token = `${input}.${signature.toString('base64url')}`;
    // In an Authorization header the JSON is no token68 (RFC 6750 §2.1); given as a token, no compact JWS.
    assertInvalidRequest(await verifier.verify(bearer(token)), verifier, 'request_malformed_authorization');
    assertInvalidToken(await verifier.verifyToken(token), verifier, 'token_malformed');
  });

  it('reads a base64url payload under b64 false without crit as any other (the signature covers those bytes)', async () => {
    const token = signRaw(key, JSON.stringify({ alg: 'ES256', kid: key.kid, b64: false }), JSON.stringify(claims()));
    assert.equal((await verifier.verify(bearer(token))).ok, true);
  });
});

describe('attack: typ check when configured', () => {
  for (const typ of ['at+jwt', 'application/at+jwt', 'AT+JWT', 'Application/At+JWT']) {
    it(`accepts typ ${typ}`, async () => {
      const result = await typed.verify(bearer(await sign(key, claims(), { typ })));
      assert.equal(result.ok, true);
    });
  }

  for (const typ of ['JWT', 'jwt', 'id_token+jwt', 'dpop+jwt', 'logout+jwt', 'application/jwt', 'at+jwt ', 'at+jwt; x=y', 'xat+jwt']) {
    it(`rejects typ ${JSON.stringify(typ)}`, async () => {
      const error = assertInvalidToken(await typed.verify(bearer(await sign(key, claims(), { typ }))), typed, 'token_typ_invalid');
      assert.equal(error.details.claim, 'typ');
    });
  }

  it('rejects a token without typ', async () => {
    assertInvalidToken(await typed.verify(bearer(await sign(key))), typed, 'token_typ_invalid');
  });

  it('rejects a typ that is not a string', async () => {
    const valid = await sign(key);
    const token = `${b64json({ alg: 'ES256', kid: key.kid, typ: ['at+jwt'] })}${valid.slice(valid.indexOf('.'))}`;
    assertInvalidToken(await typed.verify(bearer(token)), typed, 'token_header_invalid');
  });

  it('accepts an untyped, JWT or at+jwt token when no token_type is configured', async () => {
    for (const header of [{}, { typ: 'JWT' }, { typ: 'jwt' }, { typ: 'application/at+jwt' }, { typ: 'JOSE' }]) {
      assert.equal((await verifier.verify(bearer(await sign(key, claims(), header)))).ok, true, JSON.stringify(header));
    }
  });

  it('attack: without token_type, a JWT its issuer typed as another kind (logout token, security event, DPoP proof) is refused (RFC 8725 §3.11)', async () => {
    for (const typ of ['logout+jwt', 'application/logout+jwt', 'secevent+jwt', 'DPoP+JWT', 'id_token+jwt', 'token-introspection+jwt']) {
      const error = assertInvalidToken(await verifier.verify(bearer(await sign(key, claims(), { typ }))), verifier, 'token_typ_invalid');
      assert.equal(error.details.claim, 'typ');
    }
  });

  it('attack: without token_type, another kind of JWT with media type parameters or trailing space (logout+jwt; charset=utf-8) is refused as well', async () => {
    for (const typ of ['application/logout+jwt; charset=utf-8', 'logout+jwt;x=1', 'secevent+jwt ', 'DPoP+JWT\t;a=b']) {
      const error = assertInvalidToken(await verifier.verify(bearer(await sign(key, claims(), { typ }))), verifier, 'token_typ_invalid');
      assert.equal(error.details.claim, 'typ', typ);
    }
    for (const typ of ['at+jwt; charset=utf-8', 'JWT ; x=y']) {
      assert.equal((await verifier.verify(bearer(await sign(key, claims(), { typ })))).ok, true, typ);
    }
  });
});
