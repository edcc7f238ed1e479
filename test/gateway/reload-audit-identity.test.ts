/**
 * The audit event of an exchange in flight across a reload names the subject's issuer the exchange
 * was decided with (and its upstream was told), not the one a later configuration would name:
 * `gateway.trust_sub_id` changed by a reload does not rewrite who an earlier request was.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { TesseraConfigInput } from '../../src/config/schema.ts';
import { until } from '../helpers/net.ts';
import { AUDIENCE, ISSUER, key, parse as parseConfig, requestEvents, startGateway, startUpstream } from './helpers.ts';
import { IDP2, idp2Key, idpToken } from './subject-issuer-fixture.ts';

function config(upstream: string, trustSubId: readonly string[]): TesseraConfigInput {
  return {
    issuers: [
      { issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } },
      { issuer: IDP2, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [idp2Key.jwk] } },
    ],
    scopes: { 'api:read': {} },
    dpop: { mode: 'disabled' },
    gateway: {
      watch_config: false,
      trust_sub_id: [...trustSubId],
      routes: [
        {
          id: 'whoami',
          match: { path_prefix: '/whoami' },
          upstream: { url: upstream },
          auth: 'jwt',
          rules: [{ scopes: ['api:read'] }],
          identity_headers: ['subject', 'issuer', 'subject_issuer'],
        },
      ],
    },
  } as TesseraConfigInput;
}

describe('gateway: the audit event of a request in flight across a reload', () => {
  it('attack: a reload that starts trusting an issuer’s sub_id does not make the event of a request decided before it name the subject issuer that sub_id claims', async () => {
    let release: (() => void) | undefined;
    const upstream = await startUpstream((req, res) => {
      const headers = { ...req.headers };
      release = () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(headers));
    });
    const gw = await startGateway(config(upstream.url, []));
    try {
      // IDP2's token whose sub_id says it is the test issuer's alice: not believed under the first configuration.
      const token = await idpToken({ iss: IDP2, sub_id: { format: 'iss_sub', iss: ISSUER, sub: 'alice' } }, idp2Key);
      const answer = fetch(`${gw.url}/whoami`, { headers: { authorization: `Bearer ${token}` } });
      await until(() => release !== undefined);
      const reloaded = gw.served.reload(parseConfig(config(upstream.url, [IDP2])));
      assert.equal(reloaded.ok, true);
      release?.();
      const res = await answer;
      assert.equal(res.status, 200);
      const told = (await res.json()) as Record<string, string>;
      assert.equal(told['x-tessera-subject-issuer'], IDP2, 'the upstream was told the token’s own issuer');
      const event = (await requestEvents(gw)).at(-1) as unknown as Record<string, unknown>;
      assert.equal(event.issuer, IDP2);
      assert.equal(event.subject, 'alice');
      assert.equal(event.subject_issuer, undefined, 'the event names a subject issuer the request was never decided with');
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});
