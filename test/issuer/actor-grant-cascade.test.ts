/**
 * Revoking an actor's grant revokes what was exchanged with it: a grant created by token exchange
 * (RFC 8693) with this issuer's `actor_token` records that token's grant (`actorGrantId`), and a
 * revocation of that grant (by id at the admin API, by the actor's subject, by a reuse of its
 * refresh token) cascades to it and its subtree, transitively, in the same transaction: an
 * authority derived with a compromised agent's credentials dies with the agent's grant. Real HTTP
 * to the token service, on SQLite and on PostgreSQL.
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

function suite(backend: string, open: () => Promise<{ store: Store; cleanup: () => Promise<void> }>, skip: string | false = false): void {
  describe(`revoking an actor’s grant revokes the grants exchanged with its tokens (${backend})`, { skip }, () => {
    let issuer: RunningIssuer;
    let cleanup: () => Promise<void> = async () => {};
    let verifier: ReturnType<typeof inProcessVerifier>;
    const secrets: Record<string, string> = {};
    const AGENTS = ['agent-a', 'agent-b', 'agent-c'];

    before(async () => {
      const opened = await open();
      cleanup = opened.cleanup;
      issuer = await startIssuer({ store: opened.store });
      verifier = inProcessVerifier(issuer, [API, issuer.url]);
      await issuer.service.registerClient({
        id: 'app',
        public: true,
        scopes: ['api:read'],
        audiences: [API, ...AGENTS],
        grantTypes: ['authorization_code', 'refresh_token'],
        redirectUris: [REDIRECT],
      });
      const grantTypes = ['client_credentials', 'refresh_token', EXCHANGE];
      // Each agent's client-credentials tokens may name the other agents as audiences, so that two
      // agents can each act for the other (the cycle below).
      for (const id of AGENTS)
        secrets[id] = (await issuer.addClient({ id, scopes: ['api:read'], audiences: [API, ...AGENTS], grantTypes })).secret;
      secrets.api = (await issuer.addClient({ id: 'api', scopes: [], audiences: [API] })).secret;
      secrets.ops = (await issuer.addClient({ id: 'ops', scopes: ['tessera:admin'], audiences: [issuer.url] })).secret;
    });
    after(async () => {
      await issuer?.close();
      await cleanup();
    });

    const auth = (id: string) => ({ authorization: basic(id, secrets[id] as string) });

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
        state: 's',
      });
      for (const a of AGENTS) params.append('audience', a);
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

    async function exchangeRaw(client: string, subjectToken: string, audience: string[], actorToken?: string): Promise<Response> {
      return issuer.post(
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
    }
    async function exchange(client: string, subjectToken: string, audience: string[], actorToken?: string): Promise<Tokens> {
      const res = await exchangeRaw(client, subjectToken, audience, actorToken);
      const body = (await res.json()) as Tokens;
      assert.equal(res.status, 200, JSON.stringify(body));
      return body;
    }
    async function ccToken(client: string, audience: string[] = [API]): Promise<string> {
      const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience }, auth(client));
      assert.equal(res.status, 200);
      return ((await res.json()) as { access_token: string }).access_token;
    }
    async function adminRevoke(body: Record<string, string>): Promise<{ revoked_grants: string[] }> {
      const admin = (
        (await (await issuer.post('/oauth2/token', { grant_type: 'client_credentials', audience: issuer.url }, auth('ops'))).json()) as {
          access_token: string;
        }
      ).access_token;
      const res = await fetch(`${issuer.url}/oauth2/admin/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
        body: JSON.stringify(body),
      });
      const answer = (await res.json()) as { revoked_grants: string[] };
      assert.equal(res.status, 200, JSON.stringify(answer));
      return answer;
    }

    const live = async (token: string) => (await verifier.verify(bearer(token))).ok;
    async function introspect(token: string): Promise<Record<string, unknown>> {
      const res = await issuer.post('/oauth2/introspect', { token }, auth('api'));
      assert.equal(res.status, 200);
      return (await res.json()) as Record<string, unknown>;
    }
    async function refresh(token: string, client: string): Promise<Response> {
      return issuer.post('/oauth2/token', { grant_type: 'refresh_token', refresh_token: token }, auth(client));
    }
    async function events(kind: AuditEvent['kind'], delegation?: string): Promise<AuditEvent[]> {
      await issuer.service.audit.flush();
      return issuer.store.queryAudit({ kinds: [kind], ...(delegation !== undefined ? { delegation_id: delegation } : {}), limit: 10_000 });
    }

    /** The derived token is dead everywhere: verifier, introspection, its refresh token, a further exchange from it. */
    async function dead(t: Tokens, client: string, label: string): Promise<void> {
      const r = await verifier.verify(bearer(t.access_token));
      assert.equal(r.ok, false, `${label}: the in-process verifier accepted it`);
      if (!r.ok) assert.equal(r.error.code, 'token_revoked', label);
      assert.deepEqual(await introspect(t.access_token), { active: false }, label);
      const res = await refresh(t.refresh_token, client);
      const body = (await res.json()) as { error: string };
      assert.equal(res.status, 400, `${label}: the refresh token still works: ${JSON.stringify(body)}`);
      assert.equal(body.error, 'invalid_grant', label);
      const ex = await exchangeRaw('agent-c', t.access_token, [API]);
      assert.equal(ex.status, 400, `${label}: still exchangeable: ${await ex.text()}`);
    }
    async function alive(t: Tokens, client: string, label: string): Promise<void> {
      assert.equal(await live(t.access_token), true, label);
      assert.equal((await introspect(t.access_token)).active, true, label);
      const res = await refresh(t.refresh_token, client);
      assert.equal(res.status, 200, `${label}: ${await res.text()}`);
    }

    /**
     * The user's token exchanged by agent A with A's own token as the actor (`acted`), that exchanged
     * on by agent C (`below`, a child of `acted`); the user's token exchanged by agent A without an
     * actor token (`plain`) and by agent B with B's own token as the actor (`other`).
     */
    async function chain() {
      const user = await userTokens();
      const actor = await ccToken('agent-a');
      const acted = await exchange('agent-a', user.access_token, [API, 'agent-c'], actor);
      const below = await exchange('agent-c', acted.access_token, [API]);
      const plain = await exchange('agent-a', user.access_token, [API, 'agent-c']);
      const other = await exchange('agent-b', user.access_token, [API], await ccToken('agent-b'));
      for (const t of [user, acted, below, plain, other]) assert.equal(await live(t.access_token), true);
      return { user, actor, acted, below, plain, other };
    }

    it('attack: the admin API’s revocation of agent A’s grant (A compromised) revokes the grants exchanged with A’s token as the actor and their subtrees: refused by the in-process verifier on the next request, inactive at introspection, their refresh tokens invalid_grant, no further exchange', async () => {
      const c = await chain();
      const actorGrant = grantOf(c.actor);
      // Not the token: the grant. Another token of the same grant would serve as the actor as well.
      const answer = await adminRevoke({ grant_id: actorGrant, reason: 'agent compromised' });
      assert.deepEqual(
        [...answer.revoked_grants].sort(),
        [actorGrant, grantOf(c.acted.access_token), grantOf(c.below.access_token)].sort(),
      );
      assert.equal(await live(c.actor), false, 'the actor token');
      await dead(c.acted, 'agent-a', 'exchanged with A’s token as the actor');
      await dead(c.below, 'agent-c', 'exchanged from that');
      // The subject's own grant, an exchange by A without an actor token (A's client revocation
      // covers those), and another agent's acting are none of A's grant's.
      assert.equal(await live(c.user.access_token), true, 'the user’s token');
      await alive(c.plain, 'agent-a', 'A’s exchange without an actor token');
      await alive(c.other, 'agent-b', 'B’s exchange with its own actor token');
      for (const g of [c.acted, c.below]) {
        const [e] = await events('grant.revoked', grantOf(g.access_token));
        assert.equal(e?.reason, 'agent compromised');
        assert.equal((await issuer.store.getGrant(grantOf(g.access_token)))?.revokedReason, 'agent compromised');
      }
    });

    it('attack: a revocation of the actor by subject (tessera revoke --subject agent-a) reaches the grants exchanged with its tokens too', async () => {
      const c = await chain();
      await adminRevoke({ subject: 'agent-a', issuer: issuer.service.issuer });
      await dead(c.acted, 'agent-a', 'exchanged with A’s token as the actor');
      await dead(c.below, 'agent-c', 'exchanged from that');
      await alive(c.other, 'agent-b', 'B’s exchange with its own actor token');
    });

    it('attack: the cascade reaches every tree the actor acted in: alice’s and bob’s exchanges with A’s tokens and what was exchanged from them', async () => {
      const user = await userTokens();
      const bob = await userTokens('bob@example.com');
      // Agent A acts (its own token) for alice: `acted`, a child of alice's grant.
      const acted = await exchange('agent-a', user.access_token, [API, 'agent-c'], await ccToken('agent-a'));
      // And for bob, in another tree, with another token of the same (standing) grant.
      const actedBob = await exchange('agent-a', bob.access_token, [API, 'agent-c'], await ccToken('agent-a'));
      const belowBob = await exchange('agent-c', actedBob.access_token, [API]);
      await adminRevoke({ grant_id: grantOf(await ccToken('agent-a')) });
      await dead(acted, 'agent-a', 'alice’s tree');
      await dead(actedBob, 'agent-a', 'bob’s tree');
      await dead(belowBob, 'agent-c', 'below, in bob’s tree');
      assert.equal(await live(bob.access_token), true);
    });

    it('attack: two agents acting for each other (A for B’s grant with A’s token, B for A’s with B’s): revoking A’s grant ends, and takes what A acted in, not B’s own grant; then revoking B’s ends too', async () => {
      const aToken = await ccToken('agent-a', [API, 'agent-b']);
      const bToken = await ccToken('agent-b', [API, 'agent-a']);
      // A exchanges B's token (A among its audiences) with A's own as the actor: a child of B's grant, acted by A.
      const aForB = await exchange('agent-a', bToken, [API], await ccToken('agent-a', [API, 'agent-b']));
      // B exchanges A's token with B's own as the actor: a child of A's grant, acted by B.
      const bForA = await exchange('agent-b', aToken, [API], await ccToken('agent-b', [API, 'agent-a']));
      const bGrant = grantOf(bToken);
      const first = await adminRevoke({ grant_id: grantOf(aToken) });
      assert.deepEqual(
        [...first.revoked_grants].sort(),
        [grantOf(aToken), grantOf(aForB.access_token), grantOf(bForA.access_token)].sort(),
      );
      await dead(aForB, 'agent-a', 'A acting for B');
      await dead(bForA, 'agent-b', 'B acting for A');
      assert.equal(await live(bToken), true, 'B’s own grant');
      const second = await adminRevoke({ grant_id: bGrant });
      assert.deepEqual(second.revoked_grants, [bGrant]);
      assert.equal(await live(bToken), false);
    });
  });
}

suite('sqlite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-actor-cascade-'));
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
