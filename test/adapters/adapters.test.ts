/**
 * The four adapters, each in front of a real server on port 0: the principal reaches the handler
 * on success; refusals carry the status, `WWW-Authenticate` and the JSON error body; the policy
 * sees the path the framework routes on; a DPoP proof names `publicUrl` or the address the server
 * listens on, never the caller's Host header.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { serve } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { getPath as honoGetPath } from 'hono/utils/url';
import { calculateJwkThumbprint, type JWK, SignJWT } from 'jose';
import { expressAuth } from '../../src/adapters/express.ts';
import { fastifyAuth } from '../../src/adapters/fastify.ts';
import { honoAuth, type TesseraEnv } from '../../src/adapters/hono.ts';
import { nodeAuth } from '../../src/adapters/node.ts';
import { ConfigError, ERROR_CODES } from '../../src/core/errors.ts';
import { createVerifier, type ManagedVerifier } from '../../src/verifier.ts';
import { AUDIENCE, claims, ISSUER, makeKey, sign } from '../helpers/tokens.ts';

const key = makeKey('ES256');
const verifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  scopes: { 'api:read': {}, 'api:write': { implies: ['api:read'] }, admin: {} },
  rules: [
    { id: 'admin', path: '/admin/**', scopes: ['admin'] },
    { id: 'read', methods: ['GET'], path: '/items/:id', scopes: ['api:read'] },
    { id: 'write', methods: ['POST'], path: '/items', scopes: ['api:write'] },
    // A permissive catch-all: a path the policy fails to recognise as /admin/** lands here.
    { id: 'rest', methods: ['GET'], path: '/**', scopes: ['api:read'] },
  ],
  dpop: { mode: 'disabled' },
  realm: 'api',
});

interface Running {
  readonly origin: string;
  close(): Promise<void>;
}

const origin = (server: Server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const closeServer = (server: Server) =>
  new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });

async function listenOn(server: Server): Promise<Running> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { origin: origin(server), close: () => closeServer(server) };
}

/** What each adapter takes besides the verifier (`trustProxy` aside, which Hono has not). */
interface AdapterOptions {
  readonly publicUrl?: string;
}

const adapters: Record<string, (v: ManagedVerifier, options?: AdapterOptions) => Promise<Running>> = {
  'node:http': async (v, options) => {
    const auth = nodeAuth(v, options);
    return listenOn(
      createServer(async (req, res) => {
        const principal = await auth(req, res);
        if (!principal) return;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ subject: principal.subject, route: req.url }));
      }),
    );
  },
  express: async (v, options) => {
    const app = express();
    // These rules compare case; Express must then route by case too (see 'path case' below).
    app.enable('case sensitive routing');
    app.use(expressAuth(v, options));
    app.get('/items/:id', (req, res) => {
      res.json({ subject: req.principal?.subject, route: 'items' });
    });
    app.get('/admin/secret', (req, res) => {
      res.json({ subject: req.principal?.subject, route: 'admin' });
    });
    return listenOn(createServer(app));
  },
  fastify: async (v, options) => {
    const app = Fastify();
    await app.register(fastifyAuth(v, options));
    app.get('/items/:id', async (request) => ({ subject: request.principal?.subject, route: 'items' }));
    app.get('/admin/secret', async (request) => ({ subject: request.principal?.subject, route: 'admin' }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    return { origin: origin(app.server), close: () => app.close() };
  },
  hono: async (v, options) => {
    const app = new Hono<TesseraEnv>();
    app.use('*', honoAuth(v, options));
    app.get('/items/:id', (c) => c.json({ subject: c.var.principal.subject, route: 'items' }));
    app.get('/admin/secret', (c) => c.json({ subject: c.var.principal.subject, route: 'admin' }));
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server));
    });
    return { origin: origin(server), close: () => closeServer(server) };
  },
};

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A raw HTTP request: header lines exactly as given (duplicates kept), path sent verbatim. */
function send(base: string, path: string, headers: [string, string][] = [], method = 'GET'): Promise<Answer> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        path,
        method,
        headers: (headers.some(([n]) => n.toLowerCase() === 'host') ? headers : [['host', url.host], ...headers]).flat(),
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const desc = (code: keyof typeof ERROR_CODES) => ERROR_CODES[code].description;

