/**
 * The authorization code grant at the token endpoint, with codes issued through the service's
 * authorization decisions (the HTTP front door and consent page are tested in
 * test/server/authorize.test.ts): PKCE S256 only, exact redirect URI match, codes single use and
 * short-lived, a replay revoking the grant issued from the code, RFC 8707 resources, codes bound
 * to a DPoP key (`dpop_jkt`, RFC 9449 §10), public clients limited to this grant and refresh.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, decodeJwt, type JWK, SignJWT } from 'jose';
import { ClientInputError } from '../../src/issuer/clients.ts';
import { sha256, tokenHash } from '../../src/issuer/secrets.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';
import { bearer } from '../helpers/tokens.ts';

const REDIRECT = 'http://127.0.0.1:7777/callback';
const API = 'https://api.test';
const OTHER_API = 'https://other.test';

let issuer: RunningIssuer;
let now = Math.floor(Date.now() / 1000);
let confidential: { id: string; secret: string };

before(async () => {
  issuer = await startIssuer({ clock: () => now * 1000 });
  await issuer.service.registerClient({
    id: 'mcp-app',
    public: true,
    name: 'MCP App',
    scopes: ['api:read', 'api:write'],
    audiences: [API, OTHER_API],
    grantTypes: ['authorization_code', 'refresh_token'],
    redirectUris: [REDIRECT, 'https://app.test/cb'],
  });
  await issuer.service.registerClient({
    id: 'other-app',
    public: true,
    scopes: ['api:read'],
    audiences: [API],
    grantTypes: ['authorization_code'],
    redirectUris: [REDIRECT],
  });
  confidential = await issuer.addClient({
    id: 'web-app',
    scopes: ['api:read'],
    audiences: [API],
    grantTypes: ['authorization_code', 'refresh_token'],
    redirectUris: ['https://web.test/cb'],
  });
});
after(() => issuer?.close());

interface AuthzOptions {
  client?: string;
  redirect?: string;
  scope?: string;
  /** One resource, or several (each its own `resource` parameter, RFC 8707 §2). */
  resource?: string | readonly string[];
  challenge?: string;
  method?: string | undefined;
  subject?: string;
  /** RFC 9449 §10: bind the code to this DPoP key thumbprint. */
  dpopJkt?: string;
}

/** Run the authorization decision and approve it: the code, as the redirect would carry it. */
async function codeFor(o: AuthzOptions = {}): Promise<{ code: string; verifier: string }> {
  const { verifier, challenge } = pkcePair();
  const params = new URLSearchParams({
    response_type: 'code',
    client_id: o.client ?? 'mcp-app',
    redirect_uri: o.redirect ?? REDIRECT,
    code_challenge: o.challenge ?? challenge,
    code_challenge_method: 'S256',
    scope: o.scope ?? 'api:read',
    state: 'st-1',
  });
  for (const r of typeof o.resource === 'string' ? [o.resource] : (o.resource ?? [API])) params.append('resource', r);
  if (o.dpopJkt !== undefined) params.set('dpop_jkt', o.dpopJkt);
  const outcome = await issuer.service.checkAuthorizationRequest(params);
  assert.equal(outcome.ok, true, outcome.ok ? '' : outcome.error.code);
  if (!outcome.ok) throw new Error('unreachable');
  return {
    code: await issuer.service.approveAuthorization(outcome.request, { subject: o.subject ?? 'alice@example.com', source: 'test' }),
    verifier,
  };
}

/** mcp-app's authorization request for `resource`, checked (PKCE, its registered redirect URI). */
function askForResource(resource: string) {
  return issuer.service.checkAuthorizationRequest(
    new URLSearchParams({
      response_type: 'code',
      client_id: 'mcp-app',
      redirect_uri: REDIRECT,
      code_challenge: pkcePair().challenge,
      code_challenge_method: 'S256',
      resource,
    }),
  );
}

const redeem = (form: Record<string, string | string[]>, headers: Record<string, string> = {}) =>
  issuer.post('/oauth2/token', { grant_type: 'authorization_code', redirect_uri: REDIRECT, client_id: 'mcp-app', ...form }, headers);

async function expectError(res: Response, status: number, error: string): Promise<void> {
  const body = (await res.json()) as { error: string };
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.error, error);
}

async function lastDenial(): Promise<string | undefined> {
  await issuer.service.audit.flush();
  const events = await issuer.store.queryAudit({ limit: 10_000 });
  return events.filter((e) => e.kind === 'token.denied').at(-1)?.reason;
}

