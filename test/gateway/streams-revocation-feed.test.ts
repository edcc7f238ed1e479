/**
 * The revocation feed the gateway watches its streams with may be the application's (createGateway's
 * `revocation`): one whose `isRevoked` throws, answers a promise or anything but a boolean gives no
 * answer. The stream registry must hold up as the verifier does (6fd4fdd): a stream whose token it
 * cannot check is closed as `revocation_unavailable` (fail closed, not as revoked), `add` does not
 * throw in the middle of a request, the feed's listener loop is not broken for the listeners after
 * the registry's, and a promise's rejection is handled.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Principal } from '../../src/core/verify/principal.ts';
import { type Revocation, RevocationList, type RevocationSubject } from '../../src/core/verify/revocation.ts';
import { type RevocationFeed, type StreamCloseReason, StreamRegistry, type TrackedStream } from '../../src/gateway/streams.ts';

const principal = (subject: string) =>
  ({ kind: 'jwt', issuer: 'https://issuer.test', subject, expiresAt: Number.POSITIVE_INFINITY, issuedAt: 1 }) as unknown as Principal;

/** A feed answering with `answer` for every token, announcing changes as a RevocationList does. */
function feed(answer: (t: RevocationSubject) => unknown): RevocationFeed & { apply(r: Revocation): void } {
  const list = new RevocationList();
  return {
    get epoch() {
      return list.epoch;
    },
    isRevoked: (t) => answer(t) as boolean,
    subscribe: (l) => list.subscribe(l),
    apply: (r) => list.apply(r),
  };
}

function stream(closed: StreamCloseReason[], subject = 'alice'): TrackedStream {
  return { kind: 'websocket', principal: principal(subject), close: (r) => closed.push(r) };
}

describe('gateway streams: a revocation feed that gives no answer', () => {
  const registries: StreamRegistry[] = [];
  afterEach(() => {
    for (const r of registries.splice(0)) r.stop();
  });
  const registry = (revocation: RevocationFeed) => {
    const r = new StreamRegistry({ clock: Date.now, revocation });
    registries.push(r);
    return r;
  };

  it('attack: a feed that throws (an error quoting the token): add does not throw, the stream is closed as revocation_unavailable', () => {
    const r = registry(
      feed(() => {
        throw new SyntaxError('Unexpected token eyJhbGciOi');
      }),
    );
    const closed: StreamCloseReason[] = [];
    assert.doesNotThrow(() => r.add(stream(closed)));
    assert.deepEqual(closed, ['revocation_unavailable']);
  });

  it('attack: a feed that throws on a revocation: apply does not throw, listeners after the registry are told, the streams are closed as revocation_unavailable', () => {
    let failing = false;
    const f = feed(() => {
      if (failing) throw new TypeError('store down');
      return false;
    });
    const r = registry(f);
    const closed: StreamCloseReason[] = [];
    r.add(stream(closed, 'alice'));
    r.add(stream(closed, 'bob'));
    assert.deepEqual(closed, []);
    const told: Revocation[] = [];
    f.subscribe((rev) => told.push(rev));
    failing = true;
    assert.doesNotThrow(() => f.apply({ grantIds: ['g1'] }));
    assert.equal(told.length, 1);
    assert.deepEqual(closed, ['revocation_unavailable', 'revocation_unavailable']);
  });

  it('an async feed (a promise of false) does not count as revoked: the stream is closed as revocation_unavailable, not token_revoked', () => {
    const r = registry(feed(async () => false));
    const closed: StreamCloseReason[] = [];
    r.add(stream(closed));
    assert.deepEqual(closed, ['revocation_unavailable']);
  });

  it('a feed whose promise rejects: the rejection is handled (no unhandledRejection)', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const r = registry(feed(async () => Promise.reject(new Error('store down'))));
      const closed: StreamCloseReason[] = [];
      r.add(stream(closed));
      assert.deepEqual(closed, ['revocation_unavailable']);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('a feed answering undefined (a check that forgot to return) keeps no stream open unchecked', () => {
    const r = registry(feed(() => undefined));
    const closed: StreamCloseReason[] = [];
    r.add(stream(closed));
    assert.deepEqual(closed, ['revocation_unavailable']);
  });

  it('true and false are answers: a revoked token is closed as token_revoked, another kept', () => {
    const f = feed((t) => t.subject === 'mallory');
    const r = registry(f);
    const closed: StreamCloseReason[] = [];
    r.add(stream(closed, 'alice'));
    r.add(stream(closed, 'mallory'));
    f.apply({});
    assert.deepEqual(closed, ['token_revoked']);
  });
});
