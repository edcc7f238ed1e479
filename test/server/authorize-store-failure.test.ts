/**
 * `/oauth2/authorize` when the store fails in the middle of a request, with a real store that
 * fails: PostgreSQL out of reach behind test/helpers/tcp-fault-proxy.ts (connections reset, or
 * black-holed until the request's bound), and a SQLite store closed under the running server. Once
 * the client and its redirect URI are trusted, the failure goes back to the client as RFC 6749
 * §4.1.2.1's `temporarily_unavailable` (the store unavailable or past its bound) or `server_error`
 * (anything else), with `state` and `iss` (RFC 9207): prompt=none included, which must never show
 * a page. Before, it is an error page, never a redirect. Audited with the reason codes the other
 * endpoints use (`store_unavailable`, `server_error`). A 4xx OAuth error thrown part-way is a
 * refusal, answered as the handler's own refusal of it at that stage: a page, or back to the client
 * with prompt=none.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OAuthError, type OAuthErrorCode } from '../../src/core/oauth-errors.ts';
import type { Authenticator } from '../../src/server/authenticator.ts';
import { createTokenServiceHandler } from '../../src/server/token-handler.ts';
import { type Store, StoreUnavailableError } from '../../src/store/contract.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { answerConsent, authorizationConfig, authorizationRequest, openConsent, personHeaders } from '../helpers/authorize.ts';
import { type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';
import { dropSchema, postgresReachable, storeBehindFaultProxy } from '../helpers/postgres.ts';
import type { FaultProxy } from '../helpers/tcp-fault-proxy.ts';

const REDIRECT = 'http://127.0.0.1:7777/callback';
const API = 'https://api.test';
const PG_URL = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgSkip = (await postgresReachable(PG_URL)) ? false : 'PostgreSQL is not reachable';

const client = (id: string) => ({ id, public: true, name: 'MCP App', scopes: ['api:read'], audiences: [API], redirectUris: [REDIRECT] });

function authorizeUrl(issuer: RunningIssuer, overrides: Record<string, string | undefined> = {}): string {
  return authorizationRequest(`${issuer.url}/oauth2/authorize`, {
    redirect_uri: REDIRECT,
    code_challenge: pkcePair().challenge,
    resource: API,
    ...overrides,
  });
}

/** An error sent back to the client's redirect URI (no page, no code), with `state` and `iss` (RFC 9207): its `error`. */
async function errorToClient(res: Response, issuer: RunningIssuer): Promise<string | null> {
  assert.equal(res.status, 303, await res.text());
  assert.equal(res.headers.get('content-type'), null, 'no page');
  assert.equal(res.headers.get('cache-control'), 'no-store');
  const to = new URL(res.headers.get('location') as string);
  assert.equal(`${to.origin}${to.pathname}`, REDIRECT);
  assert.equal(to.searchParams.get('code'), null, 'no code');
  assert.equal(to.searchParams.get('state'), 'xyz-state');
  assert.equal(to.searchParams.get('iss'), issuer.url);
  return to.searchParams.get('error');
}

/** An error page (never a redirect): its status. */
async function errorPage(res: Response): Promise<number> {
  const html = await res.text();
  assert.equal(res.headers.get('location'), null, 'never redirected');
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/, html);
  assert.equal(res.headers.get('cache-control'), 'no-store');
  return res.status;
}

