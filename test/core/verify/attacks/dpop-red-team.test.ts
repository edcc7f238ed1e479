/**
 * A red-team round on RFC 9449 resource-server checks, beside the ones in dpop.test.ts: replay of
 * a jti in a freshly signed proof and across two verifiers sharing one replay cache (two instances
 * on one store), more htu spellings, JSON edge cases in the proof (Infinity, duplicate members,
 * arrays), algorithm/key-type confusion, an ath in another encoding, a bound token in the query or
 * body, proofs joined into one header, and denials that never quote the token or the proof.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes, sign as rawSign } from 'node:crypto';
import { describe, it } from 'node:test';
import { calculateJwkThumbprint, exportJWK, type JWTHeaderParameters, SignJWT } from 'jose';
import { denyResponse } from '../../../../src/adapters/response.ts';
import type { ErrorCode } from '../../../../src/core/errors.ts';
import type { VerifyRequest } from '../../../../src/core/verify/extract.ts';
import { MemoryReplayCache } from '../../../../src/core/verify/replay.ts';
import { createVerifier } from '../../../../src/verifier.ts';
import { type ProofKey, proofKey } from '../../../helpers/dpop-keys.ts';
import { AUDIENCE, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { fakeClock } from '../../../helpers/verify.ts';

const issuerKey = makeKey('ES256');
const clock = fakeClock();
const now = () => clock.seconds();
const URL_ = 'https://api.test/items/1';

const holder = await proofKey();
const rsaHolder = await proofKey('rsa');

const issuers = [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [issuerKey.jwk] } }];
const verifier = createVerifier({ issuers, dpop: { mode: 'allowed' } }, { clock });
const withTransports = createVerifier({ issuers, dpop: { mode: 'allowed' }, transport: { query: true, form_body: true } }, { clock });

const ath = (token: string) => createHash('sha256').update(token).digest('base64url');
const boundToken = (jkt = holder.jkt) => sign(issuerKey, claims({ cnf: { jkt } }, now()));

function payloadFor(token: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  const payload: Record<string, unknown> = {
    htm: 'GET',
    htu: URL_,
    iat: now(),
    jti: randomBytes(12).toString('base64url'),
    ath: ath(token),
  };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete payload[k];
    else payload[k] = v;
  }
  return payload;
}

async function proof(
  token: string,
  options: { key?: ProofKey; header?: Record<string, unknown>; claims?: Record<string, unknown> } = {},
): Promise<string> {
  const key = options.key ?? holder;
  const header: Record<string, unknown> = { typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk, ...options.header };
  return new SignJWT(payloadFor(token, options.claims)).setProtectedHeader(header as JWTHeaderParameters).sign(key.privateKey);
}

/** A proof whose header and payload are exactly these JSON texts, signed ES256 by `key`. */
function rawProof(headerJson: string, payloadJson: string, key: ProofKey = holder): string {
  const input = `${Buffer.from(headerJson).toString('base64url')}.${Buffer.from(payloadJson).toString('base64url')}`;
  const signature = rawSign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

const request = (token: string, dpop: string | string[] | undefined, init: { url?: string; scheme?: string } = {}): VerifyRequest => ({
  method: 'GET',
  url: init.url ?? URL_,
  headers: { authorization: `${init.scheme ?? 'DPoP'} ${token}`, ...(dpop === undefined ? {} : { dpop }) },
});

async function refusedWith(r: VerifyRequest, code: ErrorCode, v = verifier): Promise<void> {
  const result = await v.verify(r);
  assert.equal(result.ok, false, `expected ${code}, got a success`);
  assert.ok(!result.ok);
  assert.equal(result.error.code, code);
}

async function accepted(r: VerifyRequest, v = verifier): Promise<void> {
  const result = await v.verify(r);
  assert.equal(result.ok, true, result.ok ? '' : result.error.code);
}

describe('attack: DPoP proof replay', () => {
  it('attack: a jti reused in a freshly signed proof (another URL, a later iat) is refused as a replay', async () => {
    const token = await boundToken();
    const jti = randomBytes(12).toString('base64url');
    await accepted(request(token, await proof(token, { claims: { jti } })));
    clock.advance(5);
    try {
      const url = 'https://api.test/items/2';
      await refusedWith(request(token, await proof(token, { claims: { jti, htu: url } }), { url }), 'dpop_replayed');
    } finally {
      clock.advance(-5);
    }
  });

  it('attack: a proof accepted by one instance is refused by a second sharing its replay cache (two gateways, one store)', async () => {
    const replay = new MemoryReplayCache({ maxEntries: 1000, clock });
    const a = createVerifier({ issuers, dpop: { mode: 'allowed' } }, { clock, replay });
    const b = createVerifier({ issuers, dpop: { mode: 'allowed' } }, { clock, replay });
    const token = await boundToken();
    const once = await proof(token);
    await accepted(request(token, once), a);
    await refusedWith(request(token, once), 'dpop_replayed', b);
  });
});

describe('attack: htu spellings of another resource', () => {
  for (const [name, htu] of [
    ['a trailing dot on the host (another name)', 'https://api.test./items/1'],
    ['the http default port on https', 'https://api.test:80/items/1'],
    ['a path parameter', 'https://api.test/items/1;x=1'],
    ['a percent-encoded dot segment naming the parent', 'https://api.test/items/1/%2e%2e'],
    ['another case in the path', 'https://api.test/Items/1'],
    ['a non-http scheme', 'wss://api.test/items/1'],
    [
      'backslashes for slashes (no URI: URL parsing reads them as /, RFC 3986 parsers as part of the authority)',
      'https://api.test\\items\\1',
    ],
    ['a tab in the path (no URI: URL parsing drops it)', 'https://api.test/items/\t1'],
    ['a leading space (no URI: URL parsing trims it)', ' https://api.test/items/1'],
    ['a fullwidth host (no URI: URL parsing maps it to api.test)', 'https://\uff41pi.test/items/1'],
  ] as const) {
    it(`attack: a proof whose htu has ${name} is refused`, async () => {
      const token = await boundToken();
      await refusedWith(request(token, await proof(token, { claims: { htu } })), 'dpop_htu_mismatch');
    });
  }

  it('a request URL with the explicit default port is the same resource as one without (RFC 3986 §6.2.3)', async () => {
    const token = await boundToken();
    await accepted(request(token, await proof(token), { url: 'https://api.test:443/items/1' }));
  });
});

describe('attack: malformed proof JSON', () => {
  it('attack: an iat of 1e400 (read as Infinity) is refused', async () => {
    const token = await boundToken();
    const body = JSON.stringify(payloadFor(token)).replace(/"iat":\d+/, '"iat":1e400');
    await refusedWith(
      request(token, rawProof(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: holder.jwk }), body)),
      'dpop_iat_invalid',
    );
  });

  it('attack: a negative iat is refused', async () => {
    const token = await boundToken();
    await refusedWith(request(token, await proof(token, { claims: { iat: -1 } })), 'dpop_iat_invalid');
  });

  it('attack: a typ given as an array is refused', async () => {
    const token = await boundToken();
    await refusedWith(request(token, await proof(token, { header: { typ: ['dpop+jwt'] } })), 'dpop_proof_invalid');
  });

  it('attack: a duplicate typ member (JWT, then dpop+jwt) is refused, not read as its last value', async () => {
    const token = await boundToken();
    const header = `{"typ":"JWT","alg":"ES256","jwk":${JSON.stringify(holder.jwk)},"typ":"dpop+jwt"}`;
    await refusedWith(request(token, rawProof(header, JSON.stringify(payloadFor(token)))), 'dpop_proof_invalid');
  });

  it('attack: a duplicate htu member (another URL, then this one) is refused', async () => {
    const token = await boundToken();
    const body = JSON.stringify(payloadFor(token)).replace('{', '{"htu":"https://evil.test/",');
    const header = JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: holder.jwk });
    await refusedWith(request(token, rawProof(header, body)), 'dpop_proof_invalid');
  });

  it('attack: a jti that is no string (a number) is refused', async () => {
    const token = await boundToken();
    await refusedWith(request(token, await proof(token, { claims: { jti: 12345 } })), 'dpop_proof_invalid');
  });
});

