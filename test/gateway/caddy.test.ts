/**
 * The shipped Caddy example (examples/caddy/) against a real Caddy: forward_auth to Tessera's
 * forward-auth endpoint (flavor caddy, the X-Forwarded-* protocol Traefik's ForwardAuth speaks
 * too), the upstream credential and identity headers injected, refusals passed to the client with
 * their challenges. Skipped with a message only when Caddy is not installed.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLIENT_IP_HEADERS } from '../../src/gateway/http/headers.ts';
import { freePort, type Listening, rawHttp, sendThenBlock, spawnListening } from '../helpers/net.ts';
import {
  blockAfterAnswer,
  exampleConfig,
  requestEvents,
  startGateway,
  startIdleRace,
  startUpstream,
  type TestGateway,
  token,
  UPSTREAM_TOKEN,
  type Upstream,
} from './helpers.ts';

const CADDY = '/usr/bin/caddy';
const FA_SECRET = 'caddy-forward-auth-secret-0123456789';
const EXAMPLE = new URL('../../examples/caddy/', import.meta.url);

const skip = existsSync(CADDY) ? false : `${CADDY} is not installed (apt-get install caddy)`;

/** The example's Caddyfile, `edit`ed, then in front of `gw` and `app`, listening on `port`. */
function caddyfile(gw: TestGateway, app: Upstream, port: number, edit: (conf: string) => string = (conf) => conf): string {
  return edit(readFileSync(new URL('Caddyfile', EXAMPLE), 'utf8'))
    .replace('http://127.0.0.1:8000', `http://127.0.0.1:${port}`)
    .replace('forward_auth 127.0.0.1:8080', `forward_auth ${new URL(gw.url).host}`)
    .replace('reverse_proxy 127.0.0.1:9000', `reverse_proxy ${new URL(app.url).host}`);
}

/** Caddy running `conf` from `dir`, once it listens on `port`. */
function startCaddy(dir: string, conf: string, port: number): Promise<Listening> {
  writeFileSync(join(dir, 'Caddyfile'), conf);
  // Caddy keeps state under $HOME / $XDG_*: keep it in the test's directory.
  return spawnListening(CADDY, ['run', '--config', join(dir, 'Caddyfile'), '--adapter', 'caddyfile'], port, {
    PATH: process.env.PATH ?? '',
    HOME: dir,
    XDG_DATA_HOME: dir,
    XDG_CONFIG_HOME: dir,
    FORWARD_AUTH_SECRET: FA_SECRET,
  });
}

