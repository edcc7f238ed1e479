/**
 * No secret in any output (DEVELOPERS.md, PRODUCT.md non-negotiables): many failing
 * verifications of many token shapes, and the token never appears in the error message,
 * JSON.stringify(error), error.toJSON(), util.inspect(error), the stack, the challenges, the
 * adapters' response bodies and headers, or `tessera token decode` output.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import { serve } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { SignJWT } from 'jose';
import pino from 'pino';
import { expressAuth } from '../src/adapters/express.ts';
import { fastifyAuth } from '../src/adapters/fastify.ts';
import { honoAuth, type TesseraEnv } from '../src/adapters/hono.ts';
import { nodeAuth } from '../src/adapters/node.ts';
import { denyResponse } from '../src/adapters/response.ts';
import { ConfigError, type TesseraError } from '../src/core/errors.ts';
import type { VerifyRequest } from '../src/core/verify/extract.ts';
import { createVerifier, type ManagedVerifier } from '../src/verifier.ts';
import * as gwh from './gateway/helpers.ts';
import { rawHttp } from './helpers/net.ts';
import { jsonWith, signRaw } from './helpers/raw.ts';
import { AUDIENCE, b64json, claims, ISSUER, makeKey, sign } from './helpers/tokens.ts';
import { listen } from './helpers/verify.ts';

const key = makeKey('ES256');
const attacker = makeKey('ES256', key.kid);
const STATIC = 'static-secret-token-0123456789abcdefghijklmnopqrstuv';

let verifier: ManagedVerifier;
let introspection: Awaited<ReturnType<typeof listen>>;
const tokens: string[] = [];

/** Every place a secret could leak from an error. */
function surfaces(error: TesseraError, v: ManagedVerifier): string[] {
  const response = denyResponse(error, v.challenges);
  return [
    error.message,
    String(error),
    error.stack ?? '',
    JSON.stringify(error),
    JSON.stringify(error.toJSON()),
    JSON.stringify(error.details),
    inspect(error, { depth: Number.POSITIVE_INFINITY, showHidden: true }),
    ...v.challenges(error),
    response.body,
    JSON.stringify(response.headers),
  ];
}

/** The token and its signature segment (a distinctive secret part) must appear nowhere. */
function assertNoSecret(text: string, secret: string, where: string): void {
  assert.ok(!text.includes(secret), `${where} contains the token`);
  const sig = secret.slice(secret.lastIndexOf('.') + 1);
  if (sig.length >= 16) assert.ok(!text.includes(sig), `${where} contains the token signature`);
}

before(async () => {
  introspection = await listen((_req, res) => {
    res.writeHead(500).end();
  });
  verifier = createVerifier({
    issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] }, token_type: 'at+jwt' }],
    static_tokens: [{ id: 'gw', token: STATIC }],
    introspection: { endpoint: `${introspection.origin}/introspect`, client_id: 'rs', client_secret: 'introspection-secret-value' },
    transport: { query: true, form_body: true },
    dpop: { mode: 'allowed' },
  });
  const now = Math.floor(Date.now() / 1000);
  const typ = { typ: 'at+jwt' };
  tokens.push(
    await sign(key, claims({ exp: now - 3600, iat: now - 7200 }), typ),
    await sign(key, claims({ aud: 'https://other.test' }), typ),
    await sign(key, claims({ iss: 'https://evil.test' }), typ),
    await sign(key, claims({ nbf: now + 3600 }), typ),
    await sign(key, claims({ exp: String(now + 60) }), typ),
    await sign(key, claims({ cnf: { jkt: 'not-the-proof-key' } }), typ),
    await sign(key, claims()),
    await sign(attacker, claims(), typ),
    await sign(key, claims(), { ...typ, kid: 'unknown-kid' }),
    await sign(key, claims(), { ...typ, jku: 'https://evil.test/jwks' }),
    signRaw(key, JSON.stringify({ alg: 'ES256', kid: key.kid, typ: 'at+jwt' }), jsonWith(claims(), '"sub":"admin"')),
    `${b64json({ alg: 'none' })}.${b64json(claims())}.c2lnbmF0dXJlLXRoYXQtc2hvdWxkLW5vdC1sZWFr`,
    `${(await sign(key, claims(), typ)).slice(0, -6)}AAAAAA`,
    'opaque-secret-token-abcdefghijklmnopqrstuvwxyz012345',
    `${STATIC.slice(0, -1)}X`,
    `${'A'.repeat(9000)}SECRETTAIL`,
  );
});
after(() => introspection.close());