describe('authorization code redemption', () => {
  it('issues an access token for the resource, on a root grant for the person, with a refresh token that rotates', async () => {
    const { code, verifier } = await codeFor({ scope: 'api:read api:write' });
    assert.match(code, /^tac_[A-Za-z0-9_-]{43}$/);
    const res = await redeem({ code, code_verifier: verifier });
    const body = (await res.json()) as Record<string, string>;
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.scope, 'api:read api:write');
    assert.match(body.refresh_token as string, /^trt_/);
    const claims = decodeJwt(body.access_token as string);
    assert.equal(claims.sub, 'alice@example.com');
    assert.equal(claims.aud, API);
    assert.equal(claims.client_id, 'mcp-app');
    const grant = await issuer.store.getGrant(claims.grant_id as string);
    assert.equal(grant?.kind, 'authorization_code');
    assert.equal(grant?.parentId, null);
    assert.equal(grant?.subject, 'alice@example.com');
    assert.deepEqual(grant?.scopes, ['api:read', 'api:write']);
    assert.deepEqual(grant?.audiences, [API]);
    // The issuing event carries the token's expiry, as every other grant's does (`tessera trace` shows it).
    await issuer.service.audit.flush();
    const issued = (await issuer.store.queryAudit({ jti: claims.jti as string })).find((e) => e.kind === 'token.issued');
    // ... and the code's short hash, which links the grant to the consent that approved it.
    assert.deepEqual(issued?.detail, { grant_type: 'authorization_code', aud: [API], exp: claims.exp, code_hash: tokenHash(code) });
    const refreshed = await issuer.post('/oauth2/token', {
      grant_type: 'refresh_token',
      refresh_token: body.refresh_token as string,
      client_id: 'mcp-app',
    });
    const r = (await refreshed.json()) as Record<string, string>;
    assert.equal(refreshed.status, 200, JSON.stringify(r));
    assert.equal(decodeJwt(r.access_token as string).sub, 'alice@example.com');
    assert.notEqual(r.refresh_token, body.refresh_token);
  });

  it('works for a confidential client authenticating with its secret, and refuses it without the secret', async () => {
    const { verifier, challenge } = pkcePair();
    const outcome = await issuer.service.checkAuthorizationRequest(
      new URLSearchParams({
        response_type: 'code',
        client_id: 'web-app',
        redirect_uri: 'https://web.test/cb',
        code_challenge: challenge,
        code_challenge_method: 'S256',
      }),
    );
    assert.ok(outcome.ok);
    const code = await issuer.service.approveAuthorization(outcome.request, { subject: 'bob', source: 'test' });
    const form = { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: 'https://web.test/cb' };
    await expectError(await issuer.post('/oauth2/token', { ...form, client_id: 'web-app' }), 401, 'invalid_client');
    const res = await issuer.post('/oauth2/token', form, { authorization: basic(confidential.id, confidential.secret) });
    assert.equal(res.status, 200);
    assert.equal(decodeJwt(((await res.json()) as { access_token: string }).access_token).sub, 'bob');
  });

  it('narrows to one of the approved resources when the token request names it (RFC 8707 §2.2), and refuses another', async () => {
    const both = await codeFor({ resource: API });
    await expectError(await redeem({ code: both.code, code_verifier: both.verifier, resource: OTHER_API }), 400, 'invalid_target');
    const res = await redeem({ code: both.code, code_verifier: both.verifier, resource: API });
    assert.equal(res.status, 200);
  });
});

describe('a client narrowed between approval and redemption', () => {
  it('attack: scopes and a resource taken from the client after the person approved its code: the token carries only what the client still holds (as a refresh would), naming a taken resource is invalid_target, nothing left is invalid_scope / invalid_target, and the code is not spent by a refusal', async () => {
    const id = 'narrowed-app';
    await issuer.service.registerClient({
      id,
      public: true,
      scopes: ['api:read', 'api:write'],
      audiences: [API, OTHER_API],
      grantTypes: ['authorization_code', 'refresh_token'],
      redirectUris: [REDIRECT],
    });
    const approve = () => codeFor({ client: id, scope: 'api:read api:write', resource: [API, OTHER_API], subject: 'frank@example.com' });
    const redeemAs = (form: Record<string, string>) => redeem({ client_id: id, ...form });
    const narrowed = await approve();
    const untouched = await approve();
    // An administrator takes api:write and https://other.test away from the client, after the approvals.
    await issuer.store.updateClient(id, { scopes: ['api:read'], audiences: [API] }, now);
    await issuer.service.sync();
    await expectError(
      await redeemAs({ code: narrowed.code, code_verifier: narrowed.verifier, resource: OTHER_API }),
      400,
      'invalid_target',
    );
    const res = await redeemAs({ code: narrowed.code, code_verifier: narrowed.verifier });
    const body = (await res.json()) as { access_token: string; scope?: string };
    assert.equal(res.status, 200, `the refusal above did not spend the code: ${JSON.stringify(body)}`);
    assert.equal(body.scope, 'api:read');
    const claims = decodeJwt(body.access_token);
    assert.equal(claims.scope, 'api:read');
    assert.equal(claims.aud, API);
    await issuer.service.audit.flush();
    const issued = (await issuer.store.queryAudit({ jti: claims.jti as string })).find((e) => e.kind === 'token.issued');
    assert.deepEqual(issued?.scopes_granted, ['api:read']);
    // Nothing of the approval left for the client: refused, the code not spent.
    await issuer.store.updateClient(id, { scopes: ['api:admin-only'] }, now);
    await issuer.service.sync();
    await expectError(await redeemAs({ code: untouched.code, code_verifier: untouched.verifier }), 400, 'invalid_scope');
    await issuer.store.updateClient(id, { scopes: ['api:read', 'api:write'], audiences: ['https://third.test'] }, now);
    await issuer.service.sync();
    await expectError(await redeemAs({ code: untouched.code, code_verifier: untouched.verifier }), 400, 'invalid_target');
    await issuer.store.updateClient(id, { scopes: ['api:read', 'api:write'], audiences: [API, OTHER_API] }, now);
    await issuer.service.sync();
    const back = await redeemAs({ code: untouched.code, code_verifier: untouched.verifier });
    assert.equal(back.status, 200, await back.clone().text());
    assert.equal(((await back.json()) as { scope?: string }).scope, 'api:read api:write');
  });
});

