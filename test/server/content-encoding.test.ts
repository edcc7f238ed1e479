/**
 * A request body with a Content-Encoding other than identity. The token service decodes no content
 * coding, so a body labelled `gzip` was read as if it were identity: whatever a proxy or log that
 * honours the label saw (the decompressed body), Tessera read other bytes. RFC 9110 §15.5.16: an
 * unsupported content coding is refused with 415 (here `request_content_encoding`, `invalid_request`,
 * with `Accept-Encoding: identity`), at every endpoint that reads a body, and audited where that
 * endpoint audits its other refusals.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { AuditEvent } from '../../src/audit/event.ts';
import { authorizationConfig, authorizationRequest, openConsent, personHeaders } from '../helpers/authorize.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';

const IAT = 'initial-access-token-0123456789abcdefghij';
const API = 'https://api.test';
const REDIRECT = 'http://127.0.0.1:7777/callback';
const FORM = 'application/x-www-form-urlencoded';

let issuer: RunningIssuer;
let client: { id: string; secret: string };
let ops: { id: string; secret: string };

before(async () => {
  issuer = await startIssuer({
    config: {
      scopes: { 'api:read': {} },
      token_service: {
        authorization: authorizationConfig(),
        registration: { enabled: true, initial_access_token: IAT, scopes: ['api:read'], audiences: [API] },
      },
    } as never,
  });
  client = await issuer.addClient({ id: 'coding-probe', scopes: ['api:read'], audiences: [API] });
  ops = await issuer.addClient({ id: 'coding-ops', scopes: ['tessera:admin'], audiences: [issuer.url] });
  await issuer.service.registerClient({ id: 'coding-app', public: true, scopes: ['api:read'], audiences: [API], redirectUris: [REDIRECT] });
});
after(() => issuer?.close());

let n = 0;

async function post(
  path: string,
  body: string | Uint8Array,
  headers: Record<string, string>,
): Promise<{ res: Response; text: string; events: AuditEvent[] }> {
  const requestId = `content-encoding-${++n}`;
  const res = await fetch(`${issuer.url}${path}`, {
    method: 'POST',
    headers: { ...headers, 'x-request-id': requestId },
    body,
    redirect: 'manual',
  });
  const text = await res.text();
  await issuer.service.audit.flush();
  return { res, text, events: await issuer.store.queryAudit({ request_id: requestId, limit: 10 }) };
}

function assertRefused(r: { res: Response; text: string }): void {
  assert.equal(r.res.status, 415, r.text);
  assert.deepEqual(JSON.parse(r.text), {
    error: 'invalid_request',
    error_description: 'The request body must not be content-coded: send it without a Content-Encoding (identity).',
  });
  assert.equal(r.res.headers.get('accept-encoding'), 'identity');
  assert.equal(r.res.headers.get('cache-control'), 'no-store');
}

const audited = (events: AuditEvent[]) => events.map((e) => [e.kind, e.reason, e.decision]);
const auth = () => ({ authorization: basic(client.id, client.secret) });

describe('Content-Encoding at the form endpoints', () => {
  const body = 'grant_type=client_credentials&scope=api%3Aread';

  for (const coding of ['gzip', 'deflate', 'br', 'x-unknown', 'identity, gzip', 'GZIP']) {
    it(`a plain token request labelled Content-Encoding: ${coding} (read as identity, no token issued before): 415, audited as token.denied`, async () => {
      const r = await post('/oauth2/token', body, { ...auth(), 'content-type': FORM, 'content-encoding': coding });
      assertRefused(r);
      assert.deepEqual(audited(r.events), [['token.denied', 'request_content_encoding', 'deny']]);
    });
  }

  it('a really gzipped token request: 415, not decoded, not read as garbage', async () => {
    const r = await post('/oauth2/token', gzipSync(body), { ...auth(), 'content-type': FORM, 'content-encoding': 'gzip' });
    assertRefused(r);
    assert.deepEqual(audited(r.events), [['token.denied', 'request_content_encoding', 'deny']]);
  });

  it('revocation and introspection: 415, audited as revocation.denied and introspection.denied', async () => {
    for (const [path, kind] of [
      ['/oauth2/revoke', 'revocation.denied'],
      ['/oauth2/introspect', 'introspection.denied'],
    ] as const) {
      const r = await post(path, 'token=abc', { ...auth(), 'content-type': FORM, 'content-encoding': 'gzip' });
      assertRefused(r);
      assert.deepEqual(audited(r.events), [[kind, 'request_content_encoding', 'deny']], path);
    }
  });

  it('Content-Encoding: identity (no coding, RFC 9110 §8.4.1) is accepted', async () => {
    const r = await post('/oauth2/token', body, { ...auth(), 'content-type': FORM, 'content-encoding': 'identity' });
    assert.equal(r.res.status, 200, r.text);
  });
});

describe('Content-Encoding at the JSON endpoints', () => {
  it('registration: 415, nothing registered, audited as client.registration_denied', async () => {
    const clients = (await issuer.store.listClients()).length;
    const r = await post(
      '/oauth2/register',
      JSON.stringify({ redirect_uris: ['http://127.0.0.1:1/cb'], token_endpoint_auth_method: 'none' }),
      { authorization: `Bearer ${IAT}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
    );
    assertRefused(r);
    assert.deepEqual(audited(r.events), [['client.registration_denied', 'request_content_encoding', 'deny']]);
    assert.equal((await issuer.store.listClients()).length, clients, 'nothing registered');
  });

  it('admin API: 415, nothing revoked', async () => {
    const grant = await issuer.service.store.createGrant(
      {
        id: `g_coding_${Date.now()}`,
        parentId: null,
        kind: 'token_exchange',
        issuer: issuer.url,
        subject: 'dora',
        clientId: client.id,
        act: null,
        scopes: ['api:read'],
        audiences: [API],
        createdAt: issuer.service.now(),
        expiresAt: issuer.service.now() + 3600,
      },
      issuer.service.now(),
    );
    assert.equal(typeof grant, 'object');
    const tok = await issuer.post(
      '/oauth2/token',
      { grant_type: 'client_credentials', audience: issuer.url },
      { authorization: basic(ops.id, ops.secret) },
    );
    const token = ((await tok.json()) as { access_token: string }).access_token;
    const r = await post('/oauth2/admin/revoke', JSON.stringify({ subject: 'dora' }), {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      'content-encoding': 'gzip',
    });
    assertRefused(r);
    assert.equal((await issuer.store.getGrant((grant as { id: string }).id))?.revokedAt, null, 'nothing revoked');
  });
});

describe('Content-Encoding at the consent form', () => {
  it('POST /oauth2/authorize labelled gzip: refused with a 415 page, never redirected, audited as authorization.denied', async () => {
    const url = authorizationRequest(`${issuer.url}/oauth2/authorize`, {
      client_id: 'coding-app',
      redirect_uri: REDIRECT,
      code_challenge: pkcePair().challenge,
      resource: API,
    });
    const { fields } = await openConsent(url);
    const r = await post('/oauth2/authorize', new URLSearchParams({ ...fields, decision: 'approve' }).toString(), {
      ...personHeaders(),
      'content-type': FORM,
      'content-encoding': 'gzip',
    });
    assert.equal(r.res.status, 415, r.text);
    assert.equal(r.res.headers.get('location'), null, 'never redirected');
    assert.match(r.res.headers.get('content-type') ?? '', /^text\/html/);
    assert.deepEqual(audited(r.events), [['authorization.denied', 'request_content_encoding', 'deny']]);
    // RFC 9110 §15.5.16: the 415 names the codings accepted, as the JSON endpoints' 415 does.
    assert.equal(r.res.headers.get('accept-encoding'), 'identity');
  });

  it('another method at /oauth2/authorize (PUT, DELETE, PATCH): 405 with Allow: GET, POST, audited as authorization.denied like the consent form’s other refusals (it left no event)', async () => {
    for (const method of ['PUT', 'DELETE', 'PATCH']) {
      const requestId = `authorize-method-${method}`;
      const res = await fetch(`${issuer.url}/oauth2/authorize`, {
        method,
        headers: { 'content-type': FORM, 'x-request-id': requestId },
        body: 'a=b',
      });
      assert.equal(res.status, 405, method);
      assert.equal(res.headers.get('allow'), 'GET, POST');
      await issuer.service.audit.flush();
      const events = await issuer.store.queryAudit({ request_id: requestId, limit: 10 });
      assert.deepEqual(audited(events), [['authorization.denied', 'request_method_not_allowed', 'deny']], method);
    }
  });
});
