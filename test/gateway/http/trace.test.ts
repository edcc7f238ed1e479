import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseTraceparent, requestId, traceContext } from '../../../src/gateway/http/trace.ts';

const VALID = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('request ids', () => {
  it('propagates a well-formed inbound id', () => assert.equal(requestId('abc-123_x.y'), 'abc-123_x.y'));
  it('replaces a malformed, oversized or repeated one', () => {
    for (const bad of ['a b', 'x'.repeat(129), 'a\nb', ['a', 'b'], undefined]) assert.match(requestId(bad as string), /^[0-9a-f-]{36}$/);
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