describe('resources (RFC 8707): compared exactly, and only narrowed at the token endpoint', () => {
  it('attack: a token request naming a resource the client holds but the person did not approve (resource=, audience=, or with an approved one): invalid_target, audited as target_not_granted, the code not spent', async () => {
    const { code, verifier } = await codeFor({ resource: API });
    const targets: Record<string, string | string[]>[] = [
      { resource: OTHER_API },
      { audience: OTHER_API },
      { resource: [API, OTHER_API] },
      { audience: API, resource: OTHER_API },
    ];
    for (const target of targets) {
      const res = await redeem({ code, code_verifier: verifier, ...target });
      const body = (await res.json()) as { error: string; error_description: string };
      assert.equal(res.status, 400, JSON.stringify(target));
      assert.equal(body.error, 'invalid_target');
      // Not "not allowed for this client": the client may have it, this code does not.
      assert.match(body.error_description, /granted/);
      assert.equal(await lastDenial(), 'target_not_granted');
    }
    const res = await redeem({ code, code_verifier: verifier });
    const body = (await res.json()) as { access_token: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(decodeJwt(body.access_token).aud, API);
  });

  it('attack: a resource spelled otherwise than an allowed one (trailing slash, case, default port, percent-encoding): no normalisation, invalid_target at the authorization request and at redemption', async () => {
    const variants = ['https://api.test/', 'https://API.test', 'https://api.test:443', 'https://api.tes%74', 'HTTPS://api.test'];
    for (const resource of variants) {
      const outcome = await askForResource(resource);
      assert.equal(outcome.ok, false, resource);
      if (outcome.ok) return;
      assert.equal(outcome.error.code, 'target_not_allowed', resource);
      assert.equal(outcome.redirect?.uri, REDIRECT);
    }
    const { code, verifier } = await codeFor({ resource: API });
    for (const resource of variants) {
      await expectError(await redeem({ code, code_verifier: verifier, resource }), 400, 'invalid_target');
      assert.equal(await lastDenial(), 'target_not_granted', resource);
    }
    assert.equal((await redeem({ code, code_verifier: verifier, resource: API })).status, 200);
  });

  it('attack: a resource with a fragment, or relative: target_invalid at the authorization request, sent back to the client', async () => {
    for (const resource of [`${API}#frag`, `${API}#`, '/mcp', 'api.test']) {
      const outcome = await askForResource(resource);
      assert.equal(outcome.ok, false, resource);
      if (outcome.ok) return;
      assert.equal(outcome.error.code, 'target_invalid', resource);
      assert.equal(outcome.redirect?.uri, REDIRECT);
    }
  });
});

describe('parameters sent without a value (RFC 6749 §3.1: as if omitted)', () => {
  it('resource= and audience= with no value on a code approved for two resources: the token names both, as when omitted, not invalid_target', async () => {
    const { verifier, challenge } = pkcePair();
    const params = new URLSearchParams({
      response_type: 'code',
      client_id: 'mcp-app',
      redirect_uri: REDIRECT,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      scope: 'api:read',
    });
    params.append('resource', API);
    params.append('resource', OTHER_API);
    const outcome = await issuer.service.checkAuthorizationRequest(params);
    assert.ok(outcome.ok);
    const code = await issuer.service.approveAuthorization(outcome.request, { subject: 'carol', source: 'test' });
    const res = await redeem({ code, code_verifier: verifier, resource: '', audience: '' });
    const body = (await res.json()) as { access_token: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.deepEqual(decodeJwt(body.access_token).aud, [API, OTHER_API]);
  });
});

describe('attacks on the code', () => {
  it('code replay: refused, and the grant issued from it is revoked with its refresh token', async () => {
    const verifier_ = inProcessVerifier(issuer);
    const { code, verifier } = await codeFor();
    const first = (await (await redeem({ code, code_verifier: verifier })).json()) as Record<string, string>;
    const grantId = decodeJwt(first.access_token as string).grant_id as string;
    assert.equal((await verifier_.verify(bearer(first.access_token as string))).ok, true);
    await expectError(await redeem({ code, code_verifier: verifier }), 400, 'invalid_grant');
    assert.equal(await lastDenial(), 'authorization_code_reused');
    assert.equal((await issuer.store.getGrant(grantId))?.revokedReason, 'authorization_code_reused');
    const r = await verifier_.verify(bearer(first.access_token as string));
    assert.equal(r.ok ? 'ok' : r.error.code, 'token_revoked');
    await expectError(
      await issuer.post('/oauth2/token', {
        grant_type: 'refresh_token',
        refresh_token: first.refresh_token as string,
        client_id: 'mcp-app',
      }),
      400,
      'invalid_grant',
    );
  });

  it('leaked code replayed without its verifier: refused, and the grant issued from it is not revoked', async () => {
    // A redeemed code sits in the browser's history and the client's access log; only the client
    // holds the verifier. Replaying the code (with the public client's id) must not let whoever
    // read it revoke the person's grant: only a replay that proves the verifier is a reuse.
    const { code, verifier } = await codeFor();
    const first = (await (await redeem({ code, code_verifier: verifier })).json()) as Record<string, string>;
    const grantId = decodeJwt(first.access_token as string).grant_id as string;
    await expectError(await redeem({ code, code_verifier: pkcePair().verifier }), 400, 'invalid_grant');
    assert.equal(await lastDenial(), 'pkce_verifier_mismatch');
    await expectError(await redeem({ code }), 400, 'invalid_request');
    assert.equal(await lastDenial(), 'pkce_verifier_missing');
    await expectError(await redeem({ code, code_verifier: verifier, redirect_uri: 'https://app.test/cb' }), 400, 'invalid_grant');
    assert.equal(await lastDenial(), 'authorization_code_redirect_mismatch');
    assert.equal((await issuer.store.getGrant(grantId))?.revokedAt, null);
    // The client itself presenting it again (verifier and all) is a reuse, and revokes.
    await expectError(await redeem({ code, code_verifier: verifier }), 400, 'invalid_grant');
    assert.equal(await lastDenial(), 'authorization_code_reused');
    assert.equal((await issuer.store.getGrant(grantId))?.revokedReason, 'authorization_code_reused');
  });

  it('wrong code_verifier: refused, and the code is not spent by the attempt', async () => {
    const { code, verifier } = await codeFor();
    await expectError(await redeem({ code, code_verifier: pkcePair().verifier }), 400, 'invalid_grant');
    assert.equal(await lastDenial(), 'pkce_verifier_mismatch');
    assert.equal((await redeem({ code, code_verifier: verifier })).status, 200);
  });

  it('malformed code_verifier: refused, and the error_description is RFC 6749 §5.2 NQSCHAR (it quoted the allowed characters with %x22)', async () => {
    const { code } = await codeFor();
    const res = await redeem({ code, code_verifier: 'short' });
    const body = (await res.json()) as { error: string; error_description: string };
    assert.equal(res.status, 400);
    assert.equal(body.error, 'invalid_request');
    assert.equal(await lastDenial(), 'pkce_verifier_malformed');
    assert.match(body.error_description, /^[\x20\x21\x23-\x5b\x5d-\x7e]+$/);
  });

  it('code redemption race: eight parallel redemptions of one code over HTTP give exactly one token; the others are reuses', async () => {
    const { code, verifier } = await codeFor();
    const answers = await Promise.all(Array.from({ length: 8 }, () => redeem({ code, code_verifier: verifier })));
    const bodies = (await Promise.all(answers.map((r) => r.json()))) as Record<string, string>[];
    assert.deepEqual(answers.map((r) => r.status).sort(), [200, 400, 400, 400, 400, 400, 400, 400]);
    assert.equal(bodies.filter((b) => b.access_token !== undefined).length, 1);
    assert.ok(bodies.every((b) => b.access_token !== undefined || b.error === 'invalid_grant'));
    await issuer.service.audit.flush();
    const reuses = (await issuer.store.queryAudit({ limit: 10_000 })).filter(
      (e) => e.kind === 'authorization_code.reuse_detected' && e.token_hash === tokenHash(code),
    );
    assert.equal(reuses.length, 7);
  });

  it('code_verifier outside RFC 7636 §4.1 (42 or 129 characters; +, =, /, non-ASCII, a trailing newline): refused as malformed, and the code is not spent; 43 and 128 redeem', async () => {
    const { createHash } = await import('node:crypto');
    const s256 = (v: string) => createHash('sha256').update(v).digest('base64url');
    for (const v of [
      'a'.repeat(42),
      'a'.repeat(129),
      `${'a'.repeat(42)}+`,
      `${'a'.repeat(42)}=`,
      `${'a'.repeat(42)}/`,
      `${'a'.repeat(42)}é`,
      `${'a'.repeat(43)}\n`,
    ]) {
      const { code } = await codeFor({ challenge: s256(v) });
      await expectError(await redeem({ code, code_verifier: v }), 400, 'invalid_request');
      assert.equal(await lastDenial(), 'pkce_verifier_malformed', JSON.stringify(v));
      assert.equal((await issuer.store.getAuthorizationCode(sha256(code)))?.consumedAt, null);
    }
    for (const v of ['a'.repeat(43), `${'-._~'.repeat(31)}0aZ9`]) {
      const { code } = await codeFor({ challenge: s256(v) });
      assert.equal((await redeem({ code, code_verifier: v })).status, 200, `${v.length}`);
    }
  });

  it('missing code_verifier: refused', async () => {
    const { code } = await codeFor();
    await expectError(await redeem({ code }), 400, 'invalid_request');
    assert.equal(await lastDenial(), 'pkce_verifier_missing');
  });

  it('plain PKCE (the challenge is the verifier): refused at the authorization request, sent back to the client', async () => {
    const { verifier } = pkcePair();
    for (const method of ['plain', undefined]) {
      const params = new URLSearchParams({
        response_type: 'code',
        client_id: 'mcp-app',
        redirect_uri: REDIRECT,
        code_challenge: verifier,
        state: 's',
      });
      if (method !== undefined) params.set('code_challenge_method', method);
      const outcome = await issuer.service.checkAuthorizationRequest(params);
      assert.equal(outcome.ok, false);
      if (outcome.ok) return;
      assert.equal(outcome.error.code, 'pkce_method_unsupported');
      assert.deepEqual(outcome.redirect, { uri: REDIRECT, state: 's' });
    }
  });

  it('missing PKCE: refused at the authorization request', async () => {
    const outcome = await issuer.service.checkAuthorizationRequest(
      new URLSearchParams({ response_type: 'code', client_id: 'mcp-app', redirect_uri: REDIRECT }),
    );
    assert.equal(outcome.ok ? 'ok' : outcome.error.code, 'pkce_challenge_missing');
  });

  it('redirect_uri mismatch at the authorization request: an error for the person, no redirect', async () => {
    const { challenge } = pkcePair();
    for (const uri of [
      'http://127.0.0.1:7777/callback/../evil',
      'http://127.0.0.1:7777/callbackx',
      'https://evil.test/cb',
      'HTTP://127.0.0.1:7777/callback',
    ]) {
      const outcome = await issuer.service.checkAuthorizationRequest(
        new URLSearchParams({
          response_type: 'code',
          client_id: 'mcp-app',
          redirect_uri: uri,
          code_challenge: challenge,
          code_challenge_method: 'S256',
        }),
      );
      assert.equal(outcome.ok, false, uri);
      if (outcome.ok) return;
      assert.equal(outcome.error.code, 'authorize_redirect_uri_invalid');
      assert.equal(outcome.redirect, undefined);
    }
    // Several registered: the request must name one.
    const omitted = await issuer.service.checkAuthorizationRequest(
      new URLSearchParams({ response_type: 'code', client_id: 'mcp-app', code_challenge: challenge, code_challenge_method: 'S256' }),
    );
    assert.equal(omitted.ok ? 'ok' : omitted.error.code, 'authorize_redirect_uri_invalid');
  });

  it('a loopback IP redirect URI is matched on any port (RFC 8252 §7.3), and only on its port', async () => {
    const { code, verifier } = await codeFor({ redirect: 'http://127.0.0.1:50123/callback' });
    // The code is bound to the URI with the port the request named: the token request repeats it.
    await expectError(await redeem({ code, code_verifier: verifier }), 400, 'invalid_grant');
    const second = await codeFor({ redirect: 'http://127.0.0.1:50124/callback' });
    const res = await redeem({ code: second.code, code_verifier: second.verifier, redirect_uri: 'http://127.0.0.1:50124/callback' });
    assert.equal(res.status, 200);
    const { challenge } = pkcePair();
    // Everything but the port still matches exactly; `localhost` and https get no such leeway.
    for (const uri of [
      'http://127.0.0.1:50123/callback/../callback',
      'http://127.0.0.1:50123/callbackx',
      'http://127.0.0.1:50123/callback?x=1',
      'http://[::1]:50123/callback',
      'https://app.test:8443/cb',
      'http://127.0.0.1:50123@evil.test/callback',
    ]) {
      const outcome = await issuer.service.checkAuthorizationRequest(
        new URLSearchParams({
          response_type: 'code',
          client_id: 'mcp-app',
          redirect_uri: uri,
          code_challenge: challenge,
          code_challenge_method: 'S256',
        }),
      );
      assert.equal(outcome.ok ? 'ok' : outcome.error.code, 'authorize_redirect_uri_invalid', uri);
    }
  });

  it('redirect_uri mismatch at the token request: refused', async () => {
    const { code, verifier } = await codeFor();
    await expectError(await redeem({ code, code_verifier: verifier, redirect_uri: 'https://app.test/cb' }), 400, 'invalid_grant');
    assert.equal(await lastDenial(), 'authorization_code_redirect_mismatch');
  });

  it('unknown client at the authorization request: an error for the person, no redirect', async () => {
    const outcome = await issuer.service.checkAuthorizationRequest(
      new URLSearchParams({ client_id: 'nobody', redirect_uri: 'https://evil.test/cb' }),
    );
    assert.equal(outcome.ok ? 'ok' : outcome.error.code, 'authorize_client_invalid');
    assert.equal(outcome.ok ? 'ok' : outcome.redirect, undefined);
  });

  it('code from another client: refused, and neither spent nor revoking anything', async () => {
    const { code, verifier } = await codeFor();
    await expectError(await redeem({ code, code_verifier: verifier, client_id: 'other-app' }), 400, 'invalid_grant');
    assert.equal(await lastDenial(), 'authorization_code_invalid');
    assert.equal((await redeem({ code, code_verifier: verifier })).status, 200);
  });

  it('expired code: refused after code_ttl (60 s)', async () => {
    const { code, verifier } = await codeFor();
    now += 60;
    try {
      await expectError(await redeem({ code, code_verifier: verifier }), 400, 'invalid_grant');
      assert.equal(await lastDenial(), 'authorization_code_invalid');
    } finally {
      now -= 60;
    }
  });

  it('resource not allowed for the client: refused at the authorization request, sent back with invalid_target', async () => {
    const { challenge } = pkcePair();
    const outcome = await issuer.service.checkAuthorizationRequest(
      new URLSearchParams({
        response_type: 'code',
        client_id: 'mcp-app',
        redirect_uri: REDIRECT,
        code_challenge: challenge,
        code_challenge_method: 'S256',
        resource: 'https://evil.test',
      }),
    );
    assert.equal(outcome.ok, false);
    if (outcome.ok) return;
    assert.equal(outcome.error.error, 'invalid_target');
    assert.equal(outcome.redirect?.uri, REDIRECT);
  });

  it('scope partly beyond the client: narrowed to what the client may have (RFC 6749 §3.3), and the token says so', async () => {
    // MCP clients ask for every scope the resource lists; the person approves, and gets, only the client's.
    const { code, verifier } = await codeFor({ scope: 'api:read admin api:write' });
    const res = await redeem({ code, code_verifier: verifier });
    const body = (await res.json()) as Record<string, string>;
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.scope, 'api:read api:write');
    assert.equal(decodeJwt(body.access_token as string).scope, 'api:read api:write');
  });

  it('scope entirely beyond the client: refused with invalid_scope', async () => {
    const { challenge } = pkcePair();
    const outcome = await issuer.service.checkAuthorizationRequest(
      new URLSearchParams({
        response_type: 'code',
        client_id: 'mcp-app',
        redirect_uri: REDIRECT,
        code_challenge: challenge,
        code_challenge_method: 'S256',
        scope: 'admin',
      }),
    );
    assert.equal(outcome.ok ? 'ok' : outcome.error.error, 'invalid_scope');
  });
});

describe('codes bound to a DPoP key (dpop_jkt, RFC 9449 §10)', () => {
  const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;
  const thief = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const thiefJwk = thief.publicKey.export({ format: 'jwk' }) as JWK;
  let jkt: string;
  before(async () => {
    jkt = await calculateJwkThumbprint(holderJwk);
  });

  /** A token-endpoint DPoP proof signed by `key` (the service's clock: tests move it). */
  const proof = (key: KeyObject = holder.privateKey, jwk: JWK = holderJwk) =>
    new SignJWT({ htm: 'POST', htu: `${issuer.url}/oauth2/token`, iat: now, jti: crypto.randomUUID() })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk } as never)
      .sign(key);

  it('redeems with a proof of the bound key: a DPoP token bound to it (cnf.jkt), and a refresh token bound to it too', async () => {
    const { code, verifier } = await codeFor({ dpopJkt: jkt });
    assert.equal((await issuer.store.getAuthorizationCode(sha256(code)))?.jkt, jkt, 'the code is stored with its key');
    const res = await redeem({ code, code_verifier: verifier }, { dpop: await proof() });
    const body = (await res.json()) as Record<string, string>;
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.token_type, 'DPoP');
    assert.deepEqual(decodeJwt(body.access_token as string).cnf, { jkt });
    assert.equal((await issuer.store.getRefreshToken(sha256(body.refresh_token as string)))?.jkt, jkt);
    const refreshed = await issuer.post(
      '/oauth2/token',
      { grant_type: 'refresh_token', refresh_token: body.refresh_token as string, client_id: 'mcp-app' },
      { dpop: await proof() },
    );
    const r = (await refreshed.json()) as Record<string, string>;
    assert.equal(refreshed.status, 200, JSON.stringify(r));
    assert.deepEqual(decodeJwt(r.access_token as string).cnf, { jkt });
  });

  it('bound code stolen with its verifier, redeemed without a DPoP proof (a bearer token for it): invalid_grant, and the code is not spent', async () => {
    const { code, verifier } = await codeFor({ dpopJkt: jkt });
    await expectError(await redeem({ code, code_verifier: verifier }), 400, 'invalid_grant');
    assert.equal(await lastDenial(), 'code_dpop_key_mismatch');
    const res = await redeem({ code, code_verifier: verifier }, { dpop: await proof() });
    assert.equal(res.status, 200, await res.text());
  });

  it('bound code stolen with its verifier, redeemed with a proof of another key: invalid_grant, and the code is not spent', async () => {
    const { code, verifier } = await codeFor({ dpopJkt: jkt });
    await expectError(
      await redeem({ code, code_verifier: verifier }, { dpop: await proof(thief.privateKey, thiefJwk) }),
      400,
      'invalid_grant',
    );
    assert.equal(await lastDenial(), 'code_dpop_key_mismatch');
    const res = await redeem({ code, code_verifier: verifier }, { dpop: await proof() });
    assert.equal(res.status, 200, await res.text());
  });

  it('redeemed bound code replayed without its key: refused, and the grant issued from it is not revoked', async () => {
    const { code, verifier } = await codeFor({ dpopJkt: jkt });
    const first = (await (await redeem({ code, code_verifier: verifier }, { dpop: await proof() })).json()) as Record<string, string>;
    const grantId = decodeJwt(first.access_token as string).grant_id as string;
    await expectError(
      await redeem({ code, code_verifier: verifier }, { dpop: await proof(thief.privateKey, thiefJwk) }),
      400,
      'invalid_grant',
    );
    assert.equal(await lastDenial(), 'code_dpop_key_mismatch');
    await expectError(await redeem({ code, code_verifier: verifier }), 400, 'invalid_grant');
    assert.equal(await lastDenial(), 'code_dpop_key_mismatch');
    assert.equal((await issuer.store.getGrant(grantId))?.revokedAt, null);
    // The holder of the key presenting it again is a reuse, and revokes.
    await expectError(await redeem({ code, code_verifier: verifier }, { dpop: await proof() }), 400, 'invalid_grant');
    assert.equal(await lastDenial(), 'authorization_code_reused');
    assert.equal((await issuer.store.getGrant(grantId))?.revokedReason, 'authorization_code_reused');
  });

  it('a code without dpop_jkt is unbound, as before: it redeems with no proof (Bearer) or with a proof of any key (bound to that key)', async () => {
    const plain = await codeFor();
    assert.equal((await issuer.store.getAuthorizationCode(sha256(plain.code)))?.jkt, null);
    const bearerRes = (await (await redeem({ code: plain.code, code_verifier: plain.verifier })).json()) as Record<string, string>;
    assert.equal(bearerRes.token_type, 'Bearer');
    const other = await codeFor();
    const res = await redeem({ code: other.code, code_verifier: other.verifier }, { dpop: await proof(thief.privateKey, thiefJwk) });
    const body = (await res.json()) as Record<string, string>;
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.deepEqual(decodeJwt(body.access_token as string).cnf, { jkt: await calculateJwkThumbprint(thiefJwk) });
  });

  it('malformed dpop_jkt (not a 43-character base64url SHA-256 thumbprint): refused at the authorization request, back to the client', async () => {
    const bad = [
      jkt.slice(1),
      `${jkt}A`,
      `${jkt.slice(0, 42)}=`,
      `${jkt.slice(0, 41)}+/`,
      `${jkt.slice(0, 42)}B`, // 43 characters, but not the encoding of 32 bytes (the last one's low bits set)
      'not-a-thumbprint',
      jkt.replace(/^./, '.'),
    ];
    for (const value of bad) {
      const { challenge } = pkcePair();
      const params = new URLSearchParams({
        response_type: 'code',
        client_id: 'mcp-app',
        redirect_uri: REDIRECT,
        code_challenge: challenge,
        code_challenge_method: 'S256',
        dpop_jkt: value,
      });
      const outcome = await issuer.service.checkAuthorizationRequest(params);
      assert.equal(outcome.ok, false, value);
      if (outcome.ok) continue;
      assert.equal(outcome.error.code, 'authorize_dpop_jkt_invalid', value);
      assert.equal(outcome.error.error, 'invalid_request');
      assert.equal(outcome.redirect?.uri, REDIRECT, 'sent back to the client');
    }
  });

  it('dpop_jkt repeated (two keys, which one binds?): refused as a repeated parameter', async () => {
    const { challenge } = pkcePair();
    const params = new URLSearchParams({
      response_type: 'code',
      client_id: 'mcp-app',
      redirect_uri: REDIRECT,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      dpop_jkt: jkt,
    });
    params.append('dpop_jkt', await calculateJwkThumbprint(thiefJwk));
    const outcome = await issuer.service.checkAuthorizationRequest(params);
    assert.equal(outcome.ok ? 'ok' : outcome.error.code, 'request_parameter_repeated');
  });
});

