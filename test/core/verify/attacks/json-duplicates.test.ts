/**
 * Attack: duplicate JSON members (RFC 7515 §4, RFC 7519 §4, RFC 8259 §4). `JSON.parse` keeps the
 * last duplicate while other parsers keep the first, so `{"sub":"alice","sub":"admin"}` means two
 * things. Tessera rejects duplicates anywhere: header, payload and nested objects, including
 * duplicates spelled with escapes. Every token here is genuinely signed by the issuer's key. A
 * key set (`jwks.file`) is read with the same strict JSON.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { STRICT_JSON_FAULTS } from '../../../../src/core/jose/json.ts';
import { createVerifier } from '../../../../src/verifier.ts';
import { issuesOf } from '../../../helpers/config.ts';
import { jsonWith, signRaw } from '../../../helpers/raw.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

const key = makeKey('ES256');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  dpop: { mode: 'disabled' },
});
const header = { alg: 'ES256', kid: key.kid };

describe('attack: duplicate JSON members', () => {
  it('rejects a duplicate alg in the header', async () => {
    const token = signRaw(key, jsonWith(header, '"alg":"ES256"'), JSON.stringify(claims()));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_header_invalid');
  });

  it('rejects a duplicate kid in the header', async () => {
    const token = signRaw(key, jsonWith(header, '"kid":"other"'), JSON.stringify(claims()));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_header_invalid');
  });

  it('rejects a duplicate sub in the payload', async () => {
    const token = signRaw(key, JSON.stringify(header), jsonWith(claims(), '"sub":"admin"'));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_payload_invalid');
  });

  it('rejects a duplicate aud in the payload', async () => {
    const token = signRaw(key, JSON.stringify(header), jsonWith(claims({ aud: 'https://other.test' }), `"aud":"${AUDIENCE}"`));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_payload_invalid');
  });

  it('rejects a duplicate spelled with a unicode escape ("s\\u0075b")', async () => {
    const token = signRaw(key, JSON.stringify(header), jsonWith(claims(), '"s\\u0075b":"admin"'));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_payload_invalid');
  });

  it('rejects a duplicate inside a nested act', async () => {
    const token = signRaw(key, JSON.stringify(header), jsonWith(claims(), '"act":{"sub":"agent-a","sub":"agent-b"}'));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_payload_invalid');
  });

  it('rejects a duplicate inside cnf', async () => {
    const token = signRaw(key, JSON.stringify(header), jsonWith(claims(), '"cnf":{"jkt":"a","jkt":"b"}'));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_payload_invalid');
  });

  it('rejects a duplicate inside an object in an array', async () => {
    const token = signRaw(key, JSON.stringify(header), jsonWith(claims(), '"roles":[{"name":"a","name":"b"}]'));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_payload_invalid');
  });

  it('rejects a duplicate __proto__ member', async () => {
    const token = signRaw(key, JSON.stringify(header), jsonWith(claims(), '"__proto__":{"admin":true},"__proto__":{}'));
    assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_payload_invalid');
  });

  it('accepts colons and escaped quotes inside strings (no false positive)', async () => {
    const token = signRaw(key, JSON.stringify(header), JSON.stringify(claims({ note: 'a:b "c:d" \\: e', url: 'https://x:1/' })));
    const result = await verifier.verify(bearer(token));
    if (!result.ok) throw new Error(result.error.code);
  });

  it('rejects a header and payload that are not JSON objects', async () => {
    assertInvalidToken(
      await verifier.verify(bearer(signRaw(key, '["ES256"]', JSON.stringify(claims())))),
      verifier,
      'token_header_invalid',
    );
    assertInvalidToken(await verifier.verify(bearer(signRaw(key, JSON.stringify(header), '"claims"'))), verifier, 'token_payload_invalid');
    assertInvalidToken(
      await verifier.verify(bearer(signRaw(key, JSON.stringify(header), `\ufeff${JSON.stringify(claims())}`))),
      verifier,
      'token_payload_invalid',
    );
  });
});

describe('attack: duplicate JSON members in a local key set (jwks.file)', () => {
  const other = makeKey('ES256');
  /** The issuer's key with `member` spelled twice: another key's value first, the real one last (what JSON.parse keeps). */
  const keyWithTwice = (member: 'x' | 'kty') =>
    JSON.stringify(key.jwk).replace(`"${member}":`, `"${member}":${JSON.stringify(member === 'x' ? other.jwk.x : 'RSA')},"${member}":`);

  const repeated = 'a member name is repeated in one object (write each member once)';
  for (const [name, text, why] of [
    ['a key with two x members', `{"keys":[${keyWithTwice('x')}]}`, repeated],
    ['a key with two kty members', `{"keys":[${keyWithTwice('kty')}]}`, repeated],
    ['two keys arrays', `{"keys":[${JSON.stringify(other.jwk)}],"keys":[${JSON.stringify(key.jwk)}]}`, repeated],
    // Was reported as a repeated member: the duplicate check's overflow taken for a duplicate.
    [
      'a key nested 100,000 arrays deep',
      `{"keys":[${JSON.stringify(key.jwk)}],"x":${'['.repeat(100_000)}${']'.repeat(100_000)}}`,
      STRICT_JSON_FAULTS.too_deep,
    ],
  ] as const) {
    it(`refuses ${name} at load, naming the file`, () => {
      const dir = mkdtempSync(join(tmpdir(), 'tessera-jwks-dup-'));
      try {
        const file = join(dir, 'jwks.json');
        writeFileSync(file, text);
        const issues = issuesOf(() =>
          createVerifier({ issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { file } }] }),
        );
        assert.deepEqual(issues, [
          {
            path: 'issuers[0].jwks.file',
            message: `cannot load JWKS from ${file}: ${why}`,
          },
        ]);
        // The same key set, each member once, loads.
        writeFileSync(file, JSON.stringify({ keys: [key.jwk] }));
        createVerifier({ issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { file } }] });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
