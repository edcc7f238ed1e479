import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { closeFrame, FrameBoundaries } from '../../../src/gateway/proxy/frames.ts';

function frame(payload: number, mask: boolean): Buffer {
  const len =
    payload < 126
      ? [payload]
      : payload < 65536
        ? [126, payload >> 8, payload & 255]
        : [127, 0, 0, 0, 0, 0, (payload >> 16) & 255, (payload >> 8) & 255, payload & 255];
  const head = Buffer.from([0x82, (mask ? 0x80 : 0) | (len[0] as number), ...len.slice(1)]);
  return Buffer.concat([head, Buffer.alloc(mask ? 4 : 0), Buffer.alloc(payload, 7)]);
}

describe('WebSocket frame boundaries', () => {
  it('tracks small, 16-bit and 64-bit lengths, masked or not', () => {
    for (const [n, mask] of [
      [0, false],
      [5, true],
      [300, false],
      [70000, true],
    ] as const) {
      const f = new FrameBoundaries();
      const data = frame(n, mask);
      assert.equal(f.consume(data), data.length);
      assert.ok(f.atBoundary, `${n}`);
    }
  });
  it('follows frames split across chunks, including a split header', () => {
    const f = new FrameBoundaries();
    const data = Buffer.concat([frame(300, true), frame(3, false)]);
    for (let i = 0; i < data.length; i++) {
      f.consume(data.subarray(i, i + 1));
      const boundary = i === data.length - 1 || i === frame(300, true).length - 1;
      assert.equal(f.atBoundary, boundary, `after byte ${i}`);
    }
  });
  it('stops at the first boundary when asked', () => {
    const f = new FrameBoundaries();
    const a = frame(10, false);
    const data = Buffer.concat([a, frame(10, false)]);
    f.consume(data.subarray(0, 4));
    assert.equal(f.consume(data, 4, true), a.length);
    assert.equal(new FrameBoundaries().consume(data, 0, true), 0);
    const g = new FrameBoundaries();
    assert.equal(g.consume(data.subarray(0, 5), 0, true), 0);
    assert.equal(g.consume(data.subarray(5, 8), 0, false), 3);
    assert.equal(g.consume(data.subarray(8, 9), 0, true), -1);
  });
  it('builds close frames: unmasked for clients, masked toward servers', () => {
    const s = closeFrame(1008, 'token revoked', false);
    assert.equal(s[0], 0x88);
    assert.equal(s[1], 15);
    assert.equal(s.readUInt16BE(2), 1008);
    assert.equal(s.subarray(4).toString(), 'token revoked');
    const m = closeFrame(1001, 'bye', true);
    assert.equal(m[1], 0x80 | 5);
    const key = m.subarray(2, 6);
    const payload = Buffer.from(m.subarray(6).map((b, i) => b ^ (key[i & 3] as number)));
    assert.equal(payload.readUInt16BE(0), 1001);
    assert.equal(payload.subarray(2).toString(), 'bye');
  });
});
