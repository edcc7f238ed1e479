/**
 * DPoP-bound tokens through the gateway: the proof is checked against the gateway's own URL for
 * the request (htu: `server.public_url`, the URL a trusted proxy forwards, else the address it
 * listens on, never the caller's Host header), each proof is accepted once, a bound token sent as
 * Bearer is refused, and neither the token nor the proof reaches the upstream.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, type JWK, SignJWT } from 'jose';
import pg from 'pg';
import pino from 'pino';
import { createGateway, type Gateway } from '../../src/gateway/gateway.ts';
import type { Store } from '../../src/store/contract.ts';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { storeReplayCache } from '../../src/store/replay.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { postgresReachable } from '../helpers/postgres.ts';
import {
  baseConfig,
  parse,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  UPSTREAM_TOKEN,
  type Upstream,
} from './helpers.ts';

const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

function proof(
  method: string,
  url: string,
  accessToken: string,
  iat = Math.floor(Date.now() / 1000),
  jti: string = randomUUID(),
): Promise<string> {
  return new SignJWT({ htm: method, htu: url, jti, ath: createHash('sha256').update(accessToken).digest('base64url') })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt(iat)
    .sign(holder.privateKey);
}

/** A GET with exactly these headers (Host included, which fetch does not let a caller set). */
function get(url: string, headers: Record<string, string>): Promise<{ status: number; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    request(url, { headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    })
      .on('error', reject)
      .end();
  });
}

const OTHER_URI = /DPoP .*error="invalid_dpop_proof", error_description="The DPoP proof is for another URI\."/;

describe('gateway: DPoP-bound tokens', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let bound: string;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      dpop: { mode: 'allowed' },
      gateway: {
        routes: [
          { id: 'api', upstream: { url: upstream.url, credential: { type: 'static', token: UPSTREAM_TOKEN } }, auth: 'jwt', rules: [{}] },
        ],
      },
    });
    bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('accepts a bound token with a valid proof for the URL the caller used', async () => {
    const url = `${gw.url}/items?x=1`;
    const res = await fetch(url, { headers: { authorization: `DPoP ${bound}`, dpop: await proof('GET', `${gw.url}/items`, bound) } });
    assert.equal(res.status, 200);
    const h = upstream.seen.at(-1)!.headers;
    assert.equal(h.authorization, `Bearer ${UPSTREAM_TOKEN}`);
    assert.equal(h.dpop, undefined);
  });

  it('refuses a proof for another URL', async () => {
    const res = await fetch(`${gw.url}/items`, {
      headers: { authorization: `DPoP ${bound}`, dpop: await proof('GET', 'https://elsewhere.test/items', bound) },
    });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /DPoP.*invalid_dpop_proof/);
  });

  it('refuses a bound token presented as Bearer', async () => {
    const res = await fetch(`${gw.url}/items`, { headers: { authorization: `Bearer ${bound}` } });
    assert.equal(res.status, 401);
  });

  it('stale proof: accepted up to dpop.iat_window plus the issuer clock_skew old (90 s by default), refused past it', async () => {
    const url = `${gw.url}/items`;
    const now = Math.floor(Date.now() / 1000);
    const call = async (iat: number) =>
      (await fetch(url, { headers: { authorization: `DPoP ${bound}`, dpop: await proof('GET', url, bound, iat) } })).status;
    assert.equal(await call(now - 88), 200);
    assert.equal(await call(now - 92), 401);
    assert.equal(await call(now + 28), 200);
    assert.equal(await call(now + 32), 401);
  });

  it('Host spoofing: a proof made for another server is refused though the request names that server in its Host header', async () => {
    const seen = upstream.seen.length;
    const res = await get(`${gw.url}/items`, {
      host: 'evil.example',
      authorization: `DPoP ${bound}`,
      dpop: await proof('GET', 'http://evil.example/items', bound),
    });
    assert.equal(res.status, 401);
    assert.match(String(res.headers['www-authenticate']), OTHER_URI);
    assert.equal(upstream.seen.length, seen, 'the request reached the upstream');
    // The gateway's own URL is what a proof names, whatever Host says.
    const own = await get(`${gw.url}/items`, {
      host: 'evil.example',
      authorization: `DPoP ${bound}`,
      dpop: await proof('GET', `${gw.url}/items`, bound),
    });
    assert.equal(own.status, 200);
  });

  it('replay after a reload: a proof accepted before the configuration was reloaded is refused after it', async () => {
    const url = `${gw.url}/items`;
    const dpop = await proof('GET', url, bound);
    assert.equal((await fetch(url, { headers: { authorization: `DPoP ${bound}`, dpop } })).status, 200);
    const seen = upstream.seen.length;
    // The reload builds new verifiers; the proofs the old ones accepted are still remembered.
    const config = gw.served.gateway.state.config;
    assert.equal(
      gw.served.reload(parse({ ...baseConfig(), dpop: { mode: 'allowed', replay_cache_size: 1000 }, gateway: config.gateway } as never)).ok,
      true,
    );
    const res = await fetch(url, { headers: { authorization: `DPoP ${bound}`, dpop } });
    assert.equal(res.status, 401);
    assert.match(
      res.headers.get('www-authenticate') ?? '',
      /DPoP .*error="invalid_dpop_proof", error_description="The DPoP proof was already used\."/,
    );
    assert.equal(upstream.seen.length, seen, 'the replayed request reached the upstream');
  });
});

