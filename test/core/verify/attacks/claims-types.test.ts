/**
 * Attack: required claims missing, and claims of the wrong type (RFC 7519 §4.1, RFC 9068 §2.2).
 * A claim with the wrong type is rejected as invalid, never treated as absent: `"nbf": "soon"`
 * must not silently skip the not-before check.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

const key = makeKey('ES256');
const issuer = { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] } };
const verifier = createVerifier({ issuers: [issuer], dpop: { mode: 'disabled' } });
const strict = createVerifier({
  issuers: [{ ...issuer, required_claims: ['iat', 'sub', 'jti', 'client_id'] }],
  dpop: { mode: 'disabled' },
});

const verify = async (overrides: Record<string, unknown>, v = verifier) => v.verify(bearer(await sign(key, claims(overrides))));

describe('attack: missing required claims', () => {
  for (const claim of ['exp', 'aud', 'iat', 'iss']) {
    it(`rejects a token without ${claim}`, async () => {
      const error = assertInvalidToken(await verify({ [claim]: undefined }), verifier, 'token_claim_missing');
      assert.equal(error.details.claim, claim);
    });
  }

  for (const claim of ['sub', 'jti', 'client_id']) {
    it(`rejects a token without ${claim} when required_claims lists it`, async () => {
      const error = assertInvalidToken(await verify({ [claim]: undefined }, strict), strict, 'token_claim_missing');
      assert.equal(error.details.claim, claim);
    });
  }
});

const now = Math.floor(Date.now() / 1000);
const wrongTypes: [string, Record<string, unknown>, string][] = [
  ['exp as a string', { exp: String(now + 300) }, 'exp'],
  ['exp as null', { exp: null }, 'exp'],
  ['exp as an array', { exp: [now + 300] }, 'exp'],
  ['nbf as a string', { nbf: String(now + 10_000) }, 'nbf'],
  ['nbf as a boolean', { nbf: true }, 'nbf'],
  ['iat as a string', { iat: String(now) }, 'iat'],
  ['iat as null', { iat: null }, 'iat'],
  ['iss as a number (single issuer)', { iss: 42 }, 'iss'],
  ['aud as a number', { aud: 42 }, 'aud'],
  ['aud as an object', { aud: { 0: AUDIENCE } }, 'aud'],
  ['aud as null', { aud: null }, 'aud'],
  ['aud as an array with a number', { aud: [AUDIENCE, 7] }, 'aud'],
  ['aud as an array with null', { aud: [AUDIENCE, null] }, 'aud'],
  ['scope as a number', { scope: 7 }, 'scope'],
  ['scope as an object', { scope: { 'api:read': true } }, 'scope'],
  ['scope as an array with a number', { scope: ['api:read', 1] }, 'scope'],
  // RFC 9068 §2.2.3: scope is one space-delimited string; an array is not read as grants.
  ['scope as an array of strings (attack: scope as a JSON array)', { scope: ['api:read', 'admin'] }, 'scope'],
  ['sub as an object', { sub: { id: 'user-1' } }, 'sub'],
  ['sub as a number', { sub: 1 }, 'sub'],
  // RFC 7519 §4.1.2: a sub identifies the principal; "" names nobody, yet would be carried into
  // the delegation chain and the identity headers as if it did.
  ['sub empty (attack: an empty subject)', { sub: '' }, 'sub'],
  ['sub null', { sub: null }, 'sub'],
  ['client_id as a number', { client_id: 1 }, 'client_id'],
  // An empty client_id names no client, yet two clients' tokens carrying it would share it: the
  // principals collide in policy conditions, rate-limit keys, identity headers and revocation by client.
  ['client_id empty (attack: an empty client id)', { client_id: '' }, 'client_id'],
  ['jti as a number', { jti: 1 }, 'jti'],
  // An empty jti is no token id: revoking "" would revoke every such token of every issuer, and
  // not revoking it leaves each of them beyond revocation by id.
  ['jti empty (attack: an empty token id)', { jti: '' }, 'jti'],
  ['grant_id as an array', { grant_id: ['g1'] }, 'grant_id'],
  ['grant_id empty (attack: an empty delegation id)', { grant_id: '' }, 'grant_id'],
  ['act as a string', { act: 'agent-a' }, 'act'],
  ['act without sub', { act: { client_id: 'agent-a' } }, 'act'],
  ['act with a numeric sub', { act: { sub: 1 } }, 'act'],
  ['act with an empty sub (attack: an empty actor)', { act: { sub: '' } }, 'act'],
  ['a nested act with an empty sub', { act: { sub: 'agent-b', act: { sub: '' } } }, 'act'],
  ['act as an array', { act: [{ sub: 'agent-a' }] }, 'act'],
  ['a nested act that is malformed', { act: { sub: 'agent-b', act: { sub: ['agent-a'] } } }, 'act'],
  ['act with a non-string iss', { act: { sub: 'agent-a', iss: 1 } }, 'act'],
  // RFC 8693 §4.1: an actor without iss is read in the token issuer's namespace; an empty one is
  // neither that nor another issuer, and a reader taking "" for absent names the wrong party.
  ['act with an empty iss (attack: an empty actor issuer)', { act: { sub: 'agent-a', iss: '' } }, 'act'],
  ['act with an empty client_id (attack: an empty actor client)', { act: { sub: 'agent-a', client_id: '' } }, 'act'],
  ['a nested act with an empty iss', { act: { sub: 'agent-b', act: { sub: 'agent-a', iss: '' } } }, 'act'],
  ['cnf as a string', { cnf: 'thumbprint' }, 'cnf'],
  ['cnf.jkt as a number', { cnf: { jkt: 1 } }, 'cnf'],
  ['cnf.jkt as an object', { cnf: { jkt: { x: 'y' } } }, 'cnf'],
  ['cnf.jkt empty', { cnf: { jkt: '' } }, 'cnf'],
  // A binding this verifier cannot check must not make the token a bearer token.
  [
    'cnf bound to an mTLS certificate (RFC 8705), not checked here',
    { cnf: { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' } },
    'cnf',
  ],
  ['cnf with a key (RFC 7800 jwk), not checked here', { cnf: { jwk: { kty: 'OKP', crv: 'Ed25519', x: 'x' } } }, 'cnf'],
  ['cnf empty', { cnf: {} }, 'cnf'],
  ['cnf.jkt beside another method', { cnf: { jkt: 'abc', 'x5t#S256': 'def' } }, 'cnf'],
];

describe('attack: claims of the wrong type', () => {
  for (const [name, overrides, claim] of wrongTypes) {
    it(`rejects ${name}`, async () => {
      const error = assertInvalidToken(await verify(overrides), verifier, 'token_claim_invalid');
      assert.equal(error.details.claim, claim);
    });
  }

  it('rejects an act chain deeper than 32 links', async () => {
    let act: Record<string, unknown> = { sub: 'agent-0' };
    for (let i = 1; i <= 32; i++) act = { sub: `agent-${i}`, act };
    const error = assertInvalidToken(await verify({ act }), verifier, 'token_claim_invalid');
    assert.equal(error.details.claim, 'act');
  });

  it('reads scopes from the configured claim only', async () => {
    const scp = createVerifier({ issuers: [{ ...issuer, scope_claim: 'scp' }], dpop: { mode: 'disabled' } });
    const error = assertInvalidToken(await verify({ scp: 3 }, scp), scp, 'token_claim_invalid');
    assert.equal(error.details.claim, 'scp');
    const ok = await verify({ scp: ['api:read', 'api:write'], scope: 42 }, scp);
    assert.ok(ok.ok);
    assert.deepEqual(ok.principal.scopes, ['api:read', 'api:write']);
  });
});

describe('attack: empty identifiers wherever a principal is built', () => {
  const empties: [string, Record<string, unknown>, string][] = [
    ['sub', { sub: '' }, 'sub'],
    ['client_id', { client_id: '' }, 'client_id'],
    ['jti', { jti: '' }, 'jti'],
    ['grant_id', { grant_id: '' }, 'grant_id'],
    ['act.iss', { act: { sub: 'agent-a', iss: '' } }, 'act'],
    ['act.client_id', { act: { sub: 'agent-a', client_id: '' } }, 'act'],
  ];

  // verifyToken validates the external subject and actor tokens of token exchange.
  for (const [name, overrides, claim] of empties) {
    it(`refuses an external token with an empty ${name} through verifyToken (token exchange)`, async () => {
      const result = await verifier.verifyToken(await sign(key, claims(overrides)));
      assert.equal(result.ok, false);
      assert.equal(result.ok || result.error.code, 'token_claim_invalid');
      assert.equal(result.ok || result.error.details.claim, claim);
      assert.equal(result.ok || result.principal, undefined, 'no principal for a refused shape');
    });
  }

  const exp = Math.floor(Date.now() / 1000) + 300;
  const introspecting = (answer: Record<string, unknown>) =>
    createVerifier(
      { introspection: { endpoint: 'https://as.test/introspect', client_id: 'rs', client_secret: 'secret' }, dpop: { mode: 'disabled' } },
      { introspector: { introspect: async () => ({ active: true, sub: 'alice', client_id: 'agent-1', exp, ...answer }) } },
    );

  for (const [name, overrides, claim] of [...empties, ['iss', { iss: '' }, 'iss'] as [string, Record<string, unknown>, string]]) {
    it(`refuses an introspection answer with an empty ${name}`, async () => {
      const v = introspecting(overrides);
      const error = assertInvalidToken(await v.verify(bearer('opaque-token-1')), v, 'token_claim_invalid');
      assert.equal(error.details.claim, claim);
    });
  }

  it('still accepts an introspection answer with no client_id, jti or grant_id at all', async () => {
    const v = introspecting({ client_id: undefined });
    const result = await v.verify(bearer('opaque-token-1'));
    assert.equal(result.ok, true);
  });
});

describe('attack: a configured claim named like a property every object inherits', () => {
  // A payload is a plain object: read as `claims[name]`, `constructor` or `toString` is a
  // function when the token lacks the claim, so every token was refused (and a polluted
  // Object.prototype could supply a claim no token carries). Only the token's own members count.
  const NAMES = ['constructor', 'toString', 'hasOwnProperty', 'valueOf', '__proto__'];
  /** Standard claims plus `extra`, `__proto__` included as an own member (as JSON.parse makes it). */
  const withOwn = (extra: string) => ({ ...claims(), ...JSON.parse(extra) });

  for (const name of NAMES) {
    it(`delegation_claim ${name}: absent when the token lacks it, the token's value when it carries it`, async () => {
      const v = createVerifier({ issuers: [{ ...issuer, delegation_claim: name }], dpop: { mode: 'disabled' } });
      const without = await v.verify(bearer(await sign(key, claims())));
      assert.equal(without.ok || without.error.code, true);
      assert.equal(without.ok && without.principal.delegationId, undefined);
      const carried = await v.verify(bearer(await sign(key, withOwn(JSON.stringify({ [name]: 'g-1' })))));
      assert.equal(carried.ok || carried.error.code, true);
      assert.equal(carried.ok && carried.principal.delegationId, 'g-1');
      // Still an identifier claim: an empty or non-string value is refused, named.
      for (const bad of ['""', '1', '{}']) {
        const error = assertInvalidToken(await v.verify(bearer(await sign(key, withOwn(`{"${name}":${bad}}`)))), v, 'token_claim_invalid');
        assert.equal(error.details.claim, name);
      }
    });
  }

  it('a claim condition on constructor holds for the token carrying it and fails, named, for one without it', async () => {
    const v = createVerifier({
      issuers: [issuer],
      dpop: { mode: 'disabled' },
      rules: [{ path: '/**', claims: { constructor: 'acme', toString: [1, 2] } }],
    });
    const allowed = await v.verify(bearer(await sign(key, withOwn('{"constructor":"acme","toString":2}'))));
    assert.equal(allowed.ok || allowed.error.code, true);
    for (const extra of ['{}', '{"constructor":"other","toString":2}', '{"constructor":"acme"}']) {
      const result = await v.verify(bearer(await sign(key, withOwn(extra))));
      assert.equal(result.ok || result.error.code, 'policy_condition_failed', extra);
    }
  });
});
