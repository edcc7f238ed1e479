/**
 * Two verifiers on one request sharing one DPoP replay cache (the store's, as `storeReplayCache`
 * gives every instance of a service): an app-wide verifier and a stricter one on some routes, each
 * mounted through its adapter. The second verifier checks the proof as the first did, but the
 * proof's one use is the request, not each verifier: recording it again refused the request as a
 * replay of itself. A proof is still single-use across requests, and names one URL.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
import type { ReplayCache } from '../../src/core/ports.ts';
import { storeReplayCache } from '../../src/store/replay.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { createVerifier, type ManagedVerifier } from '../../src/verifier.ts';
import { AUDIENCE, claims, ISSUER, makeKey, sign } from '../helpers/tokens.ts';

const key = makeKey('ES256');
const base = {
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] } }],
  scopes: { 'api:read': {}, admin: {} },
  dpop: { mode: 'allowed' as const },
  realm: 'api',
};
/** App-wide: any authenticated GET. */
const wide = { ...base, rules: [{ id: 'any', methods: ['GET'], path: '/**', scopes: ['api:read'] }] };
/** On /items only: a stricter verifier of its own (here: the same scope, another rule set). */
const strict = { ...base, rules: [{ id: 'items', methods: ['GET'], path: '/items/:id', scopes: ['api:read'] }] };

const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

function proof(method: string, url: string, accessToken: string): Promise<string> {
  const ath = createHash('sha256').update(accessToken).digest('base64url');
  return new SignJWT({ htm: method, htu: url, jti: randomUUID(), ath })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt()
    .sign(holder.privateKey);
}

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

/** `a` app-wide, `b` again on /items/*; `/other` passes `a` only. */
const apps: Record<string, (a: ManagedVerifier, b: ManagedVerifier) => Promise<Running>> = {
  'node:http': async (a, b) => {
    const authA = nodeAuth(a);
    const authB = nodeAuth(b);
    return listenOn(
      createServer(async (req, res) => {
        if (!(await authA(req, res))) return;
        const principal = req.url?.startsWith('/items/') ? await authB(req, res) : await authA(req, res);
        if (principal) res.end(JSON.stringify({ subject: principal.subject }));
      }),
    );
  },
  express: async (a, b) => {
    const app = express();
    app.enable('case sensitive routing');
    app.use(expressAuth(a));
    const router = express.Router({ caseSensitive: true });
    router.use(expressAuth(b));
    router.get('/:id', (req, res) => {
      res.json({ subject: req.principal?.subject });
    });
    app.use('/items', router);
    app.get('/other', (req, res) => {
      res.json({ subject: req.principal?.subject });
    });
    return listenOn(createServer(app));
  },
  fastify: async (a, b) => {
    const app = Fastify();
    await app.register(fastifyAuth(a));
    await app.register(async (scope) => {
      await scope.register(fastifyAuth(b));
      scope.get('/items/:id', async (request) => ({ subject: request.principal?.subject }));
    });
    app.get('/other', async (request) => ({ subject: request.principal?.subject }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    return { origin: originOf(app.server), close: () => app.close() };
  },
  hono: async (a, b) => {
    const app = new Hono<TesseraEnv>();
    app.use('*', honoAuth(a));
    app.use('/items/*', honoAuth(b));
    app.get('/items/:id', (c) => c.json({ subject: c.var.principal.subject }));
    app.get('/other', (c) => c.json({ subject: c.var.principal.subject }));
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
  },
};

const REPLAYED = /error="invalid_dpop_proof", error_description="The DPoP proof was already used\."/;
const OTHER_URI = /error="invalid_dpop_proof", error_description="The DPoP proof is for another URI\."/;

describe('two verifiers sharing the store’s DPoP replay cache on one request', () => {
  let dir: string;
  let store: SqliteStore;
  let replay: ReplayCache;
  let bound: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-shared-replay-'));
    store = await SqliteStore.open({ path: join(dir, 'tessera.db') });
    replay = storeReplayCache(store);
    bound = await sign(key, claims({ scope: 'api:read', cnf: { jkt: await calculateJwkThumbprint(holderJwk) } }));
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [name, start] of Object.entries(apps)) {
    it(`${name}: a DPoP request through both is accepted; its proof replayed, or sent to another URL, is refused`, async () => {
      // Each verifier asks for the store's replay cache, as two parts of an application would.
      const app = await start(createVerifier(wide, { replay: storeReplayCache(store) }), createVerifier(strict, { replay }));
      try {
        const headers = { authorization: `DPoP ${bound}`, dpop: await proof('GET', `${app.origin}/items/1`, bound) };
        const answer = await fetch(`${app.origin}/items/1`, { headers });
        const body = await answer.text();
        assert.equal(answer.status, 200, body);
        assert.equal(JSON.parse(body).subject, 'user-1');

        const replayed = await fetch(`${app.origin}/items/1`, { headers });
        assert.equal(replayed.status, 401);
        assert.match(String(replayed.headers.get('www-authenticate')), REPLAYED);

        // attack: a proof for /other (passing the app-wide verifier only) presented at /items/1.
        const other = { authorization: `DPoP ${bound}`, dpop: await proof('GET', `${app.origin}/other`, bound) };
        const moved = await fetch(`${app.origin}/items/1`, { headers: other });
        assert.equal(moved.status, 401);
        assert.match(String(moved.headers.get('www-authenticate')), OTHER_URI);
        assert.equal((await fetch(`${app.origin}/other`, { headers: other })).status, 200);
        const again = await fetch(`${app.origin}/other`, { headers: other });
        assert.equal(again.status, 401);
        assert.match(String(again.headers.get('www-authenticate')), REPLAYED);
      } finally {
        await app.close();
      }
    });
  }
});