for (const [name, start] of Object.entries(adapters)) {
  describe(`adapter: ${name}`, () => {
    let app: Running;
    let readToken: string;
    before(async () => {
      app = await start(verifier);
      readToken = await sign(key, claims({ scope: 'api:read' }));
    });
    after(() => app.close());

    it('sets the principal for a valid token', async () => {
      const answer = await send(app.origin, '/items/1', [['authorization', `Bearer ${readToken}`]]);
      assert.equal(answer.status, 200, answer.body);
      assert.equal(JSON.parse(answer.body).subject, 'user-1');
    });

    it('answers a request without credentials with 401 and a bare challenge', async () => {
      const answer = await send(app.origin, '/items/1');
      assert.equal(answer.status, 401);
      assert.equal(answer.headers['www-authenticate'], 'Bearer realm="api"');
      assert.match(String(answer.headers['content-type']), /^application\/json/);
      assert.equal(answer.headers['cache-control'], 'no-store');
      assert.deepEqual(JSON.parse(answer.body), { error: 'unauthorized', error_description: desc('credentials_missing') });
    });

    it('answers an invalid token with 401 invalid_token', async () => {
      const answer = await send(app.origin, '/items/1', [['authorization', `Bearer ${readToken.slice(0, -4)}AAAA`]]);
      assert.equal(answer.status, 401);
      assert.equal(
        answer.headers['www-authenticate'],
        `Bearer realm="api", error="invalid_token", error_description="${desc('token_signature_invalid')}"`,
      );
      assert.deepEqual(JSON.parse(answer.body), { error: 'invalid_token', error_description: desc('token_signature_invalid') });
    });

    it('answers a missing scope with 403 insufficient_scope naming the scope', async () => {
      const answer = await send(app.origin, '/admin/secret', [['authorization', `Bearer ${readToken}`]]);
      assert.equal(answer.status, 403);
      assert.equal(
        answer.headers['www-authenticate'],
        `Bearer realm="api", error="insufficient_scope", error_description="${desc('scope_insufficient')}", scope="admin"`,
      );
      assert.deepEqual(JSON.parse(answer.body), { error: 'insufficient_scope', error_description: desc('scope_insufficient') });
    });

    it('answers two Authorization headers with 400 invalid_request, request_multiple_authorization (not a malformed header: Hono reads them joined by a comma)', async () => {
      for (const second of [`Bearer ${readToken}`, `DPoP ${readToken}`, 'Basic dXNlcjpwYXNz']) {
        const answer = await send(app.origin, '/items/1', [
          ['authorization', `Bearer ${readToken}`],
          ['authorization', second],
        ]);
        assert.equal(answer.status, 400);
        assert.equal(
          answer.headers['www-authenticate'],
          `Bearer realm="api", error="invalid_request", error_description="${desc('request_multiple_authorization')}"`,
        );
        assert.deepEqual(JSON.parse(answer.body), { error: 'invalid_request', error_description: desc('request_multiple_authorization') });
      }
    });

    it('answers a query token with 400 when query tokens are off', async () => {
      const answer = await send(app.origin, `/items/1?access_token=${readToken}`);
      assert.equal(answer.status, 400);
      assert.equal(
        answer.headers['www-authenticate'],
        `Bearer realm="api", error="invalid_request", error_description="${desc('request_query_token_disabled')}"`,
      );
    });

    it('applies the policy to the path the framework routes on (percent-encoded admin path)', async () => {
      // Routers decode %61 to "a" before matching; the policy must see /admin/secret too.
      const answer = await send(app.origin, '/%61dmin/secret', [['authorization', `Bearer ${readToken}`]]);
      assert.equal(answer.status, 403, answer.body);
      assert.equal(
        answer.headers['www-authenticate'],
        `Bearer realm="api", error="insufficient_scope", error_description="${desc('scope_insufficient')}", scope="admin"`,
      );
    });

    it('refuses dot segments that a router or upstream would resolve into the admin path', async () => {
      // @hono/node-server resolves dot segments itself (new URL, which also reads %2e%2e as ..), so
      // there the policy sees /admin/secret (403); everywhere else the ambiguous path is refused (400).
      for (const path of ['/items/../admin/secret', '/items/%2e%2e/admin/secret', '/items/1/..%2f..%2fadmin%2fsecret', '/items//x']) {
        const answer = await send(app.origin, path, [['authorization', `Bearer ${readToken}`]]);
        const expected = name === 'hono' && !path.includes('%2f') && !path.includes('//') ? 403 : 400;
        assert.equal(answer.status, expected, `${path}: ${answer.body}`);
        if (expected === 400) {
          assert.equal(
            answer.headers['www-authenticate'],
            `Bearer realm="api", error="invalid_request", error_description="${desc('request_path_invalid')}"`,
          );
        }
      }
    });
  });
}

// A GET-only rule before a catch-all for any method: each framework runs the GET handler for HEAD.
const headVerifier = createVerifier({
  issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
  scopes: { 'api:read': {}, admin: {} },
  rules: [
    { id: 'admin-read', methods: ['GET'], path: '/admin/**', scopes: ['admin'] },
    { id: 'rest', path: '/**', scopes: ['api:read'] },
  ],
  dpop: { mode: 'disabled' },
  realm: 'api',
});

for (const [name, start] of Object.entries(adapters)) {
  it(`${name}: HEAD bypass: HEAD /admin/secret (served by the GET handler) gets the GET-only admin rule's 403, not the catch-all`, async () => {
    const app = await start(headVerifier);
    try {
      const reader = await sign(key, claims({ scope: 'api:read' }));
      for (const method of ['GET', 'HEAD']) {
        const answer = await send(app.origin, '/admin/secret', [['authorization', `Bearer ${reader}`]], method);
        assert.equal(answer.status, 403, method);
        assert.match(String(answer.headers['www-authenticate']), /scope="admin"/, method);
      }
      assert.equal((await send(app.origin, '/items/1', [['authorization', `Bearer ${reader}`]], 'HEAD')).status, 200);
    } finally {
      await app.close();
    }
  });
}

