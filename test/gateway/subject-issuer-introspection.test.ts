/**
 * `tessera gateway` alone on `auth: introspection` against `tessera serve`: the subject's issuer.
 * Tessera's introspection endpoint answers for a token it issued for another issuer's subject with
 * that token's RFC 9493 `sub_id`. The gateway believes it when `introspection.trust_sub_id` says
 * so (the endpoint is one configured party it authenticates to): the upstream's
 * `x-tessera-subject-issuer`, the per-subject rate limit and the audit event's `subject_issuer`
 * then name the identity provider; without it they name the introspection answer's issuer.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
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
let rsSecret: string;
const logStream = new Writable({ write: (_chunk, _encoding, done) => done() });
const savedMaster = process.env.TESSERA_MASTER_KEY;

before(async () => {
  delete process.env.TESSERA_MASTER_KEY;
  dir = mkdtempSync(join(tmpdir(), 'tessera-gateway-subject-issuer-introspection-'));
  const port = await freePort();
  tessera = `http://127.0.0.1:${port}`;
  upstream = await startUpstream();
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
  // The gateway's introspection client: the resource server the tokens are addressed to.
  const rs = await running.service.registerClient({
    id: 'gateway-rs',
    scopes: ['api:read'],
    audiences: [`${tessera}/api`],
    grantTypes: ['client_credentials'],
  });
  rsSecret = rs.secret as string;
});

after(async () => {
  await running?.close();
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
  if (savedMaster !== undefined) process.env.TESSERA_MASTER_KEY = savedMaster;
});

/** The standalone gateway: its routes introspect every token at the token service. */
function gatewayConfig(trustSubId: boolean | undefined): TesseraConfigInput {
  return {
    issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
    introspection: {
      endpoint: `${tessera}/oauth2/introspect`,
      client_id: 'gateway-rs',
      client_secret: rsSecret,
      cache_max_ttl: '0s',
      ...(trustSubId !== undefined ? { trust_sub_id: trustSubId } : {}),
    },
    scopes: { 'api:read': {} },
    dpop: { mode: 'disabled' },
    gateway: {
      watch_config: false,
      routes: [
        {
          id: 'whoami',
          match: { path_prefix: '/whoami' },
          upstream: { url: upstream.url },
          auth: 'introspection',
          rules: [{ scopes: ['api:read'] }],
          identity_headers: ['subject', 'issuer', 'subject_issuer'],
        },
        {
          id: 'limited',
          match: { path_prefix: '/limited' },
          upstream: { url: upstream.url },
          auth: 'introspection',
          rules: [{ scopes: ['api:read'] }],
          rate_limit: { key: 'subject', rate: 0.001, burst: 1 },
        },
      ],
    },
  } as TesseraConfigInput;
}

const idpToken = (over: Record<string, unknown> = {}) =>
  sign(key, claims({ iss: ISSUER, sub: 'alice', aud: AUDIENCE, scope: 'api:read', ...over }));

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

describe('tessera gateway alone on auth: introspection: the subject’s issuer of an introspected token', () => {
  it('names the IdP upstream and in the audit event with introspection.trust_sub_id', async () => {
    const gw = await startGateway(gatewayConfig(true));
    try {
      const { headers, event } = await whoami(gw, await exchange(await idpToken()));
      assert.equal(headers['x-tessera-subject'], 'alice');
      assert.equal(headers['x-tessera-issuer'], tessera);
      assert.equal(headers['x-tessera-subject-issuer'], ISSUER);
      assert.equal(event.issuer, tessera);
      assert.equal(event.subject, 'alice');
      assert.equal(event.subject_issuer, ISSUER);
    } finally {
      await gw.close();
    }
  });

  it('rate-limits two IdPs’ same-named subjects apart with introspection.trust_sub_id', async () => {
    const gw = await startGateway(gatewayConfig(true));
    try {
      assert.equal(await status(gw, await exchange(await idpToken({ sub: 'carol' }))), 200);
      const partner = await exchange(await sign(idp2Key, claims({ iss: IDP2, sub: 'carol', aud: AUDIENCE, scope: 'api:read' })));
      assert.equal(await status(gw, partner), 200, 'the partner IdP’s carol has a bucket of her own');
      assert.equal(
        await status(gw, await exchange(await idpToken({ sub: 'carol' }))),
        429,
        'the corporate carol’s tokens share her bucket',
      );
    } finally {
      await gw.close();
    }
  });

  it('attack: without introspection.trust_sub_id an introspection answer’s sub_id is not believed', async () => {
    for (const trust of [undefined, false]) {
      const gw = await startGateway(gatewayConfig(trust));
      try {
        const { headers, event } = await whoami(gw, await exchange(await idpToken()));
        assert.equal(headers['x-tessera-subject-issuer'], tessera);
        assert.equal(event.issuer, tessera);
        assert.equal(event.subject_issuer, undefined);
        // Both IdPs' dave are the token service's dave: one bucket.
        assert.equal(await status(gw, await exchange(await idpToken({ sub: 'dave' }))), 200);
        const partner = await exchange(await sign(idp2Key, claims({ iss: IDP2, sub: 'dave', aud: AUDIENCE, scope: 'api:read' })));
        assert.equal(await status(gw, partner), 429, String(trust));
      } finally {
        await gw.close();
      }
    }
  });

  it('refuses a non-boolean introspection.trust_sub_id', () => {
    const config = gatewayConfig(undefined) as { introspection: Record<string, unknown> };
    config.introspection.trust_sub_id = [tessera];
    assert.throws(() => parse(config as TesseraConfigInput), /introspection\.trust_sub_id/);
  });
});