describe('gateway: one DPoP key filling the in-memory replay cache', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      // A share of 1000 proofs for each key: max(1000, 16000 / 16).
      dpop: { mode: 'allowed', replay_cache_size: 16_000 },
      gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] }] },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it("attack: a holder of one bound token sending proofs with fresh jtis gets 429 past its key's share; other DPoP callers still pass", async () => {
    const url = `${gw.url}/items`;
    const bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
    const call = async () => (await get(url, { authorization: `DPoP ${bound}`, dpop: await proof('GET', url, bound) })).status;
    for (let i = 0; i < 1000; i += 20) {
      const statuses = await Promise.all(Array.from({ length: 20 }, call));
      assert.deepEqual(new Set(statuses), new Set([200]), `batch at ${i}`);
    }
    const seen = upstream.seen.length;
    const over = await fetch(url, { headers: { authorization: `DPoP ${bound}`, dpop: await proof('GET', url, bound) } });
    assert.equal(over.status, 429);
    assert.equal(over.headers.get('retry-after'), '1');
    assert.deepEqual(await over.json(), {
      error: 'rate_limited',
      error_description: 'Too many recent DPoP proofs by this key; retry later.',
    });
    assert.equal(upstream.seen.length, seen, 'the refused request reached the upstream');
    assert.equal((await requestEvents(gw)).at(-1)!.reason, 'dpop_key_rate_limited');
    // Another client, with a token bound to its own key, is not locked out.
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const otherJwk = other.publicKey.export({ format: 'jwk' }) as JWK;
    const otherToken = await token({ cnf: { jkt: await calculateJwkThumbprint(otherJwk) } });
    const otherProof = await new SignJWT({
      htm: 'GET',
      htu: url,
      jti: randomUUID(),
      ath: createHash('sha256').update(otherToken).digest('base64url'),
    })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: otherJwk })
      .setIssuedAt()
      .sign(other.privateKey);
    assert.equal((await fetch(url, { headers: { authorization: `DPoP ${otherToken}`, dpop: otherProof } })).status, 200);
  });
});

describe('gateway: DPoP proofs remembered in a store that cannot answer', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway(
      {
        ...baseConfig(),
        dpop: { mode: 'allowed' },
        gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] }] },
      },
      { verifierRuntime: { replay: { use: () => Promise.reject(new Error('store unavailable')) } } },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('refuses a DPoP request with 503 and Retry-After (fail closed), and passes bearer requests without the store', async () => {
    const bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
    const res = await fetch(`${gw.url}/items`, {
      headers: { authorization: `DPoP ${bound}`, dpop: await proof('GET', `${gw.url}/items`, bound) },
    });
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '5');
    assert.deepEqual(await res.json(), {
      error: 'temporarily_unavailable',
      error_description: 'The DPoP proof cannot be checked right now.',
    });
    assert.equal(upstream.seen.length, 0);
    assert.equal((await fetch(`${gw.url}/items`, { headers: { authorization: `Bearer ${await token()}` } })).status, 200);
  });
});