describe('public clients', () => {
  it('public client trying client_credentials: refused with unauthorized_client', async () => {
    const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials', client_id: 'mcp-app' });
    await expectError(res, 400, 'unauthorized_client');
    assert.equal(await lastDenial(), 'client_public_grant_not_allowed');
  });

  it('cannot be registered for client_credentials or token exchange, nor for the code grant without a redirect URI', async () => {
    const base = { public: true, scopes: [], audiences: [API], redirectUris: [REDIRECT] };
    await assert.rejects(issuer.service.registerClient({ ...base, id: 'p1', grantTypes: ['client_credentials'] }), ClientInputError);
    await assert.rejects(
      issuer.service.registerClient({ ...base, id: 'p2', grantTypes: ['authorization_code'], redirectUris: [] }),
      /needs at least one redirect URI/,
    );
    await assert.rejects(
      issuer.service.registerClient({ ...base, id: 'p3', grantTypes: ['authorization_code'], redirectUris: ['http://evil.test/cb'] }),
      /must be https/,
    );
  });

  it('may not introspect (a public client proves nothing)', async () => {
    await expectError(await issuer.post('/oauth2/introspect', { token: 'x', client_id: 'mcp-app' }), 401, 'invalid_client');
  });
});

describe('secrecy', () => {
  it('no code, verifier, access or refresh token in any audit event or error body', async () => {
    const { code, verifier } = await codeFor();
    const ok = (await (await redeem({ code, code_verifier: verifier })).json()) as Record<string, string>;
    const bodies = [
      await (await redeem({ code, code_verifier: verifier })).text(),
      await (await redeem({ code: `${code}x`, code_verifier: verifier })).text(),
    ];
    await issuer.service.audit.flush();
    const audit = JSON.stringify(await issuer.store.queryAudit({ limit: 10_000 }));
    for (const secret of [code, verifier, ok.access_token as string, ok.refresh_token as string]) {
      assert.equal(audit.includes(secret), false);
      for (const b of bodies) assert.equal(b.includes(secret), false);
    }
  });
});

