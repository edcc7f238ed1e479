/**
 * RFC 6750 §2 transport attacks: ambiguous requests (two methods, two Authorization headers),
 * tokens in the URI query (leaked into logs, off by default), form-body tokens outside urlencoded
 * POSTs, empty and malformed credentials.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { VerifyRequest } from '../../../../src/core/verify/extract.ts';
import { createVerifier } from '../../../../src/verifier.ts';
import { AUDIENCE, ISSUER, makeKey, sign } from '../../../helpers/tokens.ts';
import { assertDenied, assertInvalidRequest } from '../../../helpers/verify.ts';

const key = makeKey('ES256');
const issuers = [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] } }];
const strict = createVerifier({ issuers, dpop: { mode: 'disabled' } });
const lenient = createVerifier({ issuers, transport: { query: true, form_body: true }, dpop: { mode: 'disabled' } });
const token = await sign(key);
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const URL_ = 'https://api.test/items/1';

const req = (init: Partial<VerifyRequest> & { headers?: VerifyRequest['headers'] }): VerifyRequest => ({
  method: 'GET',
  url: URL_,
  headers: {},
  ...init,
});

async function accepted(verifier: typeof strict, request: VerifyRequest): Promise<void> {
  const result = await verifier.verify(request);
  assert.equal(result.ok, true, result.ok ? '' : result.error.code);
}

const bareChallenge = { status: 401, code: 'credentials_missing', error: null, challenges: ['Bearer'] } as const;

describe('attack: two transport methods in one request', () => {
  it('rejects Authorization header + query token', async () => {
    const request = req({ url: `${URL_}?access_token=${token}`, headers: { authorization: `Bearer ${token}` } });
    assertInvalidRequest(await lenient.verify(request), lenient, 'request_multiple_methods');
  });

  it('rejects Authorization header + form-body token', async () => {
    const request = req({ method: 'POST', headers: { authorization: `Bearer ${token}`, ...FORM }, body: `access_token=${token}` });
    assertInvalidRequest(await lenient.verify(request), lenient, 'request_multiple_methods');
  });

  it('rejects query token + form-body token', async () => {
    const request = req({ method: 'POST', url: `${URL_}?access_token=${token}`, headers: FORM, body: `access_token=${token}` });
    assertInvalidRequest(await lenient.verify(request), lenient, 'request_multiple_methods');
  });

  it('rejects two access_token query parameters', async () => {
    const request = req({ url: `${URL_}?access_token=${token}&access_token=${token}` });
    assertInvalidRequest(await lenient.verify(request), lenient, 'request_multiple_methods');
  });

  it('rejects two access_token form parameters', async () => {
    const request = req({ method: 'POST', headers: FORM, body: `access_token=${token}&access_token=x` });
    assertInvalidRequest(await lenient.verify(request), lenient, 'request_multiple_methods');
  });

  it('rejects a header token + a query token whose name is percent-encoded', async () => {
    const request = req({ url: `${URL_}?access%5Ftoken=${token}`, headers: { authorization: `Bearer ${token}` } });
    assertInvalidRequest(await lenient.verify(request), lenient, 'request_multiple_methods');
  });

  it('rejects a header token + a form token whose name is percent-encoded', async () => {
    const request = req({ method: 'POST', headers: { authorization: `Bearer ${token}`, ...FORM }, body: `%61ccess_token=${token}` });
    assertInvalidRequest(await lenient.verify(request), lenient, 'request_multiple_methods');
  });
});

describe('attack: two Authorization headers', () => {
  it('rejects two Authorization headers (Node headersDistinct array)', async () => {
    const request = req({ headers: { authorization: [`Bearer ${token}`, `Bearer ${token}`] } });
    assertInvalidRequest(await strict.verify(request), strict, 'request_multiple_authorization');
  });

  it('rejects a Bearer and a Basic Authorization header together', async () => {
    const request = req({ headers: { authorization: ['Basic dXNlcjpwYXNz', `Bearer ${token}`] } });
    assertInvalidRequest(await strict.verify(request), strict, 'request_multiple_authorization');
  });

  it('rejects two Authorization headers joined by Web Headers', async () => {
    const headers = new Headers();
    headers.append('authorization', `Bearer ${token}`);
    headers.append('authorization', `Bearer ${token}`);
    assertInvalidRequest(await strict.verify(req({ headers })), strict, 'request_malformed_authorization');
  });

  it('accepts a one-element headersDistinct array', async () => {
    await accepted(strict, req({ headers: { authorization: [`Bearer ${token}`] } }));
  });
});

describe('attack: token in the URI query', () => {
  it('rejects a query token when query tokens are off (the default)', async () => {
    assertInvalidRequest(await strict.verify(req({ url: `${URL_}?access_token=${token}` })), strict, 'request_query_token_disabled');
  });

  it('rejects a query token whose parameter name is percent-encoded when query tokens are off', async () => {
    assertInvalidRequest(await strict.verify(req({ url: `${URL_}?a=1&access%5Ftoken=${token}` })), strict, 'request_query_token_disabled');
  });

  it('rejects a query token even next to a valid header token when query tokens are off', async () => {
    const request = req({ url: `${URL_}?access_token=${token}`, headers: { authorization: `Bearer ${token}` } });
    assertInvalidRequest(await strict.verify(request), strict, 'request_query_token_disabled');
  });

  it('accepts a query token when enabled, and only the access_token parameter', async () => {
    await accepted(lenient, req({ url: `${URL_}?x=1&access_token=${token}#frag` }));
    await accepted(strict, req({ url: `${URL_}?my_access_token_hint=1`, headers: { authorization: `Bearer ${token}` } }));
  });

  it('ignores access_token in the fragment', async () => {
    await accepted(strict, req({ url: `${URL_}?a=1#access_token=${token}`, headers: { authorization: `Bearer ${token}` } }));
  });
});

describe('attack: form-body token outside an urlencoded POST', () => {
  it('accepts a form-body token in an urlencoded POST when enabled', async () => {
    await accepted(lenient, req({ method: 'POST', headers: FORM, body: `a=1&access_token=${token}` }));
    await accepted(
      lenient,
      req({
        method: 'POST',
        headers: { 'content-type': 'Application/X-WWW-Form-Urlencoded; charset=UTF-8' },
        body: `access_token=${token}`,
      }),
    );
    await accepted(lenient, req({ method: 'POST', headers: FORM, body: new TextEncoder().encode(`access_token=${token}`) }));
  });

  it('ignores a form-body token when form tokens are off (the default)', async () => {
    assertDenied(await strict.verify(req({ method: 'POST', headers: FORM, body: `access_token=${token}` })), strict, bareChallenge);
  });

  it('rejects a form-body token in a GET', async () => {
    assertInvalidRequest(
      await lenient.verify(req({ method: 'GET', headers: FORM, body: `access_token=${token}` })),
      lenient,
      'request_form_token_invalid',
    );
  });

  for (const type of ['application/json', 'multipart/form-data; boundary=x', 'text/plain', undefined]) {
    it(`rejects a form-body token with content-type ${type ?? '(none)'}`, async () => {
      const headers = type ? { 'content-type': type } : {};
      assertInvalidRequest(
        await lenient.verify(req({ method: 'POST', headers, body: `access_token=${token}` })),
        lenient,
        'request_form_token_invalid',
      );
    });
  }
});

describe('attack: empty and malformed credentials', () => {
  for (const value of ['Bearer ', 'Bearer', 'bearer    ']) {
    it(`rejects the empty token ${JSON.stringify(value)}`, async () => {
      assertInvalidRequest(await strict.verify(req({ headers: { authorization: value } })), strict, 'request_empty_token');
    });
  }

  it('rejects an empty query or form token when enabled', async () => {
    assertInvalidRequest(await lenient.verify(req({ url: `${URL_}?access_token=` })), lenient, 'request_empty_token');
    assertInvalidRequest(
      await lenient.verify(req({ method: 'POST', headers: FORM, body: 'access_token=' })),
      lenient,
      'request_empty_token',
    );
  });

  for (const value of [
    `Bearer ${token} ${token}`,
    `Bearer ${token},x`,
    `Bearer "${token}"`,
    `Bearer ${token}=x`,
    'Bearer é',
    `Bearer ${token};`,
  ]) {
    it(`rejects the malformed Authorization ${JSON.stringify(value.replace(token, 'TOKEN'))}`, async () => {
      assertInvalidRequest(await strict.verify(req({ headers: { authorization: value } })), strict, 'request_malformed_authorization');
    });
  }

  it('accepts the scheme in any case', async () => {
    for (const scheme of ['bearer', 'BEARER', 'BeArEr']) await accepted(strict, req({ headers: { authorization: `${scheme} ${token}` } }));
  });

  it('answers a Basic Authorization header with a bare 401 challenge, without error=', async () => {
    assertDenied(await strict.verify(req({ headers: { authorization: 'Basic dXNlcjpwYXNz' } })), strict, bareChallenge);
  });

  it('answers a request without credentials with a bare 401 challenge', async () => {
    assertDenied(await strict.verify(req({})), strict, bareChallenge);
  });

  it('does not take a scheme that merely starts with Bearer', async () => {
    assertDenied(await strict.verify(req({ headers: { authorization: `Bearerx ${token}` } })), strict, bareChallenge);
  });
});
