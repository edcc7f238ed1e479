/**
 * A user-supplied callback that throws while a request is verified: nodeAuth's `body` hook, or a
 * verifier whose `verify` rejects (an application's wrapper around it). Each adapter answers 500
 * (itself, or through its framework's error path) with nothing of the error in the answer, reports
 * it by its name and a fixed code only (its message may quote the request: a JSON.parse error
 * quotes the body, an access token in it), and leaves neither the request hanging nor a rejection
 * unhandled. The verifier's `revocation` check that throws is no such failure: the verifier refuses
 * the request (503 `revocation_unavailable`), answered as any refusal.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { serve } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { expressAuth } from '../../src/adapters/express.ts';
import { fastifyAuth } from '../../src/adapters/fastify.ts';
import { honoAuth, type TesseraEnv } from '../../src/adapters/hono.ts';
import { nodeAuth } from '../../src/adapters/node.ts';
import { createVerifier } from '../../src/verifier.ts';
import { AUDIENCE, claims, ISSUER, makeKey, sign } from '../helpers/tokens.ts';

const key = makeKey('ES256');
const options = {
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256' as const], jwks: { keys: [key.jwk] } }],
  dpop: { mode: 'disabled' as const },
};

let token: string;
/** A hook's error quoting the request, as JSON.parse's does. */
const leaky = () => new SyntaxError(`Unexpected token 'a', "Bearer ${token}" is not valid JSON`);
/** A verifier whose `verify` rejects with the hook's error (an application's wrapper around it). */
const failingVerifier = () => ({ ...createVerifier(options), verify: () => Promise.reject(leaky()) });
/** A revocation check that fails (its database is down). */
const failingRevocation = () =>
  createVerifier(options, {
    revocation: {
      epoch: 0,
      isRevoked: () => {
        throw leaky();
      },
    },
    onWarning: (m) => reported.push(m),
  });

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

