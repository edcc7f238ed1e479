/**
 * The verifier decodes into per-verifier scratch buffers. A kid miss that waits for a key refresh
 * lets other verifications run (and overwrite them) before its signature check, which must then
 * still check its own token.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { importJwk, type VerificationKey } from '../../../src/core/jose/jwk.ts';
import type { KeyMiss } from '../../../src/core/ports.ts';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';

describe('scratch buffers across a key refresh', () => {
  for (const alg of ['ES256', 'RS256', 'EdDSA'] as const) {
    it(`${alg}: a token waiting for a refresh is checked on its own bytes after others ran`, async () => {
      const known = makeKey(alg, 'known');
      const late = makeKey(alg, 'late');
      const keys = new Map<string, VerificationKey>([['known', importJwk(known.jwk)]]);
      let release: () => void = () => {};
      const gate = new Promise<void>((r) => {
        release = r;
      });
      const verifier = createVerifier(
        { issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: [alg], jwks_uri: 'https://issuer.test/jwks' }] },
        {
          keySources: {
            [ISSUER]: {
              lookup: (kid: string | undefined): VerificationKey | KeyMiss => keys.get(kid ?? '') ?? 'unknown',
              refreshAfterMiss: async () => {
                await gate;
                keys.set('late', importJwk(late.jwk));
                return true;
              },
            },
          },
        },
      );
      const waiting = verifier.verify(bearer(await sign(late, claims({ sub: 'waiting' }))));
      // Meanwhile, tokens of other lengths fill the scratch buffers with their own bytes.
      for (let i = 0; i < 3; i++) {
        const other = await verifier.verify(bearer(await sign(known, claims({ sub: `other-${'x'.repeat(i * 40)}` }))));
        assert.equal(other.ok, true);
      }
      release();
      const result = await waiting;
      assert.ok(result.ok, result.ok ? '' : result.error.code);
      assert.equal(result.principal.subject, 'waiting');

      // And a forgery waiting the same way is still refused.
      const forged = await sign(late, claims({ sub: 'forged' }));
      const tampered = `${forged.slice(0, forged.lastIndexOf('.') + 1)}${(await sign(late, claims())).split('.')[2]}`;
      const refused = await verifier.verify(bearer(tampered));
      assert.ok(!refused.ok);
      assert.equal(refused.error.code, 'token_signature_invalid');
    });
  }
});
