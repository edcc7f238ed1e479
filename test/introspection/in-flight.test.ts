/**
 * `introspection.max_in_flight`: calls to the endpoint under way at once are bounded; past the
 * bound a token is refused at once with 503 `introspection_unavailable` (Retry-After), never queued,
 * while requests with a token whose call is under way share it. A real loopback endpoint holds
 * its answers until the test releases them and counts the calls it got.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config/parse.ts';
import { verifierConfigSchema } from '../../src/config/verifier-schema.ts';
import { createVerifier } from '../../src/verifier.ts';
import { listen, readBody, type TestServer } from '../helpers/verify.ts';

interface HoldingEndpoint extends TestServer {
  /** Calls received. */
  hits: number;
  /** Answer every call held so far, and those to come. */
  release(): void;
  /** Resolves once `n` calls are held. */
  holding(n: number): Promise<void>;
}

async function holdingEndpoint(): Promise<HoldingEndpoint> {
  let open = false;
  const held: (() => void)[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const state = {
    hits: 0,
    release() {
      open = true;
      for (const h of held.splice(0)) h();
    },
    holding(n: number) {
      return held.length >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve }));
    },
  };
  const server = await listen(async (req, res) => {
    state.hits++;
    const token = new URLSearchParams(await readBody(req)).get('token') ?? '';
    const answer = () =>
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify(token.startsWith('good') ? { active: true, sub: token } : { active: false }));
    if (open) {
      answer();
      return;
    }
    held.push(answer);
    for (const w of waiters.filter((w) => held.length >= w.n)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  return Object.assign(state, server) as HoldingEndpoint;
}

const bearer = (token: string) => ({ method: 'GET', url: 'https://api.test/', headers: { authorization: `Bearer ${token}` } });

const verifier = (endpoint: HoldingEndpoint, extra: Record<string, unknown> = {}) =>
  createVerifier({
    introspection: { endpoint: `${endpoint.origin}/introspect`, client_id: 'rs', client_secret: 'secret', ...extra },
    dpop: { mode: 'disabled' },
  });

describe('introspection: calls in flight', () => {
  it('attack: a flood of distinct junk tokens: past max_in_flight calls under way, a token is refused at once (503 introspection_unavailable, Retry-After), not queued', async () => {
    const endpoint = await holdingEndpoint();
    const warnings: string[] = [];
    try {
      const v = createVerifier(
        {
          introspection: { endpoint: `${endpoint.origin}/introspect`, client_id: 'rs', client_secret: 'secret', max_in_flight: 3 },
          dpop: { mode: 'disabled' },
        },
        { onWarning: (m) => warnings.push(m) },
      );
      const first = ['good-1', 'junk-2', 'junk-3'].map((t) => v.authenticate(bearer(t)));
      await endpoint.holding(3);
      // Answered before the endpoint answers anything: no queue.
      for (const t of ['junk-4', 'good-5', 'junk-6']) {
        const r = await v.authenticate(bearer(t));
        assert.equal(r.ok, false);
        assert.equal(!r.ok && r.error.code, 'introspection_unavailable');
        assert.equal(!r.ok && r.error.status, 503);
        assert.ok(!r.ok && Number(r.error.details.retryAfter) >= 1);
      }
      assert.equal(endpoint.hits, 3);
      assert.match(warnings.join('\n'), /max_in_flight/);
      assert.doesNotMatch(warnings.join('\n'), /junk|good|secret/);
      // The same token as a call under way shares it, bound or not.
      const joined = v.authenticate(bearer('good-1'));
      endpoint.release();
      const results = await Promise.all([...first, joined]);
      assert.deepEqual(
        results.map((r) => r.ok),
        [true, false, false, true],
      );
      assert.equal(endpoint.hits, 3, 'the joined request made no call of its own');
      // The slots are free again.
      assert.equal((await v.authenticate(bearer('good-7'))).ok, true);
      assert.equal(endpoint.hits, 4);
    } finally {
      await endpoint.close();
    }
  });

  it('concurrent requests with one token not in the cache share one call (single flight)', async () => {
    const endpoint = await holdingEndpoint();
    try {
      const v = verifier(endpoint, { max_in_flight: 1 });
      const all = Array.from({ length: 20 }, () => v.authenticate(bearer('good-shared')));
      await endpoint.holding(1);
      endpoint.release();
      const results = await Promise.all(all);
      assert.ok(results.every((r) => r.ok));
      assert.equal(endpoint.hits, 1);
    } finally {
      await endpoint.close();
    }
  });

  it('defaults to 64, and refuses a bound below 1', () => {
    const base = { endpoint: 'https://idp.example/introspect', client_id: 'rs', client_secret: 'secret' };
    assert.equal(parseConfig(verifierConfigSchema, { introspection: base }).introspection?.max_in_flight, 64);
    assert.throws(() => parseConfig(verifierConfigSchema, { introspection: { ...base, max_in_flight: 0 } }), /max_in_flight/);
  });
});