describe('authorization endpoint, PostgreSQL out of reach mid-request', { skip: pgSkip }, () => {
  const schema = `tessera_authz_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  let proxy: FaultProxy;
  let issuer: RunningIssuer;

  before(async () => {
    const behind = await storeBehindFaultProxy(PG_URL, schema);
    proxy = behind.proxy;
    issuer = await startIssuer({
      store: behind.store,
      config: { token_service: { authorization: { ...authorizationConfig(), remember_consent: '1h' } } } as never,
    });
    for (const id of ['mcp-app', 'cold-app']) await issuer.service.registerClient(client(id));
    // The registrations moved the store's client version past the one the issuer read at start: the
    // first sync round to see it (the 1 s timer's, or the revocation watch re-established after an
    // outage) drops every cached client, so a client a test had just loaded would be read again
    // from the store out of reach, before its redirect URI is trusted (a 503 page, not the redirect
    // the tests expect). Applied here, once: twice, since a round already under way (which the
    // first call joins) may have read the version before the registrations.
    await issuer.service.sync();
    await issuer.service.sync();
  });
  after(async () => {
    proxy?.heal();
    await issuer?.close();
    await proxy?.close();
    await dropSchema(PG_URL, schema);
  });

  /**
   * `fn` with PostgreSQL out of reach (`how`), healed after. A sync round runs first, as the timer's
   * may at any moment (on a loaded machine, between a test's page load and its outage): it must
   * leave a client already read in the cache.
   */
  async function outage<T>(how: 'down' | 'black-hole', fn: () => Promise<T>): Promise<T> {
    await issuer.service.sync();
    if (how === 'down') proxy.down();
    else proxy.blackHole({ newToo: true });
    try {
      return await fn();
    } finally {
      // The connections black-holed are reset: healed only, they would stay so. Every pooled
      // connection is reset with them: the pool drops each when it reads the RST, which the kernel
      // holds at once (loopback). Until then, a query the test sends next (the audit flush, the
      // audit read) may be written on one and fail (write ECONNRESET): the next poll phase reads
      // them all, and two turns of the event loop's check phase are sure to have run one between.
      proxy.reset();
      proxy.heal();
      for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
    }
  }

  async function denied(): Promise<{ reason: string; client_id?: string; subject?: string }[]> {
    await issuer.service.audit.flush();
    return (await issuer.store.queryAudit({ limit: 10_000 }))
      .filter((e) => e.kind === 'authorization.denied')
      .map((e) => ({ reason: e.reason, ...(e.client_id !== undefined ? { client_id: e.client_id } : {}) }));
  }

  it('the consent form approved while PostgreSQL is down: back to the client with temporarily_unavailable, state and iss, no code (not a JSON error)', async () => {
    const { fields } = await openConsent(authorizeUrl(issuer));
    const before = (await denied()).length;
    const res = await outage('down', () => answerConsent(`${issuer.url}/oauth2/authorize`, { ...fields, decision: 'approve' }));
    assert.equal(await errorToClient(res, issuer), 'temporarily_unavailable');
    assert.deepEqual((await denied()).slice(before), [{ reason: 'store_unavailable', client_id: 'mcp-app' }]);
  });

  it('prompt=none while PostgreSQL is down: back to the client with temporarily_unavailable, never a page', async () => {
    // The client is known here already (cached): the store is first needed after the redirect URI is trusted.
    await openConsent(authorizeUrl(issuer));
    const before = (await denied()).length;
    const res = await outage('down', () =>
      fetch(authorizeUrl(issuer, { prompt: 'none' }), { headers: personHeaders(), redirect: 'manual' }),
    );
    assert.equal(await errorToClient(res, issuer), 'temporarily_unavailable');
    assert.deepEqual((await denied()).slice(before), [{ reason: 'store_unavailable', client_id: 'mcp-app' }]);
  });

  it('attack: a client not yet read when PostgreSQL is down (its redirect URI unverified): an error page, 503 with Retry-After, never a redirect, prompt=none included', async () => {
    const before = (await denied()).length;
    for (const prompt of [undefined, 'none']) {
      const res = await outage('down', () =>
        fetch(authorizeUrl(issuer, { client_id: 'cold-app', prompt }), { headers: personHeaders(), redirect: 'manual' }),
      );
      assert.equal(await errorPage(res), 503);
      assert.ok(res.headers.get('retry-after'), 'says when to try again');
    }
    assert.deepEqual((await denied()).slice(before), [{ reason: 'store_unavailable' }, { reason: 'store_unavailable' }]);
  });

  it('a page load while PostgreSQL does not answer within the request’s bound: back to the client with temporarily_unavailable', async () => {
    await openConsent(authorizeUrl(issuer));
    const res = await outage('black-hole', () =>
      fetch(authorizeUrl(issuer), { headers: personHeaders(), redirect: 'manual', signal: AbortSignal.timeout(20_000) }),
    );
    assert.equal(await errorToClient(res, issuer), 'temporarily_unavailable');
  });
});

describe('authorization endpoint, SQLite store closed under the running server', () => {
  let issuer: RunningIssuer;

  before(async () => {
    issuer = await startIssuer({ config: { token_service: { authorization: authorizationConfig() } } as never });
    await issuer.service.registerClient(client('mcp-app'));
  });
  after(() => issuer?.close());

  it('the consent form approved, the store gone: back to the client with server_error, state and iss, no code; prompt=none too', async () => {
    const { fields } = await openConsent(authorizeUrl(issuer));
    await issuer.store.close();
    const res = await answerConsent(`${issuer.url}/oauth2/authorize`, { ...fields, decision: 'approve' });
    assert.equal(await errorToClient(res, issuer), 'server_error');
    const silent = await fetch(authorizeUrl(issuer, { prompt: 'none' }), { headers: personHeaders(), redirect: 'manual' });
    assert.equal(await errorToClient(silent, issuer), 'server_error');
  });
});

describe('authorization endpoint, the store failing as the approval is remembered', () => {
  const HTTPS_REDIRECT = 'https://app.test/callback';
  let dir: string;
  let issuer: RunningIssuer;
  let failing = false;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-authz-remember-'));
    const inner = SqliteStore.open({ path: join(dir, 'tessera.db') });
    // A real SQLite store whose rememberConsent fails (as PostgreSQL gone between the code's write and this one) while `failing`.
    const store = new Proxy(inner, {
      get(target, p) {
        if (p === 'rememberConsent' && failing) {
          return async () => {
            throw new StoreUnavailableError('store_unreachable', 'the store went away');
          };
        }
        const v = Reflect.get(target, p, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as Store;
    issuer = await startIssuer({
      dir,
      store,
      config: { token_service: { authorization: { ...authorizationConfig(), remember_consent: '1h' } } } as never,
    });
    // An https redirect URI: a public client's approval to it is remembered (to a loopback one it is not).
    await issuer.service.registerClient({ ...client('mcp-app'), redirectUris: [HTTPS_REDIRECT] });
  });
  after(async () => {
    await issuer?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('attack: an approval whose remembering fails is not audited as approved: back to the client with temporarily_unavailable and no code; the trail holds its authorization.denied alone, no authorization.approved for a code nobody received', async () => {
    const url = authorizationRequest(`${issuer.url}/oauth2/authorize`, {
      redirect_uri: HTTPS_REDIRECT,
      code_challenge: pkcePair().challenge,
      resource: API,
    });
    const { fields } = await openConsent(url);
    failing = true;
    let res: Response;
    try {
      res = await answerConsent(
        `${issuer.url}/oauth2/authorize`,
        { ...fields, decision: 'approve' },
        { ...personHeaders(), 'x-request-id': 'remember-fails' },
      );
    } finally {
      failing = false;
    }
    assert.equal(res.status, 303, await res.text());
    const to = new URL(res.headers.get('location') as string);
    assert.equal(`${to.origin}${to.pathname}`, HTTPS_REDIRECT);
    assert.equal(to.searchParams.get('error'), 'temporarily_unavailable');
    assert.equal(to.searchParams.get('code'), null, 'no code');
    await issuer.service.audit.flush();
    const events = (await issuer.store.queryAudit({ limit: 1000 })).filter((e) => e.request_id === 'remember-fails');
    assert.deepEqual(
      events.map((e) => [e.kind, e.reason]),
      [['authorization.denied', 'store_unavailable']],
    );
  });
});

describe('authorization endpoint, an OAuth error thrown part-way', () => {
  let thrown: OAuthErrorCode = 'authorize_login_not_allowed';
  let issuer: RunningIssuer;
  let server: Server;
  let url: string;

  before(async () => {
    issuer = await startIssuer({ config: { token_service: { authorization: authorizationConfig() } } as never });
    await issuer.service.registerClient(client('mcp-app'));
    // An identity source plugged in (TokenServiceHandlerOptions.authenticator) that refuses the
    // person by throwing the endpoint's own error, after the client and redirect URI are trusted.
    const authenticator: Authenticator = {
      kind: 'custom',
      source: 'custom',
      authenticate: () => {
        throw new OAuthError(thrown);
      },
    };
    const handler = createTokenServiceHandler(issuer.service, { authenticator });
    server = createServer((req, res) => {
      if (!handler(req, res)) res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await issuer?.close();
  });

  /** The answer of the listener whose authenticator throws `thrown`, for the request with `extra`. */
  const thrownAnswer = (requestId: string, extra: Record<string, string> = {}) =>
    fetch(authorizeUrl(issuer, extra).replace(issuer.url, url), {
      headers: { ...personHeaders(), 'x-request-id': requestId },
      redirect: 'manual',
    });

  async function reasons(requestId: string): Promise<string[][]> {
    await issuer.service.audit.flush();
    const events = (await issuer.store.queryAudit({ limit: 1000 })).filter((e) => e.request_id === requestId);
    return events.map((e) => [e.kind, e.reason]);
  }

  it('a 4xx OAuthError thrown once the redirect URI is trusted is answered as the handler’s own refusal of it: a page (its 403, not server_error) for the person; with prompt=none back to the client as itself (access_denied); audited with its code', async () => {
    const res = await thrownAnswer('thrown-4xx');
    assert.equal(await errorPage(res), 403);
    assert.deepEqual(await reasons('thrown-4xx'), [['authorization.denied', 'authorize_login_not_allowed']]);
    const silent = await thrownAnswer('thrown-4xx-none', { prompt: 'none' });
    assert.equal(await errorToClient(silent, issuer), 'access_denied');
    assert.deepEqual(await reasons('thrown-4xx-none'), [['authorization.denied', 'authorize_login_not_allowed']]);
  });

  it('the same refusal made by the handler itself (a person named like the client, login_subject_is_client → authorize_login_not_allowed) gets the same answers: a 403 page, with prompt=none access_denied at the redirect URI', async () => {
    // The issuer's own listener: trusted_header, the person the proxy names `MCP-APP`.
    const own = (extra: Record<string, string> = {}) =>
      fetch(authorizeUrl(issuer, extra), { headers: personHeaders('MCP-APP', 'app@example.com'), redirect: 'manual' });
    assert.equal(await errorPage(await own()), 403);
    assert.equal(await errorToClient(await own({ prompt: 'none' }), issuer), 'access_denied');
  });

  it('an OAuth error of another endpoint’s kind (invalid_client) thrown there reaches the client as server_error, which an authorization response may carry (RFC 6749 §4.1.2.1); audited with its own code', async () => {
    thrown = 'client_unknown';
    const res = await fetch(authorizeUrl(issuer).replace(issuer.url, url), {
      headers: { ...personHeaders(), 'x-request-id': 'thrown-invalid-client' },
      redirect: 'manual',
    });
    assert.equal(await errorToClient(res, issuer), 'server_error');
    await issuer.service.audit.flush();
    const events = (await issuer.store.queryAudit({ limit: 1000 })).filter((e) => e.request_id === 'thrown-invalid-client');
    assert.deepEqual(
      events.map((e) => [e.kind, e.reason]),
      [['authorization.denied', 'client_unknown']],
    );
  });
});
