/**
 * Signing access tokens: every token asked for in one turn of the event loop is signed at the end
 * of that turn, back to back (the reason is in `AccessTokens.sign`), each with its own claims, and
 * a signature that fails fails its own request only.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { importJWK, jwtVerify } from 'jose';
import { RevocationList } from '../../src/core/verify/revocation.ts';
import { type AccessTokenSpec, AccessTokens } from '../../src/issuer/access-tokens.ts';
import type { KeyManager } from '../../src/issuer/keys.ts';
import { createSigner, generateSigningKey, type JwsSigner } from '../../src/issuer/signer.ts';

const ISSUER = 'https://issuer.test';
const key = generateSigningKey('ES256');
const real = createSigner('ES256', 'k1', key.privateKey);

/** A key manager that hands out `signer` (fault injection: OpenSSL cannot be made to fail on demand). */
function tokensWith(signer: JwsSigner): AccessTokens {
  return new AccessTokens(ISSUER, { signer: () => signer } as unknown as KeyManager, new RevocationList());
}

const spec = (subject: string): AccessTokenSpec => ({
  client: { id: 'agent' },
  subject,
  audiences: ['https://api.test'],
  scopes: ['api:read'],
  act: null,
  grantId: `g_${subject}`,
  now: 1_900_000_000,
  exp: 1_900_000_600,
});

describe('AccessTokens.signSoon', () => {
  it('signs the tokens asked for in one turn together, after the turn, each with its own claims', async () => {
    const signed: string[] = [];
    const tokens = tokensWith({
      ...real,
      sign: (claims, typ) => {
        signed.push(JSON.parse(claims).sub);
        return real.sign(claims, typ);
      },
    });
    const pending = ['alice', 'bob', 'carol'].map((s) => tokens.signSoon(spec(s)));
    assert.deepEqual(signed, [], 'nothing is signed during the turn that asked');
    const results = await Promise.all(pending);
    assert.deepEqual(signed, ['alice', 'bob', 'carol']);
    const publicKey = await importJWK({ ...key.publicJwk, alg: 'ES256' }, 'ES256');
    for (const [i, s] of ['alice', 'bob', 'carol'].entries()) {
      const { payload, protectedHeader } = await jwtVerify(results[i]?.token as string, publicKey, {
        issuer: ISSUER,
        audience: 'https://api.test',
        typ: 'at+jwt',
        currentDate: new Date(1_900_000_100_000),
      });
      assert.equal(payload.sub, s);
      assert.equal(payload.grant_id, `g_${s}`);
      assert.equal(payload.jti, results[i]?.jti);
      assert.equal(protectedHeader.kid, 'k1');
    }
    assert.equal(new Set(results.map((r) => r.jti)).size, 3);
  });

  it('fails only the request whose signature failed, not the others signed in the same turn', async () => {
    const tokens = tokensWith({
      ...real,
      sign: (claims, typ) => {
        if (JSON.parse(claims).sub === 'bob') throw new Error('signing failed');
        return real.sign(claims, typ);
      },
    });
    const results = await Promise.allSettled(['alice', 'bob', 'carol'].map((s) => tokens.signSoon(spec(s))));
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.equal((results[1] as PromiseRejectedResult).reason.message, 'signing failed');
  });

  it('refuses at once, before waiting, when no key can sign', async () => {
    const tokens = new AccessTokens(ISSUER, { signer: () => undefined } as unknown as KeyManager, new RevocationList());
    await assert.rejects(tokens.signSoon(spec('alice')), { code: 'signing_key_unavailable' });
  });
});
