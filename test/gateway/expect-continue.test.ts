/**
 * `Expect: 100-continue` (RFC 9110 §10.1.1): the gateway decides first. A request it refuses
 * (no token, a token without the scope, a body over the limit) gets its final answer without
 * `100 Continue`, so the client never sends the body; one it allows gets 100, and the upstream
 * the body. Node would otherwise answer 100 as soon as the head arrives, before any check.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { expectContinue } from '../helpers/net.ts';
import {
  AUDIENCE,
  baseConfig,
  mcpRoute,
  requestEvents,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from './helpers.ts';

const FA_SECRET = 'forward-auth-secret-0123456789';

describe('gateway: Expect: 100-continue is answered after the decision', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let reader: string;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      gateway: {
        forward_auth: { enabled: true, flavor: 'nginx', shared_secret: { header: 'X-Tessera-Forward-Auth', value: FA_SECRET } },
        routes: [
          {
            id: 'api',
            match: { path_prefix: '/api' },
            upstream: { url: upstream.url },
            auth: 'jwt',
            audience: AUDIENCE,
            rules: [
              { id: 'admin', path: '/api/admin/**', scopes: ['admin'] },
              { id: 'any', path: '/api/**', scopes: ['api:read'] },
            ],
            max_body_size: '1kb',
          },
          mcpRoute(upstream.url, [{ scopes: ['api:read'] }], { mcp: { max_message_size: '1kb' } }),
        ],
      },
    });
    reader = await token({ scope: 'api:read' });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const host = () => new URL(gw.url).host;
  const post = (path: string, headers: string[], body: string, length = Buffer.byteLength(body)) =>
    expectContinue(
      gw.url,
      `POST ${path} HTTP/1.1\r\nHost: ${host()}\r\n${headers.map((h) => `${h}\r\n`).join('')}Content-Type: application/json\r\nContent-Length: ${length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
      body,
    );
  const status = (text: string) => Number(/HTTP\/1\.1 ([2-5]\d\d)/.exec(text)?.[1]);

  it('body before authentication: no token gets 401 without 100 Continue, and the body is never asked for', async () => {
    const n = upstream.seen.length;
    const r = await post('/api/items', [], '{"secret":"x"}');
    assert.equal(r.first, 401, r.text);
    assert.equal(r.bodySent, false);
    assert.doesNotMatch(r.text, /^HTTP\/1\.1 100/m);
    assert.equal(upstream.seen.length, n);
  });

  it('body before authorization: a token without the admin scope gets 403 without 100 Continue', async () => {
    const n = upstream.seen.length;
    const r = await post('/api/admin/users', [`Authorization: Bearer ${reader}`], '{"role":"admin"}');
    assert.equal(r.first, 403, r.text);
    assert.equal(r.bodySent, false);
    assert.equal(upstream.seen.length, n);
  });

  it('body over the limit: a Content-Length above max_body_size gets 413 without 100 Continue, before authentication', async () => {
    const n = upstream.seen.length;
    const r = await post('/api/items', [`Authorization: Bearer ${reader}`], 'x'.repeat(2000));
    assert.equal(r.first, 413, r.text);
    assert.equal(r.bodySent, false);
    assert.equal(upstream.seen.length, n);
    assert.equal((await requestEvents(gw)).at(-1)!.reason, 'request_too_large');
  });

  it('an allowed request gets 100 Continue, then the upstream’s answer, and the upstream receives the body', async () => {
    const r = await post('/api/items', [`Authorization: Bearer ${reader}`], '{"name":"widget"}');
    assert.equal(r.first, 100, r.text);
    assert.equal(r.bodySent, true);
    assert.equal(status(r.text.slice(r.text.indexOf('\r\n\r\n') + 4)), 200, r.text);
    assert.equal(upstream.seen.at(-1)!.body, '{"name":"widget"}');
    assert.equal(upstream.seen.at(-1)!.headers.expect, undefined, 'Expect is hop-by-hop to the gateway');
  });

  it('an allowed chunked upload gets 100 Continue, and the upstream receives the body', async () => {
    const r = await expectContinue(
      gw.url,
      `POST /api/items HTTP/1.1\r\nHost: ${host()}\r\nAuthorization: Bearer ${reader}\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
      '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
    );
    assert.equal(r.first, 100, r.text);
    assert.equal(status(r.text.slice(r.text.indexOf('\r\n\r\n') + 4)), 200, r.text);
    assert.equal(upstream.seen.at(-1)!.body, 'hello world');
  });

  it('MCP body before authentication: a tools/call without a token gets 401 without 100 Continue (401 before the body is read)', async () => {
    const n = upstream.seen.length;
    const r = await post(
      '/mcp',
      ['Accept: application/json, text/event-stream'],
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}',
    );
    assert.equal(r.first, 401, r.text);
    assert.equal(r.bodySent, false);
    assert.match(r.text, /resource_metadata=/);
    assert.equal(upstream.seen.length, n);
  });

  it('MCP message over max_message_size: 413 without 100 Continue', async () => {
    const r = await post('/mcp', [`Authorization: Bearer ${reader}`], 'x'.repeat(2000));
    assert.equal(r.first, 413, r.text);
    assert.equal(r.bodySent, false);
  });

  it('an allowed MCP message gets 100 Continue, is read and decided, and reaches the upstream', async () => {
    const message = '{"jsonrpc":"2.0","id":1,"method":"ping"}';
    const r = await post('/mcp', [`Authorization: Bearer ${reader}`, 'Accept: application/json, text/event-stream'], message);
    assert.equal(r.first, 100, r.text);
    assert.equal(status(r.text.slice(r.text.indexOf('\r\n\r\n') + 4)), 200, r.text);
    assert.equal(upstream.seen.at(-1)!.body, message);
  });

  it('forward-auth never reads a body: a check sent with Expect: 100-continue gets its answer without 100 Continue', async () => {
    const r = await post(
      '/_tessera/auth',
      [
        `X-Tessera-Forward-Auth: ${FA_SECRET}`,
        'X-Original-URI: /api/items',
        'X-Original-Method: POST',
        'X-Original-Host: api.test',
        `Authorization: Bearer ${reader}`,
      ],
      '{}',
    );
    assert.equal(r.first, 200, r.text);
    assert.equal(r.bodySent, false);
  });
});