const pgUrl = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgReachable = await postgresReachable(pgUrl);

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`gateway: DPoP proofs remembered in the ${backend} store (tessera serve's replay cache)`, {
    skip: backend === 'postgres' && !pgReachable ? 'PostgreSQL is not reachable' : false,
  }, () => {
    const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    let dir: string;
    let store: Store;
    let upstream: Upstream;
    let gw: TestGateway;
    let bound: string;
    /** Every key the gateway recorded in the store's replay table. */
    const keys: string[] = [];
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'tessera-dpop-store-'));
      store =
        backend === 'postgres'
          ? await PostgresStore.open({ connectionString: pgUrl, schema })
          : SqliteStore.open({ path: join(dir, 'tessera.db') });
      const recording: Pick<Store, 'useOnce'> = {
        useOnce: (key, expiresAt, now) => {
          keys.push(key);
          return store.useOnce(key, expiresAt, now);
        },
      };
      upstream = await startUpstream();
      gw = await startGateway(
        {
          ...baseConfig(),
          dpop: { mode: 'allowed' },
          gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] }] },
        },
        { verifierRuntime: { replay: storeReplayCache(recording) } },
      );
      bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
    });
    after(async () => {
      await gw.close();
      await upstream.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
      if (backend === 'postgres') {
        const c = new pg.Client({ connectionString: pgUrl });
        await c.connect();
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await c.end();
      }
    });

    const send = async (dpop: string) => fetch(`${gw.url}/items`, { headers: { authorization: `DPoP ${bound}`, dpop } });
    const expectInvalidProof = async (res: Response, reason: string) => {
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', /(^|, )DPoP .*error="invalid_dpop_proof"/);
      await res.body?.cancel();
      assert.equal((await requestEvents(gw)).at(-1)!.reason, reason);
    };

    it('accepts a proof once and refuses its replay', async () => {
      const p = await proof('GET', `${gw.url}/items`, bound);
      assert.equal((await send(p)).status, 200);
      const seen = upstream.seen.length;
      await expectInvalidProof(await send(p), 'dpop_replayed');
      assert.equal(upstream.seen.length, seen, 'the replayed request reached the upstream');
    });

    it('attack: a proof whose jti holds a NUL is recorded like any other (accepted once, then refused as replayed), never a 503', async () => {
      const p = await proof('GET', `${gw.url}/items`, bound, undefined, 'a\u0000b');
      const first = await send(p);
      assert.equal(first.status, 200);
      await first.body?.cancel();
      const seen = upstream.seen.length;
      await expectInvalidProof(await send(p), 'dpop_replayed');
      assert.equal(upstream.seen.length, seen, 'the replayed request reached the upstream');
    });

    it('attack: a proof with a 10 kB jti is refused as invalid (401 invalid_dpop_proof), never a 503, and nothing is recorded', async () => {
      const before = keys.length;
      await expectInvalidProof(
        await send(await proof('GET', `${gw.url}/items`, bound, undefined, 'j'.repeat(10_240))),
        'dpop_proof_invalid',
      );
      assert.equal(keys.length, before);
    });

    it('a jti of 256 characters outside ASCII (768 bytes of UTF-8) is accepted once, then refused as replayed', async () => {
      const p = await proof('GET', `${gw.url}/items`, bound, undefined, '\u20ac'.repeat(256));
      const first = await send(p);
      assert.equal(first.status, 200);
      await first.body?.cancel();
      await expectInvalidProof(await send(p), 'dpop_replayed');
    });

    it('no jti reaches the store: each key is the proof key thumbprint and the SHA-256 of the jti, of fixed length', async () => {
      const jkt = await calculateJwkThumbprint(holderJwk);
      assert.ok(keys.length > 0);
      for (const key of keys) assert.match(key, new RegExp(`^dpop-resource:${jkt}:[A-Za-z0-9_-]{43}$`));
    });
  });
}