describe('authorization codes outstanding at a revocation', () => {
  it('a code approved before `revoke --subject` and redeemed after it: invalid_grant, no new grant for the revoked person', async () => {
    const subject = 'revoked-before-redeem@example.com';
    const { code, verifier } = await codeFor({ subject });
    const revoked = await issuer.service.revokeGrants({ subject }, 'offboarded');
    assert.deepEqual(revoked, [], 'the person held no grant yet: only the code');
    await expectError(await redeem({ code, code_verifier: verifier }), 400, 'invalid_grant');
    const grants = (await issuer.store.queryAudit({ subject, limit: 100 })).filter((e) => e.kind === 'token.issued');
    assert.deepEqual(grants, [], 'nothing issued to the revoked person');
  });

  it('a code approved before `revoke --client` and redeemed after it: invalid_grant; a code approved after it redeems', async () => {
    const subject = 'client-revoked-before-redeem@example.com';
    const before = await codeFor({ subject, client: 'other-app' });
    await issuer.service.revokeGrants({ clientId: 'other-app' }, 'compromised');
    const redeemOther = (form: Record<string, string>) => redeem({ client_id: 'other-app', ...form });
    await expectError(await redeemOther({ code: before.code, code_verifier: before.verifier }), 400, 'invalid_grant');
    const after = await codeFor({ subject, client: 'other-app' });
    assert.equal((await redeemOther({ code: after.code, code_verifier: after.verifier })).status, 200, 'a new approval is new authority');
  });
});