describe('secrecy: verifier errors never contain the token', () => {
  it('for every failing token, every transport and every error surface', async () => {
    let checked = 0;
    for (const token of tokens) {
      const requests: VerifyRequest[] = [
        { method: 'GET', url: 'https://api.test/x', headers: { authorization: `Bearer ${token}` } },
        { method: 'GET', url: 'https://api.test/x', headers: { authorization: `DPoP ${token}`, dpop: token } },
        { method: 'GET', url: `https://api.test/x?access_token=${encodeURIComponent(token)}`, headers: {} },
        {
          method: 'POST',
          url: 'https://api.test/x',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `access_token=${encodeURIComponent(token)}`,
        },
        {
          method: 'GET',
          url: `https://api.test/x?access_token=${encodeURIComponent(token)}`,
          headers: { authorization: `Bearer ${token}` },
        },
        { method: 'GET', url: 'https://api.test/x', headers: { authorization: [`Bearer ${token}`, `Bearer ${token}`] } },
      ];
      for (const request of requests) {
        const result = await verifier.verify(request);
        assert.equal(result.ok, false, 'every token here must fail');
        assert.ok(!result.ok);
        for (const text of surfaces(result.error, verifier)) assertNoSecret(text, token, result.error.code);
        checked++;
      }
      // verifyToken has no transport: a DPoP-bound token is valid there (its binding is the caller's).
      const bare = await verifier.verifyToken(token);
      if (!bare.ok) for (const text of surfaces(bare.error, verifier)) assertNoSecret(text, token, bare.error.code);
    }
    assert.equal(checked, tokens.length * 6);
  });

  it('for a DPoP proof that fails, neither the token nor the proof appears', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const { exportJWK, calculateJwkThumbprint } = await import('jose');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = await exportJWK(publicKey);
    const token = await sign(key, claims({ cnf: { jkt: await calculateJwkThumbprint(jwk) } }), { typ: 'at+jwt' });
    const proof = await new SignJWT({ htm: 'POST', htu: 'https://api.test/x', iat: Math.floor(Date.now() / 1000), jti: 'j1' })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk })
      .sign(privateKey);
    const result = await verifier.verify({
      method: 'GET',
      url: 'https://api.test/x',
      headers: { authorization: `DPoP ${token}`, dpop: proof },
    });
    assert.ok(!result.ok);
    assert.equal(result.error.code, 'dpop_htm_mismatch');
    for (const text of surfaces(result.error, verifier)) {
      assertNoSecret(text, token, 'dpop');
      assertNoSecret(text, proof, 'dpop');
    }
  });

  it('a valid principal carries a short hash, never the token', async () => {
    const token = await sign(key, claims(), { typ: 'at+jwt' });
    const result = await verifier.verify({ method: 'GET', url: 'https://api.test/x', headers: { authorization: `Bearer ${token}` } });
    assert.ok(result.ok);
    assertNoSecret(JSON.stringify(result.principal), token, 'principal');
    assertNoSecret(inspect(result.principal, { depth: Number.POSITIVE_INFINITY }), token, 'principal');
    // The same short hash the token service writes to the audit trail, so the two correlate.
    assert.equal(result.principal.tokenHash, createHash('sha256').update(token).digest('base64url').slice(0, 16));
    const stat = await verifier.verify({ method: 'GET', url: 'https://api.test/x', headers: { authorization: `Bearer ${STATIC}` } });
    assert.ok(stat.ok);
    assertNoSecret(inspect(stat.principal, { depth: Number.POSITIVE_INFINITY }), STATIC, 'static principal');
    assert.equal(stat.principal.tokenHash, createHash('sha256').update(STATIC).digest('base64url').slice(0, 16));
  });

  it('configuration errors never echo a secret value', () => {
    for (const input of [
      { static_tokens: [{ id: 'gw', token: 'short-secret' }] },
      { static_tokens: [{ id: 'gw', token: STATIC, bogus: true }] },
      { introspection: { endpoint: 'ftp://x', client_id: 'rs', client_secret: 'introspection-secret-value' } },
    ]) {
      try {
        createVerifier(input as never);
        assert.fail('expected a ConfigError');
      } catch (e) {
        const text = `${(e as Error).message} ${JSON.stringify(e)} ${inspect(e, { depth: Number.POSITIVE_INFINITY })}`;
        for (const secret of ['short-secret', STATIC, 'introspection-secret-value']) assert.ok(!text.includes(secret), secret);
      }
    }
  });

  it('configuration errors never quote a token or secret given in the wrong option (a JWT as an algorithm, a client secret as a duration)', async () => {
    const jwt = await sign(key, claims({ scope: 'api:read' }));
    const secrets = [
      jwt,
      'tcs_bq24astychcDn6FhKIsHySr_WPpaJovEBZyjfi7EWxw', // a client secret as `tessera clients add` prints it
      'q3J/kd8+Zx0Pw9LmT4rVb2Nc7Ye5Ua1Ho6Gi3Sf8Dt0=', // `openssl rand -base64 32`
      '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', // a master key in hex
    ];
    const issuer = { issuer: ISSUER, audiences: [AUDIENCE], jwks_uri: 'https://idp.example/jwks' };
    const problems = 9;
    for (const secret of secrets) {
      const input = {
        issuers: [{ ...issuer, algorithms: [secret], clock_skew: secret }],
        dpop: { algorithms: [secret], iat_window: secret },
        scopes: { 'api:read': { implies: [secret] } },
        rules: [{ path: secret, methods: [secret], scopes: [secret] }],
        [secret]: true,
      };
      try {
        createVerifier(input as never);
        assert.fail('expected a ConfigError');
      } catch (e) {
        assert.ok(e instanceof ConfigError, String(e));
        assert.ok(e.issues.length >= problems, e.message);
        const text = `${e.message} ${JSON.stringify(e.issues)} ${inspect(e, { depth: Number.POSITIVE_INFINITY })}`;
        assertNoSecret(text, secret, `ConfigError for ${secret.slice(0, 6)}…`);
        for (const part of secret.split(/[./+]/))
          if (part.length >= 16) assert.ok(!text.includes(part), `a part of ${secret.slice(0, 6)}…`);
      }
    }
    // The gateway's and the token service's sections alike.
    for (const secret of secrets) {
      try {
        gwh.parse({
          ...gwh.baseConfig(),
          token_service: { keys: { algorithm: secret }, store: { driver: secret } },
          gateway: {
            routes: [{ id: 'r', upstream: { url: 'http://127.0.0.1:9' }, auth: secret, rules: [{}], max_body_size: secret }],
            identity_headers: { [secret]: 'x-id' },
          },
        } as never);
        assert.fail('expected a ConfigError');
      } catch (e) {
        assert.ok(e instanceof ConfigError, String(e));
        assert.ok(e.issues.length >= 4, e.message);
        assertNoSecret(`${e.message} ${JSON.stringify(e.issues)}`, secret, `tessera.yaml ConfigError for ${secret.slice(0, 6)}…`);
      }
    }
    // Short values that are no secret's shape are still quoted: they are what the reader must fix.
    try {
      createVerifier({ issuers: [{ ...issuer, clock_skew: '30x' }], rules: [{ path: 'items', methods: ['GE T'] }] });
      assert.fail('expected a ConfigError');
    } catch (e) {
      assert.match((e as Error).message, /"30x" is not a duration/);
      assert.match((e as Error).message, /"GE T" is not an upper-case HTTP method/);
      assert.match((e as Error).message, /\(got "items"\)/);
    }
  });
});

