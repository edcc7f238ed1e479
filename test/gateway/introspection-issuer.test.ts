/**
 * `auth: introspection` and the issuer of the principal: an RFC 7662 answer's `iss` is the
 * endpoint's word. An answer naming another issuer than `introspection.issuer` (by default the
 * endpoint's origin) is refused 401 `token_issuer_unknown`, as Ory Oathkeeper's
 * `trusted_issuers` refuses it: the endpoint of one authorization server would otherwise claim
 * another's identity space (a trusted JWT issuer's, the token service's own), which revocation
 * by subject or client, rate-limit keys, the identity headers and the audit trail all key on. An
 * answer without `iss` names the configured issuer.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TesseraConfigInput } from '../../src/config/schema.ts';
import type { UpstreamTokenIssuer } from '../../src/core/ports.ts';
import { type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { baseConfig, ISSUER, requestEvents, startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

const AS = 'https://as.test';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const UPSTREAM_AUD = 'https://upstream.internal';

/** The endpoint's answer for each opaque token: the token names the answer's `iss`. */
let answers: Record<string, Record<string, unknown>> = {};

describe('gateway: an introspection answer’s iss against introspection.issuer', () => {
  let endpoint: Upstream;
  let upstream: Upstream;
  let tessera: RunningIssuer;
  let mints = 0;
  let gw: TestGateway;
  let unconfigured: TestGateway;

  const routes = () => [
    {
      id: 'api',
      match: { path_prefix: '/api' },
      upstream: { url: upstream.url },
      auth: 'introspection' as const,
      rules: [{ scopes: ['api:read'] }],
      identity_headers: ['subject', 'issuer', 'client'] as const,
    },
    {
      id: 'exch',
      match: { path_prefix: '/exch' },
      upstream: { url: upstream.url, credential: { type: 'exchange' as const, audience: UPSTREAM_AUD, max_ttl: '5m' } },
      auth: 'introspection' as const,
      rules: [{ scopes: ['api:read'] }],
    },
  ];

  const config = (issuer: string | undefined): TesseraConfigInput => ({
    ...baseConfig(),
    introspection: {
      endpoint: `${endpoint.url}/introspect`,
      client_id: 'gw',
      client_secret: 'secret',
      cache_max_ttl: '0s',
      ...(issuer !== undefined ? { issuer } : {}),
    },
    gateway: { watch_config: false, routes: routes() as never },
  });

  before(async () => {
    endpoint = await startUpstream((_req, res, body) => {
      const t = new URLSearchParams(body).get('token') ?? '';
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answers[t] ?? { active: false }));
    });
    upstream = await startUpstream();
    // A real token service: its issuer URL is one an answer could claim, and it mints the
    // upstream tokens of the `exch` route.
    tessera = await startIssuer();
    await tessera.addClient({ id: 'gateway', scopes: ['api:read'], audiences: [UPSTREAM_AUD], grantTypes: [TOKEN_EXCHANGE] });
    const real = tessera.service.upstreamIssuer('gateway');
    const counted: UpstreamTokenIssuer = {
      issueForUpstream: (request) => {
        mints++;
        return real.issueForUpstream(request);
      },
    };
    gw = await startGateway(config(AS), { upstreamTokenIssuer: counted });
    unconfigured = await startGateway(config(undefined), { upstreamTokenIssuer: counted });
    const now = Math.floor(Date.now() / 1000);
    const answer = (iss: string | undefined) => ({
      active: true,
      sub: 'alice',
      client_id: 'agent',
      scope: 'api:read',
      exp: now + 300,
      iat: now,
      ...(iss !== undefined ? { iss } : {}),
    });
    answers = {
      'opaque-as': answer(AS),
      'opaque-none': answer(undefined),
      'opaque-jwt-issuer': answer(ISSUER),
      'opaque-tessera': { ...answer(tessera.url), grant_id: 'g_unknown' },
      'opaque-as-slash': answer(`${AS}/`),
      'opaque-origin': answer(endpoint.url),
    };
  });
  after(async () => {
    await gw?.close();
    await unconfigured?.close();
    await endpoint?.close();
    await upstream?.close();
    await tessera?.close();
  });

  const call = (g: TestGateway, path: string, token: string) => fetch(`${g.url}${path}`, { headers: { authorization: `Bearer ${token}` } });

  it('an answer naming the configured issuer: 200, that issuer upstream and in the audit event', async () => {
    const res = await call(gw, '/api/x', 'opaque-as');
    await res.arrayBuffer();
    assert.equal(res.status, 200);
    const seen = upstream.seen.at(-1);
    assert.equal(seen?.headers['x-tessera-issuer'], AS);
    assert.equal(seen?.headers['x-tessera-subject'], 'alice');
    const event = (await requestEvents(gw)).at(-1);
    assert.equal(event?.reason, 'ok');
    assert.equal(event?.issuer, AS);
  });

  it('an answer without iss: 200, the configured issuer in the identity headers', async () => {
    const res = await call(gw, '/api/x', 'opaque-none');
    await res.arrayBuffer();
    assert.equal(res.status, 200);
    assert.equal(upstream.seen.at(-1)?.headers['x-tessera-issuer'], AS);
    assert.equal((await requestEvents(gw)).at(-1)?.issuer, AS);
  });

  for (const [name, token] of [
    ['a trusted JWT issuer', 'opaque-jwt-issuer'],
    ['the token service’s own issuer URL', 'opaque-tessera'],
    ['the configured issuer with a trailing slash', 'opaque-as-slash'],
    ['the endpoint’s origin, when an issuer is configured', 'opaque-origin'],
  ] as const) {
    it(`attack: an answer naming another issuer (${name}) is refused 401 token_issuer_unknown, audited, the upstream never reached`, async () => {
      for (const path of ['/api/x', '/exch/x']) {
        const seen = upstream.seen.length;
        const minted = mints;
        const res = await call(gw, path, token);
        await res.arrayBuffer();
        assert.equal(res.status, 401, path);
        assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer .*error="invalid_token"/);
        assert.equal(upstream.seen.length, seen, `${path}: the upstream was reached`);
        assert.equal(mints, minted, `${path}: an upstream token was minted`);
        const event = (await requestEvents(gw)).at(-1);
        assert.equal(event?.decision, 'deny');
        assert.equal(event?.reason, 'token_issuer_unknown');
        assert.equal(event?.issuer, undefined, 'the claimed issuer is not the principal’s');
        assert.equal(event?.subject, undefined);
      }
    });
  }

  it('the exchange route still mints for an answer naming the configured issuer', async () => {
    const minted = mints;
    const res = await call(gw, '/exch/x', 'opaque-as');
    await res.arrayBuffer();
    assert.equal(res.status, 200);
    assert.equal(mints, minted + 1);
  });

  describe('without introspection.issuer: the endpoint’s origin is the issuer', () => {
    it('an answer naming the endpoint’s origin, or none: 200, the origin upstream', async () => {
      for (const token of ['opaque-origin', 'opaque-none']) {
        const res = await call(unconfigured, '/api/x', token);
        await res.arrayBuffer();
        assert.equal(res.status, 200, token);
        assert.equal(upstream.seen.at(-1)?.headers['x-tessera-issuer'], endpoint.url, token);
      }
    });

    it('attack: an answer naming any other issuer (the token service’s, a trusted JWT issuer’s) is refused 401 token_issuer_unknown, the upstream never reached', async () => {
      for (const token of ['opaque-tessera', 'opaque-jwt-issuer', 'opaque-as']) {
        for (const path of ['/api/x', '/exch/x']) {
          const seen = upstream.seen.length;
          const minted = mints;
          const res = await call(unconfigured, path, token);
          await res.arrayBuffer();
          assert.equal(res.status, 401, `${token} ${path}`);
          assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
          assert.equal(upstream.seen.length, seen);
          assert.equal(mints, minted);
          assert.equal((await requestEvents(unconfigured)).at(-1)?.reason, 'token_issuer_unknown');
        }
      }
    });
  });
});
