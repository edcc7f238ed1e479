/**
 * A malformed argument to `verify`, `authenticate`, `verifyToken` or an adapter is the caller's
 * programming error, not a refused request: it rejects with one typed `ArgumentError`
 * (`ERR_INVALID_ARGUMENT`, naming the argument), never a code-less TypeError from deep inside, and
 * never a deny result with a misleading reason (`authorization: 5` was reported as
 * `request_multiple_authorization`). Its message names the kind of value, never the value.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, it } from 'node:test';
import { nodeAuth } from '../../../src/adapters/node.ts';
import { ArgumentError } from '../../../src/core/errors.ts';
import type { VerifyRequest } from '../../../src/core/verify/extract.ts';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';

const key = makeKey('ES256');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  scopes: { 'api:read': {} },
  rules: [{ methods: ['GET'], path: '/**', scopes: ['api:read'] }],
  dpop: { mode: 'allowed' },
});

/** Assert `promise` rejects with an ArgumentError for `argument` whose message holds no secret. */
async function rejectsWithArgumentError(promise: Promise<unknown>, argument: string, secret?: string): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof ArgumentError, `not an ArgumentError: ${String(e)}`);
    assert.ok(e instanceof TypeError);
    assert.equal(e.name, 'ArgumentError');
    assert.equal(e.code, 'ERR_INVALID_ARGUMENT');
    assert.equal(e.argument, argument);
    assert.match(e.message, new RegExp(argument.replace(/\./g, '\\.')));
    if (secret !== undefined) assert.ok(!e.message.includes(secret), 'the message repeats the token');
    return true;
  });
}

const malformed = (r: unknown) => r as VerifyRequest;

describe('defect: verify() threw code-less TypeErrors on a malformed request', () => {
  it('a request without headers', async () => {
    await rejectsWithArgumentError(verifier.verify(malformed({ method: 'GET', url: '/x' })), 'request.headers');
    await rejectsWithArgumentError(verifier.authenticate(malformed({ method: 'GET', url: '/x' })), 'request.headers');
  });

  it('a url that is not a string', async () => {
    const token = await sign(key, claims());
    await rejectsWithArgumentError(verifier.verify(malformed({ ...bearer(token), url: 5 })), 'request.url', token);
  });

  it('a method that is not a string, a path that is not a string, a body of another kind', async () => {
    const token = await sign(key, claims());
    await rejectsWithArgumentError(verifier.verify(malformed({ ...bearer(token), method: undefined })), 'request.method', token);
    await rejectsWithArgumentError(verifier.verify(malformed({ ...bearer(token), path: 7 })), 'request.path', token);
    await rejectsWithArgumentError(verifier.verify(malformed({ ...bearer(token), body: { access_token: token } })), 'request.body', token);
  });

  it('no request at all, or not an object', async () => {
    await rejectsWithArgumentError(verifier.verify(malformed(undefined)), 'request');
    await rejectsWithArgumentError(verifier.verify(malformed('GET /x')), 'request');
  });

  it('an authorization header value that is an array holding a non-string', async () => {
    const token = await sign(key, claims());
    await rejectsWithArgumentError(
      verifier.verify(malformed({ method: 'GET', url: '/x', headers: { authorization: [5] } })),
      'request.headers.authorization',
    );
    await rejectsWithArgumentError(
      verifier.verify(malformed({ method: 'GET', url: '/x', headers: { authorization: [`Bearer ${token}`, null] } })),
      'request.headers.authorization',
      token,
    );
  });

  it('authorization: 5 (a number, which node:http never produces) is an ArgumentError, not request_multiple_authorization', async () => {
    await rejectsWithArgumentError(
      verifier.verify(malformed({ method: 'GET', url: '/x', headers: { authorization: 5 } })),
      'request.headers.authorization',
    );
  });

  it('a DPoP header value that is not a string', async () => {
    const token = await sign(key, claims({ cnf: { jkt: 'x'.repeat(43) } }));
    await rejectsWithArgumentError(
      verifier.verify(malformed({ method: 'GET', url: 'https://api.test/x', headers: { authorization: `DPoP ${token}`, dpop: 1 } })),
      'request.headers.dpop',
      token,
    );
  });

  it('still answers a well-formed request, and an empty header list, with a result', async () => {
    const token = await sign(key, claims());
    assert.equal((await verifier.verify(bearer(token))).ok, true);
    const none = await verifier.verify({ method: 'GET', url: '/x', headers: { authorization: [] } });
    assert.equal(!none.ok && none.error.code, 'credentials_missing');
    const two = await verifier.verify({ method: 'GET', url: '/x', headers: { authorization: ['Bearer a', 'Bearer b'] } });
    assert.equal(!two.ok && two.error.code, 'request_multiple_authorization');
  });
});

describe('defect: verifyToken() threw a code-less TypeError on a token that is not a string', () => {
  it('undefined, a number, an object', async () => {
    for (const token of [undefined, 5, { token: 'x' }]) {
      await rejectsWithArgumentError(verifier.verifyToken(token as unknown as string), 'token');
    }
  });
});

describe('defect: an adapter given something that is not a node:http request threw a code-less TypeError', () => {
  it('nodeAuth(req) with a req without headers', async () => {
    const auth = nodeAuth(verifier, { publicUrl: 'https://api.test' });
    const res = {} as ServerResponse;
    await rejectsWithArgumentError(auth({} as IncomingMessage, res), 'req');
    await rejectsWithArgumentError(auth(undefined as unknown as IncomingMessage, res), 'req');
  });
});
