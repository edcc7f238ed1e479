/**
 * `tessera serve`: the subject's issuer at the gateway. A token the token service issued for
 * another issuer's subject names that issuer in its RFC 9493 `sub_id`; the gateway sends it
 * upstream (`identity_headers.subject_issuer`) and keys a per-subject rate limit on it. Only the
 * token service's own tokens are believed: another issuer's `sub_id` is its own claim.
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
import { TOKEN_EXCHANGE } from '../../src/issuer/service.ts';
import { AUDIENCE, ISSUER, key, startUpstream, type Upstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';
import { claims, makeKey, sign } from '../helpers/tokens.ts';

const IDP2 = 'https://partner-idp.test';
const idp2Key = makeKey('ES256', 'partner-1');

let dir: string;
let base: string;
let upstream: Upstream;
let running: RunningServer;
let brokerSecret: string;
const logStream = new Writable({ write: (_chunk, _encoding, done) => done() });
const savedMaster = process.env.TESSERA_MASTER_KEY;

before(async () => {
  delete process.env.TESSERA_MASTER_KEY;
  dir = mkdtempSync(join(tmpdir(), 'tessera-serve-subject-issuer-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  upstream = await startUpstream();
  writeFileSync(
    join(dir, 'tessera.yaml'),
    `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
issuers:
  - { issuer: ${base}, audiences: [${base}/api], jwks_uri: ${base}/.well-known/jwks.json, token_type: at+jwt }
  - { issuer: ${ISSUER}, audiences: [${AUDIENCE}], jwks: { keys: [${JSON.stringify(key.jwk)}] } }
  - { issuer: ${IDP2}, audiences: [${AUDIENCE}], jwks: { keys: [${JSON.stringify(idp2Key.jwk)}] } }
scopes:
  api:read: {}
gateway:
  watch_config: false
  routes:
    - id: whoami
      match: { path_prefix: /whoami }
      upstream: { url: ${upstream.url} }
      auth: jwt
      rules: [{ scopes: [api:read] }]
      identity_headers: [subject, issuer, subject_issuer]
    - id: limited
      match: { path_prefix: /limited }
      upstream: { url: ${upstream.url} }
      auth: jwt
      rules: [{ scopes: [api:read] }]
      rate_limit: { key: subject, rate: 0.001, burst: 1 }
`,
  );
  await initialize({ config: join(dir, 'tessera.yaml') });
  running = await startServer({ config: join(dir, 'tessera.yaml'), logger: pino({ level: 'warn' }, logStream) });
  const broker = await running.service.registerClient({
    id: 'broker',
    scopes: ['api:read'],
    audiences: [`${base}/api`],
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

const idpToken = (over: Record<string, unknown> = {}, k = key) =>
  sign(k, claims({ iss: ISSUER, sub: 'alice', aud: AUDIENCE, scope: 'api:read', ...over }));

/** The broker exchanges an IdP token for one of this token service, for the gateway's routes. */
async function exchange(subjectToken: string): Promise<string> {
  const res = await fetch(`${base}/oauth2/token`, {
    method: 'POST',
    headers: { authorization: basic('broker', brokerSecret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: `${base}/api`,
    }),
  });
  const body = (await res.json()) as { access_token: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.access_token;
}

async function whoami(token: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${base}/whoami`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200, await res.clone().text());
  await res.arrayBuffer();
  return upstream.seen.at(-1)?.headers as Record<string, unknown>;
}

describe('tessera serve: the subject’s issuer at the gateway', () => {
  it('sends the IdP as the subject’s issuer of a token the token service issued for the IdP’s subject', async () => {
    const t = await exchange(await idpToken());
    assert.deepEqual(decodeJwt(t).sub_id, { format: 'iss_sub', iss: ISSUER, sub: 'alice' });
    const h = await whoami(t);
    assert.equal(h['x-tessera-subject'], 'alice');
    assert.equal(h['x-tessera-issuer'], base);
    assert.equal(h['x-tessera-subject-issuer'], ISSUER);
  });

  it('names the IdP as the subject’s issuer in the gateway’s audit event, and only when it is not the token’s issuer', async () => {
    const h = await whoami(await exchange(await idpToken({ sub: 'dave' })));
    const own = await whoami(
      await running.service.mint({ clientId: 'broker', subject: 'erin', ttl: 600, audiences: [`${base}/api`] }).then((m) => m.access_token),
    );
    await running.gateway?.gateway.audit.flush();
    const [dave] = await running.service.store.queryAudit({ request_id: String(h['x-request-id']), kinds: ['gateway.request'] });
    assert.equal(dave?.subject, 'dave');
    assert.equal(dave?.issuer, base);
    assert.equal(dave?.subject_issuer, ISSUER);
    const [erin] = await running.service.store.queryAudit({ request_id: String(own['x-request-id']), kinds: ['gateway.request'] });
    assert.equal(erin?.subject, 'erin');
    assert.equal(erin !== undefined && 'subject_issuer' in erin, false);
  });

  it('sends the token’s own issuer for a token of the token service’s own subject', async () => {
    const minted = await running.service.mint({ clientId: 'broker', subject: 'bob', ttl: 600, audiences: [`${base}/api`] });
    const h = await whoami(minted.access_token);
    assert.equal(h['x-tessera-subject'], 'bob');
    assert.equal(h['x-tessera-subject-issuer'], base);
  });

  it('attack: an IdP token whose sub_id names another IdP’s same-named subject is sent as its own issuer’s subject', async () => {
    // The partner IdP claims its alice is the corporate IdP's alice.
    const forged = await idpToken({ iss: IDP2, sub_id: { format: 'iss_sub', iss: ISSUER, sub: 'alice' } }, idp2Key);
    const h = await whoami(forged);
    assert.equal(h['x-tessera-subject'], 'alice');
    assert.equal(h['x-tessera-issuer'], IDP2);
    assert.equal(h['x-tessera-subject-issuer'], IDP2);
    // An inbound copy of the header never reaches the upstream.
    const res = await fetch(`${base}/whoami`, {
      headers: { authorization: `Bearer ${await idpToken()}`, 'x-tessera-subject-issuer': 'https://evil.test' },
    });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    assert.equal(upstream.seen.at(-1)?.headers['x-tessera-subject-issuer'], ISSUER);
  });

  it('rate-limits two IdPs’ same-named subjects apart, and one subject’s tokens together', async () => {
    const get = async (token: string) => {
      const res = await fetch(`${base}/limited`, { headers: { authorization: `Bearer ${token}` } });
      await res.arrayBuffer();
      return res.status;
    };
    const corporate = await exchange(await idpToken({ sub: 'carol' }));
    const partner = await exchange(await sign(idp2Key, claims({ iss: IDP2, sub: 'carol', aud: AUDIENCE, scope: 'api:read' })));
    assert.equal(await get(corporate), 200);
    assert.equal(await get(partner), 200, 'the partner IdP’s carol has a bucket of her own');
    // The corporate carol's own IdP token is the same subject as the token issued for her.
    assert.equal(await get(await idpToken({ sub: 'carol' })), 429);
  });
});