describe('path case and authority: the rules see the path the application serves', () => {
  let readToken: string;
  before(async () => {
    readToken = await sign(key, claims({ scope: 'api:read' }));
  });

  it('node:http: a Host header holding a path (h/public) does not move the path the rules see', async () => {
    const app = await adapters['node:http']!(verifier);
    try {
      const host = `${new URL(app.origin).host}/public`;
      const answer = await send(app.origin, '/admin/secret', [
        ['host', host],
        ['authorization', `Bearer ${readToken}`],
      ]);
      assert.equal(answer.status, 403, `the rules saw /public/admin/secret: ${answer.body}`);
    } finally {
      await app.close();
    }
  });

  it('express: case-sensitive rules under Express default (case-insensitive) routing are refused, never bypassed by /ADMIN', async () => {
    const e = express();
    e.use(expressAuth(verifier));
    let reached = false;
    e.get('/admin/secret', (_req, res) => {
      reached = true;
      res.json({ route: 'admin' });
    });
    e.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500).json({ error: error.name, message: error.message });
    });
    const app = await listenOn(createServer(e));
    try {
      const answer = await send(app.origin, '/ADMIN/secret', [['authorization', `Bearer ${readToken}`]]);
      assert.equal(answer.status, 500);
      assert.equal(reached, false);
      assert.equal(JSON.parse(answer.body).error, 'ConfigError');
      assert.match(JSON.parse(answer.body).message, /case_insensitive_paths: .*case sensitive routing/);
    } finally {
      await app.close();
    }
  });

  it("express: case bypass through routing the setting does not reach (an express.Router() with its default caseSensitive: false, the app's router built before 'case sensitive routing' was enabled, a mounted sub-app) is refused, never served", async () => {
    const builds: [string, () => express.Express][] = [
      [
        'a Router',
        () => {
          const e = express();
          e.enable('case sensitive routing');
          e.use(expressAuth(verifier));
          const r = express.Router();
          r.get('/admin/secret', (_req, res) => {
            res.json({ route: 'admin' });
          });
          e.use(r);
          return e;
        },
      ],
      [
        'enabled late',
        () => {
          const e = express();
          e.use(expressAuth(verifier));
          e.get('/admin/secret', (_req, res) => {
            res.json({ route: 'admin' });
          });
          e.enable('case sensitive routing');
          return e;
        },
      ],
      [
        'a sub-app',
        () => {
          const e = express();
          e.enable('case sensitive routing');
          e.use(expressAuth(verifier));
          const sub = express();
          sub.get('/secret', (_req, res) => {
            res.json({ route: 'admin' });
          });
          e.use('/admin', sub);
          return e;
        },
      ],
    ];
    for (const [what, build] of builds) {
      const e = build();
      e.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
        res.status(500).json({ error: error.name, message: error.message });
      });
      const app = await listenOn(createServer(e));
      try {
        for (const path of ['/ADMIN/secret', '/admin/SECRET']) {
          const answer = await send(app.origin, path, [['authorization', `Bearer ${readToken}`]]);
          assert.equal(answer.status, 500, `${what} ${path}: ${answer.body}`);
          assert.equal(JSON.parse(answer.body).error, 'ConfigError', what);
          assert.match(JSON.parse(answer.body).message, /case_insensitive_paths/, what);
        }
      } finally {
        await app.close();
      }
    }
    // A Router made with caseSensitive: true under a case-sensitive app passes.
    const e = express();
    e.enable('case sensitive routing');
    e.use(expressAuth(verifier));
    const r = express.Router({ caseSensitive: true });
    r.get('/items/:id', (_req, res) => {
      res.json({ route: 'items' });
    });
    e.use(r);
    const app = await listenOn(createServer(e));
    try {
      assert.equal((await send(app.origin, '/items/1', [['authorization', `Bearer ${readToken}`]])).status, 200);
    } finally {
      await app.close();
    }
  });

  it('express: with case_insensitive_paths the rule for /admin/** applies to /ADMIN/secret and /Admin/secret/', async () => {
    const e = express();
    e.use(expressAuth(createVerifier({ ...verifier.config, case_insensitive_paths: true })));
    e.get('/admin/secret', (_req, res) => {
      res.json({ route: 'admin' });
    });
    const app = await listenOn(createServer(e));
    try {
      for (const path of ['/ADMIN/secret', '/Admin/secret/', '/admin/secret']) {
        const answer = await send(app.origin, path, [['authorization', `Bearer ${readToken}`]]);
        assert.equal(answer.status, 403, `${path}: ${answer.body}`);
        assert.match(String(answer.headers['www-authenticate']), /scope="admin"/);
      }
    } finally {
      await app.close();
    }
  });

  it('express: case-folding bypass: with case_insensitive_paths, /adm%C4%B1n/secret (ı is I to .NET, Java, Python) is refused 400, not let through by the catch-all', async () => {
    const e = express();
    e.use(expressAuth(createVerifier({ ...verifier.config, case_insensitive_paths: true })));
    const reached: string[] = [];
    e.use((req, res) => {
      reached.push(req.url);
      res.json({ route: 'any' });
    });
    const app = await listenOn(createServer(e));
    try {
      for (const path of ['/adm%C4%B1n/secret', '/%C5%BFecret', '/items/%E2%84%AA', '/%EF%AC%81les']) {
        const answer = await send(app.origin, path, [['authorization', `Bearer ${readToken}`]]);
        assert.equal(answer.status, 400, `${path}: ${answer.body}`);
        assert.equal(JSON.parse(answer.body).error, 'invalid_request', path);
      }
      assert.deepEqual(reached, []);
      // Other characters outside ASCII pass as before.
      assert.equal((await send(app.origin, '/caf%C3%A9', [['authorization', `Bearer ${readToken}`]])).status, 200);
      assert.deepEqual(reached, ['/caf%C3%A9']);
    } finally {
      await app.close();
    }
  });

  it('fastify: case-sensitive rules under caseSensitive: false are refused at registration', async () => {
    const f = Fastify({ caseSensitive: false });
    await assert.rejects(
      async () => {
        await f.register(fastifyAuth(verifier));
        await f.ready();
      },
      { name: 'ConfigError', message: /case_insensitive_paths/ },
    );
    await f.close();
  });
});