describe('Caddy forward_auth example against a real Caddy', { skip }, () => {
  let app: Upstream;
  let gw: TestGateway;
  let caddy: Listening | undefined;
  let dir: string;
  let base: string;
  before(async () => {
    app = await startUpstream();
    const example = exampleConfig(EXAMPLE, app.url, (c) => {
      // Per subject: each test below uses its own.
      (c.gateway.routes[0] as Record<string, unknown>).rate_limit = { key: 'subject', rate: 0.01, burst: 2 };
    });
    gw = await startGateway(example, {}, { GATEWAY_TOKEN: UPSTREAM_TOKEN, FORWARD_AUTH_SECRET: FA_SECRET });

    dir = mkdtempSync(join(tmpdir(), 'tessera-caddy-'));
    const port = await freePort();
    caddy = await startCaddy(dir, caddyfile(gw, app, port), port);
    base = `http://127.0.0.1:${port}`;
  });
  after(async () => {
    await caddy?.stop();
    await gw?.close();
    await app?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const checks = async () => {
    await gw.served.gateway.audit.flush();
    return gw.audit.events.filter((e) => e.kind === 'gateway.forward_auth');
  };

  it('forwards an allowed request with the upstream credential and identity, never the caller’s token or proof', async () => {
    const t = await token({ scope: 'api:read', sub: 'caddy-user', act: { sub: 'agent-x' }, grant_id: 'g-caddy' });
    const res = await fetch(`${base}/items/1?q=2`, {
      headers: { authorization: `Bearer ${t}`, 'x-tessera-subject': 'admin', 'x-tessera-issuer': 'evil', dpop: 'x' },
    });
    assert.equal(res.status, 200, caddy?.output());
    const seen = app.seen.at(-1)!;
    assert.equal(seen.url, '/items/1?q=2');
    assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_TOKEN}`);
    assert.equal(seen.headers['x-tessera-subject'], 'caddy-user');
    assert.equal(seen.headers['x-tessera-actor-chain'], 'agent-x');
    assert.equal(seen.headers['x-tessera-delegation-id'], 'g-caddy');
    assert.equal(seen.headers['x-tessera-issuer'], undefined);
    assert.equal(seen.headers['x-tessera-forward-auth'], undefined, 'the shared secret stays between Caddy and Tessera');
    assert.equal(seen.headers.dpop, undefined);
    assert.equal((await requestEvents(gw)).length, 0, 'forward-auth checks are not proxied requests');
    const check = (await checks()).at(-1);
    assert.equal(check?.decision, 'allow');
    assert.equal(check?.delegation_id, 'g-caddy');
    assert.equal(check?.path, '/items/1?q=');
    assert.equal(check?.request_id, seen.headers['x-request-id'], 'the audit event and the upstream share the request id');
  });

  it('a token without actors or delegation sends no placeholder text upstream in their place', async () => {
    const t = await token({ scope: 'api:read', sub: 'caddy-plain' });
    const res = await fetch(`${base}/items/2`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(res.status, 200, caddy?.output());
    const seen = app.seen.at(-1)!;
    assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_TOKEN}`);
    assert.equal(seen.headers['x-tessera-subject'], 'caddy-plain');
    // Caddy 2.6 copies a header missing from Tessera's answer as its literal placeholder.
    for (const [name, value] of Object.entries(seen.headers)) assert.doesNotMatch(String(value), /\{http\./, name);
    assert.ok(!seen.headers['x-tessera-actor-chain'], 'no actor chain');
    assert.ok(!seen.headers['x-tessera-delegation-id'], 'no delegation');
  });

  it('answers 401 with the Bearer challenge without a token, and never reaches the app', async () => {
    const n = app.seen.length;
    const res = await fetch(`${base}/items/1`, { headers: { 'x-tessera-subject': 'admin' } });
    assert.equal(res.status, 401);
    const challenge = res.headers.get('www-authenticate') ?? '';
    assert.match(challenge, /^Bearer\b/);
    assert.doesNotMatch(challenge, /error=/, 'RFC 6750 §3.1: no error code when the request has no credentials');
    assert.equal(app.seen.length, n);
  });

  it('answers 401 invalid_token for a forged token', async () => {
    const res = await fetch(`${base}/items/1`, { headers: { authorization: 'Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln' } });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  });

  it('answers 403 insufficient_scope with the challenge when the rule needs more', async () => {
    const t = await token({ scope: 'api:read', sub: 'caddy-scope' });
    const n = app.seen.length;
    const res = await fetch(`${base}/items`, { method: 'POST', headers: { authorization: `Bearer ${t}` }, body: '{}' });
    assert.equal(res.status, 403);
    assert.match(res.headers.get('www-authenticate') ?? '', /error="insufficient_scope".*scope="api:write"/);
    assert.equal(app.seen.length, n);
  });

  it('passes 429 with Retry-After through (Caddy keeps any status, unlike nginx)', async () => {
    const t = await token({ scope: 'api:read', sub: 'caddy-limited' });
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${base}/items/1`, { headers: { authorization: `Bearer ${t}` } });
      statuses.push(res.status);
      if (res.status === 429) retryAfter = res.headers.get('retry-after');
    }
    assert.deepEqual(statuses, [200, 200, 429, 429]);
    assert.match(retryAfter ?? '', /^[1-9][0-9]*$/);
  });

  it('flavor confusion: original-request headers a client adds through Caddy do not change the decision: refused 400, the app never asked', async () => {
    const t = await token({ scope: 'api:read', sub: 'caddy-flavor' });
    const n = app.seen.length;
    const res = await fetch(`${base}/items`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${t}`,
        'x-forwarded-uri': '/items',
        'x-forwarded-method': 'GET',
        'x-original-uri': '/items',
        'x-original-method': 'GET',
      },
      body: '{}',
    });
    assert.equal(res.status, 400);
    assert.equal(app.seen.length, n);
    assert.equal((await checks()).at(-1)?.method, 'POST');
    assert.equal((await checks()).at(-1)?.reason, 'forward_auth_override_refused');
  });

  it('XFF spoofing: the audited client address is the one Caddy saw, not the X-Forwarded-For the client sent', async () => {
    const t = await token({ scope: 'api:read', sub: 'caddy-xff' });
    const res = await fetch(`${base}/items/1`, { headers: { authorization: `Bearer ${t}`, 'x-forwarded-for': '203.0.113.66' } });
    assert.equal(res.status, 200);
    assert.equal((await checks()).at(-1)?.remote_addr, '127.0.0.1');
  });

  it("credential theft: a direct call to the forward-auth endpoint without Caddy's secret gets 403, no credential", async () => {
    const t = await token({ scope: 'api:read' });
    const res = await fetch(`${gw.url}/_tessera/auth`, {
      headers: { authorization: `Bearer ${t}`, 'x-forwarded-uri': '/items', 'x-forwarded-method': 'GET', 'x-forwarded-host': 'a' },
    });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('authorization'), null);
  });

  it('method override: override headers or _method sent through Caddy are refused 400 and never reach the app', async () => {
    const t = await token({ scope: 'api:read', sub: 'caddy-override' });
    const n = app.seen.length;
    for (const [name, value] of [
      ['x-http-method-override', 'DELETE'],
      ['x-method-override', 'DELETE'],
      ['x-http-method', 'DELETE'],
      ['x-original-url', '/admin'],
      ['x-rewrite-url', '/admin'],
      // nginx's original-request headers: Caddy passes the caller's own to the app.
      ['x-original-uri', '/admin'],
      ['x-original-method', 'DELETE'],
    ]) {
      const res = await fetch(`${base}/items/1`, { headers: { authorization: `Bearer ${t}`, [name as string]: value as string } });
      assert.equal(res.status, 400, name);
      assert.equal((await checks()).at(-1)?.reason, 'forward_auth_override_refused', name);
    }
    const query = await fetch(`${base}/items/1?_method=DELETE`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(query.status, 400);
    assert.equal(app.seen.length, n);
  });

  it('identity spoofing: an identity header spelled with underscores (X_Tessera_Subject, which CGI-style apps read as X-Tessera-Subject) sent through Caddy is refused 400 and never reaches the app', async () => {
    const t = await token({ scope: 'api:read', sub: 'caddy-underscore' });
    const n = app.seen.length;
    for (const name of ['X_Tessera_Subject', 'x_tessera_actor_chain', 'X-Tessera_Scopes']) {
      const res = await fetch(`${base}/items/1`, { headers: { authorization: `Bearer ${t}`, [name]: 'admin' } });
      assert.equal(res.status, 400, name);
      assert.equal((await checks()).at(-1)?.reason, 'forward_auth_header_spoof_refused', name);
    }
    assert.equal(app.seen.length, n);
  });

  it('attack: X-Forwarded-Uri, -Method, -Prefix and client-address headers a caller sends through Caddy never reach the app (Caddy replaces them on the check only)', async () => {
    const t = await token({ scope: 'api:read', sub: 'caddy-forwarded' });
    const sent: Record<string, string> = {
      // What an app behind Traefik or Caddy forward_auth reads as the request: the caller's copy
      // would name another path or method than the one decided (GET /items/1).
      'x-forwarded-uri': '/admin',
      'x-forwarded-method': 'DELETE',
      'x-forwarded-prefix': '/admin',
      'x-forwarded-port': '443',
      'x-forwarded-server': 'admin.example',
      // What frameworks read as the client's address (the gateway's own proxy removes them all).
      forwarded: 'for=203.0.113.9;host=admin.example;proto=https',
      'x-real-ip': '203.0.113.9',
      ...Object.fromEntries(CLIENT_IP_HEADERS.map((h) => [h, '203.0.113.9'])),
    };
    const res = await fetch(`${base}/items/1`, { headers: { authorization: `Bearer ${t}`, ...sent } });
    assert.equal(res.status, 200, caddy?.output());
    const check = (await checks()).at(-1);
    assert.equal(check?.path, '/items/1');
    assert.equal(check?.method, 'GET');
    const seen = app.seen.at(-1)!;
    assert.equal(seen.url, '/items/1');
    for (const h of Object.keys(sent)) assert.equal(seen.headers[h], undefined, h);
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1', 'Caddy’s own X-Forwarded-For replaces the caller’s');
  });

  it('refuses encoded traversal through Caddy (Tessera reads the URI as sent)', async () => {
    const t = await token({ scope: 'api:read', sub: 'caddy-traversal' });
    const n = app.seen.length;
    const head = await rawHttp(
      base,
      `GET /items/%2e%2e/admin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${t}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(head, /^HTTP\/1\.1 400/, head);
    assert.equal(app.seen.length, n);
  });
});

/**
 * Caddy's transport (Go's) reuses an idle connection unless it has seen it closed, for 2 minutes
 * by default. A server that closes an idle connection the moment Caddy writes on it resets that
 * request; Go retries the check (a GET without a body) on a new connection, never a POST: the
 * caller gets 502. The example keeps Caddy's idle timeout toward each upstream below the upstream's
 * own so that Caddy always closes first. Here both upstreams close idle connections after 1 s (Node
 * adds keepAliveTimeoutBuffer, 1 s, so after 2 s), a fifth of their 5 s default, and the example's
 * keepalive values are scaled by the same fifth. The loop of this process is blocked across the
 * moment the upstream closes, while Caddy writes to it: what a busy upstream does by itself.
 */
describe('Caddy example: idle upstream connections are closed by Caddy first', { skip }, () => {
  const SCALE = 5; // Tessera's and Node's default 5 s, run as 1 s
  let app: Upstream;
  let gw: TestGateway;
  let caddy: Listening | undefined;
  let dir: string;
  let base: string;
  let port: number;
  let closesAfter: () => number;
  before(async () => {
    ({ app, gw, closesAfter } = await startIdleRace(EXAMPLE, { GATEWAY_TOKEN: UPSTREAM_TOKEN, FORWARD_AUTH_SECRET: FA_SECRET }));
    dir = mkdtempSync(join(tmpdir(), 'tessera-caddy-idle-'));
    port = await freePort();
    const conf = caddyfile(gw, app, port, (c) =>
      c.replace(/keepalive ([0-9]+)s\b/g, (_, s: string) => `keepalive ${Math.round((Number(s) * 1000) / SCALE)}ms`),
    );
    caddy = await startCaddy(dir, conf, port);
    base = `http://127.0.0.1:${port}`;
  });
  after(async () => {
    await caddy?.stop();
    await gw?.close();
    await app?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the example sets keepalive in forward_auth and reverse_proxy, below Tessera’s default keep_alive_timeout and Node’s (5 s)', () => {
    const conf = readFileSync(new URL('Caddyfile', EXAMPLE), 'utf8');
    for (const directive of ['forward_auth', 'reverse_proxy']) {
      const block = conf.match(new RegExp(`\\n\\s*${directive} [^\\n]*\\{([\\s\\S]*?)\\n\\t\\t\\}`))?.[1] ?? '';
      const s = Number(block.match(/transport http \{[^}]*keepalive ([0-9]+)s\b/)?.[1]);
      assert.ok(s > 0 && s < 5, `${directive}: keepalive ${s}`);
    }
  });

  it('idle race toward Tessera: a POST sent as Tessera closes the idle check connection succeeds, and Caddy never meets a closed connection', async () => {
    const t = await token({ scope: 'api:write', sub: 'idle-tessera' });
    const first = await fetch(`${base}/items`, { method: 'POST', headers: { authorization: `Bearer ${t}` }, body: '{}' });
    assert.equal(first.status, 200, caddy?.output());
    await first.arrayBuffer();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, closesAfter() - 150));
    const head = await sendThenBlock(
      port,
      `POST /items/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
      t0 + closesAfter() + 250,
    );
    assert.match(head, /^HTTP\/1\.1 200 /, `${head}\n${caddy?.output()}`);
    assert.doesNotMatch(caddy?.output() ?? '', /connection reset|EOF/);
  });

  it('idle race toward the app: a POST forwarded as the app closes its idle connection succeeds (Go does not retry a POST)', async () => {
    const t = await token({ scope: 'api:write', sub: 'idle-app' });
    const first = await fetch(`${base}/items`, { method: 'POST', headers: { authorization: `Bearer ${t}` }, body: '{}' });
    assert.equal(first.status, 200, caddy?.output());
    await first.arrayBuffer();
    const t0 = performance.now();
    // Block once Tessera has allowed the request: Caddy then writes the POST to the app, whose
    // idle timeout runs out meanwhile.
    const stop = blockAfterAnswer(gw, (req) => req.headers['x-forwarded-uri'] === '/items/app-race', t0 + closesAfter() + 250);
    try {
      await new Promise((r) => setTimeout(r, closesAfter() - 150));
      const res = await fetch(`${base}/items/app-race`, { method: 'POST', headers: { authorization: `Bearer ${t}` }, body: '{}' });
      assert.equal(res.status, 200, caddy?.output());
      assert.equal(app.seen.at(-1)?.url, '/items/app-race');
    } finally {
      stop();
    }
    assert.doesNotMatch(caddy?.output() ?? '', /connection reset|EOF/);
  });
});
