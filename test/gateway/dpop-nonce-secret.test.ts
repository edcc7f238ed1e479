/**
 * `dpop.nonce_secret` (RFC 9449 §9): standalone gateways behind one load balancer, each its own
 * process, accept each other's DPoP nonces when they share the secret, so a client that got
 * `use_dpop_nonce` from one instance and retries on another is let through; without the secret,
 * or with another one, the nonce is refused with 401 `use_dpop_nonce` and a new `DPoP-Nonce`.
 * The secret replaces the key `tessera serve` derives from the master key, applies at a reload,
 * and never appears in a log line or a configuration error.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { inspect } from 'node:util';
import { calculateJwkThumbprint, type JWK, SignJWT } from 'jose';
import pino from 'pino';
import WebSocket, { WebSocketServer } from 'ws';
import { ConfigError } from '../../src/core/errors.ts';
import { createDpopNonces } from '../../src/core/verify/dpop.ts';
import type { GatewayDeps } from '../../src/gateway/gateway.ts';
import { createVerifier } from '../../src/verifier.ts';
import {
  AUDIENCE,
  baseConfig,
  ISSUER,
  key,
  parse,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from './helpers.ts';

const SECRET = 'dpop-nonce-secret-shared-0123456789-abcdefghij';
const OTHER_SECRET = 'dpop-nonce-secret-another-0123456789-klmnopqrst';
const PUBLIC = 'https://api.example';

const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

/**
 * A proof for `${PUBLIC}${path}` (default /items), bound to `accessToken`, naming `nonce` when
 * given, issued at `iat` (seconds; default now).
 */
