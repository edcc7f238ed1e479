/**
 * Revoking an access token revokes what was exchanged from it: every grant a client obtained by
 * token exchange (RFC 8693) presenting that very token as subject_token or actor_token, with its
 * subtree, through each path that revokes an access token (RFC 7009 at the revocation endpoint,
 * the admin API, leak revocation). Real HTTP to the token service, on SQLite and on PostgreSQL.
 * A chain three levels deep: the user's token (authorization code) → agent A → sub-agent B.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import pg from 'pg';
import type { AuditEvent } from '../../src/audit/event.ts';
import type { Store } from '../../src/store/contract.ts';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';
import { postgresReachable } from '../helpers/postgres.ts';
import { bearer } from '../helpers/tokens.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const API = 'https://api.test';
const REDIRECT = 'http://127.0.0.1:7777/callback';
const PG_URL = process.env.TESSERA_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgReachable = await postgresReachable(PG_URL);

interface Tokens {
  readonly access_token: string;
  readonly refresh_token: string;
}

const grantOf = (token: string) => decodeJwt(token).grant_id as string;
const jtiOf = (token: string) => decodeJwt(token).jti as string;

function suite(backend: string, open: () => Promise<{ store: Store; cleanup: () => Promise<void> }>, skip: string | false = false): void {
  describe(`revoking an access token revokes the grants exchanged from it (${backend})`, { skip }, () => {
    let issuer: RunningIssuer;
    let cleanup: () => Promise<void> = async () => {};
    let verifier: ReturnType<typeof inProcessVerifier>;
    const secrets: Record<string, string> = {};

    before(async () => {
      const opened = await open();
      cleanup = opened.cleanup;
      issuer = await startIssuer({ store: opened.store });
      verifier = inProcessVerifier(issuer, [API, issuer.url]);
      // The user's app: a public client; its tokens name the agents among their audiences, so agent
      // A may exchange them and B what A got (RFC 8693 §2.1: an exchange only narrows the audience).
      await issuer.service.registerClient({
        id: 'app',
        public: true,
        scopes: ['api:read'],
        audiences: [API, 'agent-a', 'agent-b'],
        grantTypes: ['authorization_code', 'refresh_token'],
        redirectUris: [REDIRECT],
      });
      const grantTypes = ['client_credentials', 'refresh_token', EXCHANGE];
      for (const id of ['agent-a', 'agent-b']) {
        secrets[id] = (await issuer.addClient({ id, scopes: ['api:read'], audiences: [API, 'agent-b'], grantTypes })).secret;
      }
      secrets.api = (await issuer.addClient({ id: 'api', scopes: [], audiences: [API] })).secret;
      secrets.ops = (await issuer.addClient({ id: 'ops', scopes: ['tessera:admin'], audiences: [issuer.url] })).secret;
    });
    after(async () => {
      await issuer?.close();
      await cleanup();
    });

    const auth = (id: string) => ({ authorization: basic(id, secrets[id] as string) });

    /** The user's tokens: an authorization code approved by `subject` for the app, redeemed. */
    async function userTokens(subject = 'alice@example.com'): Promise<Tokens> {
      const { verifier: codeVerifier, challenge } = pkcePair();
      const params = new URLSearchParams({
        response_type: 'code',
        client_id: 'app',
        redirect_uri: REDIRECT,
        code_challenge: challenge,
        code_challenge_method: 'S256',
        scope: 'api:read',
        resource: API,
        audience: 'agent-a',
        state: 's',
      });
      params.append('audience', 'agent-b');
      const outcome = await issuer.service.checkAuthorizationRequest(params);
      if (!outcome.ok) throw new Error(outcome.error.code);
      const code = await issuer.service.approveAuthorization(outcome.request, { subject, source: 'test' });
      const res = await issuer.post('/oauth2/token', {
        grant_type: 'authorization_code',
        client_id: 'app',
        redirect_uri: REDIRECT,
        code,
        code_verifier: codeVerifier,
      });
      const body = (await res.json()) as Tokens;
      assert.equal(res.status, 200, JSON.stringify(body));
      return body;
    }

    async function refresh(token: string, client: string): Promise<Response> {
      const headers = client === 'app' ? {} : auth(client);
      return issuer.post(
        '/oauth2/token',
        { grant_type: 'refresh_token', refresh_token: token, ...(client === 'app' ? { client_id: 'app' } : {}) },
        headers,
      );
    }

    async function exchange(client: string, subjectToken: string, audience: string[], actorToken?: string): Promise<Tokens> {
      const res = await issuer.post(
        '/oauth2/token',
        {
          grant_type: EXCHANGE,
          subject_token: subjectToken,
          subject_token_type: AT,
          audience,
          ...(actorToken !== undefined ? { actor_token: actorToken, actor_token_type: AT } : {}),
        },
        auth(client),
      );
      const body = (await res.json()) as Tokens;
      assert.equal(res.status, 200, JSON.stringify(body));
      return body;
    }

    async function ccToken(client: string): Promise<string> {
      const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience: API }, auth(client));
      assert.equal(res.status, 200);
      return ((await res.json()) as { access_token: string }).access_token;
    }

    const live = async (token: string) => (await verifier.verify(bearer(token))).ok;
    async function refused(token: string, label: string): Promise<void> {
      const r = await verifier.verify(bearer(token));
      assert.equal(r.ok, false, `${label}: the in-process verifier accepted it`);
      if (!r.ok) assert.equal(r.error.code, 'token_revoked', label);
    }
    async function introspect(token: string, as = 'api'): Promise<Record<string, unknown>> {
      const res = await issuer.post('/oauth2/introspect', { token }, auth(as));
      assert.equal(res.status, 200);
      return (await res.json()) as Record<string, unknown>;
    }
    async function refreshRefused(token: string, client: string, label: string): Promise<void> {
      const res = await refresh(token, client);
      const body = (await res.json()) as { error: string };
      assert.equal(res.status, 400, `${label}: ${JSON.stringify(body)}`);
      assert.equal(body.error, 'invalid_grant', label);
    }
    async function events(kind: AuditEvent['kind'], delegation?: string): Promise<AuditEvent[]> {
      await issuer.service.audit.flush();
      return issuer.store.queryAudit({ kinds: [kind], ...(delegation !== undefined ? { delegation_id: delegation } : {}), limit: 10_000 });
    }

    /** user → agent A → sub-agent B, and a sibling of A from another token of the user's grant. */
    async function chain() {
      const user = await userTokens();
      const a = await exchange('agent-a', user.access_token, [API, 'agent-b']);
      const b = await exchange('agent-b', a.access_token, [API]);
      // The app refreshes: another access token of the same grant, exchanged by agent A too.
      const refreshed = (await (await refresh(user.refresh_token, 'app')).json()) as Tokens;
      assert.equal(grantOf(refreshed.access_token), grantOf(user.access_token));
      const sibling = await exchange('agent-a', refreshed.access_token, [API, 'agent-b']);
      const siblingChild = await exchange('agent-b', sibling.access_token, [API]);
      // Another of the user's tokens, from another approval (another grant), exchanged too.
      const other = await userTokens();
      const cousin = await exchange('agent-a', other.access_token, [API, 'agent-b']);
      for (const t of [user, a, b, refreshed, sibling, siblingChild, other, cousin]) assert.equal(await live(t.access_token), true);
      return { user, a, b, refreshed, sibling, siblingChild, other, cousin };
    }

    /** What a chain's revocation must leave alive: the user's grant, the sibling's subtree, the cousin. */
    async function othersAlive(c: Awaited<ReturnType<typeof chain>>): Promise<void> {
      for (const [label, t, client] of [
        ['the sibling exchanged from another token of the user’s grant', c.sibling, 'agent-a'],
        ['the sibling’s child', c.siblingChild, 'agent-b'],
        ['the exchange from another user token', c.cousin, 'agent-a'],
      ] as const) {
        assert.equal(await live(t.access_token), true, label);
        assert.equal((await introspect(t.access_token)).active, true, label);
        const res = await refresh(t.refresh_token, client);
        assert.equal(res.status, 200, `${label}: ${await res.text()}`);
      }
      // The user's own grant: its other token, and its refresh token, still work.
      assert.equal(await live(c.refreshed.access_token), true, 'the user’s other token');
      const res = await refresh(c.refreshed.refresh_token, 'app');
      assert.equal(res.status, 200, await res.text());
      assert.equal((await issuer.store.getGrant(grantOf(c.user.access_token)))?.revokedAt, null);
    }

    /**
     * Agent A's and sub-agent B's tokens and refresh tokens are dead everywhere; their grants revoked
     * with the reason of the token's revocation.
     */
    async function chainDead(c: Awaited<ReturnType<typeof chain>>, reason: string): Promise<void> {
      for (const [label, t, client] of [
        ['agent A', c.a, 'agent-a'],
        ['sub-agent B', c.b, 'agent-b'],
      ] as const) {
        await refused(t.access_token, label);
        assert.deepEqual(await introspect(t.access_token), { active: false }, label);
        await refreshRefused(t.refresh_token, client, label);
        assert.equal((await issuer.store.getGrant(grantOf(t.access_token)))?.revokedReason, reason, label);
      }
      // Nor can B's token be exchanged on down the chain.
      const res = await issuer.post(
        '/oauth2/token',
        { grant_type: EXCHANGE, subject_token: c.b.access_token, subject_token_type: AT, audience: API },
        auth('agent-b'),
      );
      assert.equal(res.status, 400);
    }

    it('at the revocation endpoint (RFC 7009), by the user’s app: agent A’s and sub-agent B’s tokens are refused by the in-process verifier and introspection, their refresh tokens are invalid_grant; a sibling exchanged from another token of the user’s grant, and an exchange from another user token, live on', async () => {
      const c = await chain();
      const res = await issuer.post('/oauth2/revoke', { token: c.user.access_token, client_id: 'app' });
      assert.equal(res.status, 200);
      await refused(c.user.access_token, 'the user’s token');
      await chainDead(c, 'access_token_revoked');
      await othersAlive(c);
      // On record: the token's revocation lists the grants it took down, each revoked grant has its
      // grant.revoked with the reason.
      const [revoked] = (await events('token.revoked', grantOf(c.user.access_token))).filter((e) => e.jti === jtiOf(c.user.access_token));
      assert.equal(revoked?.reason, 'access_token_revoked');
      assert.deepEqual(
        [...((revoked?.detail?.revoked_grants as string[] | undefined) ?? [])].sort(),
        [grantOf(c.a.access_token), grantOf(c.b.access_token)].sort(),
      );
      for (const t of [c.a, c.b]) {
        const [g] = await events('grant.revoked', grantOf(t.access_token));
        assert.equal(g?.reason, 'access_token_revoked');
        assert.equal(g?.detail?.selector, 'exchangedFrom');
        assert.equal(g?.detail?.jti, jtiOf(c.user.access_token));
      }
      assert.doesNotMatch(JSON.stringify(await events('grant.revoked')), new RegExp(c.user.access_token.split('.')[2] as string));
    });

    it('attack: the revoked user token presented again for exchange (an agent that kept a copy) is refused, and begins no grant', async () => {
      const user = await userTokens();
      assert.equal((await issuer.post('/oauth2/revoke', { token: user.access_token, client_id: 'app' })).status, 200);
      const res = await issuer.post(
        '/oauth2/token',
        { grant_type: EXCHANGE, subject_token: user.access_token, subject_token_type: AT, audience: API },
        auth('agent-a'),
      );
      assert.equal(res.status, 400);
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_request');
      assert.equal((await issuer.store.grantSubtree(grantOf(user.access_token))).length, 1);
    });

    it('revoking an actor token (RFC 8693 actor_token) revokes the grants exchanged with it as the actor, with their subtrees, and not an exchange of the same user token without it', async () => {
      const user = await userTokens();
      const actor = await ccToken('agent-a');
      const acted = await exchange('agent-a', user.access_token, [API, 'agent-b'], actor);
      const below = await exchange('agent-b', acted.access_token, [API]);
      const plain = await exchange('agent-a', user.access_token, [API, 'agent-b']);
      const res = await issuer.post('/oauth2/revoke', { token: actor }, auth('agent-a'));
      assert.equal(res.status, 200);
      await refused(actor, 'the actor token');
      for (const [label, t, client] of [
        ['exchanged with the actor token', acted, 'agent-a'],
        ['below it', below, 'agent-b'],
      ] as const) {
        await refused(t.access_token, label);
        assert.deepEqual(await introspect(t.access_token), { active: false }, label);
        await refreshRefused(t.refresh_token, client, label);
      }
      assert.equal(await live(plain.access_token), true);
      assert.equal(await live(user.access_token), true);
      // The actor's own grant (its standing client-credentials grant) stays: only the token is revoked.
      assert.equal(await live(await ccToken('agent-a')), true);
    });

    it('through the admin API ({"token"}): the answer names the grants revoked with it', async () => {
      const c = await chain();
      const admin = (
        (await (await issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience: issuer.url }, auth('ops'))).json()) as {
          access_token: string;
        }
      ).access_token;
      const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
        body: JSON.stringify({ token: c.user.access_token }),
      });
      assert.equal(res.status, 200);
      const body = (await res.json()) as { revoked_token: string; grant_id: string; revoked_grants: string[] };
      assert.equal(body.revoked_token, jtiOf(c.user.access_token));
      assert.equal(body.grant_id, grantOf(c.user.access_token));
      assert.deepEqual([...body.revoked_grants].sort(), [grantOf(c.a.access_token), grantOf(c.b.access_token)].sort());
      await refused(c.user.access_token, 'the user’s token');
      await chainDead(c, 'operator');
      await othersAlive(c);
    });

    it('leak revocation (tessera scan --revoke) of the user’s access token takes the chain exchanged from it, on record as leak_detected', async () => {
      const c = await chain();
      const leak = await issuer.service.identifyLeak(c.user.access_token);
      assert.ok(leak);
      const revoked = await issuer.service.revokeLeak(c.user.access_token, leak, { grant: false, location: 'ci.log:12' });
      assert.equal(revoked.token, jtiOf(c.user.access_token));
      assert.deepEqual([...revoked.grants].sort(), [grantOf(c.a.access_token), grantOf(c.b.access_token)].sort());
      await refused(c.user.access_token, 'the user’s token');
      await chainDead(c, 'leak_detected');
      await othersAlive(c);
      const [e] = (await events('token.revoked')).filter((x) => x.jti === jtiOf(c.user.access_token));
      assert.equal(e?.reason, 'leak_detected');
      assert.deepEqual([...((e?.detail?.revoked_grants as string[] | undefined) ?? [])].sort(), [...revoked.grants].sort());
      const [g] = await events('grant.revoked', grantOf(c.a.access_token));
      assert.equal(g?.reason, 'leak_detected');
      assert.equal(g?.detail?.found_in, 'ci.log:12');
    });
  });
}

suite('sqlite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-cascade-'));
  return { store: SqliteStore.open({ path: join(dir, 'tessera.db') }), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

suite(
  'postgresql',
  async () => {
    const schema = `tessera_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    return {
      store: await PostgresStore.open({ connectionString: PG_URL, schema }),
      cleanup: async () => {
        const c = new pg.Client({ connectionString: PG_URL });
        await c.connect();
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await c.end();
      },
    };
  },
  pgReachable ? false : 'PostgreSQL is not reachable',
);