describe('gateway: the URL a DPoP proof names', () => {
  let upstream: Upstream;
  let bound: string;
  const routes = () => [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt' as const, rules: [{}] }];
  before(async () => {
    upstream = await startUpstream();
    bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
  });
  after(() => upstream.close());

  it('server.public_url: the proof names it, whatever Host the request carries', async () => {
    const gw = await startGateway({
      ...baseConfig(),
      server: { public_url: 'https://api.example/' },
      dpop: { mode: 'allowed' },
      gateway: { routes: routes() },
    });
    try {
      const ok = await get(`${gw.url}/items`, {
        authorization: `DPoP ${bound}`,
        dpop: await proof('GET', 'https://api.example/items', bound),
      });
      assert.equal(ok.status, 200);
      const own = await get(`${gw.url}/items`, { authorization: `DPoP ${bound}`, dpop: await proof('GET', `${gw.url}/items`, bound) });
      assert.equal(own.status, 401);
      assert.match(String(own.headers['www-authenticate']), OTHER_URI);
    } finally {
      await gw.close();
    }
  });

  it('behind a proxy in gateway.trust_proxy: the proof names the URL the proxy forwards', async () => {
    const gw = await startGateway({
      ...baseConfig(),
      dpop: { mode: 'allowed' },
      gateway: { trust_proxy: ['127.0.0.1/32'], routes: routes() },
    });
    const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'public.example' };
    try {
      const ok = await get(`${gw.url}/items`, {
        ...forwarded,
        authorization: `DPoP ${bound}`,
        dpop: await proof('GET', 'https://public.example/items', bound),
      });
      assert.equal(ok.status, 200);
      const own = await get(`${gw.url}/items`, {
        ...forwarded,
        authorization: `DPoP ${bound}`,
        dpop: await proof('GET', `${gw.url}/items`, bound),
      });
      assert.equal(own.status, 401);
    } finally {
      await gw.close();
    }
  });

  it('htu spoofing through an appending proxy: a caller’s X-Forwarded-Host: evil.example (and -Proto), which the trusted proxy appends to, is not the URL the proof must name', async () => {
    const gw = await startGateway({
      ...baseConfig(),
      dpop: { mode: 'allowed' },
      gateway: { trust_proxy: ['127.0.0.1/32'], routes: routes() },
    });
    // What Apache httpd's mod_proxy (among others) sends on: the caller's value, then its own.
    const appended = { 'x-forwarded-proto': 'http, https', 'x-forwarded-host': 'evil.example, public.example' };
    try {
      const seen = upstream.seen.length;
      const spoofed = await get(`${gw.url}/items`, {
        ...appended,
        authorization: `DPoP ${bound}`,
        dpop: await proof('GET', 'http://evil.example/items', bound),
      });
      assert.equal(spoofed.status, 401);
      assert.match(String(spoofed.headers['www-authenticate']), OTHER_URI);
      assert.equal(upstream.seen.length, seen, 'the request reached the upstream');
      const ok = await get(`${gw.url}/items`, {
        ...appended,
        authorization: `DPoP ${bound}`,
        dpop: await proof('GET', 'https://public.example/items', bound),
      });
      assert.equal(ok.status, 200, 'the proof names the URL the nearest proxy forwards: its entry is the rightmost');
    } finally {
      await gw.close();
    }
  });

  describe('server.host a wildcard address (0.0.0.0) without server.public_url', () => {
    let gateway: Gateway;
    let url: string;
    const warnings: string[] = [];
    const server = createServer();
    before(async () => {
      const logs = new Writable({
        write(chunk, _encoding, done) {
          warnings.push(chunk.toString());
          done();
        },
      });
      // The gateway is told it listens on every address; the test serves it on loopback only.
      gateway = createGateway(
        parse({ ...baseConfig(), server: { host: '0.0.0.0', port: 0 }, dpop: { mode: 'allowed' }, gateway: { routes: routes() } }),
        {
          logger: pino({ level: 'warn' }, logs),
        },
      );
      server.on('request', gateway.handleRequest).listen(0, '127.0.0.1');
      await once(server, 'listening');
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(async () => {
      server.closeAllConnections();
      server.close();
      await gateway.close({ drainTimeoutMs: 100 });
    });

    it('says at load that proofs must name the address a connection arrives at, and to set server.public_url', () => {
      assert.ok(
        warnings.some((w) => /server\.host 0\.0\.0\.0 is every address of this machine.*set server\.public_url/.test(w)),
        warnings.join('\n'),
      );
    });

    it('Host spoofing: the proof names the address the connection arrived at, never the Host header', async () => {
      const own = await get(`${url}/items`, { authorization: `DPoP ${bound}`, dpop: await proof('GET', `${url}/items`, bound) });
      assert.equal(own.status, 200);
      const seen = upstream.seen.length;
      const spoofed = await get(`${url}/items`, {
        host: 'evil.example',
        authorization: `DPoP ${bound}`,
        dpop: await proof('GET', 'http://evil.example/items', bound),
      });
      assert.equal(spoofed.status, 401);
      assert.match(String(spoofed.headers['www-authenticate']), OTHER_URI);
      assert.equal(upstream.seen.length, seen, 'the request reached the upstream');
    });
  });
});

describe('forward-auth: DPoP htu with server.public_url', () => {
  const FA_SECRET = 'forward-auth-secret-0123456789';
  let gw: TestGateway;
  let bound: string;
  before(async () => {
    gw = await startGateway({
      ...baseConfig(),
      server: { public_url: 'https://api.example.com' },
      dpop: { mode: 'allowed' },
      gateway: {
        forward_auth: { enabled: true, flavor: 'nginx', shared_secret: { header: 'X-Tessera-Forward-Auth', value: FA_SECRET } },
        routes: [
          // Another application behind the same proxy, under its own name.
          { id: 'shop', match: { host: 'shop.example.com' }, upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', rules: [{}] },
          { id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt', rules: [{}] },
        ],
      },
    });
    bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
  });
  after(async () => {
    await gw?.close();
  });
  const check = async (host: string, htu: string, proto = 'http') =>
    fetch(`${gw.url}/_tessera/auth`, {
      headers: {
        'x-tessera-forward-auth': FA_SECRET,
        'x-original-uri': '/items?page=2',
        'x-original-method': 'GET',
        'x-original-host': host,
        'x-original-proto': proto,
        authorization: `DPoP ${bound}`,
        dpop: await proof('GET', htu, bound),
      },
    });

  it('Host spoofing through the proxy: a proof captured at another server is refused though the check names that host', async () => {
    const res = await check('evil.example', 'http://evil.example/items');
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', OTHER_URI);
  });

  it('a proof naming server.public_url and the original path passes, whatever host the proxy reports', async () => {
    assert.equal((await check('evil.example', 'https://api.example.com/items')).status, 200);
    assert.equal((await check('api.example.com', 'https://api.example.com/items')).status, 200);
  });

  it('a route matched by host takes the name the proxy reports (it is one the route was configured for)', async () => {
    assert.equal((await check('shop.example.com', 'http://shop.example.com/items')).status, 200);
    assert.equal((await check('shop.example.com', 'https://api.example.com/items')).status, 401);
  });

  it('proto spoofing: a scheme that is not http or https (naming another server, `http://evil.example/items#`) is refused, never read as the proof URI', async () => {
    // `<proto>://<host><uri>` would read as http://evil.example/items: a proof captured there would pass.
    const res = await check('shop.example.com', 'http://evil.example/items', 'http://evil.example/items#');
    assert.equal(res.status, 500);
    assert.equal(res.headers.get('x-tessera-status'), '400');
    await gw.served.gateway.audit.flush();
    assert.equal(gw.audit.events.at(-1)!.reason, 'forward_auth_request_invalid');
    assert.equal((await check('shop.example.com', 'https://shop.example.com/items', 'HTTPS')).status, 200);
  });
});

/** A DPoP proof by `holder` for `url`, `ath` of `accessToken`, issued at `iat`, naming `nonce` when given. */
function proofAt(method: string, url: string, accessToken: string, iat: number, nonce?: string): Promise<string> {
  return new SignJWT({
    htm: method,
    htu: url,
    jti: randomUUID(),
    ath: createHash('sha256').update(accessToken).digest('base64url'),
    ...(nonce !== undefined ? { nonce } : {}),
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt(iat)
    .sign(holder.privateKey);
}

const TOO_OLD = /DPoP .*error="invalid_dpop_proof", error_description="The DPoP proof is too old or from the future\."/;

describe('gateway: a reload that lengthens the DPoP acceptance window (fake clock)', () => {
  let upstream: Upstream;
  const started: TestGateway[] = [];
  let nowMs = Date.now();
  const nowS = () => Math.floor(nowMs / 1000);
  before(async () => {
    upstream = await startUpstream();
  });
  after(async () => {
    for (const g of started) await g.close();
    await upstream.close();
  });

  const input = (dpop: Record<string, unknown>, skew = '30s') => ({
    ...baseConfig(),
    issuers: baseConfig().issuers!.map((i) => ({ ...i, clock_skew: skew })),
    dpop: { mode: 'allowed' as const, ...dpop },
    gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt' as const, rules: [{}] }] },
  });
  const start = async (dpop: Record<string, unknown>, skew = '30s', deps: Parameters<typeof startGateway>[1] = {}) => {
    nowMs = Date.now();
    const g = await startGateway(input(dpop, skew), { clock: () => nowMs, ...deps });
    started.push(g);
    return g;
  };
  const boundToken = async () => token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) }, iat: nowS(), exp: nowS() + 7200 });
  const call = (g: TestGateway, tok: string, dpop: string) => fetch(`${g.url}/items`, { headers: { authorization: `DPoP ${tok}`, dpop } });

  for (const [what, from, to, wait] of [
    ['dpop.iat_window raised from 60s to 30m', [{ iat_window: '60s' }, '30s'], [{ iat_window: '30m' }, '30s'], 200],
    ['issuers[].clock_skew raised from 30s to 60s', [{ iat_window: '60s' }, '30s'], [{ iat_window: '60s' }, '60s'], 100],
  ] as const) {
    it(`attack: a proof accepted, then forgotten at the old window's end, is not accepted again after ${what}`, async () => {
      const g = await start(from[0], from[1]);
      const tok = await boundToken();
      const dpop = await proofAt('GET', `${g.url}/items`, tok, nowS());
      assert.equal((await call(g, tok, dpop)).status, 200);
      assert.equal((await call(g, tok, dpop)).status, 401);
      const seen = upstream.seen.length;
      assert.equal(g.served.reload(parse(input(to[0], to[1]))).ok, true);
      nowMs += wait * 1000;
      const res = await call(g, tok, dpop);
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', TOO_OLD);
      assert.equal((await requestEvents(g)).at(-1)!.reason, 'dpop_iat_invalid');
      assert.equal(upstream.seen.length, seen, 'the replayed proof reached the upstream');
    });
  }

  it('a proof issued after the reload gets the new, longer window; one issued before it keeps the old one', async () => {
    const g = await start({ iat_window: '60s' });
    const tok = await boundToken();
    const earlier = nowS() - 1;
    assert.equal((await call(g, tok, await proofAt('GET', `${g.url}/items`, tok, nowS()))).status, 200);
    assert.equal(g.served.reload(parse(input({ iat_window: '30m' }))).ok, true);
    nowMs += 2000;
    const minted = nowS();
    nowMs += 1000 * 1000;
    assert.equal((await call(g, tok, await proofAt('GET', `${g.url}/items`, tok, minted))).status, 200);
    // Never seen, but the replaced verifier recorded proofs of its iat and later: it may have seen
    // this one, and would have forgotten it by now.
    const old = await call(g, tok, await proofAt('GET', `${g.url}/items`, tok, earlier));
    assert.equal(old.status, 401);
    assert.match(old.headers.get('www-authenticate') ?? '', TOO_OLD);
  });

  it("the store-backed cache (tessera serve's) goes through the same check: the replay after the reload is refused", async () => {
    // A replay cache as the store's: whole seconds, an entry free once its expiresAt is reached.
    const table = new Map<string, number>();
    const replay = {
      use: async (k: string, expiresAt: number) => {
        const held = table.get(k);
        if (held !== undefined && held > nowS()) return false;
        table.set(k, expiresAt);
        return true;
      },
    };
    const g = await start({ iat_window: '60s' }, '30s', { verifierRuntime: { replay } });
    const tok = await boundToken();
    const dpop = await proofAt('GET', `${g.url}/items`, tok, nowS());
    assert.equal((await call(g, tok, dpop)).status, 200);
    assert.equal(g.served.reload(parse(input({ iat_window: '30m' }))).ok, true);
    nowMs += 200_000;
    const res = await call(g, tok, dpop);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', TOO_OLD);
  });
});

/** An introspection endpoint that answers `opaque` active, bound to the DPoP key `jkt`, and anything else inactive. */
function startDpopIntrospection(opaque: string, jkt: string): Promise<Upstream> {
  return startUpstream((_req, res, body) => {
    const active = new URLSearchParams(body).get('token') === opaque;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify(
        active ? { active, sub: 'opaque-user', scope: 'api:read', exp: Math.floor(Date.now() / 1000) + 300, cnf: { jkt } } : { active },
      ),
    );
  });
}

describe('gateway: dpop.nonce, one secret per gateway', () => {
  let upstream: Upstream;
  let introspection: Upstream;
  let gw: TestGateway;
  let jkt: string;
  const OPAQUE = 'opaque-dpop-bound-token';
  before(async () => {
    upstream = await startUpstream();
    jkt = await calculateJwkThumbprint(holderJwk);
    introspection = await startDpopIntrospection(OPAQUE, jkt);
    gw = await startGateway(input());
  });
  after(async () => {
    await gw.close();
    await upstream.close();
    await introspection.close();
  });
  function input(iatWindow = '60s') {
    return {
      ...baseConfig(),
      introspection: { endpoint: `${introspection.url}/introspect`, client_id: 'gw', client_secret: 'secret' },
      dpop: { mode: 'allowed' as const, nonce: true, iat_window: iatWindow },
      gateway: {
        routes: [
          { id: 'opaque', match: { path_prefix: '/opaque' }, upstream: { url: upstream.url }, auth: 'introspection' as const, rules: [{}] },
          { id: 'api', upstream: { url: upstream.url }, auth: 'jwt' as const, rules: [{}] },
        ],
      },
    };
  }
  /** The nonce the gateway hands out on a request to `path` with a proof that names none. */
  const nonceFrom = async (path: string, tok: string): Promise<string> => {
    const res = await fetch(`${gw.url}${path}`, {
      headers: { authorization: `DPoP ${tok}`, dpop: await proofAt('GET', `${gw.url}${path}`, tok, Math.floor(Date.now() / 1000)) },
    });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /error="use_dpop_nonce"/);
    const nonce = res.headers.get('dpop-nonce');
    assert.ok(nonce);
    return nonce;
  };
  const callWith = async (path: string, tok: string, nonce: string) =>
    (
      await fetch(`${gw.url}${path}`, {
        headers: {
          authorization: `DPoP ${tok}`,
          dpop: await proofAt('GET', `${gw.url}${path}`, tok, Math.floor(Date.now() / 1000), nonce),
        },
      })
    ).status;

  it('a nonce handed out before a reload is accepted after it (no extra use_dpop_nonce round trip)', async () => {
    const tok = await token({ cnf: { jkt } });
    const nonce = await nonceFrom('/items', tok);
    assert.equal(await callWith('/items', tok, nonce), 200);
    assert.equal(gw.served.reload(parse(input('2m'))).ok, true);
    assert.equal(await callWith('/items', tok, nonce), 200);
  });

  it("a nonce the JWT routes hand out is accepted by the gateway's introspection routes, and the other way round", async () => {
    const tok = await token({ cnf: { jkt } });
    assert.equal(await callWith('/opaque/x', OPAQUE, await nonceFrom('/items', tok)), 200);
    assert.equal(await callWith('/items', tok, await nonceFrom('/opaque/x', OPAQUE)), 200);
  });

  it('a nonce not handed out by this gateway is still refused', async () => {
    const tok = await token({ cnf: { jkt } });
    const res = await fetch(`${gw.url}/items`, {
      headers: {
        authorization: `DPoP ${tok}`,
        dpop: await proofAt('GET', `${gw.url}/items`, tok, Math.floor(Date.now() / 1000), 'A'.repeat(27)),
      },
    });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /error="use_dpop_nonce"/);
  });
});