describe('path rewriting: the rules see the path the framework routes, not the one it was rewritten from', () => {
  let readToken: string;
  before(async () => {
    readToken = await sign(key, claims({ scope: 'api:read' }));
  });

  it('fastify: with useSemicolonDelimiter, /admin;x=1 (routed to /admin) is checked as /admin', async () => {
    for (const options of [{ routerOptions: { useSemicolonDelimiter: true } }, { useSemicolonDelimiter: true }]) {
      // FastifyRouterOptions does not declare useSemicolonDelimiter (find-my-way's option), Fastify 5 passes it on.
      const f = Fastify(options as { logger?: false });
      await f.register(fastifyAuth(verifier));
      let reached = false;
      f.get('/admin', async () => {
        reached = true;
        return { route: 'admin' };
      });
      await f.listen({ port: 0, host: '127.0.0.1' });
      try {
        const answer = await send(origin(f.server), '/admin;x=1', [['authorization', `Bearer ${readToken}`]]);
        assert.equal(answer.status, 403, `${JSON.stringify(options)}: the rules saw /admin;x=1 (rest rule): ${answer.body}`);
        assert.match(String(answer.headers['www-authenticate']), /scope="admin"/);
        assert.equal(reached, false);
      } finally {
        await f.close();
      }
    }
  });

  it('fastify: a rewriteUrl rewrite (/legacy/admin/secret served as /admin/secret) is checked as /admin/secret', async () => {
    const f = Fastify({ rewriteUrl: (req) => (req.url ?? '/').replace(/^\/legacy(?=\/)/, '') });
    await f.register(fastifyAuth(verifier));
    let reached = false;
    f.get('/admin/secret', async () => {
      reached = true;
      return { route: 'admin' };
    });
    await f.listen({ port: 0, host: '127.0.0.1' });
    try {
      const answer = await send(origin(f.server), '/legacy/admin/secret', [['authorization', `Bearer ${readToken}`]]);
      assert.equal(answer.status, 403, answer.body);
      assert.equal(reached, false);
    } finally {
      await f.close();
    }
  });

  it('hono: with a getPath of its own (case folded, a /legacy prefix dropped), /ADMIN/secret and /legacy/admin/secret (routed to /admin/secret) are checked as /admin/secret', async () => {
    const h = new Hono<TesseraEnv>({
      getPath: (req) =>
        honoGetPath(req)
          .toLowerCase()
          .replace(/^\/legacy(?=\/)/, ''),
    });
    h.use('*', honoAuth(verifier));
    let reached = false;
    h.get('/admin/secret', (c) => {
      reached = true;
      return c.json({ route: 'admin' });
    });
    h.get('/items/:id', (c) => c.json({ route: 'items' }));
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: h.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server));
    });
    try {
      for (const path of ['/ADMIN/secret', '/legacy/admin/secret', '/Admin/Secret/']) {
        const answer = await send(origin(server), path, [['authorization', `Bearer ${readToken}`]]);
        assert.equal(answer.status, 403, `${path}: ${answer.body}`);
        assert.match(String(answer.headers['www-authenticate']), /scope="admin"/, path);
      }
      assert.equal(reached, false);
      // Paths routed as sent are checked as sent (trailing slash and escapes alike).
      for (const path of ['/items/1', '/ITEMS/1', '/%69tems/1']) {
        assert.equal((await send(origin(server), path, [['authorization', `Bearer ${readToken}`]])).status, 200, path);
      }
    } finally {
      await closeServer(server);
    }
  });

  it('hono: two Authorization headers are request_multiple_authorization on any runtime (a Web Request without @hono/node-server, which holds them joined by a comma), and one header written as two credentials is malformed under node-server, as node:http reads it; a header a middleware rewrote to one credential is that one', async () => {
    const h = new Hono<TesseraEnv>();
    h.use('/rewritten/*', async (c, next) => {
      c.req.raw.headers.set('authorization', `Bearer ${readToken}`);
      await next();
    });
    h.use('*', honoAuth(verifier));
    h.get('*', (c) => c.json({ subject: c.var.principal.subject }));
    const reason = async (res: Response) => {
      assert.equal(res.status, 400);
      return /error_description="([^"]*)"/.exec(res.headers.get('www-authenticate') ?? '')?.[1];
    };
    const two = new Headers([
      ['authorization', `Bearer ${readToken}`],
      ['authorization', `DPoP ${readToken}`],
    ]);
    assert.equal(
      await reason(await h.fetch(new Request('http://api.test/items/1', { headers: two }))),
      desc('request_multiple_authorization'),
    );
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: h.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server));
    });
    try {
      const oneHeader = await send(origin(server), '/items/1', [['authorization', `Bearer ${readToken}, Bearer ${readToken}`]]);
      assert.equal(oneHeader.status, 400);
      assert.equal(JSON.parse(oneHeader.body).error_description, desc('request_malformed_authorization'));
      const rewritten = await send(origin(server), '/rewritten/1', [
        ['authorization', `Bearer ${readToken}`],
        ['authorization', 'Basic dXNlcjpwYXNz'],
      ]);
      assert.equal(rewritten.status, 200, rewritten.body);
    } finally {
      await closeServer(server);
    }
  });

  it('hono: with strict: false (a trailing slash ignored), /admin/secret/ is checked as the admin path', async () => {
    const h = new Hono<TesseraEnv>({ strict: false });
    h.use('*', honoAuth(verifier));
    h.get('/admin/secret', (c) => c.json({ route: 'admin' }));
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: h.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server));
    });
    try {
      const answer = await send(origin(server), '/admin/secret/', [['authorization', `Bearer ${readToken}`]]);
      assert.equal(answer.status, 403, answer.body);
    } finally {
      await closeServer(server);
    }
  });

  it('express: a req.url rewrite before the middleware (/legacy/admin/secret served as /admin/secret) is checked as /admin/secret', async () => {
    const e = express();
    e.enable('case sensitive routing');
    e.use((req, _res, next) => {
      req.url = req.url.replace(/^\/legacy(?=\/)/, '');
      next();
    });
    e.use(expressAuth(verifier));
    let reached = false;
    e.get('/admin/secret', (_req, res) => {
      reached = true;
      res.json({ route: 'admin' });
    });
    const app = await listenOn(createServer(e));
    try {
      const answer = await send(app.origin, '/legacy/admin/secret', [['authorization', `Bearer ${readToken}`]]);
      assert.equal(answer.status, 403, answer.body);
      assert.equal(reached, false);
    } finally {
      await app.close();
    }
  });
});

