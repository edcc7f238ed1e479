import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { holdsSecret, withoutSecrets } from '../../src/core/secret-shape.ts';

const LONG = 'static-token-0123456789abcdef';
const OTHER = 'token-0123456789abcdef-and-more';

describe('secret-shape: configured secrets in recorded values', () => {
  it('writes a long secret * anywhere, also percent-encoded, and keeps what surrounds it byte for byte', () => {
    assert.equal(withoutSecrets(`/a/${LONG}/b`, [LONG]), '/a/*/b');
    assert.equal(withoutSecrets(`/a%2Fx/x${LONG.replace('s', '%73').replace('-', '%2D')}y/%7Eb`, [LONG]), '/a%2Fx/x*y/%7Eb');
    assert.equal(withoutSecrets(`/${LONG}/${LONG}`, [LONG]), '/*/*');
    assert.equal(withoutSecrets('/nothing%20here', [LONG]), '/nothing%20here');
  });

  it('writes overlapping secrets as one * and leaves no part of either', () => {
    // LONG ends with "token-0123456789abcdef", where OTHER starts.
    const v = `/static-${OTHER}`;
    assert.equal(withoutSecrets(v, [LONG, OTHER]), '/*');
    assert.equal(withoutSecrets(v, [OTHER, LONG]), '/*');
  });

  it('writes a short secret * only as a whole segment, as written or percent-decoded', () => {
    assert.equal(withoutSecrets('/k3y/ak3yb/%6B3y', ['k3y']), '/*/ak3yb/*');
    assert.equal(withoutSecrets(`/k3y/${LONG}`, ['k3y', LONG]), '/*/*');
  });

  it('holdsSecret: whole, percent-decoded, or a long one inside', () => {
    assert.equal(holdsSecret('k3y', ['k3y']), true);
    assert.equal(holdsSecret('%6B3y', ['k3y']), true);
    assert.equal(holdsSecret('ak3yb', ['k3y']), false);
    assert.equal(holdsSecret(`x${LONG.replace('0', '%30')}`, ['k3y', LONG]), true);
    assert.equal(holdsSecret('x%ZZ', ['k3y', LONG]), false);
  });
});
