import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseTraceparent, requestId, traceContext } from '../../../src/gateway/http/trace.ts';

const VALID = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('request ids', () => {
  it('propagates a well-formed inbound id', () => assert.equal(requestId('abc-123_x.y'), 'abc-123_x.y'));
  it('replaces a malformed, oversized or repeated one', () => {
    for (const bad of ['a b', 'x'.repeat(129), 'a\nb', ['a', 'b'], undefined]) assert.match(requestId(bad as string), /^[0-9a-f-]{36}$/);
  });
  it('keeps the ids nginx ($request_id), Envoy and Cloudflare send', () => {
    for (const id of ['0f8e2c1a5d7b4c2e9a613b2d4f5e6a7b', '0f8e2c1a-5d7b-4c2e-9a61-3b2d4f5e6a7b', '8a1b2c3d4e5f6789-AMS', 'svc:1.2_x'])
      assert.equal(requestId(id), id);
  });
  it('attack: a token sent as X-Request-Id (a JWT, a refresh token, a client secret, a tgw_ token) is not propagated or recorded: a new id replaces it', () => {
    const jwt = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ';
    for (const secret of [jwt, `trt_${'B'.repeat(43)}`, `tcs_${'c'.repeat(43)}`, `tgw_${'d'.repeat(43)}`, `req:tac_${'e'.repeat(43)}`]) {
      assert.ok(secret.length <= 128);
      assert.match(requestId(secret), /^[0-9a-f-]{36}$/, secret);
    }
  });
  it('attack: a base64 secret (+, /, =) sent as X-Request-Id is not propagated: ids are [A-Za-z0-9._:-], as the token service takes them', () => {
    for (const bad of ['c2VjcmV0K3Rva2VuL3ZhbHVlPT0+/A==', 'user@host', 'a/b']) assert.match(requestId(bad), /^[0-9a-f-]{36}$/, bad);
  });
});

describe('trace context', () => {
  it('keeps the trace id and flags and sends a new parent id', () => {
    const t = traceContext(VALID, 'vendor=1');
    assert.match(t.traceparent, /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    assert.notEqual(t.traceparent.slice(36, 52), '00f067aa0ba902b7');
    assert.equal(t.tracestate, 'vendor=1');
  });
  it('starts a new trace for an invalid traceparent and drops tracestate', () => {
    for (const bad of [
      '',
      'garbage',
      VALID.toUpperCase(),
      `ff${VALID.slice(2)}`,
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
      `${VALID}-extra`,
    ]) {
      assert.equal(parseTraceparent(bad), undefined, bad);
      const t = traceContext(bad, 'vendor=1');
      assert.match(t.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
      assert.equal(t.tracestate, undefined);
    }
  });
  it('reads a future version by its first 55 characters', () => {
    assert.deepEqual(parseTraceparent(`01${VALID.slice(2)}-more`), { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', flags: '01' });
  });
});