describe('adapter: express mounted under a path', () => {
  let app: Running;
  before(async () => {
    const e = express();
    e.enable('case sensitive routing');
    e.use('/api', expressAuth(createVerifier({ ...verifier.config, rules: [{ path: '/api/items/:id', scopes: ['api:read'] }] })));
    e.get('/api/items/:id', (req, res) => {
      res.json({ subject: req.principal?.subject });
    });
    app = await listenOn(createServer(e));
  });
  after(() => app.close());

  it('matches rules against the full request path, not the path below the mount point', async () => {
    const token = await sign(key, claims({ scope: 'api:read' }));
    const answer = await send(app.origin, '/api/items/1', [['authorization', `Bearer ${token}`]]);
    assert.equal(answer.status, 200, answer.body);
    assert.equal(JSON.parse(answer.body).subject, 'user-1');
  });
});

describe('adapters with form-body tokens enabled', () => {
  const formVerifier = createVerifier({ ...verifier.config, transport: { form_body: true, query: false }, rules: undefined });
  const apps: Record<string, Running> = {};
  let token: string;
  before(async () => {
    token = await sign(key, claims({ scope: 'api:read' }));
    const e = express();
    e.use(express.json(), express.urlencoded({ extended: true }));
    e.use(expressAuth(formVerifier));
    e.use((req, res) => {
      res.json({ subject: req.principal?.subject });
    });
    apps.express = await listenOn(createServer(e));
    const f = Fastify();
    f.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });
    await f.register(fastifyAuth(formVerifier));
    f.post('/items', async (request) => ({ subject: request.principal?.subject }));
    await f.listen({ port: 0, host: '127.0.0.1' });
    apps.fastify = { origin: origin(f.server), close: () => f.close() };
    // node:http: the application reads the body and hands it over as text.
    const auth = nodeAuth(formVerifier, { body: (req) => (req as typeof req & { text?: string }).text });
    apps['node:http'] = await listenOn(
      createServer(async (req, res) => {
        let text = '';
        for await (const chunk of req) text += chunk;
        (req as typeof req & { text?: string }).text = text;
        const principal = await auth(req, res);
        if (principal) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ subject: principal.subject }));
      }),
    );
    const h = new Hono<TesseraEnv>();
    h.use('*', honoAuth(formVerifier));
    h.post('/items', (c) => c.json({ subject: c.var.principal.subject }));
    const server = await new Promise<Server>((resolve) => {
      const started = serve({ fetch: h.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(started as Server));
    });
    apps.hono = { origin: origin(server), close: () => closeServer(server) };
  });
  after(async () => {
    for (const a of Object.values(apps)) await a.close();
  });

  const post = (base: string, headers: Record<string, string>, body: string) =>
    fetch(`${base}/items`, { method: 'POST', headers, body }).then(async (r) => ({ status: r.status, body: await r.text() }));

  for (const name of ['node:http', 'express', 'fastify', 'hono']) {
    it(`${name}: accepts a token in an urlencoded body`, async () => {
      const answer = await post(apps[name]!.origin, { 'content-type': 'application/x-www-form-urlencoded' }, `access_token=${token}`);
      assert.equal(answer.status, 200, answer.body);
      assert.equal(JSON.parse(answer.body).subject, 'user-1');
    });

    it(`${name}: a JSON body that is an array or holds non-string values is not a server error`, async () => {
      for (const body of ['[1,2]', '{"x":{"toString":1,"valueOf":1}}', '{"x":null,"y":[{"a":1}]}']) {
        const answer = await post(apps[name]!.origin, { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body);
        assert.equal(answer.status, 200, `${body}: ${answer.body}`);
      }
    });

    it(`attack: ${name}: a JSON API whose payload has a member named access_token (RFC 6750 §2.2 defines the parameter for urlencoded bodies only) is neither refused beside an Authorization header (was 400 request_multiple_methods) nor authenticated by it`, async () => {
      const json = { 'content-type': 'application/json; charset=utf-8' };
      for (const value of ['"x"', `"${token}"`, '{"toString":1}', '["a","b"]', '42', `"&access_token=${token}&"`]) {
        const body = `{"access_token":${value}}`;
        const withHeader = await post(apps[name]!.origin, { ...json, authorization: `Bearer ${token}` }, body);
        assert.equal(withHeader.status, 200, `${value}: ${withHeader.body}`);
        assert.equal(JSON.parse(withHeader.body).subject, 'user-1');
        const alone = await post(apps[name]!.origin, json, body);
        assert.equal(alone.status, 401, `${value}: ${alone.body}`);
        assert.deepEqual(JSON.parse(alone.body), { error: 'unauthorized', error_description: desc('credentials_missing') });
      }
      // Nor any other body that reads as a form: only the urlencoded media type is one.
      for (const type of ['text/plain', 'application/x-www-form-urlencodedx', 'multipart/form-data; boundary=x']) {
        const answer = await post(apps[name]!.origin, { 'content-type': type }, `access_token=${token}`);
        // Fastify answers a type it has no parser for (415) before any hook.
        assert.ok(answer.status === 401 || (name === 'fastify' && answer.status === 415), `${type}: ${answer.status} ${answer.body}`);
      }
    });
  }

  it('express: two access_token members in an urlencoded body are two methods', async () => {
    const answer = await post(
      apps.express!.origin,
      { 'content-type': 'application/x-www-form-urlencoded' },
      `access_token=${token}&access_token=${token}`,
    );
    assert.equal(answer.status, 400, answer.body);
    assert.deepEqual(JSON.parse(answer.body), { error: 'invalid_request', error_description: desc('request_multiple_methods') });
  });
});