function proof(accessToken: string, nonce?: string, { path = '/items', iat }: { path?: string; iat?: number } = {}): Promise<string> {
  return new SignJWT({
    htm: 'GET',
    htu: `${PUBLIC}${path}`,
    jti: randomUUID(),
    ath: createHash('sha256').update(accessToken).digest('base64url'),
    ...(nonce !== undefined ? { nonce } : {}),
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt(iat)
    .sign(holder.privateKey);
}

/** A log that keeps every line, at trace level. */
function captured(): { logger: pino.Logger; text: () => string } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { logger: pino({ level: 'trace' }, sink), text: () => lines.join('') };
}

describe('tessera gateway: dpop.nonce_secret shared by the instances behind one load balancer', () => {
  let upstream: Upstream;
  let bound: string;
  const started: TestGateway[] = [];
  const logs: (() => string)[] = [];
  before(async () => {
    upstream = await startUpstream();
    bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
  });
  after(async () => {
    for (const g of started) await g.close();
    await upstream.close();
  });

  const input = (secret?: string) => ({
    ...baseConfig(),
    // Both instances are one service to their clients: the proofs name its public URL.
    server: { public_url: `${PUBLIC}/` },
    dpop: { mode: 'required' as const, nonce: true, ...(secret !== undefined ? { nonce_secret: '${DPOP_NONCE_SECRET}' } : {}) },
    gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt' as const, rules: [{}] }] },
  });
  /** A standalone gateway (serveGateway, as `tessera gateway` runs it), `secret` from the environment. */
  const instance = async (secret?: string, deps: GatewayDeps = {}) => {
    const log = captured();
    const g = await startGateway(input(secret), { logger: log.logger, ...deps }, secret !== undefined ? { DPOP_NONCE_SECRET: secret } : {});
    started.push(g);
    logs.push(log.text);
    return Object.assign(g, { log: log.text });
  };
  const call = async (g: TestGateway, nonce?: string) =>
    fetch(`${g.url}/items`, { headers: { authorization: `DPoP ${bound}`, dpop: await proof(bound, nonce) } });
  /** The nonce `g` hands out to a proof that names none. */
  const nonceFrom = async (g: TestGateway): Promise<string> => {
    const res = await call(g);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /error="use_dpop_nonce"/);
    const nonce = res.headers.get('dpop-nonce');
    assert.ok(nonce);
    return nonce;
  };
  /** `g` refuses `nonce` as one it did not hand out, and gives its own to retry with. */
  const assertRefused = async (g: TestGateway, nonce: string) => {
    const seen = upstream.seen.length;
    const res = await call(g, nonce);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /DPoP .*error="use_dpop_nonce"/);
    const fresh = res.headers.get('dpop-nonce');
    assert.ok(fresh, 'a DPoP-Nonce to retry with');
    assert.notEqual(fresh, nonce);
    assert.equal(upstream.seen.length, seen, 'the refused request reached the upstream');
    return fresh;
  };

  it('a nonce instance A handed out is accepted by instance B with the same secret: one retry is enough', async () => {
    const a = await instance(SECRET);
    const b = await instance(SECRET);
    const nonce = await nonceFrom(a);
    const seen = upstream.seen.length;
    const res = await call(b, nonce);
    assert.equal(res.status, 200);
    assert.equal(upstream.seen.length, seen + 1);
    const got = upstream.seen.at(-1)!;
    assert.equal(got.method, 'GET');
    assert.equal(got.url, '/items');
    assert.equal(got.headers.dpop, undefined, 'the proof reached the upstream');
    assert.ok(!JSON.stringify(got.headers).includes(bound), 'the token reached the upstream');
    // And the other way round: B's nonce at A.
    assert.equal((await call(a, await nonceFrom(b))).status, 200);
  });

  it("attack: a nonce of an instance with another secret is refused (401 use_dpop_nonce, the instance's own DPoP-Nonce)", async () => {
    const a = await instance(SECRET);
    const b = await instance(OTHER_SECRET);
    const fresh = await assertRefused(b, await nonceFrom(a));
    assert.equal((await call(b, fresh)).status, 200, 'the nonce it gave is good at it');
  });

  it('attack: without the secret each instance has its own random key, and refuses the other instance’s nonce', async () => {
    const a = await instance();
    const b = await instance();
    await assertRefused(b, await nonceFrom(a));
    await assertRefused(a, await nonceFrom(b));
    // A secret on one side only is another key still.
    await assertRefused(await instance(SECRET), await nonceFrom(a));
  });

  it('the secret replaces the key a host gives (tessera serve derives one from the master key): its nonces are the secret’s', async () => {
    // Two hosts with different master keys, as two `tessera serve` data directories would have.
    const a = await instance(SECRET, { verifierRuntime: { dpopNonces: createDpopNonces() } });
    const b = await instance(SECRET, { verifierRuntime: { dpopNonces: createDpopNonces() } });
    const standalone = await instance(SECRET);
    assert.equal((await call(b, await nonceFrom(a))).status, 200);
    assert.equal((await call(standalone, await nonceFrom(a))).status, 200);
  });

  it('a reload that changes the secret applies at once: a nonce under the old one is refused, one under the new one accepted', async () => {
    const a = await instance(SECRET);
    const b = await instance(SECRET);
    const old = await nonceFrom(a);
    assert.equal(a.served.reload(parse(input(OTHER_SECRET), { DPOP_NONCE_SECRET: OTHER_SECRET })).ok, true);
    const fresh = await assertRefused(a, old);
    assert.equal((await call(a, fresh)).status, 200);
    await assertRefused(b, fresh);
    // The same secret again: nonces stay good across the reload.
    const kept = await nonceFrom(a);
    assert.equal(a.served.reload(parse(input(OTHER_SECRET), { DPOP_NONCE_SECRET: OTHER_SECRET })).ok, true);
    assert.equal((await call(a, kept)).status, 200);
  });

  it('without the secret the gateway warns at load that its nonces are this process’s own; with it, not', async () => {
    const without = await instance();
    const warning = without
      .log()
      .split('\n')
      .find((l) => /"event":"config_warning"/.test(l) && /dpop\.nonce_secret/.test(l));
    assert.ok(warning, without.log());
    assert.match(warning, /random key of this process/);
    const withSecret = await instance(SECRET);
    assert.equal(/dpop\.nonce_secret/.test(withSecret.log()), false, withSecret.log());
  });

  it('the secret appears in no log line of any instance', () => {
    const text = logs.map((l) => l()).join('\n');
    assert.ok(text.length > 0);
    for (const s of [SECRET, OTHER_SECRET]) assert.equal(text.includes(s), false);
  });
});