describe('attack: algorithm and key-type confusion', () => {
  it('attack: alg ES256 with an RSA jwk is refused', async () => {
    const token = await boundToken(rsaHolder.jkt);
    const [h, p] = (await proof(token, { key: rsaHolder, header: { alg: 'RS256' } })).split('.');
    const forged = JSON.parse(Buffer.from(h as string, 'base64url').toString());
    forged.alg = 'ES256';
    const input = `${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${p}`;
    const sig = rawSign('sha256', Buffer.from(input), rsaHolder.privateKey).toString('base64url');
    await refusedWith(request(token, `${input}.${sig}`), 'dpop_proof_invalid');
  });

  it('attack: alg RS256 with an EC jwk is refused', async () => {
    const token = await boundToken();
    const header = JSON.stringify({ typ: 'dpop+jwt', alg: 'RS256', jwk: holder.jwk });
    await refusedWith(request(token, rawProof(header, JSON.stringify(payloadFor(token)))), 'dpop_proof_invalid');
  });

  it('attack: an RSA jwk carrying the CRT private members (p, q, dp, dq, qi) without d is refused', async () => {
    const priv = (await exportJWK(rsaHolder.privateKey)) as Record<string, unknown>;
    const { d: _d, ...crt } = priv;
    const token = await boundToken(rsaHolder.jkt);
    await refusedWith(request(token, await proof(token, { key: rsaHolder, header: { alg: 'RS256', jwk: crt } })), 'dpop_proof_invalid');
  });

  it('attack: an RSA jwk with a public exponent of 2000 bits is refused before its signature is checked (each check would cost milliseconds)', async () => {
    const token = await boundToken();
    const n = (rsaHolder.jwk as { n: string }).n;
    const e = Buffer.alloc(250, 0xff).toString('base64url');
    const header = JSON.stringify({ typ: 'dpop+jwt', alg: 'RS256', jwk: { kty: 'RSA', n, e } });
    const input = `${Buffer.from(header).toString('base64url')}.${Buffer.from(JSON.stringify(payloadFor(token))).toString('base64url')}`;
    const result = await verifier.verify(request(token, `${input}.${randomBytes(256).toString('base64url')}`));
    assert.ok(!result.ok);
    assert.equal(result.error.code, 'dpop_proof_invalid');
    assert.equal(result.error.details.claim, 'jwk');
  });

  it('attack: a token bound to an RSA key over 4096 bits (its client chose it to make each check cost milliseconds) takes no proof of it: refused as jwk, before its signature is checked', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 4608 });
    const jwk = await exportJWK(publicKey);
    const big: ProofKey = { privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) };
    const token = await boundToken(big.jkt);
    const result = await verifier.verify(request(token, await proof(token, { key: big, header: { alg: 'RS256', jwk } })));
    assert.ok(!result.ok);
    assert.equal(result.error.code, 'dpop_proof_invalid');
    assert.equal(result.error.details.claim, 'jwk');
  });

  it('attack: a jwk of the holder’s key with use "enc" is refused', async () => {
    const token = await boundToken();
    await refusedWith(request(token, await proof(token, { header: { jwk: { ...holder.jwk, use: 'enc' } } })), 'dpop_proof_invalid');
  });
});