const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

function proof(method: string, url: string, accessToken: string): Promise<string> {
  return new SignJWT({ htm: method, htu: url, jti: randomUUID(), ath: createHash('sha256').update(accessToken).digest('base64url') })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt()
    .sign(holder.privateKey);
}

const OTHER_URI = /DPoP .*error="invalid_dpop_proof", error_description="The DPoP proof is for another URI\."/;

for (const [name, start] of Object.entries(adapters)) {
  describe(`adapter: ${name}, the URL a DPoP proof names (RFC 9449 §4.3)`, () => {
    const dpopVerifier = () => createVerifier({ ...verifier.config, dpop: { ...verifier.config.dpop, mode: 'allowed' } });
    let bound: string;
    before(async () => {
      bound = await sign(key, claims({ scope: 'api:read', cnf: { jkt: await calculateJwkThumbprint(holderJwk) } }));
    });
    const call = async (app: Running, htu: string, host: string) =>
      send(app.origin, '/items/1', [
        ['host', host],
        ['authorization', `DPoP ${bound}`],
        ['dpop', await proof('GET', htu, bound)],
      ]);

    it('Host spoofing: a proof made for another server is refused though the request names that server in its Host header', async () => {
      const app = await start(dpopVerifier());
      try {
        const spoofed = await call(app, 'http://evil.example/items/1', 'evil.example');
        assert.equal(spoofed.status, 401, spoofed.body);
        assert.match(String(spoofed.headers['www-authenticate']), OTHER_URI);
        // Without publicUrl the proof names the address the server listens on, whatever Host says.
        const own = await call(app, `${app.origin}/items/1`, 'evil.example');
        assert.equal(own.status, 200, own.body);
      } finally {
        await app.close();
      }
    });

    it('publicUrl: the proof names it, whatever Host the request carries', async () => {
      const app = await start(dpopVerifier(), { publicUrl: 'https://api.example/' });
      try {
        const named = await call(app, 'https://api.example/items/1', 'evil.example');
        assert.equal(named.status, 200, named.body);
        const local = await call(app, `${app.origin}/items/1`, new URL(app.origin).host);
        assert.equal(local.status, 401, local.body);
        assert.match(String(local.headers['www-authenticate']), OTHER_URI);
      } finally {
        await app.close();
      }
    });

    it('attack: an absolute-form target (`GET m://x/items/1`) does not extend publicUrl’s host: a proof captured at https://api.example.com is refused at https://api.example.co', async () => {
      const app = await start(dpopVerifier(), { publicUrl: 'https://api.example.co' });
      try {
        // Appended to the origin, the target made the URL https://api.example.com://x/items/1.
        const res = await send(app.origin, 'm://x/items/1', [
          ['authorization', `DPoP ${bound}`],
          ['dpop', await proof('GET', 'https://api.example.com//x/items/1', bound)],
        ]);
        // @hono/node-server refuses such a target itself; Hono reads the path of the URL it builds.
        if (name === 'hono') assert.equal(res.status, 400, res.body);
        else {
          assert.equal(res.status, 401, res.body);
          assert.match(String(res.headers['www-authenticate']), OTHER_URI);
        }
      } finally {
        await app.close();
      }
    });
  });
}

