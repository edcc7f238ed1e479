/**
 * `tessera serve`: the subject's issuer at the gateway. A token the token service issued for
 * another issuer's subject names that issuer in its RFC 9493 `sub_id`; the gateway sends it
 * upstream (`identity_headers.subject_issuer`) and keys a per-subject rate limit on it. Only the
 * token service's own tokens are believed: another issuer's `sub_id` is its own claim.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { ISSUER, type Upstream } from '../gateway/helpers.ts';
import {
  IDP2,
  idp2Key,
  idpToken,
  limitedStatus,
  partnerToken,
  type SubjectIssuerFixture,
  startSubjectIssuerFixture,
} from '../gateway/subject-issuer-fixture.ts';

let fx: SubjectIssuerFixture;
let base: string;
let upstream: Upstream;
let running: SubjectIssuerFixture['running'];

before(async () => {
  fx = await startSubjectIssuerFixture('tessera-serve-subject-issuer-', { serveGateway: true });
  ({ url: base, upstream, running } = fx);
});

after(async () => {
  await fx?.close();
});

/** The broker exchanges an IdP token for one of this token service, for the gateway's routes. */
const exchange = (subjectToken: string) => fx.exchange(subjectToken);

async function whoami(token: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${base}/whoami`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200, await res.clone().text());
  await res.arrayBuffer();
  return upstream.seen.at(-1)?.headers as Record<string, unknown>;
}

describe('tessera serve: the subject’s issuer at the gateway', () => {
  it('sends the IdP as the subject’s issuer of a token the token service issued for the IdP’s subject', async () => {
    const t = await exchange(await idpToken());
    assert.deepEqual(decodeJwt(t).sub_id, { format: 'iss_sub', iss: ISSUER, sub: 'alice' });
    const h = await whoami(t);
    assert.equal(h['x-tessera-subject'], 'alice');
    assert.equal(h['x-tessera-issuer'], base);
    assert.equal(h['x-tessera-subject-issuer'], ISSUER);
  });

  it('names the IdP as the subject’s issuer in the gateway’s audit event, and only when it is not the token’s issuer', async () => {
    const h = await whoami(await exchange(await idpToken({ sub: 'dave' })));
    const own = await whoami(
      await running.service.mint({ clientId: 'broker', subject: 'erin', ttl: 600, audiences: [`${base}/api`] }).then((m) => m.access_token),
    );
    await running.gateway?.gateway.audit.flush();
    const [dave] = await running.service.store.queryAudit({ request_id: String(h['x-request-id']), kinds: ['gateway.request'] });
    assert.equal(dave?.subject, 'dave');
    assert.equal(dave?.issuer, base);
    assert.equal(dave?.subject_issuer, ISSUER);
    const [erin] = await running.service.store.queryAudit({ request_id: String(own['x-request-id']), kinds: ['gateway.request'] });
    assert.equal(erin?.subject, 'erin');
    assert.equal(erin !== undefined && 'subject_issuer' in erin, false);
  });

  it('sends the token’s own issuer for a token of the token service’s own subject', async () => {
    const minted = await running.service.mint({ clientId: 'broker', subject: 'bob', ttl: 600, audiences: [`${base}/api`] });
    const h = await whoami(minted.access_token);
    assert.equal(h['x-tessera-subject'], 'bob');
    assert.equal(h['x-tessera-subject-issuer'], base);
  });

  it('attack: an IdP token whose sub_id names another IdP’s same-named subject is sent as its own issuer’s subject', async () => {
    // The partner IdP claims its alice is the corporate IdP's alice.
    const forged = await idpToken({ iss: IDP2, sub_id: { format: 'iss_sub', iss: ISSUER, sub: 'alice' } }, idp2Key);
    const h = await whoami(forged);
    assert.equal(h['x-tessera-subject'], 'alice');
    assert.equal(h['x-tessera-issuer'], IDP2);
    assert.equal(h['x-tessera-subject-issuer'], IDP2);
    // An inbound copy of the header never reaches the upstream.
    const res = await fetch(`${base}/whoami`, {
      headers: { authorization: `Bearer ${await idpToken()}`, 'x-tessera-subject-issuer': 'https://evil.test' },
    });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    assert.equal(upstream.seen.at(-1)?.headers['x-tessera-subject-issuer'], ISSUER);
  });

  it('rate-limits two IdPs’ same-named subjects apart, and one subject’s tokens together', async () => {
    const get = (token: string) => limitedStatus(base, token);
    const corporate = await exchange(await idpToken({ sub: 'carol' }));
    const partner = await exchange(await partnerToken('carol'));
    assert.equal(await get(corporate), 200);
    assert.equal(await get(partner), 200, 'the partner IdP’s carol has a bucket of her own');
    // The corporate carol's own IdP token is the same subject as the token issued for her.
    assert.equal(await get(await idpToken({ sub: 'carol' })), 429);
  });
});