/** What was written to the console, the process warnings and the frameworks' logs, as text. */
const reported: string[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
const onWarning = (w: Error) => reported.push(`warning ${(w as Error & { code?: string }).code} ${w.name}: ${w.message}\n${w.stack}`);
const consoleError = console.error;
const logStream = new Writable({
  write(chunk, _enc, done) {
    reported.push(String(chunk));
    done();
  },
});

before(async () => {
  token = await sign(key, claims({ scope: 'api:read' }));
  process.on('unhandledRejection', onUnhandled);
  process.on('warning', onWarning);
  console.error = (...args: unknown[]) => {
    reported.push(args.map((a) => (a instanceof Error ? `${a.stack}` : String(a))).join(' '));
  };
});
after(() => {
  process.off('unhandledRejection', onUnhandled);
  process.off('warning', onWarning);
  console.error = consoleError;
});

async function assertServerError(app: Running, expectBody: (body: string) => void, form = false) {
  const answer = await fetch(`${app.origin}/items/1`, {
    // The `body` hook is called for an urlencoded body only.
    ...(form ? { method: 'POST', body: 'a=1' } : {}),
    headers: { authorization: `Bearer ${token}`, ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
    signal: AbortSignal.timeout(3000),
  });
  const body = await answer.text();
  assert.equal(answer.status, 500, body);
  assert.ok(!body.includes(token), 'the token is in the answer');
  assert.ok(!body.includes('not valid JSON'), "the hook's message is in the answer");
  expectBody(body);
  await new Promise((r) => setTimeout(r, 20));
  const all = reported.join('\n');
  assert.ok(!all.includes(token), 'the token was reported');
  assert.ok(!all.includes('not valid JSON'), "the hook's message was reported");
  assert.deepEqual(unhandled, [], 'a rejection went unhandled');
}

describe('a user callback that throws during verification', () => {
  const nodeApp = (auth: ReturnType<typeof nodeAuth>) =>
    listenOn(
      createServer(async (req, res) => {
        const principal = await auth(req, res);
        if (principal) res.end('ok');
      }),
    );

  it('node:http, attack: a `body` hook that throws an error quoting the request: 500 server_error, the error reported by name, the promise resolved', async () => {
    reported.length = 0;
    const auth = nodeAuth(createVerifier(options), {
      body: () => {
        throw leaky();
      },
    });
    const app = await nodeApp(auth);
    try {
      await assertServerError(app, (body) => assert.deepEqual(JSON.parse(body), { error: 'server_error' }), true);
      assert.ok(
        reported.some((r) => r.includes('TESSERA_ADAPTER_FAILED') && r.includes('SyntaxError')),
        `no warning naming the failure: ${reported.join('\n')}`,
      );
    } finally {
      await app.close();
    }
  });

  it('node:http: a verify that rejects: 500 server_error, the request not left hanging', async () => {
    reported.length = 0;
    const app = await nodeApp(nodeAuth(failingVerifier()));
    try {
      await assertServerError(app, (body) => assert.deepEqual(JSON.parse(body), { error: 'server_error' }));
    } finally {
      await app.close();
    }
  });

  it('node:http, attack: a revocation check that throws an error quoting the token: refused 503 temporarily_unavailable with Retry-After (fail closed), nothing of the error in the answer or the warning', async () => {
    reported.length = 0;
    const app = await nodeApp(nodeAuth(failingRevocation()));
    try {
      const answer = await fetch(`${app.origin}/items/1`, {
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(3000),
      });
      const body = await answer.text();
      assert.equal(answer.status, 503, body);
      assert.equal(answer.headers.get('retry-after'), '5');
      assert.deepEqual(JSON.parse(body), {
        error: 'temporarily_unavailable',
        error_description: 'The access token cannot be checked right now.',
      });
      await new Promise((r) => setTimeout(r, 20));
      const all = reported.join('\n');
      assert.match(all, /revocation check \(isRevoked\) threw SyntaxError/);
      assert.ok(!all.includes(token) && !all.includes('not valid JSON'), all);
      assert.deepEqual(unhandled, [], 'a rejection went unhandled');
    } finally {
      await app.close();
    }
  });

  it('express: a verify that rejects goes to the error handler as a 500 error naming no detail of it', async () => {
    reported.length = 0;
    const app = express();
    app.use(expressAuth(failingVerifier()));
    app.get('/items/:id', (_req, res) => {
      res.send('ok');
    });
    const seen: unknown[] = [];
    app.use((err: Error & { status?: number }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      seen.push(err);
      res.status(err.status ?? 500).json({ error: 'server_error', message: err.message });
    });
    const running = await listenOn(createServer(app));
    try {
      await assertServerError(running, (body) => assert.equal(JSON.parse(body).error, 'server_error'));
      assert.equal(seen.length, 1);
      assert.equal((seen[0] as { code?: string }).code, 'TESSERA_ADAPTER_FAILED');
    } finally {
      await running.close();
    }
  });

  it('express: with its default error handler, nothing of the error is in the answer', async () => {
    reported.length = 0;
    const app = express();
    app.use(expressAuth(failingVerifier()));
    app.get('/items/:id', (_req, res) => {
      res.send('ok');
    });
    const running = await listenOn(createServer(app));
    try {
      await assertServerError(running, () => {});
    } finally {
      await running.close();
    }
  });

  it('fastify: a verify that rejects: 500 through its error handler, nothing of the error in the answer or its log', async () => {
    reported.length = 0;
    const app = Fastify({ logger: { level: 'info', stream: logStream } });
    await app.register(fastifyAuth(failingVerifier()));
    app.get('/items/:id', async () => 'ok');
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      await assertServerError({ origin: originOf(app.server), close: async () => {} }, (body) => {
        assert.equal(JSON.parse(body).statusCode, 500);
      });
      assert.ok(
        reported.some((r) => r.includes('TESSERA_ADAPTER_FAILED')),
        'the failure was not logged',
      );
    } finally {
      await app.close();
    }
  });

  it('hono: a verify that rejects: 500 through its error handler, nothing of the error in the answer or on the console', async () => {
    reported.length = 0;
    const app = new Hono<TesseraEnv>();
    app.use('*', honoAuth(failingVerifier()));
    app.get('/items/:id', (c) => c.text('ok'));
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server));
    });
    try {
      await assertServerError(
        {
          origin: originOf(server),
          close: async () => {},
        },
        () => {},
      );
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