for (const name of ['node:http', 'express', 'fastify'] as const) {
  describe(`adapter: ${name} with trustProxy, the URL a DPoP proof names`, () => {
    it('htu spoofing through an appending proxy: the caller’s X-Forwarded-Host: evil.example (and -Proto) before the proxy’s own entry is not the URL the proof must name', async () => {
      const start = adapters[name] as (v: ManagedVerifier, options?: { trustProxy: boolean }) => Promise<Running>;
      const app = await start(createVerifier({ ...verifier.config, dpop: { ...verifier.config.dpop, mode: 'allowed' } }), {
        trustProxy: true,
      });
      try {
        const bound = await sign(key, claims({ scope: 'api:read', cnf: { jkt: await calculateJwkThumbprint(holderJwk) } }));
        // The caller's lines, then the ones the proxy appended (Node joins them: `evil.example, api.example`).
        const call = async (htu: string) =>
          send(app.origin, '/items/1', [
            ['x-forwarded-proto', 'http'],
            ['x-forwarded-host', 'evil.example'],
            ['x-forwarded-proto', 'https'],
            ['x-forwarded-host', 'api.example'],
            ['authorization', `DPoP ${bound}`],
            ['dpop', await proof('GET', htu, bound)],
          ]);
        const spoofed = await call('http://evil.example/items/1');
        assert.equal(spoofed.status, 401, spoofed.body);
        assert.match(String(spoofed.headers['www-authenticate']), OTHER_URI);
        const ok = await call('https://api.example/items/1');
        assert.equal(ok.status, 200, ok.body);
      } finally {
        await app.close();
      }
    });

    it('attack: an absolute-form target (`GET m://x/items/1`) does not extend the forwarded host: a proof captured at https://api.example.com is refused behind a proxy forwarding api.example.co', async () => {
      const start = adapters[name] as (v: ManagedVerifier, options?: { trustProxy: boolean }) => Promise<Running>;
      const app = await start(createVerifier({ ...verifier.config, dpop: { ...verifier.config.dpop, mode: 'allowed' } }), {
        trustProxy: true,
      });
      try {
        const bound = await sign(key, claims({ scope: 'api:read', cnf: { jkt: await calculateJwkThumbprint(holderJwk) } }));
        const res = await send(app.origin, 'm://x/items/1', [
          ['x-forwarded-proto', 'https'],
          ['x-forwarded-host', 'api.example.co'],
          ['authorization', `DPoP ${bound}`],
          ['dpop', await proof('GET', 'https://api.example.com//x/items/1', bound)],
        ]);
        assert.equal(res.status, 401, res.body);
        assert.match(String(res.headers['www-authenticate']), OTHER_URI);
      } finally {
        await app.close();
      }
    });
  });
}

describe('adapters: publicUrl is checked when the middleware is created', () => {
  for (const publicUrl of [
    'api.example',
    'ftp://api.example',
    'https://api.example/api',
    'https://api.example/?x=1',
    'https://api.example/#x',
    'https://u:p@api.example',
  ]) {
    it(`refuses ${publicUrl}`, () => {
      for (const make of [
        () => nodeAuth(verifier, { publicUrl }),
        () => expressAuth(verifier, { publicUrl }),
        () => fastifyAuth(verifier, { publicUrl }),
        () => honoAuth(verifier, { publicUrl }),
      ]) {
        assert.throws(make, { name: 'ConfigError', message: /publicUrl/ });
      }
    });
  }
});

describe('adapters: options are validated once, every problem at once, and read once', () => {
  const makers = {
    nodeAuth: (v: unknown, o?: unknown) => nodeAuth(v as ManagedVerifier, o as never),
    expressAuth: (v: unknown, o?: unknown) => expressAuth(v as ManagedVerifier, o as never),
    fastifyAuth: (v: unknown, o?: unknown) => fastifyAuth(v as ManagedVerifier, o as never),
    honoAuth: (v: unknown, o?: unknown) => honoAuth(v as ManagedVerifier, o as never),
  };
  const issues = (make: () => unknown): { path: string; message: string }[] => {
    try {
      make();
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.code, 'ERR_INVALID_CONFIG');
      return [...e.issues];
    }
    assert.fail('no ConfigError');
  };

  it("trustProxy: 'false' (a string, truthy) is refused rather than trusting X-Forwarded-Host, with every other problem", () => {
    for (const make of [makers.nodeAuth, makers.expressAuth, makers.fastifyAuth]) {
      const found = issues(() => make(verifier, { publicUrl: 42, trustProxy: 'false' }));
      assert.deepEqual(
        found.map((i) => i.path),
        ['publicUrl', 'trustProxy'],
      );
      assert.match(found[1]?.message ?? '', /true or false/);
    }
    assert.match(issues(() => makers.nodeAuth(verifier, { body: 'urlencoded' }))[0]?.message ?? '', /function/);
  });

  it('an unknown option (a misspelling, or one another adapter takes) is refused and the known ones named', () => {
    for (const make of Object.values(makers)) {
      const [issue, ...more] = issues(() => make(verifier, { publicURL: 'https://api.example' }));
      assert.deepEqual(more, []);
      assert.equal(issue?.path, 'publicURL');
      assert.match(issue?.message ?? '', /unknown option.*publicUrl/);
    }
    // Hono takes publicUrl alone: trustProxy was ignored, and DPoP proofs then had to name http://host.invalid.
    assert.equal(issues(() => makers.honoAuth(verifier, { trustProxy: true }))[0]?.path, 'trustProxy');
    // Express and Fastify read the parsed body themselves.
    assert.equal(issues(() => makers.expressAuth(verifier, { body: () => undefined }))[0]?.path, 'body');
    assert.equal(issues(() => makers.fastifyAuth(verifier, { body: () => undefined }))[0]?.path, 'body');
  });

  it('options that are not an object, and a verifier that is not one (the options passed in its place), are refused at creation', () => {
    for (const make of Object.values(makers)) {
      assert.equal(issues(() => make(verifier, 'https://api.example'))[0]?.path, '(options)');
      assert.equal(issues(() => make(verifier, null))[0]?.path, '(options)');
      const [issue] = issues(() => make(verifier.config, {}));
      assert.equal(issue?.path, '(verifier)');
      assert.match(issue?.message ?? '', /createVerifier/);
    }
  });

  it('options changed after the middleware was made change nothing (trustProxy set later did not pass a proof for the Host header)', async () => {
    const options: { trustProxy?: boolean } = {};
    const auth = nodeAuth(createVerifier({ ...verifier.config, dpop: { ...verifier.config.dpop, mode: 'allowed' } }), options);
    options.trustProxy = true;
    const app = await listenOn(
      createServer(async (req, res) => {
        if (await auth(req, res)) res.end('ok');
      }),
    );
    try {
      const bound = await sign(key, claims({ scope: 'api:read', cnf: { jkt: await calculateJwkThumbprint(holderJwk) } }));
      const answer = await send(app.origin, '/items/1', [
        ['host', 'evil.example'],
        ['authorization', `DPoP ${bound}`],
        ['dpop', await proof('GET', 'http://evil.example/items/1', bound)],
      ]);
      assert.equal(answer.status, 401, answer.body);
      assert.match(String(answer.headers['www-authenticate']), OTHER_URI);
    } finally {
      await app.close();
    }
  });
});

