/**
 * Attack: hostile `kid` values (RFC 8725 §3.10). Keys are looked up by (issuer, kid) in memory,
 * never by path or query; unknown kids are refused, and one issuer's key never verifies another's
 * token, even under a shared kid.
 */
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, b64json, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

const key = makeKey('ES256', 'key-1');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  dpop: { mode: 'disabled' },
});

const payloads: Record<string, string> = {
  'path traversal': '../../../../../../etc/passwd',
  'absolute path': '/dev/null',
  'encoded traversal': '..%2f..%2f..%2fetc%2fpasswd',
  'null byte': 'key-1\u0000.pem',
  'SQL tautology': "' OR '1'='1",
  'SQL stacked query': "key-1'; DROP TABLE keys; --",
  'SQL union': "x' UNION SELECT 'AAAA' --",
  'kid that prefixes a real kid': 'key-',
  'kid that extends a real kid': 'key-1 ',
};

describe('attack: kid payloads', () => {
  for (const [name, kid] of Object.entries(payloads)) {
    it(`rejects a kid with a ${name} payload as an unknown key`, async () => {
      const token = await sign(key, claims(), { kid });
      assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_kid_unknown');
    });
  }

  it('rejects an unknown kid', async () => {
    const token = await sign(key, claims(), { kid: 'key-2' });
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_kid_unknown');
  });

  it('rejects a kid that is not a string', async () => {
    const valid = await sign(key);
    for (const kid of [1, null, ['key-1'], { id: 'key-1' }]) {
      const token = `${b64json({ alg: 'ES256', kid })}${valid.slice(valid.indexOf('.'))}`;
      assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_header_invalid');
    }
  });
});

describe('attack: two issuers sharing a kid', () => {
  const A = 'https://issuer-a.test';
  const B = 'https://issuer-b.test';
  const keyA = makeKey('ES256', 'shared');
  const keyB = makeKey('ES256', 'shared');
  const both = createVerifier({
    issuers: [
      { issuer: A, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [keyA.jwk] } },
      { issuer: B, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [keyB.jwk] } },
    ],
    dpop: { mode: 'disabled' },
  });

  it("rejects a token claiming issuer B signed with issuer A's key under the shared kid", async () => {
    const token = await sign(keyA, claims({ iss: B }));
    assertInvalidToken(await both.verify(bearer(token)), both, 'token_signature_invalid');
  });

  it('accepts each issuer with its own key', async () => {
    for (const [iss, k] of [
      [A, keyA],
      [B, keyB],
    ] as const) {
      const result = await both.verify(bearer(await sign(k, claims({ iss }))));
      if (!result.ok || result.principal.issuer !== iss) throw new Error(`${iss} not accepted`);
    }
  });

  it('rejects a token from an issuer that is not configured, even signed by a trusted key', async () => {
    const token = await sign(keyA, claims({ iss: 'https://issuer-c.test' }));
    assertInvalidToken(await both.verify(bearer(token)), both, 'token_issuer_unknown');
  });

  it('rejects a token without iss when several issuers are configured', async () => {
    const token = await sign(keyA, claims({ iss: undefined }));
    assertInvalidToken(await both.verify(bearer(token)), both, 'token_issuer_unknown');
  });
});