describe('attack: ath of the right token in another form', () => {
  it('attack: ath in padded standard base64 is refused', async () => {
    const token = await boundToken();
    const std = createHash('sha256').update(token).digest('base64');
    await refusedWith(request(token, await proof(token, { claims: { ath: std } })), 'dpop_ath_mismatch');
  });

  it('attack: ath over the whole Authorization value ("DPoP <token>") is refused', async () => {
    const token = await boundToken();
    await refusedWith(request(token, await proof(token, { claims: { ath: ath(`DPoP ${token}`) } })), 'dpop_ath_mismatch');
  });

  it('attack: ath as hex is refused', async () => {
    const token = await boundToken();
    const hex = createHash('sha256').update(token).digest('hex');
    await refusedWith(request(token, await proof(token, { claims: { ath: hex } })), 'dpop_ath_mismatch');
  });
});

describe('attack: a bound token presented by another transport or scheme spelling', () => {
  it('attack: a bound token in the URI query (with a valid proof) is refused as a bearer presentation', async () => {
    const token = await boundToken();
    const url = `${URL_}?access_token=${token}`;
    const result = await withTransports.verify({ method: 'GET', url, headers: { dpop: await proof(token) } });
    assert.ok(!result.ok);
    assert.equal(result.error.code, 'token_dpop_bound_as_bearer');
  });

  it('attack: a bound token in a form body (with a valid proof) is refused as a bearer presentation', async () => {
    const token = await boundToken();
    const result = await withTransports.verify({
      method: 'POST',
      url: URL_,
      headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await proof(token, { claims: { htm: 'POST' } }) },
      body: `access_token=${token}`,
    });
    assert.ok(!result.ok);
    assert.equal(result.error.code, 'token_dpop_bound_as_bearer');
  });

  it('attack: Authorization DPoP and an access_token in the query at once is a 400', async () => {
    const token = await boundToken();
    const result = await withTransports.verify({
      method: 'GET',
      url: `${URL_}?access_token=${token}`,
      headers: { authorization: `DPoP ${token}`, dpop: await proof(token) },
    });
    assert.ok(!result.ok);
    assert.equal(result.error.code, 'request_multiple_methods');
    assert.equal(result.error.status, 400);
  });

  it('attack: a bound token under an upper-case BEARER scheme is still a bearer presentation', async () => {
    const token = await boundToken();
    await refusedWith(request(token, await proof(token), { scheme: 'BEARER' }), 'token_dpop_bound_as_bearer');
  });

  it('the DPoP scheme is case-insensitive (RFC 9110 §11.1): "dpop" and "DPOP" are DPoP', async () => {
    const token = await boundToken();
    await accepted(request(token, await proof(token), { scheme: 'dpop' }));
    await accepted(request(token, await proof(token), { scheme: 'DPOP' }));
  });

  it('attack: two proofs joined into one header value (as node:http joins repeated headers) are refused', async () => {
    const token = await boundToken();
    await refusedWith(request(token, `${await proof(token)}, ${await proof(token)}`), 'dpop_proof_invalid');
  });
});

