/**
 * RFC 7662 introspection against a real loopback endpoint that authenticates the verifier with
 * client_secret_basic (RFC 6749 §2.3.1). Results are cached no longer than the token's `exp` and
 * no longer than `cache_max_ttl`; the server's hit counter and a fake clock show it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { denyResponse } from '../../src/adapters/response.ts';
import { createVerifier } from '../../src/verifier.ts';
import { AUDIENCE, b64json, claims, ISSUER, makeKey, sign } from '../helpers/tokens.ts';
import {
  assertDenied,
  assertInvalidRequest,
  assertInvalidToken,
  type FakeClock,
  fakeClock,
  listen,
  readBody,
  type TestServer,
} from '../helpers/verify.ts';

const CLIENT_ID = 'resource server';
const CLIENT_SECRET = "s3cr:t/+with space&'*";

/** RFC 6749 §2.3.1 / Appendix B form decoding. */
const formDecode = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));

interface Endpoint extends TestServer {
  hits: number;
  /** token → response body */
  responses: Map<string, unknown>;
  status: number;
  lastRequest: { method: string; contentType: string | undefined; hint: string | null } | undefined;
}

async function introspectionEndpoint(): Promise<Endpoint> {
  const state = { hits: 0, responses: new Map<string, unknown>(), status: 200, lastRequest: undefined as Endpoint['lastRequest'] };
  const server = await listen(async (req, res) => {
    state.hits++;
    const auth = req.headers.authorization ?? '';
    const [scheme, encoded] = auth.split(' ');
    const decoded = Buffer.from(encoded ?? '', 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const id = formDecode(decoded.slice(0, colon));
    const secret = formDecode(decoded.slice(colon + 1));
    const body = new URLSearchParams(await readBody(req));
    state.lastRequest = { method: req.method ?? '', contentType: req.headers['content-type'], hint: body.get('token_type_hint') };
    if (scheme !== 'Basic' || colon < 0 || id !== CLIENT_ID || secret !== CLIENT_SECRET) {
      res.writeHead(401, { 'www-authenticate': 'Basic', 'content-type': 'application/json' }).end('{"error":"invalid_client"}');
      return;
    }
    if (state.status !== 200) {
      res.writeHead(state.status).end();
      return;
    }
    const answer = state.responses.get(body.get('token') ?? '') ?? { active: false };
    res.writeHead(200, { 'content-type': 'application/json' }).end(typeof answer === 'string' ? answer : JSON.stringify(answer));
  });
  return Object.assign(state, server) as Endpoint;
}

function introspectingVerifier(endpoint: Endpoint, clock: FakeClock, extra: Record<string, unknown> = {}) {
  return createVerifier(
    {
      introspection: {
        endpoint: `${endpoint.origin}/introspect`,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        cache_max_ttl: '60s',
        ...extra,
      },
      dpop: { mode: 'disabled' },
    },
    { clock },
  );
}

const bearer = (token: string) => ({ method: 'GET', url: 'https://api.test/', headers: { authorization: `Bearer ${token}` } });

describe('RFC 7662 introspection', () => {
  let endpoint: Endpoint;
  before(async () => {
    endpoint = await introspectionEndpoint();
  });
  after(() => endpoint.close());

  it('maps an active token to a principal, authenticating with client_secret_basic', async () => {
    const clock = fakeClock();
    endpoint.responses.set('opaque-active', {
      active: true,
      sub: 'user-7',
      client_id: 'agent-7',
      scope: 'api:read api:write',
      exp: clock.seconds() + 300,
      iss: 'https://as.test',
      act: { sub: 'agent-x' },
    });
    const verifier = introspectingVerifier(endpoint, clock, { issuer: 'https://as.test' });
    const result = await verifier.verify(bearer('opaque-active'));
    assert.ok(result.ok, result.ok ? '' : result.error.code);
    assert.equal(result.principal.kind, 'introspection');
    assert.equal(result.principal.issuer, 'https://as.test');
    assert.equal(result.principal.subject, 'user-7');
    assert.equal(result.principal.clientId, 'agent-7');
    assert.deepEqual(result.principal.scopes, ['api:read', 'api:write']);
    assert.deepEqual(
      result.principal.actors.map((a) => a.subject),
      ['agent-x'],
    );
    assert.deepEqual(endpoint.lastRequest, { method: 'POST', contentType: 'application/x-www-form-urlencoded', hint: 'access_token' });
  });

  it('names the endpoint origin as issuer when the response has no iss', async () => {
    const clock = fakeClock();
    endpoint.responses.set('opaque-no-iss', { active: true, sub: 'u', exp: clock.seconds() + 100 });
    const result = await introspectingVerifier(endpoint, clock).verify(bearer('opaque-no-iss'));
    assert.ok(result.ok);
    assert.equal(result.principal.issuer, endpoint.origin);
  });

  it('attack: an answer whose iss is not the configured issuer (nor, unconfigured, the endpoint origin) is refused 401 token_issuer_unknown', async () => {
    const clock = fakeClock();
    for (const [i, iss] of [ISSUER, 'https://as.test/', 'https://AS.test'].entries()) {
      endpoint.responses.set(`opaque-iss-${i}`, { active: true, sub: 'u', exp: clock.seconds() + 100, iss });
      const verifier = introspectingVerifier(endpoint, clock, { issuer: 'https://as.test' });
      assertInvalidToken(await verifier.verify(bearer(`opaque-iss-${i}`)), verifier, 'token_issuer_unknown');
      const unconfigured = introspectingVerifier(endpoint, clock);
      assertInvalidToken(await unconfigured.verify(bearer(`opaque-iss-${i}`)), unconfigured, 'token_issuer_unknown');
    }
    endpoint.responses.set('opaque-iss-origin', { active: true, sub: 'u', exp: clock.seconds() + 100, iss: endpoint.origin });
    const result = await introspectingVerifier(endpoint, clock).verify(bearer('opaque-iss-origin'));
    assert.ok(result.ok);
    assert.equal(result.principal.issuer, endpoint.origin);
  });

  it('rejects an inactive token with 401 token_inactive', async () => {
    const verifier = introspectingVerifier(endpoint, fakeClock());
    assertInvalidToken(await verifier.verify(bearer('opaque-unknown')), verifier, 'token_inactive');
  });

  it('rejects an active token whose exp has passed, and a non-numeric exp', async () => {
    const clock = fakeClock();
    endpoint.responses.set('opaque-stale', { active: true, sub: 'u', exp: clock.seconds() - 1 });
    endpoint.responses.set('opaque-exp-string', { active: true, sub: 'u', exp: String(clock.seconds() + 100) });
    const verifier = introspectingVerifier(endpoint, clock);
    assertInvalidToken(await verifier.verify(bearer('opaque-stale')), verifier, 'token_expired');
    assertInvalidToken(await verifier.verify(bearer('opaque-exp-string')), verifier, 'token_claim_invalid');
  });

  it('checks the response aud when audiences are configured', async () => {
    const clock = fakeClock();
    endpoint.responses.set('opaque-aud', { active: true, sub: 'u', aud: ['https://other.test'], exp: clock.seconds() + 100 });
    const verifier = introspectingVerifier(endpoint, clock, { audiences: ['https://api.test'] });
    assertInvalidToken(await verifier.verify(bearer('opaque-aud')), verifier, 'token_audience_invalid');
  });

  it('rejects an active response whose aud is neither a string nor an array of strings (never a principal with such an audience)', async () => {
    const clock = fakeClock();
    endpoint.responses.set('opaque-aud-number', { active: true, sub: 'u', aud: 5, exp: clock.seconds() + 100 });
    endpoint.responses.set('opaque-aud-mixed', { active: true, sub: 'u', aud: ['https://api.test', 5], exp: clock.seconds() + 100 });
    endpoint.responses.set('opaque-aud-object', { active: true, sub: 'u', aud: { length: 1 }, exp: clock.seconds() + 100 });
    for (const verifier of [
      introspectingVerifier(endpoint, clock),
      introspectingVerifier(endpoint, clock, { audiences: ['https://api.test'] }),
    ]) {
      for (const token of ['opaque-aud-number', 'opaque-aud-mixed', 'opaque-aud-object']) {
        assertInvalidToken(await verifier.verify(bearer(token)), verifier, 'token_claim_invalid');
      }
    }
  });

  it('answers 503 when the endpoint refuses the client credentials (never treats it as inactive)', async () => {
    const verifier = createVerifier(
      {
        introspection: { endpoint: `${endpoint.origin}/introspect`, client_id: CLIENT_ID, client_secret: 'wrong' },
        dpop: { mode: 'disabled' },
      },
      { clock: fakeClock() },
    );
    assertDenied(await verifier.verify(bearer('opaque-active')), verifier, {
      status: 503,
      code: 'introspection_unavailable',
      error: 'temporarily_unavailable',
      challenges: ['Bearer'],
    });
  });

  for (const [name, status, body] of [
    ['answers HTTP 500', 500, undefined],
    ['answers a body that is not JSON', 200, 'not json'],
    ['answers without a boolean active', 200, '{"active":"true"}'],
    // JSON.parse keeps the last duplicate, other parsers the first: the answer is ambiguous.
    ['answers active twice, false then true (attack: duplicate members)', 200, '{"active":false,"active":true}'],
    ['answers active twice, once spelled with an escape (attack: duplicate members)', 200, '{"active":false,"\\u0061ctive":true}'],
    ['answers sub twice (attack: duplicate members)', 200, '{"active":true,"sub":"alice","sub":"admin"}'],
  ] as const) {
    it(`answers 503 introspection_unavailable when the endpoint ${name}`, async () => {
      endpoint.status = status;
      if (body !== undefined) endpoint.responses.set('opaque-odd', body);
      try {
        const verifier = introspectingVerifier(endpoint, fakeClock());
        const error = assertDenied(await verifier.verify(bearer('opaque-odd')), verifier, {
          status: 503,
          code: 'introspection_unavailable',
          error: 'temporarily_unavailable',
          challenges: ['Bearer'],
        });
        assert.equal(denyResponse(error, verifier.challenges).headers['retry-after'], '5');
      } finally {
        endpoint.status = 200;
      }
    });
  }

  it('operator: why introspection is unavailable is said in a warning (refused credentials, an odd answer, down), at most once per 30 s, never with the secret or the token', async () => {
    const warnings: string[] = [];
    const clock = fakeClock();
    const make = (origin: string, secret: string) =>
      createVerifier(
        { introspection: { endpoint: `${origin}/introspect`, client_id: CLIENT_ID, client_secret: secret }, dpop: { mode: 'disabled' } },
        { clock, onWarning: (m) => warnings.push(m) },
      );
    const refused = make(endpoint.origin, 'wrong-secret-value');
    await refused.verify(bearer('opaque-secret-token-1'));
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /introspection.*HTTP 401/);
    // A second failure within 30 s is counted, not said again.
    await refused.verify(bearer('opaque-secret-token-2'));
    assert.equal(warnings.length, 1);
    clock.advance(31);
    await refused.verify(bearer('opaque-secret-token-3'));
    assert.equal(warnings.length, 2);
    assert.match(warnings[1]!, /HTTP 401.*1 more/);
    endpoint.responses.set('opaque-not-json', 'not json');
    await make(endpoint.origin, CLIENT_SECRET).verify(bearer('opaque-not-json'));
    assert.match(warnings.at(-1)!, /introspection.*not a JSON object/);
    const down = await introspectionEndpoint();
    await down.close();
    await make(down.origin, CLIENT_SECRET).verify(bearer('opaque-active'));
    assert.match(warnings.at(-1)!, /introspection.*(unreachable|ECONNREFUSED)/);
    for (const w of warnings) {
      assert.doesNotMatch(w, /wrong-secret-value|opaque-|s3cr|Basic /);
    }
  });

  it('answers 503 introspection_unavailable when the endpoint is down', async () => {
    const down = await introspectionEndpoint();
    const verifier = introspectingVerifier(down, fakeClock());
    await down.close();
    assertDenied(await verifier.verify(bearer('opaque-active')), verifier, {
      status: 503,
      code: 'introspection_unavailable',
      error: 'temporarily_unavailable',
      challenges: ['Bearer'],
    });
  });

  it('rejects an active response whose iss is not a string (never the configured issuer in its place)', async () => {
    const endpoint = await introspectionEndpoint();
    try {
      const verifier = introspectingVerifier(endpoint, fakeClock());
      for (const iss of [5, null, ['https://idp.test'], {}]) {
        endpoint.responses.set('opaque-iss', { active: true, sub: 'a', iss });
        const r = await verifier.verify(bearer('opaque-iss'));
        assert.equal(r.ok, false, JSON.stringify(iss));
        if (!r.ok) assert.equal(r.error.code, 'token_claim_invalid');
      }
    } finally {
      await endpoint.close();
    }
  });

  it('attack: an oversized introspection response is refused (503) before it is all read, declared or streamed', async () => {
    const endpoint = await introspectionEndpoint();
    try {
      const verifier = introspectingVerifier(endpoint, fakeClock());
      endpoint.responses.set('opaque-huge', JSON.stringify({ active: true, sub: 'a', pad: 'x'.repeat(100_000) }));
      assertDenied(await verifier.verify(bearer('opaque-huge')), verifier, {
        status: 503,
        code: 'introspection_unavailable',
        error: 'temporarily_unavailable',
        challenges: ['Bearer'],
      });
    } finally {
      await endpoint.close();
    }
    const streaming = await listen((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"active":true,"pad":"');
      const chunk = 'x'.repeat(16_384);
      for (let i = 0; i < 8; i++) res.write(chunk);
      res.end('"}');
    });
    try {
      const verifier = createVerifier(
        {
          introspection: { endpoint: `${streaming.origin}/introspect`, client_id: CLIENT_ID, client_secret: CLIENT_SECRET },
          dpop: { mode: 'disabled' },
        },
        { clock: fakeClock() },
      );
      const r = await verifier.verify(bearer('opaque'));
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.error.code, 'introspection_unavailable');
    } finally {
      await streaming.close();
    }
  });

  it('caches an active result no longer than cache_max_ttl', async () => {
    const clock = fakeClock();
    endpoint.responses.set('opaque-long', { active: true, sub: 'u', exp: clock.seconds() + 3600 });
    const verifier = introspectingVerifier(endpoint, clock);
    const start = endpoint.hits;
    assert.equal((await verifier.verify(bearer('opaque-long'))).ok, true);
    clock.advance(59);
    assert.equal((await verifier.verify(bearer('opaque-long'))).ok, true);
    assert.equal(endpoint.hits, start + 1);
    clock.advance(2);
    assert.equal((await verifier.verify(bearer('opaque-long'))).ok, true);
    assert.equal(endpoint.hits, start + 2);
  });

  it("caches an active result no longer than the token's exp", async () => {
    const clock = fakeClock();
    endpoint.responses.set('opaque-short', { active: true, sub: 'u', exp: clock.seconds() + 20 });
    const verifier = introspectingVerifier(endpoint, clock);
    const start = endpoint.hits;
    assert.equal((await verifier.verify(bearer('opaque-short'))).ok, true);
    clock.advance(19);
    assert.equal((await verifier.verify(bearer('opaque-short'))).ok, true);
    assert.equal(endpoint.hits, start + 1);
    clock.advance(1);
    // At exp the cache is stale: the endpoint is asked again and the expired answer refused.
    assertInvalidToken(await verifier.verify(bearer('opaque-short')), verifier, 'token_expired');
    assert.equal(endpoint.hits, start + 2);
  });

  it('caches opaque tokens that end alike apart (their entries are keyed by their hash, not their end)', async () => {
    const clock = fakeClock();
    const suffix = '.shared-suffix-of-every-token-of-this-kind';
    for (const t of ['a', 'b']) endpoint.responses.set(`opaque-${t}${suffix}`, { active: true, sub: t, exp: clock.seconds() + 3600 });
    const verifier = introspectingVerifier(endpoint, clock);
    const start = endpoint.hits;
    for (let i = 0; i < 3; i++) {
      for (const t of ['a', 'b']) {
        const result = await verifier.verify(bearer(`opaque-${t}${suffix}`));
        assert.equal(result.ok && result.principal.subject, t);
      }
    }
    assert.equal(endpoint.hits, start + 2);
  });

  it('attack: cache stampede: concurrent requests with one new token make one introspection call, not one each', async () => {
    let hits = 0;
    const clock = fakeClock();
    const slow = await listen(async (req, res) => {
      hits++;
      const token = new URLSearchParams(await readBody(req)).get('token');
      const answer = token === 'stampede-active' ? { active: true, sub: 'u', exp: clock.seconds() + 300 } : { active: false };
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer)), 100);
    });
    try {
      const verifier = createVerifier(
        {
          introspection: { endpoint: `${slow.origin}/introspect`, client_id: CLIENT_ID, client_secret: CLIENT_SECRET },
          dpop: { mode: 'disabled' },
        },
        { clock },
      );
      const active = await Promise.all(Array.from({ length: 20 }, () => verifier.verify(bearer('stampede-active'))));
      assert.ok(active.every((r) => r.ok && r.principal.subject === 'u'));
      assert.equal(hits, 1);
      // An inactive token too (its answer is not cached, but the calls in flight are shared).
      const inactive = await Promise.all(Array.from({ length: 20 }, () => verifier.verify(bearer('stampede-inactive'))));
      for (const r of inactive) assertInvalidToken(r, verifier, 'token_inactive');
      assert.equal(hits, 2);
      // Once answered, an inactive token is asked about again (a later answer may differ).
      assertInvalidToken(await verifier.verify(bearer('stampede-inactive')), verifier, 'token_inactive');
      assert.equal(hits, 3);
    } finally {
      await slow.close();
    }
  });

  it('does not cache inactive results', async () => {
    const verifier = introspectingVerifier(endpoint, fakeClock());
    const start = endpoint.hits;
    await verifier.verify(bearer('opaque-never'));
    await verifier.verify(bearer('opaque-never'));
    assert.equal(endpoint.hits, start + 2);
  });
});

