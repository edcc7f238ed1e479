/**
 * Attack: the client and scope claims of `client_claim` and `scope_claim` (identity providers that
 * write `azp`, `appid`, `cid`, `scp`, `roles`, `permissions`). The configured client claim keeps
 * `client_id`'s rules: a string or absent, never "" nor any other type, refused naming it. `scope`
 * stays a space-delimited string (RFC 9068 §2.2.3) also in a list; a claim not configured is never
 * read, so a token cannot grant itself scopes through a `roles` the operator did not name.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../../../src/config/parse.ts';
import { verifierConfigSchema } from '../../../../src/config/verifier-schema.ts';
import { createVerifier } from '../../../../src/verifier.ts';
import { issuesOf } from '../../../helpers/config.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertInvalidToken } from '../../../helpers/verify.ts';

const key = makeKey('ES256');
const issuer = { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] } };
type IssuerInput = Partial<NonNullable<Parameters<typeof createVerifier>[0]['issuers']>[number]>;
const verifierWith = (extra: IssuerInput) => createVerifier({ issuers: [{ ...issuer, ...extra }], dpop: { mode: 'disabled' } });
const check = async (v: ReturnType<typeof createVerifier>, overrides: Record<string, unknown>) =>
  v.verify(bearer(await sign(key, claims({ client_id: undefined, ...overrides }))));

describe('client_claim', () => {
  for (const name of ['azp', 'appid', 'cid'] as const) {
    const v = verifierWith({ client_claim: name });

    it(`${name}: read into the principal's client`, async () => {
      const r = await check(v, { [name]: 'the-client' });
      assert.ok(r.ok);
      assert.equal(r.principal.clientId, 'the-client');
    });

    for (const [shape, value] of [
      ['an array', ['the-client']],
      ['a number', 42],
      ['""', ''],
      ['an object', { id: 'the-client' }],
      ['null', null],
    ] as const) {
      it(`attack: ${name} as ${shape} is refused with invalid_token naming ${name}`, async () => {
        const error = assertInvalidToken(await check(v, { [name]: value }), v, 'token_claim_invalid');
        assert.equal(error.details.claim, name);
        // Through verifyToken as well (token exchange's subject and actor tokens).
        const bare = await v.verifyToken(await sign(key, claims({ client_id: undefined, [name]: value })));
        assert.equal(bare.ok, false);
        assert.equal(!bare.ok && bare.error.code, 'token_claim_invalid');
      });
    }

    it(`${name}: a client_id beside it is not the client (only the configured claim is read)`, async () => {
      const r = await check(v, { [name]: 'the-client', client_id: 'someone-else' });
      assert.ok(r.ok);
      assert.equal(r.principal.clientId, 'the-client');
      const without = await check(v, { client_id: 'someone-else' });
      assert.ok(without.ok);
      assert.equal(without.principal.clientId, undefined);
    });
  }

  it('default client_id: an azp is not read as the client', async () => {
    const v = verifierWith({});
    const r = await check(v, { azp: 'the-client' });
    assert.ok(r.ok);
    assert.equal(r.principal.clientId, undefined);
  });
});

describe('scope_claim as a list', () => {
  const entra = verifierWith({ scope_claim: ['scp', 'roles'] });
  const auth0 = verifierWith({ scope_claim: ['scope', 'permissions'] });

  it('unites the scopes of the listed claims present, each in its shape', async () => {
    const both = await check(entra, { scope: undefined, scp: 'a b', roles: ['b', 'c'] });
    assert.ok(both.ok);
    assert.deepEqual(both.principal.scopes, ['a', 'b', 'c']);
    const roles = await check(entra, { scope: undefined, roles: ['c'] });
    assert.ok(roles.ok);
    assert.deepEqual(roles.principal.scopes, ['c']);
    const none = await check(entra, { scope: 'ignored' });
    assert.ok(none.ok);
    assert.deepEqual(none.principal.scopes, []);
    const rbac = await check(auth0, { scope: 'openid x', permissions: ['x', 'y'] });
    assert.ok(rbac.ok);
    assert.deepEqual(rbac.principal.scopes, ['openid', 'x', 'y']);
  });

  it('attack: scope as an array is still refused, alone or in a list', async () => {
    for (const v of [auth0, verifierWith({})]) {
      const error = assertInvalidToken(await check(v, { scope: ['admin'], permissions: ['x'] }), v, 'token_claim_invalid');
      assert.equal(error.details.claim, 'scope');
    }
  });

  it('attack: a listed claim of the wrong shape refuses the token, naming it, whatever the others grant', async () => {
    for (const value of [42, [1], ['a b'], [''], { a: 1 }]) {
      const error = assertInvalidToken(await check(entra, { scp: 'a', roles: value }), entra, 'token_claim_invalid');
      assert.equal(error.details.claim, 'roles');
    }
    // Any claim but `scope` may also be a space-delimited string.
    const text = await check(auth0, { scope: 'a', permissions: 'x y' });
    assert.ok(text.ok);
    assert.deepEqual(text.principal.scopes, ['a', 'x', 'y']);
  });

  it('attack: roles (or permissions) is not read unless configured', async () => {
    for (const v of [verifierWith({}), verifierWith({ scope_claim: 'scp' })]) {
      const r = await check(v, { scope: undefined, roles: ['admin'], permissions: ['admin'] });
      assert.ok(r.ok);
      assert.deepEqual(r.principal.scopes, []);
      // A malformed unconfigured claim is no claim of the token's scopes either.
      const odd = await check(v, { roles: 42 });
      assert.ok(odd.ok);
    }
  });
});

describe('configuration: client_claim and scope_claim typos name their exact path', () => {
  const parse = (extra: Record<string, unknown>) =>
    issuesOf(() => parseConfig(verifierConfigSchema, { issuers: [{ ...issuer, ...extra }] }, { env: {} }));

  it('refuses a client_claim outside the list', () => {
    assert.deepEqual(parse({ client_claim: 'azpp' }), [
      {
        path: 'issuers[0].client_claim',
        message: '"azpp" is not an option here; write one of client_id, azp, appid, cid (did you mean azp?)',
      },
    ]);
    assert.deepEqual(parse({ client_claim: 'sub' }), [
      { path: 'issuers[0].client_claim', message: '"sub" is not an option here; write one of client_id, azp, appid, cid' },
    ]);
  });

  it('refuses a typo in a scope_claim list at its item, an empty list, a repeat, a non-string', () => {
    assert.deepEqual(parse({ scope_claim: ['scp', 'rolez'] }), [
      {
        path: 'issuers[0].scope_claim[1]',
        message: '"rolez" is not an option here; write one of scope, scopes, scp, roles, permissions (did you mean roles?)',
      },
    ]);
    assert.deepEqual(parse({ scope_claim: [] }), [
      { path: 'issuers[0].scope_claim', message: 'list at least one claim: scope, scopes, scp, roles, permissions' },
    ]);
    assert.deepEqual(parse({ scope_claim: ['scp', 'scp'] }), [{ path: 'issuers[0].scope_claim[1]', message: '"scp" is listed twice' }]);
    assert.deepEqual(parse({ scope_claim: ['scp', 3] }), [
      { path: 'issuers[0].scope_claim[1]', message: '"3" is not an option here; write one of scope, scopes, scp, roles, permissions' },
    ]);
    assert.deepEqual(parse({ scope_claim: 'role' }), [
      {
        path: 'issuers[0].scope_claim',
        message: '"role" is not an option here; write one of scope, scopes, scp, roles, permissions (did you mean roles?)',
      },
    ]);
  });

  it('introspection.scope_claim takes a list too, checked alike', () => {
    const introspection = {
      endpoint: 'https://as.test/introspect',
      client_id: 'rs',
      client_secret: 's',
      scope_claim: ['scope', 'permisions'],
    };
    assert.deepEqual(
      issuesOf(() => parseConfig(verifierConfigSchema, { introspection }, { env: {} })),
      [
        {
          path: 'introspection.scope_claim[1]',
          message: '"permisions" is not an option here; write one of scope, scopes, scp, roles, permissions (did you mean permissions?)',
        },
      ],
    );
  });

  it('defaults: scope and client_id', () => {
    const config = parseConfig(verifierConfigSchema, { issuers: [issuer] }, { env: {} });
    assert.equal(config.issuers[0]?.scope_claim, 'scope');
    assert.equal(config.issuers[0]?.client_claim, 'client_id');
  });
});
