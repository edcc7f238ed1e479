/**
 * Robustness: seeded random mutations of a valid token, of its claims and header (re-signed so
 * the claim checks are reached), of a DPoP proof and of the request. `verify` must always answer
 * with a result (never throw or reject), and no mutation of the token bytes may be accepted.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { calculateJwkThumbprint, exportJWK } from 'jose';
import { TesseraError } from '../../../src/core/errors.ts';
import type { VerifyRequest } from '../../../src/core/verify/extract.ts';
import { createVerifier } from '../../../src/verifier.ts';
import { signRaw } from '../../helpers/raw.ts';
import { AUDIENCE, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';

/** mulberry32: a small deterministic PRNG so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = 20_240_601;
const rand = prng(SEED);
const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)] as T;
const CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/~ é\u0000%';

function randomJson(depth = 0): unknown {
  switch (Math.floor(rand() * (depth > 2 ? 7 : 9))) {
    case 0:
      return null;
    case 1:
      return rand() < 0.5;
    case 2:
      return Math.floor(rand() * 4e9) - 2e9;
    case 3:
      return pick([0, -1, 1e308, -1e308, 0.5, 2 ** 53, Number.MAX_SAFE_INTEGER]);
    case 4:
      return pick(['', ' ', 'api:read', ISSUER, AUDIENCE, 'é', '\u0000', 'x'.repeat(300)]);
    case 5:
      return randomUUID();
    case 6:
      return String(Math.floor(rand() * 4e9));
    case 7:
      return Array.from({ length: Math.floor(rand() * 4) }, () => randomJson(depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rand() * 4); i > 0; i--) o[pick(['sub', 'jkt', 'act', 'iss', 'client_id', 'x'])] = randomJson(depth + 1);
      return o;
    }
  }
}

function mutateString(s: string): string {
  const i = Math.floor(rand() * s.length);
  switch (Math.floor(rand() * 6)) {
    case 0:
      return s.slice(0, i) + pick([...CHARS]) + s.slice(i + 1);
    case 1:
      return s.slice(0, i) + s.slice(i + 1);
    case 2:
      return s.slice(0, i) + pick([...CHARS]) + s.slice(i);
    case 3:
      return s.slice(0, i);
    case 4: {
      const parts = s.split('.');
      return [parts[1], parts[0], parts[2]].join('.');
    }
    default:
      return `${s}.${s.split('.')[1]}`;
  }
}

/** Replace one character by a non-ASCII one: same length in characters, longer in bytes. */
function wide(s: string): string {
  const i = Math.floor(rand() * s.length);
  return s.slice(0, i) + pick(['é', '€', '\u{1F600}'.slice(0, 1), 'ß']) + s.slice(i + 1);
}

const key = makeKey('ES256');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] }, required_claims: ['iat', 'sub'] }],
  scopes: { 'api:read': {}, 'api:write': { implies: ['api:read'] } },
  rules: [{ path: '/items/:id', scopes: ['api:read'], claims: { tenant: [1, 'a'] } }, { path: '/**' }],
  transport: { query: true, form_body: true },
  dpop: { mode: 'allowed', nonce: true },
  cache: { max_entries: 0 },
});

async function answers(request: VerifyRequest): Promise<Awaited<ReturnType<typeof verifier.verify>>> {
  let result: Awaited<ReturnType<typeof verifier.verify>> | undefined;
  await assert.doesNotReject(
    async () => {
      result = await verifier.verify(request);
    },
    `seed ${SEED}: ${JSON.stringify(request).slice(0, 300)}`,
  );
  assert.ok(result);
  if (!result.ok) assert.ok(result.error instanceof TesseraError);
  return result;
}

