/**
 * Two Authorization headers at the token service: Node keeps only the first in `req.headers`, so
 * without a look at the raw headers one client's credentials would win over the other's unseen.
 * RFC 6749 §2.3 allows one authentication method per request; every endpoint that reads the header
 * refuses the request (400 `invalid_request`) and audits `request_multiple_authorization` where it
 * audits its other refusals. Sent over a raw socket: fetch() joins repeated headers into one.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/audit/event.ts';
import { authorizationConfig } from '../helpers/authorize.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { rawHttp } from '../helpers/net.ts';

const IAT = 'initial-access-token-0123456789abcdefghij';
const API = 'https://api.test';

let issuer: RunningIssuer;
const c: Record<string, { id: string; secret: string }> = {};

before(async () => {
  issuer = await startIssuer({
    config: {
      token_service: {
        authorization: authorizationConfig(),
        registration: { enabled: true, initial_access_token: IAT, scopes: ['mcp:tools'], audiences: ['https://mcp.test/mcp'] },
      },
    } as never,
  });
  c.alice = await issuer.addClient({ id: 'alice-app', scopes: ['api:read'], audiences: [API] });
  c.bob = await issuer.addClient({ id: 'bob-app', scopes: ['api:read', 'api:write'], audiences: [API] });
  c.ops = await issuer.addClient({ id: 'ops', scopes: ['tessera:admin'], audiences: [issuer.url] });
});
after(() => issuer?.close());

const auth = (id: string) => basic((c[id] as { id: string }).id, (c[id] as { secret: string }).secret);

/** One request with every given Authorization header, as sent; the status and the JSON body. */
async function send(
  method: string,
  path: string,
  authorizations: readonly string[],
  type: string,
  body: string,
): Promise<{ status: number; body: Record<string, unknown>; raw: string }> {
  const head = [
    `${method} ${path} HTTP/1.1`,
    `Host: ${new URL(issuer.url).host}`,
    ...authorizations.map((a) => `Authorization: ${a}`),
    `Content-Type: ${type}`,
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
  ];
  const raw = await rawHttp(issuer.url, `${head.join('\r\n')}\r\n\r\n${body}`);
  const split = raw.indexOf('\r\n\r\n');
  const text = raw.slice(split + 4);
  return { status: Number(raw.split(' ')[1]), body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>), raw };
}

const form = (path: string, authorizations: readonly string[], params: Record<string, string>) =>
  send('POST', path, authorizations, 'application/x-www-form-urlencoded', new URLSearchParams(params).toString());

async function lastDenied(kind: string): Promise<AuditEvent | undefined> {
  await issuer.service.audit.flush();
  return (await issuer.store.queryAudit({ kinds: [kind as AuditEvent['kind']], limit: 10_000 })).at(-1);
}

function assertRefused(r: { status: number; body: Record<string, unknown>; raw: string }): void {
  assert.equal(r.status, 400, r.raw);
  assert.equal(r.body.error, 'invalid_request');
  assert.equal(r.body.access_token, undefined);
}

async function assertAudited(kind: string, secrets: readonly string[]): Promise<void> {
  const e = await lastDenied(kind);
  assert.equal(e?.decision, 'deny');
  assert.equal(e?.reason, 'request_multiple_authorization');
  for (const s of secrets) assert.doesNotMatch(JSON.stringify(e), new RegExp(s));
}

async function clientToken(id: string, audience = API): Promise<string> {
  const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience }, { authorization: auth(id) });
  const body = (await res.json()) as { access_token: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.access_token;
}

