/**
 * The verifier defers the RFC 6750 token68 check of an Authorization header token until after its
 * result-cache lookup (a cached token's syntax is known) and folds it into the compact-JWS check.
 * These tests pin that the answers are exactly those of checking first.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TesseraError } from '../../../src/core/errors.ts';
import { extractToken, extractTokenDeferred, isToken68, type VerifyRequest } from '../../../src/core/verify/extract.ts';
import { createVerifier } from '../../../src/verifier.ts';
import { AUDIENCE, bearer, claims, ISSUER, makeKey, sign } from '../../helpers/tokens.ts';

const key = makeKey('ES256');

function request(authorization: string | undefined, url = 'https://api.test/x', extra: Partial<VerifyRequest> = {}): VerifyRequest {
  return { method: 'POST', url, headers: authorization === undefined ? {} : { authorization }, ...extra };
}

/** The outcome of extractToken, and of the deferred extraction followed by the caller's check. */
function outcomes(req: VerifyRequest, transport: { formBody: boolean; query: boolean }): [string, string] {
  const eager = extractToken(req, transport);
  const deferred = extractTokenDeferred(req, transport);
  const show = (r: ReturnType<typeof extractToken>) => (r instanceof TesseraError ? r.code : `${r.method}:${r.scheme}:${r.token}`);
  const checked =
    deferred instanceof TesseraError || !deferred.unchecked || isToken68(deferred.token)
      ? deferred
      : new TesseraError('request_malformed_authorization');
  return [show(eager), show(checked)];
}

describe('deferred token68 check', () => {
  it('gives extractToken’s answer for every combination of header, query and form tokens', () => {
    const headers = [undefined, 'Bearer abc.def.ghi', 'Bearer a!b', 'bearer  x~y+z/==', 'DPoP a b', 'Bearer ', 'Basic abc', 'Bearer a=b'];
    const urls = [
      'https://api.test/x',
      'https://api.test/x?access_token=q',
      'https://api.test/x?access_token=',
      '/x?access_token=1&access_token=2',
    ];
    const bodies = [undefined, 'access_token=f', 'access_token=', 'a=1'];
    let cases = 0;
    for (const h of headers) {
      for (const url of urls) {
        for (const body of bodies) {
          for (const transport of [
            { formBody: false, query: false },
            { formBody: true, query: true },
          ]) {
            const req = request(
              h,
              url,
              body === undefined
                ? {}
                : { body, headers: { ...(h ? { authorization: h } : {}), 'content-type': 'application/x-www-form-urlencoded' } },
            );
            const [eager, deferred] = outcomes(req, transport);
            assert.equal(deferred, eager, `${h} ${url} ${body} ${JSON.stringify(transport)}`);
            cases++;
          }
        }
      }
    }
    assert.equal(cases, headers.length * urls.length * bodies.length * 2);
  });

  it('refuses a malformed Authorization token before the JWT checks, and before its size', async () => {
    const verifier = createVerifier({
      issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
    });
    for (const token of ['a!b', 'abc.d"f.ghi', `${'a'.repeat(9000)}!`]) {
      const result = await verifier.verify(request(`Bearer ${token}`));
      assert.ok(!result.ok);
      assert.equal(result.error.code, 'request_malformed_authorization');
      assert.equal(result.error.status, 400);
    }
    const large = await verifier.verify(request(`Bearer ${'a'.repeat(9000)}`));
    assert.ok(!large.ok);
    assert.equal(large.error.code, 'token_too_large');
  });

  it('serves a cached JWT from the header without a second syntax check, and still answers right', async () => {
    const verifier = createVerifier({
      issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
    });
    const token = await sign(key, claims());
    assert.equal((await verifier.verifyToken(token)).ok, true);
    assert.equal((await verifier.verifyToken(token)).ok, true); // admitted to the cache on its second use
    const hits = verifier.stats.cacheHits;
    assert.equal((await verifier.verify(bearer(token))).ok, true);
    assert.equal(verifier.stats.cacheHits, hits + 1);
  });

  it('does not let a cached opaque token skip the header syntax check it never passed', async () => {
    const opaque = 'opaque!token~with*stars';
    const verifier = createVerifier(
      {
        introspection: { endpoint: 'https://as.test/introspect', client_id: 'rs', client_secret: 'secret' },
        transport: { form_body: true },
      },
      { introspector: { introspect: async () => ({ active: true, sub: 'u', exp: Math.floor(Date.now() / 1000) + 60 }) } },
    );
    const viaForm = await verifier.verify({
      method: 'POST',
      url: 'https://api.test/x',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `access_token=${encodeURIComponent(opaque)}`,
    });
    assert.equal(viaForm.ok, true);
    const hits = verifier.stats.cacheHits;
    const viaHeader = await verifier.verify(request(`Bearer ${opaque}`));
    assert.ok(!viaHeader.ok);
    assert.equal(viaHeader.error.code, 'request_malformed_authorization');
    assert.equal(verifier.stats.cacheHits, hits);
  });
});
