import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { describe, it } from 'node:test';
import { DerScratch, p1363ToDer } from '../../../src/core/jose/jwk.ts';

/** Reference DER (X.690) for ECDSA-Sig-Value: minimal positive INTEGERs r and s. */
function referenceDer(p1363: Buffer, size: number): Buffer {
  const int = (b: Buffer) => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    const v = b.subarray(i);
    return (v[0] as number) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v;
  };
  const r = int(p1363.subarray(0, size));
  const s = int(p1363.subarray(size));
  const body = Buffer.concat([Buffer.from([2, r.length]), r, Buffer.from([2, s.length]), s]);
  return Buffer.concat([Buffer.from(body.length < 0x80 ? [0x30, body.length] : [0x30, 0x81, body.length]), body]);
}

describe('P1363 to DER for ECDSA', () => {
  for (const [crv, size] of [
    ['P-256', 32],
    ['P-384', 48],
    ['P-521', 66],
  ] as const) {
    it(`${crv}: matches the reference encoding and verifies, through a reused scratch`, () => {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: crv });
      const scratch = new DerScratch(size);
      const hash = size === 32 ? 'sha256' : size === 48 ? 'sha384' : 'sha512';
      for (let i = 0; i < 300; i++) {
        const data = Buffer.from(`message ${i}`);
        const sig = sign(hash, data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
        const der = p1363ToDer(sig, size, scratch) as Buffer;
        assert.deepEqual(Buffer.from(der), referenceDer(sig, size));
        assert.equal(verify(hash, data, publicKey, der), true);
      }
      const edge = [
        Buffer.alloc(size * 2),
        Buffer.alloc(size * 2, 0xff),
        Buffer.concat([Buffer.alloc(size - 1), Buffer.from([0x80]), Buffer.alloc(size - 1), Buffer.from([1])]),
      ];
      for (const e of edge) assert.deepEqual(Buffer.from(p1363ToDer(e, size, scratch) as Buffer), referenceDer(e, size));
      assert.equal(p1363ToDer(Buffer.alloc(size * 2 + 1), size, scratch), undefined);
    });
  }
});
