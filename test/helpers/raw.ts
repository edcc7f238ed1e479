/**
 * Hand-built JWS for hostile inputs that `jose` refuses to produce (duplicate members, `crit`,
 * unusual JSON spellings): the header and payload are given as exact JSON text and signed with
 * `node:crypto`, so only the property under test is wrong.
 */
import { Buffer } from 'node:buffer';
import { createHmac, sign as cryptoSign, type KeyObject } from 'node:crypto';
import type { TestKey } from './tokens.ts';

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64url');

/** Sign exact header and payload JSON texts with `key` (ES*, EdDSA, RS*, HS*). */
export function signRaw(key: TestKey, headerJson: string, payloadJson: string): string {
  const input = `${b64(headerJson)}.${b64(payloadJson)}`;
  let signature: Buffer;
  if (key.alg.startsWith('HS')) {
    signature = createHmac(`sha${key.alg.slice(2)}`, key.privateKey as Uint8Array)
      .update(input)
      .digest();
  } else if (key.alg.startsWith('ES')) {
    signature = cryptoSign(`sha${key.alg.slice(2)}`, Buffer.from(input), {
      key: key.privateKey as KeyObject,
      dsaEncoding: 'ieee-p1363',
    });
  } else if (key.alg === 'EdDSA' || key.alg === 'Ed25519') {
    signature = cryptoSign(null, Buffer.from(input), key.privateKey as KeyObject);
  } else if (key.alg.startsWith('RS')) {
    signature = cryptoSign(`sha${key.alg.slice(2)}`, Buffer.from(input), key.privateKey as KeyObject);
  } else {
    throw new Error(`signRaw: ${key.alg} not supported`);
  }
  return `${input}.${signature.toString('base64url')}`;
}

/** JSON text of a value with one member spliced in verbatim (for duplicates). */
export function jsonWith(value: Record<string, unknown>, extra: string): string {
  const text = JSON.stringify(value);
  return `${text.slice(0, -1)},${extra}}`;
}