describe('dpop.nonce_secret: configuration errors', () => {
  const SHORT = 'short-nonce-secret-value-x';
  const withSecret = (nonce_secret: string) => ({
    ...baseConfig(),
    dpop: { mode: 'allowed' as const, nonce: true, nonce_secret },
    gateway: { routes: [{ id: 'api', upstream: { url: 'http://127.0.0.1:9' }, auth: 'jwt' as const, rules: [{}] }] },
  });

  for (const [what, value, env] of [
    ['written in the file', SHORT, {}],
    ['from the environment', '${DPOP_NONCE_SECRET}', { DPOP_NONCE_SECRET: SHORT }],
  ] as const) {
    it(`a secret shorter than 32 characters (${what}) is refused at dpop.nonce_secret without being quoted`, () => {
      try {
        parse(withSecret(value), env);
        assert.fail('expected a ConfigError');
      } catch (e) {
        assert.ok(e instanceof ConfigError, String(e));
        const issue = e.issues.find((i) => i.path === 'dpop.nonce_secret');
        assert.ok(issue, e.message);
        assert.match(issue.message, /at least 32 characters/);
        const text = `${e.message} ${JSON.stringify(e.issues)} ${inspect(e, { depth: Number.POSITIVE_INFINITY })}`;
        assert.equal(text.includes(SHORT), false, text);
      }
    });
  }

  it('a secret of 32 characters or more is taken', () => {
    assert.equal(parse(withSecret(SECRET)).dpop.nonce_secret, SECRET);
  });
});

describe('dpop.nonce_secret in the library (createVerifier, the adapters)', () => {
  const verifierWith = (nonce_secret?: string) =>
    createVerifier({
      issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
      dpop: { mode: 'required', nonce: true, ...(nonce_secret !== undefined ? { nonce_secret } : {}) },
    });
  const request = async (bound: string, nonce?: string) => ({
    method: 'GET',
    url: `${PUBLIC}/items`,
    headers: { authorization: `DPoP ${bound}`, dpop: await proof(bound, nonce) },
  });
  const nonceOf = async (v: ReturnType<typeof verifierWith>, bound: string): Promise<string> => {
    const r = await v.verify(await request(bound));
    assert.equal(r.ok, false);
    assert.ok(!r.ok);
    assert.equal(r.error.code, 'dpop_nonce_required');
    assert.ok(r.error.details.dpopNonce);
    return r.error.details.dpopNonce;
  };

  it('two verifiers with the same secret accept each other’s nonces; with another secret or none, not', async () => {
    const bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
    const a = verifierWith(SECRET);
    const nonce = await nonceOf(a, bound);
    assert.equal((await verifierWith(SECRET).verify(await request(bound, nonce))).ok, true);
    for (const other of [verifierWith(OTHER_SECRET), verifierWith()]) {
      const r = await other.verify(await request(bound, nonce));
      assert.ok(!r.ok);
      assert.equal(r.error.code, 'dpop_nonce_required');
    }
  });
});

describe('gateway: a fresh DPoP-Nonce on allowed responses (RFC 9449 §9)', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let bound: string;
  // Nonces are of 5-minute slots, each good in its slot and the next: the clock is moved by slots.
  let nowMs = Date.now();
  before(async () => {
    // An upstream setting DPoP-Nonce of its own, which must never reach the caller.
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'dpop-nonce': 'upstream-chosen-nonce' }).end('ok');
    });
    bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) }, exp: Math.floor(nowMs / 1000) + 7200 });
    gw = await startGateway(
      {
        ...baseConfig(),
        server: { public_url: `${PUBLIC}/` },
        dpop: { mode: 'allowed', nonce: true },
        gateway: {
          routes: [
            { id: 'api', match: { path_prefix: '/items' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] },
            { id: 'bearer', match: { path_prefix: '/plain' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] },
          ],
        },
      },
      { clock: () => nowMs },
    );
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const call = async (nonce?: string) =>
    fetch(`${gw.url}/items`, {
      headers: {
        authorization: `DPoP ${bound}`,
        dpop: await proof(bound, nonce, { path: '/items', iat: Math.floor(nowMs / 1000) }),
      },
    });

  it('a proof whose nonce is of the previous slot is allowed with the current one in DPoP-Nonce, so the client never meets use_dpop_nonce; a current one gets none; the upstream’s own DPoP-Nonce never reaches the caller', async () => {
    const first = await call();
    assert.equal(first.status, 401);
    const n1 = first.headers.get('dpop-nonce');
    assert.ok(n1);
    const current = await call(n1);
    assert.equal(current.status, 200);
    assert.equal(current.headers.get('dpop-nonce'), null, 'its nonce is the current one: none sent, not the upstream’s');
    nowMs += 300_000;
    const aging = await call(n1);
    assert.equal(aging.status, 200);
    const n2 = aging.headers.get('dpop-nonce');
    assert.ok(n2 !== null && n2 !== n1 && n2 !== 'upstream-chosen-nonce', `a fresh nonce of the gateway’s: ${n2}`);
    nowMs += 300_000;
    // n1 has now expired (the client that kept it pays a retry); n2, taken from the answer, passes.
    assert.equal((await call(n1)).status, 401);
    const next = await call(n2);
    assert.equal(next.status, 200);
    const n3 = next.headers.get('dpop-nonce');
    assert.ok(n3 !== null && n3 !== n2 && n3 !== 'upstream-chosen-nonce', `the next nonce: ${n3}`);
    assert.equal((await call(n3)).headers.get('dpop-nonce'), null);
  });

  it('attack: the upstream cannot set DPoP-Nonce for the caller on a bearer request either', async () => {
    const res = await fetch(`${gw.url}/plain`, {
      headers: { authorization: `Bearer ${await token({ exp: Math.floor(nowMs / 1000) + 3600 })}` },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('dpop-nonce'), null);
  });
});

