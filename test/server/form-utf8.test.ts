/**
 * RFC 6749 Appendix B: form bodies (and the authorization request's query) are UTF-8. A body
 * labelled with another charset, or whose bytes (raw or percent-decoded) are not UTF-8, is refused
 * with `request_not_utf8` rather than read with U+FFFD in place of the bytes, which would make two
 * different byte strings the same parameter value. JSON bodies (registration, admin API) likewise.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { answerConsent, authorizationConfig, openConsent, personHeaders } from '../helpers/authorize.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';

const API = 'https://api.test';
const REDIRECT = 'http://127.0.0.1:7777/callback';
const IAT = 'initial-access-token-0123456789abcdefghij';
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
  client = await issuer.addClient({ id: 'utf8-probe', scopes: ['api:read'], audiences: [API] });
  ops = await issuer.addClient({ id: 'utf8-ops', scopes: ['tessera:admin'], audiences: [issuer.url] });
  await issuer.service.registerClient({ id: 'utf8-app', public: true, scopes: ['api:read'], audiences: [API], redirectUris: [REDIRECT] });
});
after(() => issuer?.close());

const auth = () => ({ authorization: basic(client.id, client.secret) });

function post(path: string, body: string | Uint8Array, headers: Record<string, string> = {}, type = FORM): Promise<Response> {
  return fetch(`${issuer.url}${path}`, { method: 'POST', headers: { 'content-type': type, ...headers }, body, redirect: 'manual' });
}

/** A 400 invalid_request whose body is the fixed description only: nothing of the request echoed. */
async function expectNotUtf8(res: Response, ...absent: string[]): Promise<void> {
  const text = await res.text();
  assert.equal(res.status, 400, text);
  const json = JSON.parse(text) as { error: string; error_description: string };
  assert.equal(json.error, 'invalid_request');
  assert.deepEqual(Object.keys(json).sort(), ['error', 'error_description']);
  for (const s of absent) assert.ok(!text.includes(s), `the error body echoes ${s}`);
  assert.equal(res.headers.get('cache-control'), 'no-store');
}

async function lastDenied(kind: string): Promise<string | undefined> {
  await issuer.service.audit.flush();
  return (await issuer.store.queryAudit({ limit: 10_000 })).filter((e) => e.kind === kind).at(-1)?.reason;
}

describe('token endpoint: the charset label', () => {
  for (const label of [
    'charset=iso-8859-1',
    'charset="ISO-8859-1"',
    'Charset=Latin1',
    'charset=utf-16',
    'charset=utf-8; charset=iso-8859-1',
  ]) {
    it(`a body labelled ${label} (read as UTF-8 whatever it says): refused, audited as request_not_utf8`, async () => {
      const res = await post('/oauth2/token', 'grant_type=client_credentials&scope=api%3Aread', auth(), `${FORM}; ${label}`);
      await expectNotUtf8(res);
      assert.equal(await lastDenied('token.denied'), 'request_not_utf8');
    });
  }

  for (const label of ['charset="UTF-8"', 'charset=utf-8', 'CHARSET=Utf-8']) {
    it(`a body labelled ${label}: accepted`, async () => {
      const res = await post('/oauth2/token', 'grant_type=client_credentials&scope=api%3Aread', auth(), `${FORM}; ${label}`);
      assert.equal(res.status, 200, await res.text());
    });
  }

  it('a charset label hidden behind a malformed parameter (unterminated quote): refused, not guessed at', async () => {
    const res = await post('/oauth2/token', 'grant_type=client_credentials', auth(), `${FORM}; x="a;charset=latin1`);
    await expectNotUtf8(res);
  });
});

