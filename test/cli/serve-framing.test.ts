/**
 * `tessera serve`: request framing on the one listener the token service shares with the gateway
 * (and has alone without a gateway section), sent on raw sockets. A framing the listener refuses is
 * refused on every path, the token service's included, in the shape of the endpoint's answers.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import { type RawUpstream, startRawUpstream } from '../gateway/helpers.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort, rawHttp, sendLargeBody, until } from '../helpers/net.ts';

const statuses = (response: string) => [...response.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
const chunk = (text: string) => `${text.length.toString(16)}\r\n${text}\r\n`;
const FORM = 'Content-Type: application/x-www-form-urlencoded';

/** Framings the listener refuses: [name, request line version, extra head lines, body]. */
const FRAMINGS = [
  ['HTTP/1.0 with Transfer-Encoding: chunked and keep-alive', 'HTTP/1.0', 'Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n'],
  ['Transfer-Encoding: gzip, chunked', 'HTTP/1.1', 'Transfer-Encoding: gzip, chunked\r\n'],
  ['an HTTP/2.0 request line', 'HTTP/2.0', 'Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n'],
] as const;

interface Served {
  dir: string;
  running: RunningServer;
  secret: string;
}

async function serve(name: string, gatewaySection: string): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), `tessera-serve-framing-${name}-`));
  const port = await freePort();
  const config = join(dir, 'tessera.yaml');
  writeFileSync(config, `data_dir: .tessera\nserver: { host: 127.0.0.1, port: ${port} }\n${gatewaySection}`);
  await initialize({ config });
  const running = await startServer({ config, logger: pino({ level: 'silent' }) });
  const c = await running.service.registerClient({
    id: 'agent',
    scopes: [],
    audiences: ['https://api.test'],
    grantTypes: ['client_credentials'],
  });
  return { dir, running, secret: c.secret as string };
}

async function events(s: Served, requestId: string): Promise<[string, string | undefined][]> {
  await s.running.service.audit.flush();
  const found = await s.running.service.store.queryAudit({ request_id: requestId, limit: 10 });
  return found.map((e) => [e.kind, e.reason]);
}

