/**
 * A red-team round on DPoP through the gateway, beside dpop.test.ts: the challenges a bound token
 * presented as Bearer gets (RFC 9449 §7.1, RFC 6750 §3), an unbound token under the DPoP scheme, a
 * replayed proof, two DPoP headers, an oversized one, X-Forwarded-Host/-Proto from a peer that is
 * no trusted proxy, a gateway behind a path prefix (server.public_url with a path), and audit
 * events of refused proofs that carry neither the token nor the proof.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { type IncomingHttpHeaders, request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, type JWK, SignJWT } from 'jose';
import { baseConfig, requestEvents, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

const holder = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const holderJwk = holder.publicKey.export({ format: 'jwk' }) as JWK;

function proof(method: string, url: string, accessToken: string, extra: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT({
    htm: method,
    htu: url,
    jti: randomUUID(),
    ath: createHash('sha256').update(accessToken).digest('base64url'),
    ...extra,
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holderJwk })
    .setIssuedAt()
    .sign(holder.privateKey);
}

/** A GET with exactly these headers (an array value is sent as that many header lines). */
function get(url: string, headers: Record<string, string | string[]>): Promise<{ status: number; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    request(url, { headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    })
      .on('error', reject)
      .end();
  });
}

const routes = (upstream: Upstream) => [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt' as const, rules: [{}] }];

describe('gateway: DPoP red team', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let bound: string;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({ ...baseConfig(), dpop: { mode: 'allowed' }, gateway: { routes: routes(upstream) } });
    bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('attack: a bound token presented as Bearer gets 401 invalid_token on both the Bearer and the DPoP challenge (RFC 9449 §7.1, RFC 6750 §3)', async () => {
    const seen = upstream.seen.length;
    const res = await get(`${gw.url}/items`, { authorization: `Bearer ${bound}`, dpop: await proof('GET', `${gw.url}/items`, bound) });
    assert.equal(res.status, 401);
    const challenge = String(res.headers['www-authenticate']);
    assert.match(challenge, /^Bearer [^,]*error="invalid_token"/);
    assert.match(challenge, /DPoP algs="[^"]+", error="invalid_token"/);
    assert.equal(upstream.seen.length, seen);
  });

  it('attack: an unbound token presented with the DPoP scheme and a valid proof is refused (invalid_token)', async () => {
    const unbound = await token();
    const res = await get(`${gw.url}/items`, { authorization: `DPoP ${unbound}`, dpop: await proof('GET', `${gw.url}/items`, unbound) });
    assert.equal(res.status, 401);
    assert.match(String(res.headers['www-authenticate']), /DPoP algs="[^"]+", error="invalid_token"/);
  });

  it('attack: a proof replayed (same proof, same token) is refused and reaches the upstream once', async () => {
    const seen = upstream.seen.length;
    const once = await proof('GET', `${gw.url}/items`, bound);
    assert.equal((await get(`${gw.url}/items`, { authorization: `DPoP ${bound}`, dpop: once })).status, 200);
    const again = await get(`${gw.url}/items`, { authorization: `DPoP ${bound}`, dpop: once });
    assert.equal(again.status, 401);
    assert.match(String(again.headers['www-authenticate']), /DPoP .*error="invalid_dpop_proof"/);
    assert.equal(upstream.seen.length, seen + 1);
  });

  it('attack: two DPoP header lines are a 400, never forwarded', async () => {
    const seen = upstream.seen.length;
    const url = `${gw.url}/items`;
    const res = await get(url, { authorization: `DPoP ${bound}`, dpop: [await proof('GET', url, bound), await proof('GET', url, bound)] });
    assert.equal(res.status, 400);
    assert.equal(upstream.seen.length, seen);
  });

  it('attack: a DPoP header past max_token_size (about 12 KB) is refused as an invalid proof, never forwarded', async () => {
    const seen = upstream.seen.length;
    const url = `${gw.url}/items`;
    const res = await get(url, { authorization: `DPoP ${bound}`, dpop: await proof('GET', url, bound, { pad: 'x'.repeat(9000) }) });
    assert.equal(res.status, 401);
    assert.match(String(res.headers['www-authenticate']), /DPoP .*error="invalid_dpop_proof"/);
    assert.equal(upstream.seen.length, seen);
  });

  it('attack: a DPoP header past gateway.limits.max_header_size (20 KB) is a 431, never forwarded', async () => {
    const seen = upstream.seen.length;
    const url = `${gw.url}/items`;
    const res = await get(url, { authorization: `DPoP ${bound}`, dpop: await proof('GET', url, bound, { pad: 'x'.repeat(15_000) }) });
    assert.equal(res.status, 431);
    assert.equal(upstream.seen.length, seen);
  });

  it('attack: X-Forwarded-Host and -Proto from a peer not in gateway.trust_proxy do not choose the URL a proof must name', async () => {
    const forged = { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' };
    const evil = await get(`${gw.url}/items`, {
      ...forged,
      authorization: `DPoP ${bound}`,
      dpop: await proof('GET', 'https://evil.example/items', bound),
    });
    assert.equal(evil.status, 401);
    const own = await get(`${gw.url}/items`, {
      ...forged,
      authorization: `DPoP ${bound}`,
      dpop: await proof('GET', `${gw.url}/items`, bound),
    });
    assert.equal(own.status, 200);
  });

  it('attack: an htu that RFC 3986 parsers read as another host (a backslash before "@") is refused, though URL parsing reads it as this gateway', async () => {
    // A client whose URL library follows RFC 3986 sends `http://<gateway>\@evil.example/items` to
    // evil.example (userinfo `<gateway>\`), with a proof naming that URL; WHATWG URL parsing turns
    // the backslash into a slash: host the gateway, path /@evil.example/items. evil.example must
    // not be able to spend the proof (and the token sent with it) here.
    const seen = upstream.seen.length;
    const host = new URL(gw.url).host;
    for (const htu of [`http://${host}\\@evil.example/items`, `http://${host}/@evil.example\\items`]) {
      const res = await get(`${gw.url}/@evil.example/items`, { authorization: `DPoP ${bound}`, dpop: await proof('GET', htu, bound) });
      assert.equal(res.status, 401, htu);
      assert.match(String(res.headers['www-authenticate']), /DPoP .*error="invalid_dpop_proof"/);
    }
    // Tabs, newlines and spaces are not in any URI (RFC 3986 §2); URL parsing drops or trims them.
    for (const htu of [`http://${host}/it\tems`, `http://${host}/it\nems`, ` http://${host}/items`]) {
      const res = await get(`${gw.url}/items`, { authorization: `DPoP ${bound}`, dpop: await proof('GET', htu, bound) });
      assert.equal(res.status, 401, JSON.stringify(htu));
    }
    assert.equal(upstream.seen.length, seen);
  });

  it('attack: no audit event of a refused proof carries the token or the proof', async () => {
    const url = `${gw.url}/items`;
    const proofs = [
      await proof('POST', url, bound),
      await proof('GET', 'https://evil.example/items', bound),
      await proof('GET', url, 'another-token'),
      `${(await proof('GET', url, bound)).slice(0, -8)}AAAAAAAA`,
    ];
    for (const p of proofs) assert.equal((await get(url, { authorization: `DPoP ${bound}`, dpop: p })).status, 401);
    const text = JSON.stringify(await requestEvents(gw));
    assert.ok(!text.includes(bound.slice(bound.lastIndexOf('.') + 1)), 'an audit event carries the token');
    for (const p of proofs) {
      assert.ok(!text.includes(p.slice(p.lastIndexOf('.') + 1)), 'an audit event carries a proof signature');
      assert.ok(!text.includes(p.slice(p.indexOf('.') + 1, p.lastIndexOf('.'))), 'an audit event carries a proof payload');
    }
  });
});

describe('gateway: DPoP behind a path prefix (server.public_url with a path)', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let bound: string;
  before(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      ...baseConfig(),
      server: { public_url: 'https://example.com/api/' },
      dpop: { mode: 'allowed' },
      gateway: { routes: routes(upstream) },
    });
    bound = await token({ cnf: { jkt: await calculateJwkThumbprint(holderJwk) } });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('a proof naming the prefixed URL the client called passes', async () => {
    const res = await get(`${gw.url}/items`, {
      authorization: `DPoP ${bound}`,
      dpop: await proof('GET', 'https://example.com/api/items', bound),
    });
    assert.equal(res.status, 200);
  });

  it('attack: a proof naming the URL without the prefix (another resource of the origin) is refused', async () => {
    const res = await get(`${gw.url}/items`, {
      authorization: `DPoP ${bound}`,
      dpop: await proof('GET', 'https://example.com/items', bound),
    });
    assert.equal(res.status, 401);
    assert.match(String(res.headers['www-authenticate']), /DPoP .*error="invalid_dpop_proof"/);
  });

  it('attack: a dot segment in the request target does not climb out of the prefix in the URL the proof must name', async () => {
    // /../items at the gateway is /api/../items, i.e. https://example.com/items, to URL parsing:
    // whatever the gateway routes it to, a proof for the origin's /items must not pass for it.
    const res = await get(`${gw.url}/%2e%2e/items`, {
      authorization: `DPoP ${bound}`,
      dpop: await proof('GET', 'https://example.com/items', bound),
    });
    assert.notEqual(res.status, 200);
  });
});