describe('token endpoint: bytes that are not UTF-8', () => {
  it('%FF in client_id (client_secret_post): refused with invalid_request, not read as U+FFFD, secret not echoed', async () => {
    const res = await post('/oauth2/token', `grant_type=client_credentials&client_id=utf8-probe%FF&client_secret=${client.secret}`);
    await expectNotUtf8(res, client.secret, '%FF', 'utf8-probe');
    assert.equal(await lastDenied('token.denied'), 'request_not_utf8');
  });

  it('%FF in scope: refused with invalid_request, audited as request_not_utf8', async () => {
    const res = await post('/oauth2/token', 'grant_type=client_credentials&scope=api%3Aread%FF', auth());
    await expectNotUtf8(res, '%FF');
    assert.equal(await lastDenied('token.denied'), 'request_not_utf8');
  });

  for (const [name, bytes] of [
    ['a truncated sequence %C3%28', '%C3%28'],
    ['an overlong "/" %C0%AF', '%C0%AF'],
    ['a UTF-16 surrogate %ED%A0%80', '%ED%A0%80'],
    ['a lone lead byte at the end of a value %E2%82', '%E2%82'],
  ] as const) {
    it(`${name} in scope: refused with invalid_request`, async () => {
      await expectNotUtf8(await post('/oauth2/token', `grant_type=client_credentials&scope=${bytes}`, auth()));
      assert.equal(await lastDenied('token.denied'), 'request_not_utf8');
    });
  }

  it('a raw 0xFF byte in the body (not percent-encoded): refused', async () => {
    const body = Buffer.concat([Buffer.from('grant_type=client_credentials&scope=api'), Buffer.from([0xff])]);
    await expectNotUtf8(await post('/oauth2/token', body, auth()));
    assert.equal(await lastDenied('token.denied'), 'request_not_utf8');
  });

  it('a raw lead byte 0xC3 completed by a percent-encoded %A9 (neither half UTF-8 alone): refused', async () => {
    const body = Buffer.concat([Buffer.from('grant_type=client_credentials&scope=caf'), Buffer.from([0xc3]), Buffer.from('%A9')]);
    await expectNotUtf8(await post('/oauth2/token', body, auth()));
  });

  it('a literal %EF%BF%BD (a real U+FFFD, valid UTF-8) is not refused for being non-UTF-8', async () => {
    const res = await post('/oauth2/token', 'grant_type=client_credentials&scope=%EF%BF%BD', auth());
    assert.notEqual(await lastDenied('token.denied'), 'request_not_utf8');
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_scope');
  });

  it('valid non-ASCII UTF-8, percent-encoded (%C3%A9) or raw: not refused for being non-UTF-8 (the scope check answers)', async () => {
    for (const body of ['grant_type=client_credentials&scope=caf%C3%A9', Buffer.from('grant_type=client_credentials&scope=caf\u00e9')]) {
      const res = await post('/oauth2/token', body, auth());
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_scope');
      assert.equal(await lastDenied('token.denied'), 'scope_malformed');
    }
  });
});

describe('revocation and introspection', () => {
  for (const path of ['/oauth2/revoke', '/oauth2/introspect']) {
    it(`${path}: %FF in token refused with invalid_request`, async () => {
      await expectNotUtf8(await post(path, 'token=abc%FF', auth()), '%FF', 'abc');
    });

    it(`${path}: a body labelled charset=iso-8859-1 refused`, async () => {
      await expectNotUtf8(await post(path, 'token=abc', auth(), `${FORM}; charset=iso-8859-1`));
    });
  }
});

