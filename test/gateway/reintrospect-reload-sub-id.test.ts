/**
 * A re-introspection naming another subject issuer (`sub_id`) after a reload turned
 * `introspection.trust_sub_id` off. The exchange's identity headers were decided with the `sub_id`
 * believed: the upstream was told `subject_issuer` A. Compared only under the configuration now in
 * force (which believes no `sub_id`), an answer naming the same `sub` of identity provider B read
 * as the same identity, and the stream stayed open as A's.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Principal } from '../../src/core/verify/principal.ts';
import type { GatewayState } from '../../src/gateway/compile.ts';
import type { AdmittedStream } from '../../src/gateway/recheck.ts';
import { reintrospectUnder } from '../../src/gateway/reintrospect.ts';

const ISSUER = 'https://as.example';

function principal(subIdIssuer: string): Principal {
  return {
    kind: 'introspection',
    issuer: ISSUER,
    subject: 'user-dave',
    clientId: 'agent-1',
    audience: [],
    scopes: ['api:read'],
    effectiveScopes: new Set(['api:read']) as unknown as Principal['effectiveScopes'],
    actors: [],
    delegationId: undefined,
    tokenId: undefined,
    expiresAt: Math.floor(Date.now() / 1000) + 3600,
    issuedAt: undefined,
    confirmation: undefined,
    tokenHash: 'x',
    claims: { sub: 'user-dave', sub_id: { format: 'iss_sub', iss: subIdIssuer, sub: 'user-dave' } },
  };
}

function stream(trustedWhenAdmitted: boolean): AdmittedStream {
  return {
    principal: principal('https://idp-a.example'),
    admission: {
      config: { transport: { query: false }, introspection: { trust_sub_id: trustedWhenAdmitted } },
      fileKeys: new Map(),
    },
    route: { id: 'api' },
    request: { method: 'GET', url: '/events', headers: { authorization: 'Bearer opaque-token' } },
    rpc: undefined,
    session: undefined,
  } as unknown as AdmittedStream;
}

function stateAfterReload(trustNow: boolean, answer: Principal): GatewayState {
  return {
    introspectionVerifier: { verifyToken: async () => ({ ok: true, principal: answer }) },
    vouching: { issuers: new Set<string>(), introspection: trustNow },
    routes: [],
  } as unknown as GatewayState;
}

describe('gateway: re-introspection across a reload of introspection.trust_sub_id', () => {
  it('attack: an answer naming another sub_id issuer after a reload stopped believing sub_id still ends the stream', async () => {
    const s = stateAfterReload(false, principal('https://idp-b.example'));
    const reason = await reintrospectUnder(s, new WeakMap())(stream(true));
    assert.equal(reason, 'token_identity_changed');
  });

  it('the same sub_id across the reload keeps the stream', async () => {
    const s = stateAfterReload(false, principal('https://idp-a.example'));
    assert.equal(await reintrospectUnder(s, new WeakMap())(stream(true)), undefined);
  });

  it('a sub_id never believed, before or after, is not compared (as before)', async () => {
    const s = stateAfterReload(false, principal('https://idp-b.example'));
    assert.equal(await reintrospectUnder(s, new WeakMap())(stream(false)), undefined);
  });

  it('believed now and when admitted: a changed sub_id issuer ends the stream (as before)', async () => {
    const s = stateAfterReload(true, principal('https://idp-b.example'));
    assert.equal(await reintrospectUnder(s, new WeakMap())(stream(true)), 'token_identity_changed');
  });
});