describe('adapters with dpop.nonce: a proof naming a nonce of the previous slot is answered with the current one (RFC 9449 §9; fake clock across slots)', () => {
  const SLOT_MS = 300_000;
  // A clock at the start of a slot: each step below moves it by one slot exactly.
  let nowMs = Math.floor(Date.now() / SLOT_MS) * SLOT_MS + 1000;
  const clock = () => nowMs;
  const seconds = () => Math.floor(nowMs / 1000);
  const nonceProof = (url: string, accessToken: string, nonce?: string): Promise<string> =>
    new SignJWT({
      htm: 'GET',
      htu: url,
      jti: randomUUID(),
      ath: createHash('sha256').update(accessToken).digest('base64url'),
      ...(nonce !== undefined ? { nonce } : {}),
    })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
      .setIssuedAt(seconds())
      .sign(holder.privateKey);

  for (const [name, start] of Object.entries(adapters)) {
    it(`${name}: the allowed response carries DPoP-Nonce when the proof's nonce ages out; a current one gets none; a refused one still gets it on the 401`, async () => {
      const v = createVerifier({ ...verifier.config, dpop: { ...verifier.config.dpop, mode: 'required', nonce: true } }, { clock });
      const app = await start(v, { publicUrl: 'https://api.example' });
      try {
        const bound = await sign(
          key,
          claims({ scope: 'api:read', cnf: { jkt: await calculateJwkThumbprint(holderJwk) }, exp: seconds() + 3600 }, seconds()),
        );
        const call = async (nonce?: string) =>
          send(app.origin, '/items/1', [
            ['authorization', `DPoP ${bound}`],
            ['dpop', await nonceProof('https://api.example/items/1', bound, nonce)],
          ]);
        const first = await call();
        assert.equal(first.status, 401, first.body);
        assert.match(String(first.headers['www-authenticate']), /error="use_dpop_nonce"/);
        const n1 = first.headers['dpop-nonce'];
        assert.equal(typeof n1, 'string');
        const current = await call(n1 as string);
        assert.equal(current.status, 200, current.body);
        assert.equal(current.headers['dpop-nonce'], undefined);

        nowMs += SLOT_MS; // n1 is now of the previous slot: still accepted, the next nonce given
        const aging = await call(n1 as string);
        assert.equal(aging.status, 200, aging.body);
        assert.equal(JSON.parse(aging.body).subject, 'user-1');
        const n2 = aging.headers['dpop-nonce'];
        assert.equal(typeof n2, 'string');
        assert.notEqual(n2, n1);
        const followed = await call(n2 as string);
        assert.equal(followed.status, 200, followed.body);
        assert.equal(followed.headers['dpop-nonce'], undefined);

        nowMs += SLOT_MS; // n1 is two slots old: refused, with the current nonce to retry with
        const stale = await call(n1 as string);
        assert.equal(stale.status, 401, stale.body);
        assert.match(String(stale.headers['www-authenticate']), /error="use_dpop_nonce"/);
        assert.equal(typeof stale.headers['dpop-nonce'], 'string');
        assert.notEqual(stale.headers['dpop-nonce'], n1);
        // n2 (of the previous slot now) is still good, and answered with that same current nonce.
        const kept = await call(n2 as string);
        assert.equal(kept.status, 200, kept.body);
        assert.equal(kept.headers['dpop-nonce'], stale.headers['dpop-nonce']);
      } finally {
        await app.close();
      }
    });
  }
});