describe('two Authorization headers at the token service (RFC 6749 §2.3)', () => {
  it('client confusion at the token endpoint: Basic for alice-app and Basic for bob-app is refused (400), no token for either, audited as token.denied', async () => {
    const r = await form('/oauth2/token', [auth('alice'), auth('bob')], { grant_type: 'client_credentials', audience: API });
    assertRefused(r);
    await assertAudited('token.denied', [c.alice!.secret, c.bob!.secret]);
  });

  it('client confusion at the revocation endpoint: two Basic headers are refused (400), audited as revocation.denied', async () => {
    const t = await clientToken('bob');
    const r = await form('/oauth2/revoke', [auth('bob'), auth('alice')], { token: t });
    assertRefused(r);
    await assertAudited('revocation.denied', [c.alice!.secret, c.bob!.secret, t]);
    const still = await issuer.post('/oauth2/introspect', { token: t }, { authorization: auth('bob') });
    assert.equal(((await still.json()) as { active: boolean }).active, true, 'the token was not revoked');
  });

  it('client confusion at the introspection endpoint: two Basic headers are refused (400), audited as introspection.denied', async () => {
    const t = await clientToken('bob');
    const r = await form('/oauth2/introspect', [auth('bob'), auth('alice')], { token: t });
    assertRefused(r);
    assert.equal(r.body.active, undefined);
    await assertAudited('introspection.denied', [c.alice!.secret, c.bob!.secret, t]);
  });

  it('credential confusion at the admin API: an admin Bearer token and a second Authorization header are refused (400), nothing revoked, audited as admin.denied', async () => {
    const admin = await clientToken('ops', issuer.url);
    const victim = await clientToken('alice');
    const r = await send(
      'POST',
      '/oauth2/admin/revoke',
      [`Bearer ${admin}`, 'Bearer other'],
      'application/json',
      JSON.stringify({ client_id: 'alice-app' }),
    );
    assertRefused(r);
    assert.equal(r.body.revoked_grants, undefined);
    await assertAudited('admin.denied', [admin.split('.')[2] as string]);
    const still = await issuer.post('/oauth2/introspect', { token: victim }, { authorization: auth('bob') });
    assert.equal(((await still.json()) as { active: boolean }).active, true, 'alice-app’s grants were not revoked');
    const get = await send('GET', '/oauth2/admin/grants/g_x', [`Bearer ${admin}`, `Bearer ${admin}`], 'application/json', '');
    assertRefused(get);
  });

  it('credential confusion at the registration endpoint: the initial access token and a second Authorization header are refused (400), no client registered, audited as client.registration_denied', async () => {
    const metadata = {
      client_name: 'two headers',
      redirect_uris: ['http://127.0.0.1:33418/callback'],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      response_types: ['code'],
    };
    const r = await send('POST', '/oauth2/register', [`Bearer ${IAT}`, 'Bearer other'], 'application/json', JSON.stringify(metadata));
    assertRefused(r);
    assert.equal(r.body.client_id, undefined);
    await assertAudited('client.registration_denied', [IAT]);
  });

  it('one Authorization header still works at every endpoint (the same requests, once)', async () => {
    assert.equal((await form('/oauth2/token', [auth('alice')], { grant_type: 'client_credentials', audience: API })).status, 200);
    const admin = await clientToken('ops', issuer.url);
    const r = await send('GET', '/oauth2/admin/grants/g_none', [`Bearer ${admin}`], 'application/json', '');
    assert.equal(r.status, 404, r.raw);
  });

  it('two DPoP headers at the token endpoint are refused (400 invalid_dpop_proof), no token', async () => {
    const head = [
      'POST /oauth2/token HTTP/1.1',
      `Host: ${new URL(issuer.url).host}`,
      `Authorization: ${auth('alice')}`,
      'DPoP: a.b.c',
      'DPoP: d.e.f',
      'Content-Type: application/x-www-form-urlencoded',
      'Content-Length: 29',
      'Connection: close',
    ];
    const raw = await rawHttp(issuer.url, `${head.join('\r\n')}\r\n\r\ngrant_type=client_credentials`);
    assert.equal(Number(raw.split(' ')[1]), 400, raw);
    assert.match(raw, /"error":"invalid_dpop_proof"/);
    assert.doesNotMatch(raw, /access_token/);
  });
});
