/**
 * The token endpoint: client_credentials and every RFC 6749 §5.2 / RFC 8707 error, one test per
 * attack or mistake, each asserting status, error and the headers that go with it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { createSecretHasher } from '../../src/issuer/secrets.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';

let issuer: RunningIssuer;
let agent: { id: string; secret: string };
let multi: { id: string; secret: string };
let ccOnly: { id: string; secret: string };

before(async () => {
  // This file refuses many client authentications from one address on purpose; the per-address
  // limit of those (auth_failure_limit) is test/issuer/auth-failure-limit.test.ts's.
  issuer = await startIssuer({ config: { token_service: { auth_failure_limit: { enabled: false } } } });
  agent = await issuer.addClient({ id: 'agent', scopes: ['api:read', 'api:write', 'files:*'], audiences: ['https://api.test'] });
  multi = await issuer.addClient({ id: 'multi', scopes: ['api:read'], audiences: ['https://a.test', 'https://b.test'], ttl: 120 });
  ccOnly = await issuer.addClient({ id: 'cc-only', scopes: ['api:read'] });
});
after(() => issuer?.close());

const token = (form: Record<string, string | string[]>, headers: Record<string, string> = {}) =>
  issuer.post('/oauth2/token', form, headers);
const cc = (extra: Record<string, string | string[]> = {}, c = agent) =>
  token({ grant_type: 'client_credentials', ...extra }, { authorization: basic(c.id, c.secret) });

async function expectError(res: Response, status: number, error: string): Promise<void> {
  const body = (await res.json()) as { error: string; error_description: string };
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.error, error);
  assert.equal(typeof body.error_description, 'string');
  assert.equal(res.headers.get('cache-control'), 'no-store');
}

describe('client_credentials', () => {
  it('issues an RFC 9068 access token with the client scopes, its audience and a 10 minute default lifetime', async () => {
    const res = await cc();
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.headers.get('pragma'), 'no-cache');
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.expires_in, 600);
    assert.equal(body.scope, 'api:read api:write files:*');
    assert.equal(body.refresh_token, undefined, 'RFC 6749 §4.4.3: no refresh token for client_credentials');
    const header = decodeProtectedHeader(body.access_token as string);
    assert.equal(header.typ, 'at+jwt');
    assert.equal(header.alg, 'ES256');
    assert.equal(typeof header.kid, 'string');
    const claims = decodeJwt(body.access_token as string);
    assert.equal(claims.iss, issuer.url);
    assert.equal(claims.sub, 'agent');
    assert.equal(claims.aud, 'https://api.test');
    assert.equal(claims.client_id, 'agent');
    assert.equal((claims.exp as number) - (claims.iat as number), 600);
    assert.match(claims.jti as string, /^[0-9a-f-]{36}$/);
    assert.match(claims.grant_id as string, /^g_/);
    assert.equal(claims.act, undefined);
  });

  it('narrows to the requested scope, including a wildcard-covered one', async () => {
    const res = await cc({ scope: 'api:read files:report' });
    assert.equal(res.status, 200);
    assert.equal(decodeJwt(((await res.json()) as { access_token: string }).access_token).scope, 'api:read files:report');
  });

  it('accepts client_secret_post', async () => {
    const res = await token({ grant_type: 'client_credentials', client_id: agent.id, client_secret: agent.secret });
    assert.equal(res.status, 200);
  });

  it('uses the client lifetime and the requested audience or resource', async () => {
    const res = await cc({ resource: 'https://b.test' }, multi);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { access_token: string; expires_in: number };
    assert.equal(body.expires_in, 120);
    assert.equal(decodeJwt(body.access_token).aud, 'https://b.test');
    const both = await cc({ audience: ['https://a.test', 'https://b.test'] }, multi);
    assert.deepEqual(decodeJwt(((await both.json()) as { access_token: string }).access_token).aud, ['https://a.test', 'https://b.test']);
  });

  it('reuses one grant for the same client, scope and audience', async () => {
    const a = decodeJwt(((await (await cc({ scope: 'api:read' })).json()) as { access_token: string }).access_token);
    const b = decodeJwt(((await (await cc({ scope: 'api:read' })).json()) as { access_token: string }).access_token);
    assert.equal(a.grant_id, b.grant_id);
    assert.notEqual(a.jti, b.jti);
  });

  it('gives time-ordered jtis (UUIDv7), so the jti index of the audit trail appends instead of writing at random', async () => {
    const jtis: string[] = [];
    for (let i = 0; i < 3; i++) jtis.push(decodeJwt(((await (await cc()).json()) as { access_token: string }).access_token).jti as string);
    for (const j of jtis) assert.match(j, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual([...jtis].sort(), jtis);
  });
});

describe('request errors (invalid_request)', () => {
  it('refuses GET with 405 and Allow: POST', async () => {
    const res = await fetch(`${issuer.url}/oauth2/token`);
    await expectError(res, 405, 'invalid_request');
    assert.equal(res.headers.get('allow'), 'POST');
  });

  it('refuses a JSON body', async () => {
    const res = await fetch(`${issuer.url}/oauth2/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: basic(agent.id, agent.secret) },
      body: JSON.stringify({ grant_type: 'client_credentials' }),
    });
    await expectError(res, 400, 'invalid_request');
  });

  it('refuses a request without grant_type', async () => {
    await expectError(await token({}, { authorization: basic(agent.id, agent.secret) }), 400, 'invalid_request');
  });

  it('refuses a repeated parameter (RFC 6749 §3.2)', async () => {
    await expectError(await cc({ scope: ['api:read', 'api:write'] }), 400, 'invalid_request');
  });

  it('refuses an oversized body with 413', async () => {
    await expectError(await cc({ scope: 'x'.repeat(70_000) }), 413, 'invalid_request');
  });
});

describe('grant type errors', () => {
  it('answers unsupported_grant_type for password, implicit and the device code grant', async () => {
    await expectError(await token({ grant_type: 'password', username: 'u', password: 'p' }), 400, 'unsupported_grant_type');
    await expectError(await token({ grant_type: 'implicit' }), 400, 'unsupported_grant_type');
    await expectError(
      await token({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: 'd' }),
      400,
      'unsupported_grant_type',
    );
  });

  it('never writes an unsupported grant_type into the audit trail: an anonymous caller cannot store 60 KB, or a secret, per request', async () => {
    const junk = `tcs_${'x'.repeat(60_000)}`;
    await expectError(await token({ grant_type: junk }), 400, 'unsupported_grant_type');
    await issuer.service.audit.flush();
    const denied = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'token.denied').at(-1);
    assert.equal(denied?.reason, 'grant_type_unsupported');
    assert.deepEqual(denied?.detail, { grant_type: 'unsupported' });
  });

  it('answers unauthorized_client for a grant type the client is not registered for', async () => {
    const res = await token({ grant_type: 'refresh_token', refresh_token: 'trt_x' }, { authorization: basic(ccOnly.id, ccOnly.secret) });
    await expectError(res, 400, 'unauthorized_client');
  });
});

describe('client authentication errors (invalid_client)', () => {
  it('refuses a request without client authentication', async () => {
    await expectError(await token({ grant_type: 'client_credentials' }), 401, 'invalid_client');
  });

  it('refuses a wrong secret over Basic with 401 and a Basic challenge', async () => {
    const res = await cc({}, { id: agent.id, secret: `${agent.secret}x` });
    await expectError(res, 401, 'invalid_client');
    assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm="tessera"/);
  });

  it('never answers 401 invalid_client without a WWW-Authenticate challenge: no method, client_secret_post, an assertion, revoke, introspect', async () => {
    for (const [path, form] of [
      ['/oauth2/token', { grant_type: 'client_credentials' }],
      ['/oauth2/token', { grant_type: 'client_credentials', client_id: agent.id, client_secret: 'tcs_wrong' }],
      [
        '/oauth2/token',
        {
          grant_type: 'client_credentials',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: 'e30.e30.sig',
        },
      ],
      ['/oauth2/revoke', { token: 'x' }],
      ['/oauth2/introspect', { token: 'x' }],
    ] as const) {
      const res = await issuer.post(path, form);
      await expectError(res, 401, 'invalid_client');
      assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm="tessera"/, `${path} ${Object.keys(form).join(',')}`);
    }
  });

  it('checks a remembered secret exactly: a wrong one after a right one, a disabled client and a replaced secret are refused', async () => {
    const c = await issuer.addClient({ id: 'remembered', scopes: ['api:read'] });
    assert.equal((await cc({}, c)).status, 200);
    assert.equal((await cc({}, c)).status, 200, 'the second request takes the remembered-digest path');
    // Change the last character (it may already be an A: a 256-bit secret's last one is one of 16).
    const wrong = `${c.secret.slice(0, -1)}${c.secret.endsWith('A') ? 'E' : 'A'}`;
    await expectError(await cc({}, { id: c.id, secret: wrong }), 401, 'invalid_client');
    await issuer.service.setClientDisabled(c.id, true);
    await expectError(await cc({}, c), 401, 'invalid_client');
    await issuer.service.setClientDisabled(c.id, false);
    assert.equal((await cc({}, c)).status, 200);
    // Another process replaces the secret: once this one syncs, the old secret no longer works.
    const next = 'tcs_a-new-secret-for-the-remembered-client-0000000';
    await issuer.store.updateClient(c.id, { secretHash: createSecretHasher(issuer.master).hash(next) }, Math.floor(Date.now() / 1000));
    await issuer.service.sync();
    await expectError(await cc({}, c), 401, 'invalid_client');
    assert.equal((await cc({}, { id: c.id, secret: next })).status, 200);
  });

  it('answers an unknown client exactly like a wrong secret', async () => {
    const unknown = await cc({}, { id: 'nobody', secret: 'tcs_whatever' });
    const wrong = await cc({}, { id: agent.id, secret: 'tcs_whatever' });
    assert.equal(unknown.status, wrong.status);
    assert.deepEqual(await unknown.json(), await wrong.json());
  });

  it('attack: client_id alone (no credential) answers a registered secret or key client exactly like an unknown one, at the token and revocation endpoints, so the answer tells no one which client ids exist; the audit keeps the reason', async () => {
    for (const path of ['/oauth2/token', '/oauth2/revoke']) {
      const form: Record<string, string> = path === '/oauth2/token' ? { grant_type: 'authorization_code', code: 'x' } : { token: 'x' };
      const known = await issuer.post(path, { ...form, client_id: agent.id });
      const unknown = await issuer.post(path, { ...form, client_id: 'nobody-here' });
      assert.equal(known.status, 401, path);
      assert.equal(unknown.status, 401, path);
      assert.equal(known.headers.get('www-authenticate'), unknown.headers.get('www-authenticate'), path);
      assert.deepEqual(await known.json(), await unknown.json(), path);
      await issuer.service.audit.flush();
      const kind = path === '/oauth2/token' ? 'token.denied' : 'revocation.denied';
      const reasons = (await issuer.store.queryAudit({ kinds: [kind], limit: 10_000 })).slice(-2).map((e) => e.reason);
      assert.deepEqual(reasons, ['client_auth_missing', 'client_unknown'], path);
    }
  });

  it('refuses two authentication methods in one request (RFC 6749 §2.3)', async () => {
    const res = await token(
      { grant_type: 'client_credentials', client_id: agent.id, client_secret: agent.secret },
      { authorization: basic(agent.id, agent.secret) },
    );
    await expectError(res, 400, 'invalid_request');
  });

  it('an Authorization scheme Tessera does not read (Bearer, DPoP, Digest, Negotiate) beside client_secret_post or a client assertion: refused as two methods (400 invalid_request), not ignored, audited', async () => {
    for (const scheme of ['Bearer x', 'DPoP x', 'Digest username="agent"', 'Negotiate YII=', 'bearer']) {
      const res = await token(
        { grant_type: 'client_credentials', client_id: agent.id, client_secret: agent.secret },
        { authorization: scheme },
      );
      await expectError(res, 400, 'invalid_request');
      await issuer.service.audit.flush();
      const denied = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'token.denied').at(-1);
      assert.equal(denied?.reason, 'client_auth_multiple_methods', scheme);
    }
    const assertion = await token(
      {
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: 'e30.e30.sig',
      },
      { authorization: 'Bearer x' },
    );
    await expectError(assertion, 400, 'invalid_request');
  });

  it('an Authorization scheme Tessera does not read, alone: 401 invalid_client (client_auth_malformed) with the Basic challenge, so the client learns Basic is read', async () => {
    const res = await token({ grant_type: 'client_credentials' }, { authorization: 'Bearer x' });
    await expectError(res, 401, 'invalid_client');
    assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm="tessera"/);
    await issuer.service.audit.flush();
    const denied = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'token.denied').at(-1);
    assert.equal(denied?.reason, 'client_auth_malformed');
  });

  it('revocation and introspection read Authorization alike: another scheme beside client_secret_post is refused (400), alone it is invalid_client, audited', async () => {
    for (const [path, kind] of [
      ['/oauth2/revoke', 'revocation.denied'],
      ['/oauth2/introspect', 'introspection.denied'],
    ] as const) {
      const post = await issuer.post(path, { token: 'x', client_id: agent.id, client_secret: agent.secret }, { authorization: 'Bearer x' });
      await expectError(post, 400, 'invalid_request');
      const alone = await issuer.post(path, { token: 'x' }, { authorization: 'Bearer x' });
      await expectError(alone, 401, 'invalid_client');
      await issuer.service.audit.flush();
      const reasons = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === kind).map((e) => e.reason);
      assert.deepEqual(reasons.slice(-2), ['client_auth_multiple_methods', 'client_auth_malformed'], path);
    }
  });

  it('a public client (client_id alone) sending another Authorization scheme at revocation: refused (401 invalid_client), not read as unauthenticated', async () => {
    await issuer.service.registerClient({
      id: 'pub-revoker',
      public: true,
      scopes: ['api:read'],
      audiences: ['https://api.test'],
      grantTypes: ['authorization_code', 'refresh_token'],
      redirectUris: ['http://127.0.0.1:7777/callback'],
    });
    assert.equal((await issuer.post('/oauth2/revoke', { token: 'x', client_id: 'pub-revoker' })).status, 200);
    const res = await issuer.post('/oauth2/revoke', { token: 'x', client_id: 'pub-revoker' }, { authorization: 'Bearer x' });
    await expectError(res, 401, 'invalid_client');
  });

  it('refuses a malformed Basic header', async () => {
    const res = await token({ grant_type: 'client_credentials' }, { authorization: 'Basic !!!' });
    await expectError(res, 401, 'invalid_client');
    assert.match(res.headers.get('www-authenticate') ?? '', /^Basic/);
  });

  it('refuses Basic credentials that are not the one RFC 4648 base64 encoding of id:secret (extra or missing padding, stray bits), or not UTF-8 once decoded', async () => {
    const good = basic(agent.id, agent.secret);
    assert.equal((await token({ grant_type: 'client_credentials' }, { authorization: good })).status, 200);
    const b64 = good.slice('Basic '.length);
    const last = b64.replace(/=+$/, '').at(-1) as string;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    // The credentials 'agent:tcs_…' are not a multiple of 3 bytes long: the last character has unused bits.
    assert.match(b64, /=$/);
    const strayBits = `${b64.replace(/=+$/, '').slice(0, -1)}${alphabet[alphabet.indexOf(last) + 1]}${b64.match(/=+$/)?.[0]}`;
    for (const value of [`${b64}=`, `${b64}==`, b64.replace(/=+$/, ''), strayBits]) {
      const res = await token({ grant_type: 'client_credentials' }, { authorization: `Basic ${value}` });
      await expectError(res, 401, 'invalid_client');
      assert.match(res.headers.get('www-authenticate') ?? '', /^Basic/);
    }
    const latin1 = `Basic ${Buffer.concat([Buffer.from(`${agent.id}:${agent.secret}`), Buffer.from([0xff])]).toString('base64')}`;
    await expectError(await token({ grant_type: 'client_credentials' }, { authorization: latin1 }), 401, 'invalid_client');
  });

  it('refuses a Basic client id that differs from the body client_id', async () => {
    const res = await token({ grant_type: 'client_credentials', client_id: 'multi' }, { authorization: basic(agent.id, agent.secret) });
    await expectError(res, 401, 'invalid_client');
  });

  it('refuses a disabled client, and accepts it again once enabled', async () => {
    const c = await issuer.addClient({ id: 'to-disable', scopes: ['api:read'] });
    await issuer.service.setClientDisabled(c.id, true);
    await expectError(await cc({}, c), 401, 'invalid_client');
    await issuer.service.setClientDisabled(c.id, false);
    assert.equal((await cc({}, c)).status, 200);
  });
});

describe('scope and audience errors', () => {
  it('answers invalid_scope for a scope beyond the client', async () => {
    await expectError(await cc({ scope: 'api:read admin' }), 400, 'invalid_scope');
  });

  it('answers invalid_scope for a wildcard the client does not hold', async () => {
    await expectError(await cc({ scope: 'api:*' }), 400, 'invalid_scope');
  });

  it('answers invalid_scope for a malformed scope', async () => {
    await expectError(await cc({ scope: 'api:read "quoted"' }), 400, 'invalid_scope');
  });

  it('scope grammar (RFC 6749 §3.3, scope-token *( SP scope-token )): a double space, a leading or trailing space, or a lone space is invalid_scope, never read as the client’s full scope', async () => {
    for (const scope of ['api:read  api:write', ' api:read', 'api:read ', ' ', 'api:read\tapi:write']) {
      const res = await cc({ scope });
      await expectError(res, 400, 'invalid_scope');
    }
    await issuer.service.audit.flush();
    const denied = (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === 'token.denied').at(-1);
    assert.equal(denied?.reason, 'scope_malformed');
    // Scope tokens are case-sensitive: API:read is another scope, not the client's api:read.
    await expectError(await cc({ scope: 'API:read' }), 400, 'invalid_scope');
    // Sent without a value, it is omitted (RFC 6749 §3.1): the client's scopes.
    const omitted = (await (await cc({ scope: '' })).json()) as { scope: string };
    assert.equal(omitted.scope, 'api:read api:write files:*');
  });

  it('answers invalid_target for an audience the client may not request', async () => {
    await expectError(await cc({ audience: 'https://other.test' }), 400, 'invalid_target');
  });

  it('answers invalid_target for a resource that is not an absolute URI', async () => {
    await expectError(await cc({ resource: 'not a uri' }), 400, 'invalid_target');
    await expectError(await cc({ resource: 'https://api.test/#frag' }), 400, 'invalid_target');
  });

  it('answers invalid_target when a client with several audiences names none', async () => {
    await expectError(await cc({}, multi), 400, 'invalid_target');
  });
});
