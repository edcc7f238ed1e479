/**
 * The adapters as an application mounts them, against the real frameworks on port 0: the same
 * verifier mounted twice on a request (app-wide and again on a router or scope), a refusal found
 * after another middleware already answered, and the DPoP nonce exchange (RFC 9449 §9).
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { serve } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { calculateJwkThumbprint, type JWK, SignJWT } from 'jose';
import { expressAuth } from '../../src/adapters/express.ts';
import { fastifyAuth } from '../../src/adapters/fastify.ts';
import { honoAuth, type TesseraEnv } from '../../src/adapters/hono.ts';
import { nodeAuth } from '../../src/adapters/node.ts';
import { createVerifier, type ManagedVerifier } from '../../src/verifier.ts';
import { AUDIENCE, claims, ISSUER, makeKey, sign } from '../helpers/tokens.ts';

const key = makeKey('ES256');
const options = {
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] } }],
  scopes: { 'api:read': {}, admin: {} },
  rules: [
    { id: 'admin', path: '/admin/**', scopes: ['admin'] },
    { id: 'rest', methods: ['GET'], path: '/**', scopes: ['api:read'] },
  ],
  realm: 'api',
};

const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

function proof(method: string, url: string, accessToken: string, nonce?: string): Promise<string> {
  const ath = createHash('sha256').update(accessToken).digest('base64url');
  return new SignJWT({ htm: method, htu: url, jti: randomUUID(), ath, ...(nonce !== undefined ? { nonce } : {}) })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt()
    .sign(holder.privateKey);
}

const boundToken = async () => sign(key, claims({ scope: 'api:read', cnf: { jkt: await calculateJwkThumbprint(holderJwk) } }));

interface Running {
  readonly origin: string;
  close(): Promise<void>;
}

const originOf = (server: Server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

async function listenOn(server: Server): Promise<Running> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    origin: originOf(server),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function honoServer(app: Hono<TesseraEnv>): Promise<Running> {
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server));
  });
  return {
    origin: originOf(server),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Each adapter mounted twice on the routes: app-wide, then again where the routes are (an Express
 * router, a Fastify child scope, a Hono path, a second call in a node:http handler). Express also
 * rewrites `/legacy/...` between the two, as a middleware may.
 */
