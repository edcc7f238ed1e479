/**
 * `credential: exchange` in a real `tessera serve` whose `gateway.exchange_client` is registered as
 * always using DPoP (RFC 9449 §5.2 dpop_bound_access_tokens): the gateway proves no key when it
 * mints and sends the token upstream as a bearer token, so it never gets one. A mint fails closed
 * (502 upstream_credential_unavailable, nothing upstream, audited with the token service's code);
 * a start with such a client already registered is refused, naming gateway.exchange_client.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { RunningServer } from '../../src/cli/commands/serve.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { TOKEN_EXCHANGE } from '../../src/issuer/service.ts';
import { claims, sign } from '../helpers/tokens.ts';
import { type ExchangeServe, exchangeServe, UPSTREAM_AUD } from './exchange-serve-fixture.ts';
import { AUDIENCE, ISSUER, key, type Upstream } from './helpers.ts';

describe('gateway: exchange as a DPoP-bound exchange_client', () => {
  let serve: ExchangeServe;
  let url: string;
  let upstream: Upstream;
  let running: RunningServer | undefined;

  before(async () => {
    serve = await exchangeServe('tessera-exchange-dpop-', 'gw-dpop', [
      { issuer: ISSUER, audiences: [AUDIENCE], jwks: { keys: [key.jwk] }, exchange_clients: [] },
    ]);
    ({ url, upstream } = serve);
    // Not registered yet at start: the start cannot know, each mint refuses.
    running = await serve.start();
    await running.service.registerClient({
      id: 'gw-dpop',
      scopes: ['api:read'],
      audiences: [UPSTREAM_AUD],
      grantTypes: [TOKEN_EXCHANGE],
      dpopBound: true,
    });
  });
  after(async () => {
    await running?.close();
    await serve?.close();
  });

  it('attack: a DPoP-bound exchange_client never gets a bearer token to send upstream: 502 upstream_credential_unavailable, nothing upstream, audited upstream_error client_dpop_proof_required', async () => {
    const server = running as RunningServer;
    const caller = await sign(key, claims({ iss: ISSUER, sub: 'alice', aud: AUDIENCE, scope: 'api:read' }));
    const requestIds: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${url}/api/x`, { headers: { authorization: `Bearer ${caller}` } });
      const body = await res.text();
      assert.equal(res.status, 502, body);
      assert.equal(JSON.parse(body).error, 'bad_gateway');
      assert.doesNotMatch(body, /dpop|gw-dpop/i, 'the caller is not told about the gateway’s client');
      requestIds.push(String(res.headers.get('x-request-id')));
    }
    assert.equal(upstream.seen.length, 0, 'a request reached the upstream');
    await server.gateway?.gateway.audit.flush();
    for (const id of requestIds) {
      const [event] = await server.service.store.queryAudit({ request_id: id, kinds: ['gateway.request'] });
      assert.deepEqual(
        [event?.decision, event?.reason, event?.detail?.upstream_error],
        ['deny', 'upstream_credential_unavailable', 'client_dpop_proof_required'],
      );
      assert.doesNotMatch(JSON.stringify(event), new RegExp(caller.split('.')[2] as string));
    }
    const issued = await server.service.store.queryAudit({ kinds: ['token.issued', 'token.exchanged'], limit: 1000 });
    assert.deepEqual(
      issued.filter((e) => e.client_id === 'gw-dpop'),
      [],
      'a token was issued to the DPoP-bound client',
    );
  });

  it('refuses to start when gateway.exchange_client is already registered as DPoP-bound, naming the path and what to do', async () => {
    await running?.close();
    running = undefined;
    const outcome = await serve.start().then(
      async (started) => {
        await started.close();
        return 'started';
      },
      (e: unknown) => e,
    );
    assert.ok(outcome instanceof ConfigError, String(outcome));
    assert.deepEqual(outcome.issues, [
      {
        path: 'gateway.exchange_client',
        message:
          'client "gw-dpop" is DPoP-bound (dpop_bound_access_tokens) and gets no bearer token, and the gateway proves no DPoP key when it mints upstream tokens; name a client that is not DPoP-bound, or run `tessera clients update gw-dpop --no-dpop-bound`',
      },
    ]);
  });
});