describe('gateway: the clock skew a DPoP proof gets on an introspection route', () => {
  let upstream: Upstream;
  let introspection: Upstream;
  let gw: TestGateway;
  let jkt: string;
  const OPAQUE = 'opaque-dpop-bound-token-skew';
  before(async () => {
    upstream = await startUpstream();
    jkt = await calculateJwkThumbprint(holderJwk);
    introspection = await startDpopIntrospection(OPAQUE, jkt);
    gw = await startGateway({
      ...baseConfig(),
      // The JWT routes' skew (the issuers') is the larger: proofs on every route get it.
      issuers: baseConfig().issuers!.map((i) => ({ ...i, clock_skew: '45s' })),
      introspection: { endpoint: `${introspection.url}/introspect`, client_id: 'gw', client_secret: 'secret', clock_skew: '5s' },
      dpop: { mode: 'allowed', iat_window: '60s' },
      gateway: {
        routes: [
          { id: 'opaque', match: { path_prefix: '/opaque' }, upstream: { url: upstream.url }, auth: 'introspection', rules: [{}] },
          { id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] },
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
    await introspection.close();
  });
  /** The status of a DPoP request to `path` with `tok` and a proof issued `offset` seconds from now. */
  const callAt = async (path: string, tok: string, offset: number) => {
    const res = await fetch(`${gw.url}${path}`, {
      headers: {
        authorization: `DPoP ${tok}`,
        dpop: await proofAt('GET', `${gw.url}${path}`, tok, Math.floor(Date.now() / 1000) + offset),
      },
    });
    if (res.status === 401) assert.match(res.headers.get('www-authenticate') ?? '', TOO_OLD);
    return res.status;
  };

  it("a proof whose iat is a little in the future (within the JWT routes' clock_skew) is accepted on the introspection route as on the JWT route", async () => {
    const tok = await token({ cnf: { jkt } });
    assert.equal(await callAt('/items', tok, 30), 200);
    assert.equal(await callAt('/opaque/x', OPAQUE, 30), 200);
  });

  it("a proof older than dpop.iat_window but within it plus the JWT routes' clock_skew is accepted on the introspection route as on the JWT route", async () => {
    const tok = await token({ cnf: { jkt } });
    assert.equal(await callAt('/items', tok, -95), 200);
    assert.equal(await callAt('/opaque/x', OPAQUE, -95), 200);
  });

  it('attack: a proof from further in the future, or older, than that skew allows is refused on both routes', async () => {
    const tok = await token({ cnf: { jkt } });
    for (const offset of [55, -115]) {
      assert.equal(await callAt('/items', tok, offset), 401, `JWT route, iat ${offset} s from now`);
      assert.equal(await callAt('/opaque/x', OPAQUE, offset), 401, `introspection route, iat ${offset} s from now`);
    }
  });
});
