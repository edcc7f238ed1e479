/**
 * `tessera gateway` alone in front of `tessera serve`: the subject's issuer. A token the token
 * service issued for another issuer's subject names that issuer in its RFC 9493 `sub_id`; a
 * gateway without the token service in its process verifies it by the token service's JWKS, and
 * believes that `sub_id` when `gateway.trust_sub_id` lists the token service: then the upstream's
 * `x-tessera-subject-issuer`, the per-subject rate limit and the audit event's `subject_issuer`
 * name the identity provider, as under `tessera serve`. Any other issuer's `sub_id` is its own claim.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import pino from 'pino';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import type { TesseraConfigInput } from '../../src/config/schema.ts';
import { TOKEN_EXCHANGE } from '../../src/issuer/service.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';
import { claims, makeKey, sign } from '../helpers/tokens.ts';
import { AUDIENCE, ISSUER, key, parse, requestEvents, startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

const IDP2 = 'https://partner-idp.test';
const idp2Key = makeKey('ES256', 'partner-1');

let dir: string;
let tessera: string;
let upstream: Upstream;
let running: RunningServer;
let brokerSecret: string;
const logStream = new Writable({ write: (_chunk, _encoding, done) => done() });
const savedMaster = process.env.TESSERA_MASTER_KEY;

before(async () => {
  delete process.env.TESSERA_MASTER_KEY;
  dir = mkdtempSync(join(tmpdir(), 'tessera-gateway-subject-issuer-'));
  const port = await freePort();
  tessera = `http://127.0.0.1:${port}`;
  upstream = await startUpstream();
  // The token service: it trusts the two identity providers for token exchange.
  writeFileSync(
    join(dir, 'tessera.yaml'),
    `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
issuers:
  - { issuer: ${ISSUER}, audiences: [${AUDIENCE}], jwks: { keys: [${JSON.stringify(key.jwk)}] } }
  - { issuer: ${IDP2}, audiences: [${AUDIENCE}], jwks: { keys: [${JSON.stringify(idp2Key.jwk)}] } }
scopes:
  api:read: {}
`,
  );
  await initialize({ config: join(dir, 'tessera.yaml') });
  running = await startServer({ config: join(dir, 'tessera.yaml'), logger: pino({ level: 'warn' }, logStream) });
  const broker = await running.service.registerClient({
    id: 'broker',
    scopes: ['api:read'],
    audiences: [`${tessera}/api`],
    grantTypes: [TOKEN_EXCHANGE],
  });
  brokerSecret = broker.secret as string;
});

after(async () => {
  await running?.close();
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
  if (savedMaster !== undefined) process.env.TESSERA_MASTER_KEY = savedMaster;
});

/** The standalone gateway: it trusts the token service (by its JWKS) and both identity providers. */
function gatewayConfig(trustSubId: readonly string[] | undefined): TesseraConfigInput {
  return {
    issuers: [
      { issuer: tessera, audiences: [`${tessera}/api`], jwks_uri: `${tessera}/.well-known/jwks.json`, token_type: 'at+jwt' },
      { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } },
      { issuer: IDP2, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [idp2Key.jwk] } },
    ],
    scopes: { 'api:read': {} },
    dpop: { mode: 'disabled' },
    gateway: {
      watch_config: false,
      ...(trustSubId !== undefined ? { trust_sub_id: [...trustSubId] } : {}),
      routes: [
        {
          id: 'whoami',
          match: { path_prefix: '/whoami' },
          upstream: { url: upstream.url },
          auth: 'jwt',
          rules: [{ scopes: ['api:read'] }],
          identity_headers: ['subject', 'issuer', 'subject_issuer'],
        },
        {
          id: 'limited',
          match: { path_prefix: '/limited' },
          upstream: { url: upstream.url },
          auth: 'jwt',
          rules: [{ scopes: ['api:read'] }],
          rate_limit: { key: 'subject', rate: 0.001, burst: 1 },
        },
      ],
    },
  } as TesseraConfigInput;
}

const idpToken = (over: Record<string, unknown> = {}, k = key) =>
  sign(k, claims({ iss: ISSUER, sub: 'alice', aud: AUDIENCE, scope: 'api:read', ...over }));