describe('a subject revoked on another instance', () => {
  it('attack: a login session the revocation ended approves a code on an instance that has not read it yet: the redemption is invalid_grant and begins no grant; a session begun after it redeems', async () => {
    let t = Math.floor(Date.now() / 1000);
    const clock = () => t * 1000;
    // This instance reads other processes' revocations only this often: never within the test.
    const config = { token_service: { sync_interval: '60s' } } as never;
    const a = await startIssuer({ config, clock });
    let b: RunningIssuer | undefined;
    try {
      await a.service.registerClient({
        id: 'mcp-app',
        public: true,
        scopes: ['api:read'],
        audiences: [API],
        grantTypes: ['authorization_code', 'refresh_token'],
        redirectUris: [REDIRECT],
      });
      const subject = 'offboarded@example.com';
      const approve = async (authenticatedAt: number) => {
        const { verifier, challenge } = pkcePair();
        const outcome = await a.service.checkAuthorizationRequest(
          new URLSearchParams({
            response_type: 'code',
            client_id: 'mcp-app',
            redirect_uri: REDIRECT,
            code_challenge: challenge,
            code_challenge_method: 'S256',
            scope: 'api:read',
            resource: API,
          }),
        );
        if (!outcome.ok) throw new Error(outcome.error.code);
        // As the authorize endpoint approves: the person's login session began at authenticatedAt.
        const code = await a.service.approveAuthorization(outcome.request, { subject, source: 'test', authenticatedAt, checkedAt: t });
        return { code, verifier };
      };
      const redeemAt = (c: { code: string; verifier: string }) =>
        a.post('/oauth2/token', {
          grant_type: 'authorization_code',
          redirect_uri: REDIRECT,
          client_id: 'mcp-app',
          code: c.code,
          code_verifier: c.verifier,
        });
      const signedIn = t - 100;
      // Another process on the same SQLite file (the same issuer) revokes the person, as `tessera
      // revoke --subject` does.
      b = await startIssuer({
        config: { token_service: { sync_interval: '60s', issuer: a.url } } as never,
        clock,
        dir: a.dir,
        master: a.master,
      });
      await b.service.revokeGrants({ subject }, 'offboarded', 'cli');
      assert.equal(a.service.revocations.size.subjects, 0, 'this instance has not read the revocation');
      // So its authorize endpoint lets the old session approve, and the code is created after the
      // revocation deleted the person's codes.
      const stale = await approve(signedIn);
      t += 1;
      await expectError(await redeemAt(stale), 400, 'invalid_grant');
      await a.service.audit.flush();
      const events = await a.store.queryAudit({ limit: 1000 });
      assert.equal(events.filter((e) => e.kind === 'token.denied').at(-1)?.reason, 'authorization_code_subject_revoked');
      assert.deepEqual(
        events.filter((e) => e.kind === 'token.issued'),
        [],
        'nothing issued to the revoked person',
      );
      assert.deepEqual(await b.service.revokeGrants({ subject }, 'offboarded', 'cli'), [], 'no grant was created');
      // Signed in again after the revocation: a new session, whose approval redeems.
      t += 1;
      const fresh = await approve(t);
      assert.equal((await redeemAt(fresh)).status, 200);
    } finally {
      await b?.close();
      await a.close();
    }
  });
});