describe('robustness: verify always answers', () => {
  it('rejects every byte-level mutation of a valid token, without throwing', async () => {
    const token = await sign(key);
    assert.equal((await answers({ method: 'GET', url: 'https://api.test/x', headers: { authorization: `Bearer ${token}` } })).ok, true);
    for (let n = 0; n < 1500; n++) {
      const mutated = mutateString(token);
      if (mutated === token) continue;
      const result = await answers({ method: 'GET', url: 'https://api.test/x', headers: { authorization: `Bearer ${mutated}` } });
      assert.equal(result.ok, false, `seed ${SEED}, mutation ${n} accepted: ${mutated}`);
    }
  });

  it('answers for re-signed tokens with random claim and header values', async () => {
    for (let n = 0; n < 600; n++) {
      const payload: Record<string, unknown> = { ...claims({ tenant: 'a' }) };
      for (let k = 1 + Math.floor(rand() * 2); k > 0; k--) {
        payload[pick(['iss', 'aud', 'exp', 'nbf', 'iat', 'sub', 'scope', 'act', 'cnf', 'client_id', 'jti', 'grant_id', 'tenant'])] =
          randomJson();
      }
      const header: Record<string, unknown> = { alg: 'ES256', kid: key.kid };
      if (rand() < 0.3) header[pick(['typ', 'kid', 'crit', 'b64', 'cty', 'jwk'])] = randomJson();
      const token = signRaw(key, JSON.stringify(header), JSON.stringify(payload));
      await answers({
        method: 'GET',
        url: `https://api.test/items/${pick(['1', '%2e%2e', '%zz', 'a%2fb'])}`,
        headers: { authorization: `Bearer ${token}` },
      });
    }
  });

  it('answers for DPoP proofs with one random field, on an otherwise valid request', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = await exportJWK(publicKey);
    const holder = { alg: 'ES256' as const, kid: '', privateKey, jwk: {} };
    const token = await sign(key, claims({ cnf: { jkt: await calculateJwkThumbprint(jwk) } }));
    const ath = createHash('sha256').update(token).digest('base64url');
    for (let n = 0; n < 600; n++) {
      const payload: Record<string, unknown> = {
        htm: 'GET',
        htu: 'https://api.test/x',
        iat: Math.floor(Date.now() / 1000),
        jti: randomUUID(),
        ath,
      };
      const header: Record<string, unknown> = { typ: 'dpop+jwt', alg: 'ES256', jwk };
      const r = rand();
      if (r < 0.15) payload.ath = mutateString(ath);
      else if (r < 0.3) payload.ath = wide(ath);
      else if (r < 0.6) payload[pick(['htm', 'htu', 'iat', 'jti', 'ath', 'nonce'])] = randomJson();
      else if (r < 0.8) header[pick(['typ', 'alg', 'jwk', 'crit', 'kid', 'jku'])] = randomJson();
      let proof = signRaw(holder, JSON.stringify(header), JSON.stringify(payload));
      if (r >= 0.8) proof = mutateString(proof);
      await answers({ method: 'GET', url: 'https://api.test/x', headers: { authorization: `DPoP ${token}`, dpop: proof } });
    }
  });

  it('answers for random request shapes', async () => {
    const token = await sign(key);
    for (let n = 0; n < 600; n++) {
      const url = pick([
        'https://api.test/x',
        '/x',
        'not a url',
        'https://api.test/x?access_token=',
        'https://[::1/x',
        '*',
        '/x?access%5Ftoken=%zz',
        '',
      ]);
      const auth = `${pick(['DPoP', 'Bearer', 'Basic', '', 'bearer\t'])}${pick([' ', '  ', ''])}${rand() < 0.5 ? token : mutateString(token)}`;
      const headers: VerifyRequest['headers'] = pick([
        { authorization: auth },
        { authorization: [auth, auth] },
        { authorization: [] as string[] },
        { authorization: auth, dpop: [] as string[], 'content-type': pick(['application/x-www-form-urlencoded', 'text/plain', '']) },
        new Headers({ authorization: auth.replace(/[^ -~]/g, '') }),
        {},
      ]);
      const body = pick([
        undefined,
        `access_token=${token}`,
        new Uint8Array([0xff, 0xfe, 0x25]),
        new URLSearchParams('access_token='),
        '%',
      ]);
      await answers({ method: pick(['GET', 'POST', 'get', '']), url, headers, ...(body === undefined ? {} : { body }) });
    }
  });
});
