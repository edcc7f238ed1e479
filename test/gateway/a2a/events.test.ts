/** The SSE data reader of A2A answers (src/gateway/a2a/events.ts): event data, whatever the line ends and chunks. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SseDataReader } from '../../../src/gateway/a2a/events.ts';

describe('SseDataReader', () => {
  it('reads each event’s data whatever the line ends and however the chunks split them', () => {
    const stream = 'data: {"a":1}\r\n\r\nevent: x\ndata: {"b":\ndata: 2}\n\n: comment\r\rdata:{"c":3}\r\n\r\n';
    for (let size = 1; size <= stream.length; size++) {
      const reader = new SseDataReader();
      const events: string[] = [];
      for (let i = 0; i < stream.length; i += size) events.push(...reader.push(Buffer.from(stream.slice(i, i + size))));
      assert.deepEqual(events, ['{"a":1}', '{"b":\n2}', '{"c":3}'], `chunks of ${size}`);
    }
  });

  it("overflow: an event's data (its lines joined) or a line past the limit is flagged in the push that passes it, before the event ends", () => {
    const data = new SseDataReader(16);
    assert.deepEqual(data.push(Buffer.from('data: 1234567890\n')), []);
    assert.equal(data.overflow, false);
    data.push(Buffer.from('data: 123456\n'));
    assert.equal(data.overflow, true);
    assert.deepEqual(data.push(Buffer.from('\n')), [], 'nothing more is read');
    const line = new SseDataReader(16);
    line.push(Buffer.from(': a comment longer than that'));
    assert.equal(line.overflow, true);
  });

  it('betweenEvents: only after an empty line (or nothing), with no line begun and no field since (comments aside)', () => {
    const r = new SseDataReader();
    assert.equal(r.betweenEvents, true, 'nothing read');
    const steps: [string, boolean][] = [
      ['data: {"a":1}\n', false],
      ['\n', true],
      [': keep-alive\n', true],
      ['event: update\n', false],
      ['data: x\r\n\r\n', true],
      ['data: {"b"', false],
      [':2}\n\n', true],
      ['id: 7\r', false],
      ['\n\r\n', true],
      [':', false],
    ];
    for (const [chunk, between] of steps) {
      r.push(Buffer.from(chunk));
      assert.equal(r.betweenEvents, between, JSON.stringify(chunk));
    }
  });

  it('betweenEvents: not after part of a BOM opening the stream (an event written then would be read after those bytes), again after a whole one', () => {
    for (const [bytes, between] of [
      [[0xef], false],
      [[0xef, 0xbb], false],
      [[0xef, 0xbb, 0xbf], true],
    ] as const) {
      const r = new SseDataReader();
      r.push(Buffer.from(bytes));
      assert.equal(r.betweenEvents, between, Buffer.from(bytes).toString('hex'));
    }
    const split = new SseDataReader();
    split.push(Buffer.from([0xef]));
    split.push(Buffer.from([0xbb, 0xbf]));
    assert.equal(split.betweenEvents, true, 'the BOM completed');
  });

  /** Every event's data of `stream` fed in chunks of `size` bytes, and whether the reader found it ambiguous. */
  const read = (stream: Buffer, size: number) => {
    const reader = new SseDataReader();
    const events: string[] = [];
    for (let i = 0; i < stream.length; i += size) events.push(...reader.push(stream.subarray(i, i + size)));
    return { events, ambiguous: reader.ambiguous };
  };

  it('BOM: one U+FEFF is skipped at the start of the stream only; a later line of only U+FEFF is a field line (the event goes on), as WHATWG HTML §9.2.6 reads it', () => {
    const cases: [string, string[]][] = [
      ['\uFEFFdata: a\n\n', ['a']],
      // Mid-stream: the line is a field named U+FEFF, ignored, not an empty line.
      ['data: {"a":\n\uFEFF\ndata: 1}\n\n', ['{"a":\n1}']],
      ['data: x\r\uFEFF\r\ndata: y\r\r', ['x\ny']],
      // A field named "\uFEFFdata" is not data.
      ['data: a\n\n\uFEFFdata: b\n\n', ['a']],
      ['\uFEFF\n\uFEFF\ndata: c\n\n', ['c']],
    ];
    for (const [stream, expected] of cases) {
      const bytes = Buffer.from(stream);
      for (let size = 1; size <= bytes.length; size++)
        assert.deepEqual(read(bytes, size), { events: expected, ambiguous: false }, `${JSON.stringify(stream)} in chunks of ${size}`);
    }
  });

  it('attack: a stream opening with a partial BOM or a byte that is not ASCII (clients read that line differently) is ambiguous, nothing of it read', () => {
    const openings = [
      Buffer.from([0xef, 0xbb]),
      Buffer.from([0xef]),
      Buffer.from('\uFEFF\uFEFF'),
      Buffer.from('\u00EF\u00BB\u00BF'), // a BOM decoded as Latin-1 and encoded again: eventsource-parser strips it
    ];
    for (const opening of openings) {
      const stream = Buffer.concat([opening, Buffer.from('data: {"contextId":"c"}\n\n')]);
      for (const size of [1, 2, 3, stream.length])
        assert.deepEqual(read(stream, size), { events: [], ambiguous: true }, `${opening.toString('hex')} in chunks of ${size}`);
    }
  });
});
