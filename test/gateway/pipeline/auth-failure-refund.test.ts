/**
 * The auth-failure limit around an authentication stage that fails (throws or rejects) instead of
 * answering: an address with a bucket takes its token before authenticating, and a stage failure
 * is no failed authentication, so the token goes back however the stage fails.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TokenBucketLimiter } from '../../../src/core/ratelimit.ts';
import type { GatewayRequest } from '../../../src/gateway/pipeline/request.ts';
import { authenticate, type Pipeline } from '../../../src/gateway/pipeline/run.ts';

const KEY = '192.0.2.7';

function pipelineWith(stage: Pipeline['authn'], limiter: TokenBucketLimiter): Pipeline {
  return { authn: stage, authFailures: limiter } as unknown as Pipeline;
}

/** A limiter holding a bucket for the address with exactly one token left. */
function limiterWithOneToken(): TokenBucketLimiter {
  const limiter = new TokenBucketLimiter({ rate: 0.0001, burst: 2, maxKeys: 10, clock: () => 1_000_000 });
  assert.equal(limiter.take(KEY), 0);
  assert.equal(limiter.has(KEY), true);
  return limiter;
}

const request = { remoteAddress: KEY } as unknown as GatewayRequest;

describe('auth-failure limit: a failing authentication stage gives the reserved token back', () => {
  for (const [name, stage] of [
    [
      'authenticate throws',
      {
        authenticate: () => {
          throw new Error('stage bug');
        },
        settle: (o: unknown) => o,
      },
    ],
    ['authenticate rejects', { authenticate: () => Promise.reject(new Error('stage bug')), settle: (o: unknown) => o }],
    [
      'settle throws on the synchronous path',
      {
        authenticate: () => ({}),
        settle: () => {
          throw new Error('stage bug');
        },
      },
    ],
    [
      'settle throws after a promise',
      {
        authenticate: () => Promise.resolve({}),
        settle: () => {
          throw new Error('stage bug');
        },
      },
    ],
  ] as const) {
    it(`${name}: the error propagates and the address keeps its last token`, async () => {
      const limiter = limiterWithOneToken();
      const p = pipelineWith(stage as unknown as Pipeline['authn'], limiter);
      await assert.rejects(async () => await authenticate(p, request), /stage bug/);
      // The one token left is still there: taken once more, it is granted (0), then none is left.
      assert.equal(limiter.take(KEY), 0);
      assert.ok(limiter.take(KEY) > 0);
    });
  }
});