describe('authorization endpoint', () => {
  const authorizeUrl = (extra = '') =>
    `${issuer.url}/oauth2/authorize?${new URLSearchParams({
      response_type: 'code',
      client_id: 'utf8-app',
      redirect_uri: REDIRECT,
      code_challenge: pkcePair().challenge,
      code_challenge_method: 'S256',
      scope: 'api:read',
      resource: API,
    })}${extra}`;

  async function expectPage(res: Response): Promise<string> {
    const html = await res.text();
    assert.equal(res.status, 400, html);
    assert.equal(res.headers.get('location'), null, 'never redirected');
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    return html;
  }

  it('consent form with %FF in a field: refused with a page, audited as request_not_utf8', async () => {
    const { fields } = await openConsent(authorizeUrl());
    const body = `${new URLSearchParams({ ...fields, decision: 'approve' })}%FF`;
    const res = await fetch(`${issuer.url}/oauth2/authorize`, {
      method: 'POST',
      headers: { ...personHeaders(), 'content-type': FORM },
      body,
      redirect: 'manual',
    });
    const html = await expectPage(res);
    assert.ok(!html.includes(fields.csrf), 'the page echoes the form');
    assert.equal(await lastDenied('authorization.denied'), 'request_not_utf8');
  });

  it('consent form labelled charset=iso-8859-1: refused with a page', async () => {
    const { fields } = await openConsent(authorizeUrl());
    const res = await fetch(`${issuer.url}/oauth2/authorize`, {
      method: 'POST',
      headers: { ...personHeaders(), 'content-type': `${FORM}; charset=iso-8859-1` },
      body: new URLSearchParams({ ...fields, decision: 'approve' }).toString(),
      redirect: 'manual',
    });
    await expectPage(res);
    assert.equal(await lastDenied('authorization.denied'), 'request_not_utf8');
  });

  it('an authorization request with %FF in state (would round-trip as U+FFFD): refused with a page, never redirected', async () => {
    const res = await fetch(authorizeUrl('&state=abc%FF'), { headers: personHeaders(), redirect: 'manual' });
    await expectPage(res);
    assert.equal(await lastDenied('authorization.denied'), 'request_not_utf8');
  });

  it('the consent form still works with a valid UTF-8 state', async () => {
    const { fields } = await openConsent(authorizeUrl('&state=caf%C3%A9'));
    const res = await answerConsent(`${issuer.url}/oauth2/authorize`, { ...fields, decision: 'approve' });
    assert.equal(res.status, 303, await res.text());
    assert.equal(new URL(res.headers.get('location') as string).searchParams.get('state'), 'caf\u00e9');
  });
});

describe('JSON bodies: registration and the admin API', () => {
  const json = (text: string, invalid: number[] = []) => Buffer.concat([Buffer.from(text), Buffer.from(invalid)]);

  it('registration: a JSON body holding a raw 0xFF byte in a string: refused as invalid metadata, audited', async () => {
    const body = Buffer.concat([
      Buffer.from('{"client_name":"app'),
      Buffer.from([0xff]),
      Buffer.from('","redirect_uris":["http://127.0.0.1:1/cb"],"token_endpoint_auth_method":"none"}'),
    ]);
    const res = await post('/oauth2/register', body, { authorization: `Bearer ${IAT}` }, 'application/json');
    const text = await res.text();
    assert.equal(res.status, 400, text);
    assert.equal((JSON.parse(text) as { error: string }).error, 'invalid_client_metadata');
    assert.equal(await lastDenied('client.registration_denied'), 'registration_metadata_invalid');
  });

  it('registration: a JSON body labelled charset=iso-8859-1: refused', async () => {
    const res = await post(
      '/oauth2/register',
      '{"redirect_uris":["http://127.0.0.1:1/cb"],"token_endpoint_auth_method":"none"}',
      { authorization: `Bearer ${IAT}` },
      'application/json; charset=iso-8859-1',
    );
    await expectNotUtf8(res);
  });

  it('admin revoke: a subject holding a raw 0xFF byte (would revoke the grants of "\\uFFFD"): refused, nothing revoked', async () => {
    const tok = await issuer.post(
      '/oauth2/token',
      { grant_type: 'client_credentials', audience: issuer.url },
      { authorization: basic(ops.id, ops.secret) },
    );
    const token = ((await tok.json()) as { access_token: string }).access_token;
    const res = await post(
      '/oauth2/admin/revoke',
      json('{"subject":"alice', [0xff, 0x22, 0x7d]),
      { authorization: `Bearer ${token}` },
      'application/json',
    );
    await expectNotUtf8(res);
  });
});
