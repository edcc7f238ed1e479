/**
 * "Revoked means revoked" up to the moment a request leaves for the upstream: an MCP route reads
 * the whole JSON-RPC body after authenticating the caller and before deciding, so a body sent
 * slowly spans a revocation or the token's expiry. The request decided with the principal read
 * before the body must not be sent upstream once that principal's authority has ended (the
 * upstream would execute the tools/call), not merely cut after it was sent.
 */
import assert from 'node:assert/strict';
import { type IncomingMessage, request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { RevocationList } from '../../src/core/verify/revocation.ts';
import { until } from '../helpers/net.ts';
import { baseConfig, mcpRoute, requestEvents, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

const CALL = JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'transfer', arguments: { amount: 100 } } });

/** POST `CALL` in two parts: the first at once, the rest when `rest` resolves. */
function slowCall(url: string, t: string, rest: Promise<unknown>) {
  return new Promise<{ status?: number; headers?: IncomingMessage['headers']; body?: string; error?: string }>((resolve) => {
    const req = request(url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${t}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'content-length': String(Buffer.byteLength(CALL)),
      },
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? 'error' }));
    req.write(CALL.slice(0, 20));
    void rest.then(() => req.end(CALL.slice(20)));
  });
}

describe('gateway: a request whose authority ends while its body is still read (MCP route)', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const revocations = new RevocationList();
  /** Requests whose head reached the upstream, whether or not their body did. */
  let heads = 0;

  before(async () => {
    upstream = await startUpstream((_req, res, body) => {
      const text = JSON.stringify({ jsonrpc: '2.0', id: 7, result: { seen: body.length } });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
    });
    gw = await startGateway(
      { ...baseConfig(), gateway: { routes: [mcpRoute(upstream.url, [{ scopes: ['api:read'] }])] } },
      { revocation: revocations },
    );
    upstream.server.on('request', () => {
      heads++;
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  /** A call that reaches the upstream, so the gateway holds a kept-alive connection to it. */
  async function warm(): Promise<void> {
    const res = await fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await token()}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
    });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  }

  const transfers = () => upstream.seen.filter((s) => s.body.includes('"transfer"'));

  it('attack: a tools/call whose grant is revoked while its body trickles in is refused (401 token_revoked) and never reaches the upstream', async () => {
    await warm();
    const before = transfers().length;
    const headsBefore = heads;
    const t = await token({ grant_id: 'g-mcp-slow', jti: 'j-mcp-slow' });
    let revoked!: () => void;
    const outcome = slowCall(
      `${gw.url}/mcp`,
      t,
      new Promise<void>((r) => {
        revoked = r;
      }),
    );
    // The caller is authenticated once the head is in; then the grant is revoked mid-body.
    await new Promise((r) => setTimeout(r, 200));
    revocations.apply({ grantIds: ['g-mcp-slow'] });
    revoked();
    const got = await outcome;
    assert.equal(got.error, undefined);
    assert.equal(got.status, 401);
    assert.match(String(got.headers?.['www-authenticate']), /invalid_token/);
    // Give a request sent anyway the time to arrive.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(transfers().length - before, 0, 'the upstream executed a call of a revoked grant');
    assert.equal(heads - headsBefore, 0, 'nothing of the request was sent upstream');
    const own = (await requestEvents(gw)).filter((e) => e.jti === 'j-mcp-slow');
    assert.deepEqual(
      own.map((e) => [e.decision, e.reason]),
      [['deny', 'token_revoked']],
    );
  });

  it('attack: a tools/call whose token expires while its body trickles in is refused (401 token_expired) and never reaches the upstream', async () => {
    await warm();
    const before = transfers().length;
    const headsBefore = heads;
    const now = Math.floor(Date.now() / 1000);
    // Accepted for about 2 s more (the issuer's 30 s clock skew), then refused by the verifier.
    const t = await token({ iat: now - 40, exp: now - 28, jti: 'j-mcp-exp' });
    const acceptedUntil = (now - 28 + 30) * 1000;
    const outcome = slowCall(
      `${gw.url}/mcp`,
      t,
      until(() => Date.now() >= acceptedUntil + 50, 5000),
    );
    const got = await outcome;
    assert.equal(got.error, undefined);
    assert.equal(got.status, 401);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(transfers().length - before, 0, 'the upstream executed a call of an expired token');
    assert.equal(heads - headsBefore, 0, 'nothing of the request was sent upstream');
    const own = (await requestEvents(gw)).filter((e) => e.jti === 'j-mcp-exp');
    assert.deepEqual(
      own.map((e) => [e.decision, e.reason]),
      [['deny', 'token_expired']],
    );
  });
});
