/**
 * What the gateway sends upstream on a caller's behalf, on the wire: a route's static credential
 * reaches that route's upstream only, never one the upstream redirects to (the gateway relays a
 * redirect, it does not follow it), nor an error body; the caller's own copies of the credential
 * and identity headers (any case, repeated, with underscores) never ride along with the gateway's.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { rawHttp } from '../helpers/net.ts';
import { baseConfig, requestEvents, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

const KEY_A = 'route-a-upstream-api-key-0123456789';
const TOKEN_B = 'route-b-upstream-bearer-0123456789';

describe('gateway: static upstream credentials on the wire', () => {
  let a: Upstream;
  let b: Upstream;
  /** Where `a` redirects to: it must never see a credential. */
  let elsewhere: Upstream;
  let gw: TestGateway;
  let t: string;
  before(async () => {
    elsewhere = await startUpstream();
    a = await startUpstream((req, res) => {
      if (req.url?.startsWith('/a/redirect/')) {
        const status = Number(req.url.slice('/a/redirect/'.length));
        res.writeHead(status, { location: `${elsewhere.url}/steal` }).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
    b = await startUpstream();
    gw = await startGateway(
      {
        ...baseConfig(),
        gateway: {
          routes: [
            {
              id: 'a',
              match: { path_prefix: '/a' },
              upstream: { url: a.url, credential: { type: 'static', header: 'X-Api-Key', scheme: '', token: '${KEY_A}' } },
              auth: 'jwt',
              rules: [{}],
              identity_headers: ['subject', 'client'],
            },
            {
              id: 'b',
              match: { path_prefix: '/b' },
              upstream: { url: b.url, credential: { type: 'static', token: '${TOKEN_B}' } },
              auth: 'jwt',
              rules: [{}],
            },
            {
              id: 'down',
              match: { path_prefix: '/down' },
              upstream: { url: 'http://127.0.0.1:9', credential: { type: 'static', token: '${TOKEN_B}' } },
              auth: 'jwt',
              rules: [{}],
            },
            { id: 'plain', match: { path_prefix: '/plain' }, upstream: { url: elsewhere.url }, auth: 'jwt', rules: [{}] },
          ],
        },
      },
      {},
      { KEY_A, TOKEN_B },
    );
    t = await token({ scope: 'api:read' });
  });
  after(async () => {
    await gw.close();
    await a.close();
    await b.close();
    await elsewhere.close();
  });

  /** Every value of `name` the upstream received, from its raw header lines (any case). */
  const raw = (u: Upstream, name: string) => {
    const h = u.seen.at(-1)!.rawHeaders;
    const out: string[] = [];
    for (let i = 0; i < h.length; i += 2) if (h[i]!.toLowerCase().replaceAll('_', '-') === name) out.push(h[i + 1]!);
    return out;
  };
  const allSeen = (u: Upstream) => JSON.stringify(u.seen);

  it('credential spoofing: the caller’s X-Api-Key (any case, repeated, with underscores) never rides along; the caller’s Authorization never reaches the upstream', async () => {
    const r = await rawHttp(
      gw.url,
      `GET /a/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nX-API-KEY: caller-1\r\nx-api-key: caller-2\r\nX_Api_Key: caller-3\r\nConnection: close\r\n\r\n`,
    );
    assert.match(r, /^HTTP\/1\.1 200 /);
    assert.deepEqual(raw(a, 'x-api-key'), [KEY_A]);
    assert.deepEqual(raw(a, 'authorization'), []);
  });

  it('identity spoofing on the wire: X-TESSERA-SUBJECT repeated, in other cases and with underscores reaches the upstream only as the gateway’s value', async () => {
    const r = await rawHttp(
      gw.url,
      `GET /a/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${t}\r\nX-TESSERA-SUBJECT: admin\r\nx-tessera-subject: root\r\n` +
        'X_Tessera_Subject: admin\r\nx-tessera_client-id: evil\r\nX-Tessera-Actor-Chain: trusted-agent\r\nConnection: close\r\n\r\n',
    );
    assert.match(r, /^HTTP\/1\.1 200 /);
    assert.deepEqual(raw(a, 'x-tessera-subject'), ['user-1']);
    assert.deepEqual(raw(a, 'x-tessera-client-id'), ['agent-1']);
    assert.deepEqual(raw(a, 'x-tessera-actor-chain'), [], 'not configured on this route, and still stripped');
  });

  it('cross-route: each upstream receives its own route’s credential only, a route without one none', async () => {
    const auth = { authorization: `Bearer ${t}` };
    assert.equal((await fetch(`${gw.url}/b/x`, { headers: auth })).status, 200);
    assert.deepEqual(raw(b, 'authorization'), [`Bearer ${TOKEN_B}`]);
    assert.deepEqual(raw(b, 'x-api-key'), []);
    assert.equal((await fetch(`${gw.url}/plain/x`, { headers: auth })).status, 200);
    assert.deepEqual(raw(elsewhere, 'authorization'), []);
    assert.ok(!allSeen(b).includes(KEY_A));
    assert.ok(!allSeen(a).includes(TOKEN_B));
    assert.ok(!allSeen(elsewhere).includes(KEY_A) && !allSeen(elsewhere).includes(TOKEN_B));
  });

  for (const status of [301, 302, 303, 307, 308]) {
    it(`credential leak by redirect: an upstream ${status} to another server is relayed to the caller, never followed with the credential`, async () => {
      const before = elsewhere.seen.length;
      const res = await fetch(`${gw.url}/a/redirect/${status}`, { headers: { authorization: `Bearer ${t}` }, redirect: 'manual' });
      assert.equal(res.status, status);
      assert.equal(res.headers.get('location'), `${elsewhere.url}/steal`);
      await res.arrayBuffer();
      assert.equal(elsewhere.seen.length, before, 'the gateway followed the redirect');
    });
  }

  it('an unreachable upstream: the 502 body and the audit event carry no credential', async () => {
    const res = await fetch(`${gw.url}/down/x`, { headers: { authorization: `Bearer ${t}` } });
    assert.equal(res.status, 502);
    const body = await res.text();
    const events = JSON.stringify(await requestEvents(gw));
    for (const secret of [KEY_A, TOKEN_B, t]) {
      assert.ok(!body.includes(secret));
      assert.ok(!events.includes(secret));
    }
    assert.equal((await requestEvents(gw)).at(-1)!.reason, 'upstream_unavailable');
  });
});