const mountedTwice: Record<string, (v: ManagedVerifier) => Promise<Running>> = {
  'node:http': async (v) => {
    const auth = nodeAuth(v);
    return listenOn(
      createServer(async (req, res) => {
        if (!(await auth(req, res))) return;
        const principal = await auth(req, res);
        if (principal) res.end(JSON.stringify({ subject: principal.subject }));
      }),
    );
  },
  express: async (v) => {
    const app = express();
    app.enable('case sensitive routing');
    app.use(expressAuth(v));
    app.use((req, _res, next) => {
      if (req.url.startsWith('/legacy/')) req.url = req.url.slice('/legacy'.length);
      next();
    });
    const router = express.Router({ caseSensitive: true });
    router.use(expressAuth(v));
    router.get('/items/:id', (req, res) => {
      res.json({ subject: req.principal?.subject });
    });
    router.get('/admin/secret', (req, res) => {
      res.json({ subject: req.principal?.subject, route: 'admin' });
    });
    app.use(router);
    return listenOn(createServer(app));
  },
  fastify: async (v) => {
    const app = Fastify();
    await app.register(fastifyAuth(v));
    await app.register(async (scope) => {
      await scope.register(fastifyAuth(v));
      scope.get('/items/:id', async (request) => ({ subject: request.principal?.subject }));
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    return { origin: originOf(app.server), close: () => app.close() };
  },
  hono: async (v) => {
    const app = new Hono<TesseraEnv>();
    app.use('*', honoAuth(v));
    app.use('/items/*', honoAuth(v));
    app.get('/items/:id', (c) => c.json({ subject: c.var.principal.subject }));
    return honoServer(app);
  },
};

describe('adapters mounted twice on a request', () => {
  for (const [name, start] of Object.entries(mountedTwice)) {
    it(`${name}: a DPoP-bound request is accepted, not refused as a replay of its own proof by the second mount`, async () => {
      const app = await start(createVerifier({ ...options, dpop: { mode: 'allowed' } }));
      try {
        const token = await boundToken();
        const headers = { authorization: `DPoP ${token}`, dpop: await proof('GET', `${app.origin}/items/1`, token) };
        const answer = await fetch(`${app.origin}/items/1`, { headers });
        const body = await answer.text();
        assert.equal(answer.status, 200, body);
        assert.equal(JSON.parse(body).subject, 'user-1');
        // The proof is still single-use across requests.
        const replay = await fetch(`${app.origin}/items/1`, { headers });
        assert.equal(replay.status, 401);
        assert.match(
          String(replay.headers.get('www-authenticate')),
          /error="invalid_dpop_proof", error_description="The DPoP proof was already used\."/,
        );
      } finally {
        await app.close();
      }
    });
  }

  it('fastify: a second fastifyAuth in a child scope (a stricter verifier for some routes) registers, rather than failing boot on the principal decorator', async () => {
    const app = Fastify();
    await app.register(fastifyAuth(createVerifier({ ...options, dpop: { mode: 'disabled' } })));
    await app.register(async (scope) => {
      await scope.register(
        fastifyAuth(createVerifier({ ...options, dpop: { mode: 'disabled' }, rules: [{ path: '/**', scopes: ['admin'] }] })),
      );
      scope.get('/admin/secret', async (request) => ({ subject: request.principal?.subject }));
    });
    app.get('/items/:id', async (request) => ({ subject: request.principal?.subject }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const reader = await sign(key, claims({ scope: 'api:read' }));
      const admin = await sign(key, claims({ scope: 'api:read admin' }));
      const base = originOf(app.server);
      const get = (path: string, token: string) => fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal((await get('/items/1', reader)).status, 200);
      assert.equal((await get('/admin/secret', reader)).status, 403);
      assert.equal((await get('/admin/secret', admin)).status, 200);
    } finally {
      await app.close();
    }
  });

  it('express: rewrite between the mounts: /legacy/admin/secret, allowed by the catch-all as sent, is checked again as /admin/secret by the second mount (no reuse of the first answer for another path)', async () => {
    const app = await mountedTwice.express!(createVerifier({ ...options, dpop: { mode: 'disabled' } }));
    try {
      const reader = await sign(key, claims({ scope: 'api:read' }));
      const answer = await fetch(`${app.origin}/legacy/admin/secret`, { headers: { authorization: `Bearer ${reader}` } });
      assert.equal(answer.status, 403, await answer.text());
      assert.match(String(answer.headers.get('www-authenticate')), /error="insufficient_scope".*scope="admin"/);
    } finally {
      await app.close();
    }
  });
  it('hono: attack: a middleware between the mounts swaps the Authorization header for a forged token; the second mount verifies the token the request now carries (401), not reusing the first acceptance of another token', async () => {
    const app = new Hono<TesseraEnv>();
    const v = createVerifier({ ...options, dpop: { mode: 'disabled' } });
    const forged = await sign(makeKey('ES256'), claims({ scope: 'api:read', sub: 'mallory' }));
    app.use('*', honoAuth(v));
    app.use('*', async (c, next) => {
      c.req.raw.headers.set('authorization', `Bearer ${forged}`);
      await next();
    });
    app.use('/items/*', honoAuth(v));
    app.get('/items/:id', (c) => c.json({ subject: c.var.principal.subject }));
    const running = await honoServer(app);
    try {
      const reader = await sign(key, claims({ scope: 'api:read' }));
      const answer = await fetch(`${running.origin}/items/1`, { headers: { authorization: `Bearer ${reader}` } });
      assert.equal(answer.status, 401, await answer.text());
      assert.match(String(answer.headers.get('www-authenticate')), /error="invalid_token"/);
    } finally {
      await running.close();
    }
  });
});

describe('a refusal found after another middleware answered (a request timeout)', () => {
  // Introspection that answers "inactive" after 300 ms: the refusal comes after the 503 below.
  const slowVerifier = () =>
    createVerifier(
      {
        introspection: { endpoint: 'https://idp.example/introspect', client_id: 'rs', client_secret: 'secret' },
        dpop: { mode: 'disabled' },
      },
      { introspector: { introspect: () => new Promise((resolve) => setTimeout(() => resolve({ active: false }), 300)) } },
    );
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  before(() => process.on('unhandledRejection', onUnhandled));
  after(() => process.off('unhandledRejection', onUnhandled));

  const timeout = (res: ServerResponse) =>
    setTimeout(() => {
      if (!res.headersSent) res.writeHead(503, { 'content-type': 'text/plain' }).end('timeout');
    }, 50);

  const apps: Record<string, () => Promise<Running>> = {
    'node:http': async () => {
      const auth = nodeAuth(slowVerifier());
      return listenOn(
        createServer(async (req: IncomingMessage, res: ServerResponse) => {
          timeout(res);
          if (await auth(req, res)) res.end('ok');
        }),
      );
    },
    express: async () => {
      const app = express();
      app.enable('case sensitive routing');
      app.use((_req, res, next) => {
        timeout(res);
        next();
      });
      app.use(expressAuth(slowVerifier()));
      app.get('/items/:id', (_req, res) => {
        res.send('ok');
      });
      return listenOn(createServer(app));
    },
  };

  for (const [name, start] of Object.entries(apps)) {
    it(`${name}: the late refusal is dropped (no unhandled rejection, which would end the process), and the server keeps serving`, async () => {
      const app = await start();
      try {
        const first = await fetch(`${app.origin}/items/1`, { headers: { authorization: 'Bearer opaque-token' } });
        assert.equal(first.status, 503);
        assert.equal(await first.text(), 'timeout');
        // Past the introspector's answer, and a turn for any rejection to surface.
        await new Promise((resolve) => setTimeout(resolve, 400));
        assert.deepEqual(unhandled.map(String), []);
        // Still serving: a request without credentials is refused at once, before the timeout.
        const second = await fetch(`${app.origin}/items/1`);
        assert.equal(second.status, 401);
      } finally {
        await app.close();
      }
    });
  }
});

describe('the DPoP nonce exchange through each adapter (RFC 9449 §9)', () => {
  const apps: Record<string, (v: ManagedVerifier) => Promise<Running>> = {
    'node:http': async (v) => {
      const auth = nodeAuth(v);
      return listenOn(
        createServer(async (req, res) => {
          const principal = await auth(req, res);
          if (principal) res.end(JSON.stringify({ subject: principal.subject }));
        }),
      );
    },
    express: async (v) => {
      const app = express();
      app.enable('case sensitive routing');
      app.use(expressAuth(v));
      app.get('/items/:id', (req, res) => {
        res.json({ subject: req.principal?.subject });
      });
      return listenOn(createServer(app));
    },
    fastify: async (v) => {
      const app = Fastify();
      await app.register(fastifyAuth(v));
      app.get('/items/:id', async (request) => ({ subject: request.principal?.subject }));
      await app.listen({ port: 0, host: '127.0.0.1' });
      return { origin: originOf(app.server), close: () => app.close() };
    },
    hono: async (v) => {
      const app = new Hono<TesseraEnv>();
      app.use('*', honoAuth(v));
      app.get('/items/:id', (c) => c.json({ subject: c.var.principal.subject }));
      return honoServer(app);
    },
  };

  for (const [name, start] of Object.entries(apps)) {
    it(`${name}: a proof without a nonce gets 401 use_dpop_nonce with DPoP-Nonce and no-store; the retry with it is served`, async () => {
      const app = await start(createVerifier({ ...options, dpop: { mode: 'required', nonce: true } }));
      try {
        const token = await boundToken();
        const url = `${app.origin}/items/1`;
        const first = await fetch(url, { headers: { authorization: `DPoP ${token}`, dpop: await proof('GET', url, token) } });
        assert.equal(first.status, 401);
        const nonce = first.headers.get('dpop-nonce');
        assert.ok(nonce, 'DPoP-Nonce header');
        assert.equal(first.headers.get('cache-control'), 'no-store');
        assert.match(
          String(first.headers.get('www-authenticate')),
          /^DPoP realm="api", algs="[^"]+", error="use_dpop_nonce", error_description="/,
        );
        assert.deepEqual(Object.keys(JSON.parse(await first.text())).sort(), ['error', 'error_description']);
        const retry = await fetch(url, { headers: { authorization: `DPoP ${token}`, dpop: await proof('GET', url, token, nonce) } });
        const body = await retry.text();
        assert.equal(retry.status, 200, body);
        assert.equal(JSON.parse(body).subject, 'user-1');
      } finally {
        await app.close();
      }
    });
  }
});

describe('hono with form-body tokens: the body the adapter reads is bounded', () => {
  // Hono has no body limit of its own (Express's urlencoded parser stops at 100 KiB, Fastify at
  // 1 MiB): the adapter read every byte of any urlencoded body into memory before verifying.
  const formVerifier = createVerifier({ ...options, rules: undefined, dpop: { mode: 'disabled' }, transport: { form_body: true } });
  let app: Running;
  let token: string;
  before(async () => {
    token = await sign(key, claims({ scope: 'api:read' }));
    const h = new Hono<TesseraEnv>();
    h.use('*', honoAuth(formVerifier));
    h.post('/items', async (c) => c.json({ subject: c.var.principal.subject, length: (await c.req.text()).length }));
    app = await honoServer(h);
  });
  after(() => app.close());
  const form = { 'content-type': 'application/x-www-form-urlencoded' };
  // One connection per request: a server refusing before it read a body closes the connection.
  const post = (headers: Record<string, string>, body: string, chunked = false) =>
    new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const req = httpRequest(`${app.origin}/items`, { method: 'POST', headers, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      });
      req.on('error', reject);
      // Written in two parts the body goes chunked, without a Content-Length to refuse it by.
      if (chunked) req.write(body.slice(0, 1000));
      req.end(chunked ? body.slice(1000) : body);
    });

  it('memory exhaustion: a token after 1 MiB of padding is not read (401 credentials_missing), so no body is read whole', async () => {
    const padding = `pad=${'a'.repeat(1024 * 1024)}`;
    for (const chunked of [false, true]) {
      const answer = await post(form, `${padding}&access_token=${token}`, chunked);
      assert.equal(answer.status, 401, answer.body);
      assert.equal(answer.headers['www-authenticate'], 'Bearer realm="api"');
    }
  });

  it('a small form body still carries the token, and the handler still reads a large body whole', async () => {
    for (const chunked of [false, true]) {
      const small = await post(form, `pad=${'a'.repeat(2000)}&access_token=${token}`, chunked);
      assert.equal(small.status, 200, small.body);
    }
    // A media type is case-insensitive (RFC 9110 §8.3.1), as the verifier core reads it.
    const mixedCase = await post({ 'content-type': 'Application/X-WWW-Form-Urlencoded; charset=UTF-8' }, `access_token=${token}`);
    assert.equal(mixedCase.status, 200, mixedCase.body);
    const body = `pad=${'a'.repeat(2 * 1024 * 1024)}`;
    const large = await post({ ...form, authorization: `Bearer ${token}` }, body);
    assert.equal(large.status, 200, large.body);
    assert.deepEqual(JSON.parse(large.body), { subject: 'user-1', length: body.length });
  });
});

describe('request targets that are no path', () => {
  it('attack: `GET *` (the asterisk form, which node:http passes to the handler for any method) was checked as `/` and allowed by the catch-all rule; it is refused as request_path_invalid, the handler never runs', async () => {
    const v = createVerifier(options);
    await v.ready();
    const auth = nodeAuth(v);
    let reached = 0;
    const running = await listenOn(
      createServer(async (req, res) => {
        if (!(await auth(req, res))) return;
        reached++;
        res.end('ok');
      }),
    );
    try {
      const token = await sign(key, claims({ scope: 'api:read' }));
      const send = (target: string) =>
        new Promise<number>((resolve, reject) => {
          const r = httpRequest(`${running.origin}/`, { path: target, headers: { authorization: `Bearer ${token}` } }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          r.on('error', reject);
          r.end();
        });
      assert.equal(await send('/items/1'), 200, 'a path the catch-all allows');
      assert.equal(reached, 1);
      const status = await send('*');
      assert.ok(status === 400 || status === 403, `refused, got ${status}`);
      assert.equal(reached, 1, 'the handler never ran for *');
    } finally {
      await running.close();
    }
  });
});