for (const [setup, gatewaySection] of [
  [
    'beside the gateway',
    'gateway:\n  watch_config: false\n  routes:\n    - { id: all, match: { path_prefix: / }, upstream: { url: UPSTREAM }, auth: none }\n',
  ],
  ['alone (no gateway section)', ''],
] as const) {
  describe(`tessera serve ${setup}: request framing at the token service`, () => {
    let upstream: RawUpstream;
    let s: Served;
    before(async () => {
      upstream = await startRawUpstream();
      s = await serve(setup.startsWith('beside') ? 'gw' : 'alone', gatewaySection.replace('UPSTREAM', upstream.url));
    });
    after(async () => {
      await s?.running.close();
      await upstream?.close();
      if (s) rmSync(s.dir, { recursive: true, force: true });
    });

    for (const [name, version, lines] of FRAMINGS) {
      it(`framing: ${name} at the token endpoint is refused 400 invalid_request (RFC 6749 §5.2), audited token.denied request_framing_invalid, the connection closed and nothing behind it read`, async () => {
        const requestId = `framing-${setup.slice(0, 5)}-${name.replace(/\W+/g, '-')}`;
        const r = await rawHttp(
          s.running.url,
          `POST /oauth2/token ${version}\r\nHost: a\r\nX-Request-Id: ${requestId}\r\nAuthorization: ${basic('agent', s.secret)}\r\n${FORM}\r\n${lines}\r\n` +
            `${chunk('grant_type=client_credentials')}0\r\n\r\n` +
            `POST /oauth2/token HTTP/1.1\r\nHost: a\r\nAuthorization: ${basic('agent', s.secret)}\r\n${FORM}\r\nContent-Length: 29\r\n\r\ngrant_type=client_credentials`,
        );
        assert.deepEqual(statuses(r), [400], r);
        assert.match(r, /\r\nconnection: close\r\n/i);
        assert.match(r, /\r\ncache-control: no-store\r\n/i);
        assert.match(r, /\r\n\r\n\{"error":"invalid_request","error_description":"[^"]+"\}$/);
        assert.doesNotMatch(r, /access_token/);
        assert.deepEqual(await events(s, requestId), [['token.denied', 'request_framing_invalid']]);
        assert.deepEqual(upstream.requests, []);
      });
    }

    for (const [when, split] of [
      ['in the head’s packet', false],
      ['after the head', true],
    ] as const) {
      it(`attack: a chunk the parser refuses (${when}) at the token endpoint is answered 400 by the listener and audited token.denied request_body_invalid, not client_closed (the client did not hang up)`, async () => {
        const requestId = `bad-chunk-${setup.slice(0, 5)}-${split}`;
        const head = `POST /oauth2/token HTTP/1.1\r\nHost: a\r\nX-Request-Id: ${requestId}\r\nAuthorization: ${basic('agent', s.secret)}\r\n${FORM}\r\nTransfer-Encoding: chunked\r\n\r\n`;
        const body = `${chunk('grant_type=client_credentials')}zz\r\n`;
        const r = await new Promise<string>((resolve, reject) => {
          const socket = connect(Number(new URL(s.running.url).port), '127.0.0.1', () => socket.write(split ? head : head + body));
          if (split) setTimeout(() => socket.write(body), 100);
          let got = '';
          socket.on('data', (d) => {
            got += d;
          });
          socket.on('end', () => resolve(got)).on('error', reject);
        });
        assert.deepEqual(statuses(r), [400], r);
        assert.doesNotMatch(r, /access_token/);
        await until(async () => (await events(s, requestId)).length > 0);
        assert.deepEqual(await events(s, requestId), [['token.denied', 'request_body_invalid']]);
      });
    }

    it('framing: an HTTP/2.0 request line for the JWKS (an endpoint that audits nothing) is refused 400 invalid_request, the connection closed', async () => {
      const r = await rawHttp(
        s.running.url,
        'GET /.well-known/jwks.json HTTP/2.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET /.well-known/jwks.json HTTP/1.1\r\nHost: a\r\n\r\n',
      );
      assert.deepEqual(statuses(r), [400], r);
      assert.match(r, /\r\nconnection: close\r\n/i);
      assert.match(r, /"error":"invalid_request"/);
    });

    it('framing: HTTP/1.0 with Transfer-Encoding at /healthz is refused 400, the connection closed', async () => {
      const r = await rawHttp(
        s.running.url,
        `POST /healthz HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n${chunk('x')}0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n`,
      );
      assert.deepEqual(statuses(r), [400], r);
      assert.match(r, /\r\nconnection: close\r\n/i);
    });

    for (const [name, lines, status] of [
      ['a declared Content-Length over the body limit', `${FORM}\r\n`, 413],
      ['another Content-Type', 'Content-Type: text/plain\r\n', 400],
      ['a form labelled with another charset', 'Content-Type: application/x-www-form-urlencoded; charset=iso-8859-1\r\n', 400],
    ] as const) {
      it(`early refusal at the token endpoint (${name}): answered ${status} with Connection: close, the body never drained: the connection ends within a short linger, not at request_timeout, and the answer is read whole`, async () => {
        const r = await sendLargeBody(
          s.running.url,
          `POST /oauth2/token HTTP/1.1\r\nHost: a\r\nAuthorization: ${basic('agent', s.secret)}\r\n${lines}Content-Length: 100000000\r\n\r\n`,
        );
        assert.deepEqual(statuses(r.answer), [status], r.answer);
        assert.match(r.answer, /\r\nconnection: close\r\n/i);
        assert.match(r.answer, /\{"error":"invalid_request","error_description":"[^"]+"\}$/);
        // Half-closed once answered, and closed a linger later (or once the client closes), not
        // reset at once (which may discard the answer at a client still sending) nor held open.
        assert.ok(r.finMs < 1000, `the answer came with no FIN (${r.finMs} ms)`);
        assert.ok(r.ms - r.finMs >= 500, `the connection was closed ${Math.round(r.ms - r.finMs)} ms after the FIN`);
        assert.ok(r.ms < 4000, `the connection was held ${Math.round(r.ms)} ms`);
      });
    }
  });
}

for (const [setup, limits] of [
  [
    'beside the gateway',
    'gateway:\n  watch_config: false\n  limits: { headers_timeout: 1s, request_timeout: 1s }\n  routes:\n    - { id: all, match: { path_prefix: /api }, upstream: { url: "http://127.0.0.1:9" }, auth: none }\n',
  ],
  ['alone (no gateway section)', 'token_service:\n  limits: { headers_timeout: 1s, request_timeout: 1s }\n'],
] as const) {
  describe(`tessera serve ${setup}: a body stalled past request_timeout at the token service`, () => {
    let s: Served;
    before(async () => {
      s = await serve(`slow-${setup.slice(0, 5)}`, limits);
    });
    after(async () => {
      await s?.running.close();
      if (s) rmSync(s.dir, { recursive: true, force: true });
    });

    it('attack: slow body: a head with Content-Length, then part of the body and nothing more, is answered 408 by the listener and audited token.denied request_timeout, not client_closed (the client did not hang up), and not counted as a parser refusal', async () => {
      const requestId = `slow-body-${setup.slice(0, 5)}`;
      const r = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(new URL(s.running.url).port), '127.0.0.1', () =>
          socket.write(
            `POST /oauth2/token HTTP/1.1\r\nHost: a\r\nX-Request-Id: ${requestId}\r\nAuthorization: ${basic('agent', s.secret)}\r\n${FORM}\r\nContent-Length: 100\r\n\r\ngrant_type=`,
          ),
        );
        let got = '';
        socket.on('data', (d) => {
          got += d;
        });
        socket.on('end', () => resolve(got)).on('error', reject);
      });
      assert.deepEqual(statuses(r), [408], r);
      await until(async () => (await events(s, requestId)).length > 0);
      assert.deepEqual(await events(s, requestId), [['token.denied', 'request_timeout']]);
      if (setup.startsWith('beside')) {
        const metrics = await (await fetch(`${s.running.url}/metrics`)).text();
        assert.match(metrics, /^tessera_gateway_parser_refusals_total\{status="408"\} 0$/m, metrics);
      }
    });
  });
}

