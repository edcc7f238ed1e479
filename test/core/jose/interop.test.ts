/**
 * Interop: tokens signed by jose (an independent implementation) verify in Tessera, for every
 * algorithm Tessera's token service or a third-party issuer may use. The reverse direction (what
 * Tessera accepts is exactly what jose accepts) is the differential test next to this file.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { JwsAlgorithm } from '../../../src/core/jose/algorithms.ts';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';

const ALGS: readonly JwsAlgorithm[] = ['ES256', 'EdDSA', 'RS256', 'PS256', 'HS256'];

describe('interop: tokens signed by jose verify in Tessera', () => {
  for (const alg of ALGS) {
    it(`${alg}: a jose-signed at+jwt verifies, with its claims in the principal`, async () => {
      const key = makeKey(alg);
      const verifier = createVerifier({
        issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: [alg], jwks: { keys: [key.jwk] }, token_type: 'at+jwt' }],
        dpop: { mode: 'disabled' },
      });
      const token = await sign(key, claims({ scope: 'api:read api:write', grant_id: 'g-1', act: { sub: 'agent-b' } }), { typ: 'at+jwt' });
      const result = await verifier.verify(bearer(token));
      assert.ok(result.ok, result.ok ? '' : result.error.code);
      assert.equal(result.principal.issuer, ISSUER);
      assert.equal(result.principal.subject, 'user-1');
      assert.deepEqual(result.principal.scopes, ['api:read', 'api:write']);
      assert.equal(result.principal.delegationId, 'g-1');
      assert.equal(result.principal.actors[0]?.subject, 'agent-b');
      assert.equal((await verifier.verifyToken(token)).ok, true);
    });

    it(`${alg}: a jose-signed token without kid verifies against the only key`, async () => {
      const key = makeKey(alg);
      const { kid: _kid, ...jwk } = key.jwk;
      const verifier = createVerifier({
        issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: [alg], jwks: { keys: [jwk] } }],
        dpop: { mode: 'disabled' },
      });
      const token = await sign(key, claims(), { kid: undefined });
      assert.equal((await verifier.verifyToken(token)).ok, true);
    });
  }
});