describe('secrecy: adapter responses never contain the token', () => {
  const origin = (server: Server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const started: { name: string; origin: string; close: () => Promise<void> }[] = [];

  before(async () => {
    const nodeServer = createServer(async (req, res) => {
      const p = await nodeAuth(verifier)(req, res);
      if (p) res.end('ok');
    });
    await new Promise<void>((r) => nodeServer.listen(0, '127.0.0.1', r));
    started.push({ name: 'node', origin: origin(nodeServer), close: () => new Promise((r) => nodeServer.close(() => r())) });

    const e = express();
    e.use(express.urlencoded({ extended: false }));
    e.use(expressAuth(verifier));
    e.use((_req, res) => {
      res.send('ok');
    });
    const expressServer = createServer(e);
    await new Promise<void>((r) => expressServer.listen(0, '127.0.0.1', r));
    started.push({ name: 'express', origin: origin(expressServer), close: () => new Promise((r) => expressServer.close(() => r())) });

    const f = Fastify();
    f.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });
    await f.register(fastifyAuth(verifier));
    f.all('/*', async () => 'ok');
    await f.listen({ port: 0, host: '127.0.0.1' });
    started.push({ name: 'fastify', origin: origin(f.server), close: () => f.close() });

    const h = new Hono<TesseraEnv>();
    h.use('*', honoAuth(verifier));
    h.all('*', (c) => c.text('ok'));
    const honoServer = await new Promise<Server>((r) => {
      const s = serve({ fetch: h.fetch, port: 0, hostname: '127.0.0.1' }, () => r(s as Server));
    });
    started.push({ name: 'hono', origin: origin(honoServer), close: () => new Promise((r) => honoServer.close(() => r())) });
  });
  after(async () => {
    for (const s of started) await s.close();
  });

  it('for failing tokens in the header, the query and the body', async () => {
    for (const { name, origin: base } of started) {
      for (const token of tokens.slice(0, 8).concat(tokens.slice(-3))) {
        const attempts: [string, RequestInit][] = [
          [`${base}/x`, { headers: { authorization: `Bearer ${token}` } }],
          [`${base}/x?access_token=${encodeURIComponent(token)}`, { headers: { authorization: `Bearer ${token}` } }],
          [
            `${base}/x`,
            {
              method: 'POST',
              headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
              body: `access_token=${encodeURIComponent(token)}`,
            },
          ],
        ];
        for (const [url, init] of attempts) {
          const response = await fetch(url, init);
          const body = await response.text();
          assert.notEqual(response.status, 200, `${name}: a failing token was accepted`);
          assertNoSecret(body, token, `${name} body`);
          assertNoSecret(JSON.stringify([...response.headers]), token, `${name} headers`);
        }
      }
    }
  });
});