describe('tessera serve beside the gateway: a body the listener refuses on an operations path', () => {
  let s: Served;
  before(async () => {
    s = await serve(
      'ops-body',
      'gateway:\n  watch_config: false\n  routes:\n    - { id: all, match: { path_prefix: /api }, upstream: { url: "http://127.0.0.1:9" }, auth: none }\n',
    );
  });
  after(async () => {
    await s?.running.close();
    if (s) rmSync(s.dir, { recursive: true, force: true });
  });

  it('attack: a bad chunk on /readyz or /metrics (answered after an await, so the 400 is the listener’s) was neither audited nor counted: now counted as a parser refusal (status 400)', async () => {
    const scrape = async () => (await fetch(`${s.running.url}/metrics`)).text();
    const refusals = (text: string) => Number(/^tessera_gateway_parser_refusals_total\{status="400"\} (\d+)$/m.exec(text)?.[1]);
    const before = refusals(await scrape());
    for (const path of ['/readyz', '/metrics']) {
      const r = await new Promise<string>((resolve, reject) => {
        // The head and a chunk size that is no hex number, in one write: the parser refuses it
        // while the operations answer is still being made.
        const socket = connect(Number(new URL(s.running.url).port), '127.0.0.1', () =>
          socket.write(`GET ${path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`),
        );
        let got = '';
        socket.on('data', (d) => {
          got += d;
        });
        socket.on('end', () => resolve(got)).on('error', reject);
        socket.on('close', () => resolve(got));
      });
      assert.deepEqual(statuses(r), [400], `${path}: ${r}`);
    }
    assert.equal(refusals(await scrape()), before + 2);
  });
});