/** The broker exchanges an identity provider's token for one of the token service. */
async function exchange(subjectToken: string): Promise<string> {
  const res = await fetch(`${tessera}/oauth2/token`, {
    method: 'POST',
    headers: { authorization: basic('broker', brokerSecret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: `${tessera}/api`,
    }),
  });
  const body = (await res.json()) as { access_token: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.access_token;
}

/** Calls /whoami: what the upstream received and the request's audit event. */
async function whoami(gw: TestGateway, token: string) {
  const res = await fetch(`${gw.url}/whoami`, {
    headers: { authorization: `Bearer ${token}`, 'x-tessera-subject-issuer': 'https://evil.test' },
  });
  assert.equal(res.status, 200, await res.clone().text());
  await res.arrayBuffer();
  const events = await requestEvents(gw);
  return { headers: upstream.seen.at(-1)?.headers as Record<string, unknown>, event: events.at(-1) as unknown as Record<string, unknown> };
}

async function status(gw: TestGateway, token: string): Promise<number> {
  const res = await fetch(`${gw.url}/limited`, { headers: { authorization: `Bearer ${token}` } });
  await res.arrayBuffer();
  return res.status;
}

describe('tessera gateway alone: the subject’s issuer of a token service’s tokens', () => {
  it('names the IdP upstream and in the audit event for a token of a token service listed in trust_sub_id', async () => {
    const gw = await startGateway(gatewayConfig([tessera]));
    try {
      const t = await exchange(await idpToken());
      assert.deepEqual(decodeJwt(t).sub_id, { format: 'iss_sub', iss: ISSUER, sub: 'alice' });
      const { headers, event } = await whoami(gw, t);
      assert.equal(headers['x-tessera-subject'], 'alice');
      assert.equal(headers['x-tessera-issuer'], tessera);
      assert.equal(headers['x-tessera-subject-issuer'], ISSUER);
      assert.equal(event.issuer, tessera);
      assert.equal(event.subject, 'alice');
      assert.equal(event.subject_issuer, ISSUER);
      // The IdP's own token: its subject is its issuer's, which the event's issuer already says.
      const own = await whoami(gw, await idpToken());
      assert.equal(own.headers['x-tessera-subject-issuer'], ISSUER);
      assert.equal(own.event.issuer, ISSUER);
      assert.equal(own.event.subject_issuer, undefined);
    } finally {
      await gw.close();
    }
  });

  it('rate-limits two IdPs’ same-named subjects apart, and one subject’s tokens together', async () => {
    const gw = await startGateway(gatewayConfig([tessera]));
    try {
      const corporate = await exchange(await idpToken({ sub: 'carol' }));
      const partner = await exchange(await sign(idp2Key, claims({ iss: IDP2, sub: 'carol', aud: AUDIENCE, scope: 'api:read' })));
      assert.equal(await status(gw, corporate), 200);
      assert.equal(await status(gw, partner), 200, 'the partner IdP’s carol has a bucket of her own');
      assert.equal(await status(gw, await idpToken({ sub: 'carol' })), 429, 'the corporate carol’s own IdP token shares her bucket');
    } finally {
      await gw.close();
    }
  });

  it('attack: a token service not listed in trust_sub_id is not believed about its subject’s issuer', async () => {
    const gw = await startGateway(gatewayConfig(undefined));
    try {
      const { headers, event } = await whoami(gw, await exchange(await idpToken()));
      assert.equal(headers['x-tessera-subject-issuer'], tessera);
      assert.equal(event.issuer, tessera);
      assert.equal(event.subject_issuer, undefined);
    } finally {
      await gw.close();
    }
  });

  it('attack: an IdP not listed in trust_sub_id cannot pass its user off as another IdP’s by a sub_id', async () => {
    const gw = await startGateway(gatewayConfig([tessera]));
    try {
      const forged = await idpToken({ iss: IDP2, sub_id: { format: 'iss_sub', iss: ISSUER, sub: 'alice' } }, idp2Key);
      const { headers, event } = await whoami(gw, forged);
      assert.equal(headers['x-tessera-subject-issuer'], IDP2);
      assert.equal(event.issuer, IDP2);
      assert.equal(event.subject_issuer, undefined);
      // Nor share the corporate alice's bucket.
      const limiter = await startGateway(gatewayConfig([tessera]));
      try {
        assert.equal(await status(limiter, forged), 200);
        assert.equal(await status(limiter, await idpToken()), 200, 'the corporate alice has a bucket of her own');
      } finally {
        await limiter.close();
      }
    } finally {
      await gw.close();
    }
  });

  it('refuses a trust_sub_id entry that is not a trusted issuer', () => {
    assert.throws(() => parse(gatewayConfig(['https://unknown.test'])), /gateway\.trust_sub_id\[0\].*issuers/s);
  });
});