describe('RFC 7662 introspection: what an active answer must also say', () => {
  let endpoint: Endpoint;
  before(async () => {
    endpoint = await introspectionEndpoint();
  });
  after(() => endpoint.close());

  /** The verifier's answer to an opaque token the endpoint describes as `answer` (plus active, sub, exp). */
  const answerTo = async (answer: Record<string, unknown>, extra: Record<string, unknown> = {}) => {
    const clock = fakeClock();
    const token = `opaque-${Math.random().toString(36).slice(2)}`;
    endpoint.responses.set(token, { active: true, sub: 'u', exp: clock.seconds() + 300, ...answer });
    const verifier = introspectingVerifier(endpoint, clock, extra);
    return { verifier, result: await verifier.verify(bearer(token)) };
  };

  // RFC 7662 §2.2: token_type is an access token type (RFC 6749 §7.1). Tessera's own endpoint
  // answers the client owning a refresh token {"active":true,"token_type":"refresh_token"} without
  // `aud`; RFC 8693 names non-access tokens by URI and says N_A for "not an access token"; Ory
  // Hydra (fosite) says token_use "refresh_token", AWS Cognito "refresh" / "id".
  for (const [member, value] of [
    ['token_type', 'refresh_token'],
    ['token_type', 'Refresh_Token'],
    ['token_type', 'urn:ietf:params:oauth:token-type:refresh_token'],
    ['token_type', 'urn:ietf:params:oauth:token-type:id_token'],
    ['token_type', 'N_A'],
    ['token_use', 'refresh'],
    ['token_use', 'refresh_token'],
    ['token_use', 'id'],
    ['token_use', 'id_token'],
  ] as const) {
    it(`attack: a refresh token accepted as an access token (${member} ${value}) is refused, 401 token_typ_invalid`, async () => {
      const { verifier, result } = await answerTo({ [member]: value, scope: 'api:read' });
      const error = assertInvalidToken(result, verifier, 'token_typ_invalid');
      assert.equal(error.details.claim, member);
    });
  }

  it('refuses a token_type or token_use that is not a string (401 token_claim_invalid)', async () => {
    for (const [member, value] of [
      ['token_type', ['Bearer']],
      ['token_type', null],
      ['token_use', 1],
    ] as const) {
      const { verifier, result } = await answerTo({ [member]: value });
      const error = assertInvalidToken(result, verifier, 'token_claim_invalid');
      assert.equal(error.details.claim, member, JSON.stringify(value));
    }
  });

  it('accepts an answer that says it is about an access token, or says nothing of its type', async () => {
    for (const answer of [
      {},
      { token_type: 'Bearer' },
      { token_type: 'bearer' },
      { token_type: 'access_token' },
      { token_type: 'urn:ietf:params:oauth:token-type:access_token' },
      { token_use: 'access' },
      { token_use: 'access_token' },
      { token_type: 'Bearer', token_use: 'access_token' },
      { token_type: 'DPoP', cnf: { jkt: 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs' } },
    ]) {
      const { result } = await answerTo(answer);
      assert.ok(
        result.ok || result.error.code === 'token_dpop_bound_as_bearer',
        `${JSON.stringify(answer)}: ${result.ok ? '' : result.error.code}`,
      );
      if (!result.ok) assert.equal(result.principal?.confirmation?.jkt, 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
    }
  });

  it('attack: a DPoP token introspected without cnf.jkt is not taken for a bearer token (401 token_claim_missing cnf)', async () => {
    const { verifier, result } = await answerTo({ token_type: 'DPoP' });
    const error = assertInvalidToken(result, verifier, 'token_claim_missing');
    assert.equal(error.details.claim, 'cnf');
  });

  it('attack: a token not yet valid (nbf in the future) is refused as the JWT path refuses it, with its skew', async () => {
    const now = fakeClock().seconds();
    for (const [answer, code, claim] of [
      [{ nbf: now + 3000 }, 'token_not_yet_valid', 'nbf'],
      [{ nbf: now + 31 }, 'token_not_yet_valid', 'nbf'],
      [{ iat: now + 3000 }, 'token_iat_in_future', 'iat'],
      [{ iat: now + 31 }, 'token_iat_in_future', 'iat'],
      // The wrong type is refused, never taken for an absent claim.
      [{ nbf: String(now + 3000) }, 'token_claim_invalid', 'nbf'],
      [{ iat: null }, 'token_claim_invalid', 'iat'],
    ] as const) {
      const { verifier, result } = await answerTo(answer);
      const error = assertInvalidToken(result, verifier, code);
      assert.equal(error.details.claim, claim, JSON.stringify(answer));
    }
    // Within the default skew of 30 s, as for a JWT.
    for (const answer of [{ nbf: now + 30 }, { iat: now + 30 }, { nbf: now - 60, iat: now - 60 }]) {
      const { result } = await answerTo(answer);
      assert.ok(result.ok, `${JSON.stringify(answer)}: ${result.ok ? '' : result.error.code}`);
    }
    // clock_skew narrows it.
    const { verifier, result } = await answerTo({ nbf: now + 30 }, { clock_skew: '10s' });
    assertInvalidToken(result, verifier, 'token_not_yet_valid');
    assert.ok((await answerTo({ nbf: now + 10 }, { clock_skew: '10s' })).result.ok);
  });

  it('attack: an active answer whose sub (or an act.sub) is empty or not a string is refused (401 token_claim_invalid), never a principal named ""', async () => {
    for (const [answer, claim] of [
      [{ sub: '' }, 'sub'],
      [{ sub: 7 }, 'sub'],
      [{ act: { sub: '' } }, 'act'],
    ] as const) {
      const { verifier, result } = await answerTo(answer);
      const error = assertInvalidToken(result, verifier, 'token_claim_invalid');
      assert.equal(error.details.claim, claim, JSON.stringify(answer));
    }
    // RFC 7662 §2.2: sub is OPTIONAL; an answer without one is a principal without a subject.
    const { result } = await answerTo({ sub: undefined });
    assert.ok(result.ok && result.principal.subject === undefined);
  });

  it('attack: scope as a JSON array where the space-delimited scope is configured is refused (401 token_claim_invalid scope)', async () => {
    // RFC 7662 §2.2: scope is a space-separated string; an array is not a list of grants.
    for (const scope of [['admin'], ['api:read', 'admin'], []]) {
      const { verifier, result } = await answerTo({ scope });
      const error = assertInvalidToken(result, verifier, 'token_claim_invalid');
      assert.equal(error.details.claim, 'scope', JSON.stringify(scope));
    }
  });

  it('reads an array from a custom scope_claim (scp), and a space-delimited string from scope', async () => {
    const scp = await answerTo({ scp: ['api:read', 'api:write'], scope: ['ignored'] }, { scope_claim: 'scp' });
    assert.ok(scp.result.ok, scp.result.ok ? '' : scp.result.error.code);
    assert.deepEqual(scp.result.principal.scopes, ['api:read', 'api:write']);
    const scope = await answerTo({ scope: 'api:read api:write' });
    assert.ok(scope.result.ok);
    assert.deepEqual(scope.result.principal.scopes, ['api:read', 'api:write']);
  });

  it('unites the members of a scope_claim list; scope stays a string there; an unlisted roles is not read', async () => {
    const both = await answerTo({ scope: 'api:read', roles: ['api:write', 'api:read'] }, { scope_claim: ['scope', 'roles'] });
    assert.ok(both.result.ok, both.result.ok ? '' : both.result.error.code);
    assert.deepEqual(both.result.principal.scopes, ['api:read', 'api:write']);
    const array = await answerTo({ scope: ['admin'], roles: ['api:read'] }, { scope_claim: ['scope', 'roles'] });
    assert.equal(assertInvalidToken(array.result, array.verifier, 'token_claim_invalid').details.claim, 'scope');
    const unlisted = await answerTo({ scope: 'api:read', roles: ['admin'] });
    assert.ok(unlisted.result.ok);
    assert.deepEqual(unlisted.result.principal.scopes, ['api:read']);
  });
});

describe('RFC 7662 introspection beside trusted JWT issuers: which tokens go where', () => {
  let endpoint: Endpoint;
  const key = makeKey('ES256');
  before(async () => {
    endpoint = await introspectionEndpoint();
  });
  after(() => endpoint.close());

  const bothVerifier = (clock: FakeClock) =>
    createVerifier(
      {
        issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
        introspection: { endpoint: `${endpoint.origin}/introspect`, client_id: CLIENT_ID, client_secret: CLIENT_SECRET },
        dpop: { mode: 'disabled' },
      },
      { clock },
    );

  it('introspects an opaque token with dots that is no compact JWS (Ory ory_at_….…), and caches it by its hash', async () => {
    const clock = fakeClock();
    const verifier = bothVerifier(clock);
    for (const token of [
      'ory_at_Jx6nJ0cnUYYR5s3Dz0b0oXJuxN5t-Ht3kRv3lYr1zQk.4hRx8B3kWq2U3qY9aZ0u1bHc7nTqZl2Z7d3kKq8p0sE',
      // Three segments, but the first is no base64url JSON header.
      'v2.local.QAxIpVe-ECVNI1z4xQbm_qQYomyT3h8FtV8bxkz8pBJWkT8f7HtlOpbroPDEZUKop_vaglyp76CzYy375cHmKCW8e1CCkV0Lqf2',
    ]) {
      endpoint.responses.set(token, { active: true, sub: 'opaque-user', scope: 'api:read', exp: clock.seconds() + 300 });
      const start = endpoint.hits;
      const result = await verifier.verify(bearer(token));
      assert.ok(result.ok, result.ok ? '' : `${token}: ${result.error.code}`);
      assert.equal(result.principal.kind, 'introspection');
      assert.equal(result.principal.subject, 'opaque-user');
      assert.equal(endpoint.hits, start + 1);
      const again = await verifier.verify(bearer(token));
      assert.ok(again.ok);
      assert.equal(endpoint.hits, start + 1, 'the second presentation is served from the cache');
    }
    // Its syntax is checked before it leaves the process, as any opaque token's.
    const start = endpoint.hits;
    assertInvalidRequest(await verifier.verify(bearer('ory_at_a=b.c')), verifier, 'request_malformed_authorization');
    assert.equal(endpoint.hits, start);
  });

  it('never sends a compact JWS to the introspection endpoint: a JWT is verified, a forged one refused by its signature', async () => {
    const clock = fakeClock();
    const verifier = bothVerifier(clock);
    const start = endpoint.hits;
    const good = await sign(key, claims({}, clock.seconds()));
    const result = await verifier.verify(bearer(good));
    assert.ok(result.ok, result.ok ? '' : result.error.code);
    assert.equal(result.principal.kind, 'jwt');
    const forged = `${good.slice(0, good.lastIndexOf('.'))}.${Buffer.alloc(64, 7).toString('base64url')}`;
    assertInvalidToken(await verifier.verify(bearer(forged)), verifier, 'token_signature_invalid');
    // A JWS header that is JSON but not acceptable is the JWT path's refusal too.
    const noAlg = `${b64json({ typ: 'JWT' })}.${b64json(claims({}, clock.seconds()))}.c2ln`;
    assertInvalidToken(await verifier.verify(bearer(noAlg)), verifier, 'token_header_invalid');
    assert.equal(endpoint.hits, start);
  });

  it('without introspection, an opaque token with dots is still a malformed JWT', async () => {
    const verifier = createVerifier({
      issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
      dpop: { mode: 'disabled' },
    });
    assertInvalidToken(await verifier.verify(bearer('ory_at_abc.def')), verifier, 'token_malformed');
    assertInvalidToken(await verifier.verify(bearer('v2.local.QAxIpVe')), verifier, 'token_malformed');
  });
});

describe('attack: an introspection endpoint that redirects (307) to another host', () => {
  it('is not followed: the client credentials and the token reach only the configured endpoint (503 introspection_unavailable)', async () => {
    const elsewhere: { authorization: string | undefined; body: string }[] = [];
    const other = await listen(async (req, res) => {
      elsewhere.push({ authorization: req.headers.authorization, body: await readBody(req) });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"active":true,"sub":"mallory","scope":"admin"}');
    });
    let hits = 0;
    const redirecting = await listen((_req, res) => {
      hits++;
      res.writeHead(307, { location: `${other.origin}/introspect` }).end();
    });
    try {
      const verifier = createVerifier(
        {
          introspection: { endpoint: `${redirecting.origin}/introspect`, client_id: CLIENT_ID, client_secret: CLIENT_SECRET },
          dpop: { mode: 'disabled' },
        },
        { clock: fakeClock() },
      );
      assertDenied(await verifier.verify(bearer('opaque-redirected')), verifier, {
        status: 503,
        code: 'introspection_unavailable',
        error: 'temporarily_unavailable',
        challenges: ['Bearer'],
      });
      assert.equal(hits, 1);
      assert.deepEqual(elsewhere, []);
    } finally {
      await other.close();
      await redirecting.close();
    }
  });
});