describe('gateway: a fresh DPoP-Nonce on a WebSocket 101 (RFC 9449 §9)', () => {
  let upstream: Upstream;
  let wss: WebSocketServer;
  let gw: TestGateway;
  let bound: string;
  // Nonces are of 5-minute slots, each good in its slot and the next: the clock is moved by slots.
  let nowMs = Date.now();
  before(async () => {
    upstream = await startUpstream();
    // An upstream whose 101 sets DPoP-Nonce of its own, which must never reach the caller.
    wss = new WebSocketServer({ noServer: true });
    wss.on('headers', (headers) => headers.push('DPoP-Nonce: upstream-chosen-nonce'));
    upstream.server.on('upgrade', (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (m) => ws.send(`echo:${m.toString()}`))),
    );
    bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) }, exp: Math.floor(nowMs / 1000) + 7200 });
    gw = await startGateway(
      {
        ...baseConfig(),
        server: { public_url: `${PUBLIC}/` },
        dpop: { mode: 'allowed', nonce: true },
        gateway: { routes: [{ id: 'ws', match: { path_prefix: '/ws' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] }] },
      },
      { clock: () => nowMs },
    );
  });
  after(async () => {
    await gw.close();
    wss.close();
    await upstream.close();
  });

  /** A real WebSocket upgrade of /ws with a proof naming `nonce`: the status and DPoP-Nonce answered, and an echo when upgraded. */
  const upgrade = async (nonce?: string) => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws`, {
      headers: {
        authorization: `DPoP ${bound}`,
        dpop: await proof(bound, nonce, { path: '/ws', iat: Math.floor(nowMs / 1000) }),
      },
    });
    return new Promise<{ status: number; nonce: string | undefined; echo?: string }>((resolve, reject) => {
      let answer: IncomingMessage | undefined;
      ws.once('upgrade', (res: IncomingMessage) => {
        answer = res;
      });
      ws.once('open', () => {
        ws.once('message', (m) => {
          resolve({ status: 101, nonce: answer?.headers['dpop-nonce'] as string | undefined, echo: m.toString() });
          ws.close();
        });
        ws.send('hi');
      });
      ws.once('unexpected-response', (_req, res: IncomingMessage) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, nonce: res.headers['dpop-nonce'] as string | undefined });
        ws.terminate();
      });
      ws.once('error', reject);
    });
  };

  it('an upgrade whose proof names a nonce of the previous slot is switched (101) with the current one in DPoP-Nonce, so the client never meets use_dpop_nonce; a current one gets none; the upstream’s own DPoP-Nonce never reaches the caller', async () => {
    const first = await upgrade();
    assert.equal(first.status, 401);
    const n1 = first.nonce;
    assert.ok(n1);
    const current = await upgrade(n1);
    assert.deepEqual(
      current,
      { status: 101, nonce: undefined, echo: 'echo:hi' },
      'its nonce is the current one: none sent, not the upstream’s',
    );
    nowMs += 300_000;
    const aging = await upgrade(n1);
    assert.equal(aging.status, 101);
    assert.equal(aging.echo, 'echo:hi');
    const n2 = aging.nonce;
    assert.ok(n2 !== undefined && n2 !== n1 && n2 !== 'upstream-chosen-nonce', `a fresh nonce of the gateway’s: ${n2}`);
    nowMs += 300_000;
    // n1 has now expired (the client that kept it pays a retry); n2, taken from the 101, passes.
    assert.equal((await upgrade(n1)).status, 401);
    const next = await upgrade(n2);
    assert.equal(next.status, 101);
    const n3 = next.nonce;
    assert.ok(n3 !== undefined && n3 !== n2 && n3 !== 'upstream-chosen-nonce', `the next nonce: ${n3}`);
    assert.equal((await upgrade(n3)).nonce, undefined);
  });
});