describe('attack: denials quoting the token or the proof', () => {
  it('no refusal of a DPoP request (body, challenges, error message) contains the token, the proof or its signature', async () => {
    const token = await boundToken();
    const other = await proofKey();
    const cases: [string, () => Promise<string>][] = [
      ['htm', () => proof(token, { claims: { htm: 'POST' } })],
      ['htu', () => proof(token, { claims: { htu: 'https://evil.test/' } })],
      ['iat', () => proof(token, { claims: { iat: now() - 3600 } })],
      ['ath', () => proof(token, { claims: { ath: ath('another') } })],
      ['binding', () => proof(token, { key: other })],
      ['typ', () => proof(token, { header: { typ: 'JWT' } })],
      ['signature', async () => `${(await proof(token)).slice(0, -8)}AAAAAAAA`],
    ];
    for (const [name, make] of cases) {
      const p = await make();
      const result = await verifier.verify(request(token, p));
      assert.ok(!result.ok, name);
      const res = denyResponse(result.error, (e) => verifier.challenges(e));
      const text = `${JSON.stringify(res)} ${result.error.message} ${JSON.stringify(result.error.details)}`;
      for (const secret of [token, p, p.slice(p.lastIndexOf('.') + 1), token.slice(token.lastIndexOf('.') + 1)]) {
        assert.ok(!text.includes(secret), `${name}: the refusal quotes a secret`);
      }
    }
  });
});