describe('secrecy: tessera token decode never prints the token', () => {
  const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
  const run = (args: string[]) =>
    new Promise<string>((resolve) => {
      execFile(process.execPath, [MAIN, ...args], { timeout: 20_000 }, (_e, stdout, stderr) => resolve(`${stdout}\n${stderr}`));
    });

  it('for valid, invalid and malformed tokens, with and without keys', async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'tessera-secrecy-'));
    try {
      const jwks = join(dir, 'jwks.json');
      writeFileSync(jwks, JSON.stringify({ keys: [key.jwk] }));
      const valid = await sign(key, claims(), { typ: 'at+jwt' });
      const cases: [string, string[]][] = [
        [valid, ['token', 'decode', valid]],
        [valid, ['token', 'decode', valid, '--jwks', jwks, '--json']],
        [tokens[0] as string, ['token', 'decode', tokens[0] as string, '--jwks', jwks]],
        [tokens[7] as string, ['token', 'decode', tokens[7] as string, '--jwks', jwks, '--json']],
        [tokens[13] as string, ['token', 'decode', tokens[13] as string]],
      ];
      const outputs = await Promise.all(cases.map(([, args]) => run(args)));
      for (const [i, [token]] of cases.entries())
        assertNoSecret(outputs[i] as string, token, `tessera ${cases[i]?.[1].slice(2).join(' ')}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('secrecy: the gateway at trace level', () => {
  it('keeps tokens, the static and upstream credentials, the forward-auth and MCP session secrets, cookies and DPoP proofs out of its log, audit events, metrics, /readyz and error bodies', async () => {
    let log = '';
    const sink = new Writable({
      write(chunk, _encoding, done) {
        log += chunk.toString();
        done();
      },
    });
    const FA = 'forward-auth-shared-secret-value-0123456789';
    const MCP_SECRET = 'mcp-session-secret-value-0123456789-abcdefghijklmnop';
    const COOKIE = 'cookie-secret-value-0123456789';
    const PROOF = 'dpop-proof-secret-0123456789';
    // The upstream never echoes what it got: what reaches a caller is the gateway's own.
    const upstream = await gwh.startUpstream((req, res) => {
      if (req.url?.startsWith('/reject')) res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' }).end('no');
      else if (req.url?.startsWith('/boom')) req.socket.destroy();
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    const cred = { url: upstream.url, credential: { type: 'static' as const, token: gwh.UPSTREAM_TOKEN } };
    const route = (id: string) => ({
      id,
      match: { path_prefix: `/${id}` },
      upstream: cred,
      auth: ['jwt' as const, 'static' as const],
      audience: gwh.AUDIENCE,
      rules: [{ path: `/${id}/**`, scopes: ['api:read'] }],
    });
    const gw = await gwh.startGateway(
      {
        ...gwh.baseConfig(),
        gateway: {
          forward_auth: { enabled: true, flavor: 'nginx', shared_secret: { value: FA } },
          mcp_session_secret: MCP_SECRET,
          routes: [
            route('api'),
            route('reject'),
            route('boom'),
            gwh.mcpRoute(upstream.url, [{ id: 'all', tool: '*', scopes: ['api:read'] }]),
          ],
        },
      },
      { logger: pino({ level: 'trace' }, sink) },
    );
    const good = await gwh.token({ scope: 'api:read' });
    const forged = `${good.slice(0, -6)}AAAAAA`;
    const secrets = [good, good.split('.')[2] as string, forged, gwh.STATIC_TOKEN, gwh.UPSTREAM_TOKEN, FA, MCP_SECRET, COOKIE, PROOF];
    const bodies: string[] = [];
    const go = async (path: string, init: RequestInit = {}) => {
      const r = await fetch(`${gw.url}${path}`, init);
      bodies.push(`${r.status} ${await r.text()} ${JSON.stringify([...r.headers])}`);
    };
    const mcp = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    try {
      for (const t of [good, forged, gwh.STATIC_TOKEN, `${gwh.STATIC_TOKEN}x`]) {
        const bearer = { authorization: `Bearer ${t}` };
        await go('/api/x', { headers: { ...bearer, cookie: `s=${COOKIE}`, dpop: PROOF } });
        await go(`/api/x?access_token=${t}`);
        await go('/reject/x', { headers: bearer });
        await go('/boom/x', { headers: bearer });
        await go('/api/x', { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: `{"a":"${t}` });
        await go('/mcp', {
          method: 'POST',
          headers: { ...bearer, ...mcp },
          body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"t":"${t}"`,
        });
        await go('/mcp', {
          method: 'POST',
          headers: { ...bearer, ...mcp, 'mcp-session-id': t },
          body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
        });
        const original = { 'x-original-uri': `/api/x?access_token=${t}`, 'x-original-method': 'GET' };
        await go('/_tessera/auth', { headers: { ...bearer, ...original, 'x-tessera-forward-auth': FA } });
        await go('/_tessera/auth', { headers: { ...bearer, ...original, 'x-tessera-forward-auth': `${FA}x` } });
        await go('/_tessera/auth', {
          headers: { ...bearer, 'x-original-uri': '/api/x', 'x-original-method': t, 'x-tessera-forward-auth': FA },
        });
        bodies.push(
          await rawHttp(
            gw.url,
            `FOO /api/x HTTP/1.1\r\nHost: ${t.slice(0, 40)}\r\nAuthorization: Bearer ${t}\r\nConnection: close\r\n\r\n`,
          ),
        );
      }
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      const ready = await (await fetch(`${gw.url}/readyz`)).text();
      await gw.served.gateway.audit.flush();
      const audit = JSON.stringify(gw.audit.events);
      assert.ok(log.includes('upstream_credential_rejected') && log.includes('upstream_error'), 'the log has the failures');
      for (const secret of secrets) {
        for (const [where, text] of [
          ['log', log],
          ['audit events', audit],
          ['metrics', metrics],
          ['/readyz', ready],
          ['responses', bodies.join('\n')],
        ] as [string, string][]) {
          assert.equal(text.includes(secret), false, `a secret (${secret.slice(0, 8)}…) is in the ${where}`);
        }
      }
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});
