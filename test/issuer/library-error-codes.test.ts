/**
 * The token service's exported errors carry a stable `code` from a closed union, as TesseraError,
 * OAuthError and ConfigError do, so callers switch on it rather than on the message:
 * MasterKeyError, ClientInputError, StoreConflictError (and StoreCapacityError,
 * StoreUnavailableError) had none. StoreUnavailableError and StoreCapacityError, which the stores
 * throw and the exported Store contract tells implementers to throw, were not exported.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { buildClient, type ClientInput, ClientInputError } from '../../src/issuer/clients.ts';
import { createSecretHasher, generateMasterKey, MasterKeyError, parseMasterKey, seal, unseal } from '../../src/issuer/secrets.ts';
import { loadMasterKey } from '../../src/server/bootstrap.ts';
import * as tokenService from '../../src/token-service.ts';
import { makeKey } from '../helpers/tokens.ts';

const dir = mkdtempSync(join(tmpdir(), 'tessera-error-codes-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function throwsWithCode(fn: () => unknown, type: new (...args: never[]) => Error, code: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof type, String(e));
    assert.equal((e as { code?: unknown }).code, code, (e as Error).message);
    return true;
  });
}

describe('defect: MasterKeyError had no code', () => {
  it('master_key_malformed for a key that is not 32 bytes, from the text, the environment or the file', () => {
    throwsWithCode(() => parseMasterKey('short'), MasterKeyError, 'master_key_malformed');
    throwsWithCode(() => loadMasterKey(dir, { env: { TESSERA_MASTER_KEY: 'short' } }), MasterKeyError, 'master_key_malformed');
    const d = mkdtempSync(join(dir, 'bad-'));
    writeFileSync(join(d, 'master.key'), 'short\n', { mode: 0o600 });
    throwsWithCode(() => loadMasterKey(d, { env: {} }), MasterKeyError, 'master_key_malformed');
  });

  it('master_key_file_unsafe for a key file readable by others', () => {
    const d = mkdtempSync(join(dir, 'open-'));
    writeFileSync(join(d, 'master.key'), `${generateMasterKey().text}\n`);
    chmodSync(join(d, 'master.key'), 0o644);
    throwsWithCode(() => loadMasterKey(d, { env: {} }), MasterKeyError, 'master_key_file_unsafe');
  });

  it('master_key_mismatch for a sealed value under another key, sealed_value_malformed for one that is not sealed', () => {
    const sealed = seal(generateMasterKey().key, new Uint8Array([1, 2, 3]), 'kid-1');
    throwsWithCode(() => unseal(generateMasterKey().key, sealed, 'kid-1'), MasterKeyError, 'master_key_mismatch');
    throwsWithCode(() => unseal(generateMasterKey().key, 'plain', 'kid-1'), MasterKeyError, 'sealed_value_malformed');
  });
});

describe('defect: ClientInputError had no code', () => {
  const hasher = createSecretHasher(generateMasterKey().key);
  const base: ClientInput = { id: 'agent', scopes: ['a'], audiences: ['https://api.test'] };
  const build = (input: Partial<ClientInput>) => () => buildClient({ ...base, ...input }, { hasher, maxTtl: 3600, now: 0 });

  const cases: [string, Partial<ClientInput>, string, string | undefined][] = [
    ['an invalid id', { id: 'a b' }, 'client_id_invalid', 'id'],
    ['an invalid scope', { scopes: ['a"b'] }, 'scope_invalid', 'scopes'],
    ['no audience', { audiences: [] }, 'audience_missing', 'audiences'],
    ['an invalid audience', { audiences: ['a b'] }, 'audience_invalid', 'audiences'],
    ['an unknown grant type', { grantTypes: ['password' as never] }, 'grant_type_unsupported', 'grantTypes'],
    ['a ttl over the maximum', { ttl: 7200 }, 'ttl_invalid', 'ttl'],
    ['both jwks and jwksUri', { jwks: { keys: [] }, jwksUri: 'https://k.test/jwks' }, 'jwks_conflict', undefined],
    [
      'an invalid redirect URI',
      { grantTypes: ['authorization_code'], redirectUris: ['not a uri'] },
      'redirect_uri_invalid',
      'redirectUris',
    ],
    ['authorization_code without redirect URI', { grantTypes: ['authorization_code'] }, 'redirect_uri_missing', 'redirectUris'],
    [
      'a public client with keys',
      { public: true, redirectUris: ['http://127.0.0.1/cb'], jwksUri: 'https://k.test/jwks' },
      'public_client_keys',
      undefined,
    ],
    [
      'a public client with client_credentials',
      { public: true, grantTypes: ['client_credentials'], redirectUris: ['http://127.0.0.1/cb'] },
      'public_client_grant_type',
      'grantTypes',
    ],
    ['an invalid name', { name: '\u0000' }, 'client_name_invalid', 'name'],
    ['an empty JWKS', { jwks: { keys: [] } }, 'jwks_invalid', 'jwks'],
    [
      'a JWKS of 101 keys',
      { jwks: { keys: Array.from({ length: 101 }, (_, i) => ({ ...makeKey('ES256', 'k').jwk, kid: `k${i}` })) } },
      'jwks_invalid',
      'jwks',
    ],
    ['a jwks_uri over http', { jwksUri: 'http://k.test/jwks' }, 'jwks_uri_invalid', 'jwksUri'],
    [
      'a secret method for a public client',
      { public: true, redirectUris: ['http://127.0.0.1/cb'], secretMethod: 'client_secret_post' },
      'auth_method_conflict',
      'secretMethod',
    ],
    [
      'a kid repeated for one algorithm',
      { jwks: { keys: [makeKey('ES256', 'dup').jwk, makeKey('ES256', 'dup').jwk] } },
      'jwks_key_ambiguous',
      'jwks',
    ],
    ['an unknown secret method', { secretMethod: 'client_secret_jwt' as never }, 'auth_method_conflict', 'secretMethod'],
    ['an allowed origin with a path', { allowedOrigins: ['https://app.test/'] }, 'allowed_origin_invalid', 'allowedOrigins'],
  ];
  it('attack: a secret or token pasted as the client id (tcs_…, trt_…, tgw_…, a JWT: each fits the id pattern) is refused client_id_invalid without quoting it, not stored as a public id that clients list and every audit event of the client print', () => {
    const pasted = [
      `tcs_${'A'.repeat(43)}`,
      `trt_${'b'.repeat(43)}`,
      `tgw_${'c'.repeat(43)}`,
      `tac_${'d'.repeat(43)}`,
      'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl',
    ];
    for (const id of pasted) {
      assert.throws(build({ id }), (e: unknown) => {
        assert.ok(e instanceof ClientInputError, String(e));
        assert.equal(e.code, 'client_id_invalid', id);
        assert.equal(e.field, 'id');
        assert.ok(!e.message.includes(id.slice(4, 24)), e.message);
        return true;
      });
    }
    // An id that only contains `_` or starts like one is still an id.
    assert.doesNotThrow(build({ id: 'tcs_agent' }));
    assert.doesNotThrow(build({ id: 'my_agent-2' }));
  });

  it('never echoes a pasted secret: a token given as the id, a scope, an audience or a grant type is described, not quoted', () => {
    const token = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl x';
    const inputs: Partial<ClientInput>[] = [
      { id: token },
      { scopes: [`${token}"`] },
      { audiences: [token] },
      { grantTypes: [token as never] },
    ];
    for (const input of inputs) {
      assert.throws(build(input), (e: unknown) => {
        assert.ok(e instanceof ClientInputError, String(e));
        assert.ok(!e.message.includes('eyJhbGciOiJFUzI1NiJ9'), e.message);
        assert.match(e.message, /not shown: it may be a secret/);
        return true;
      });
    }
  });

  for (const [what, input, code, field] of cases) {
    it(`${code} for ${what}`, () => {
      assert.throws(build(input), (e: unknown) => {
        assert.ok(e instanceof ClientInputError, String(e));
        assert.equal(e.code, code, e.message);
        assert.equal(e.field, field);
        return true;
      });
    });
  }
});

describe('defect: the store errors the Store contract names were not all exported from tessera/token-service', () => {
  it('exports StoreConflictError, StoreCapacityError and StoreUnavailableError beside the Store contract', () => {
    const m = tokenService as Record<string, unknown>;
    for (const name of ['StoreConflictError', 'StoreCapacityError', 'StoreUnavailableError']) {
      assert.equal(typeof m[name], 'function', `${name} is not exported`);
    }
  });

  it('gives each a code from its closed union', () => {
    assert.equal(new tokenService.StoreConflictError('client_exists', 'a client with id "x" exists').code, 'client_exists');
    assert.equal(new tokenService.StoreCapacityError('client_limit_reached', '2 clients exist').code, 'client_limit_reached');
    assert.equal(new tokenService.StoreUnavailableError('store_busy', 'locked').code, 'store_busy');
  });
});
