/**
 * The store contract suite: every backend runs exactly these tests (oauth2-proxy's
 * `RunSessionStoreTests` pattern). `makeStore` returns a fresh, empty store; `clock` is a
 * fast-forwardable clock in epoch seconds, passed to the store explicitly.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent, AuditQuery } from '../../src/audit/event.ts';
import { idFloor, uuidv7 } from '../../src/audit/id.ts';
import {
  type AuthorizationCodeRecord,
  type ClientRecord,
  CODE_RETENTION,
  type GrantRecord,
  type NewGrant,
  REVOCATION_ENTRY_SKEW,
  type RefreshTokenRecord,
  type RememberedConsentRecord,
  type Store,
  StoreCapacityError,
  StoreConflictError,
} from '../../src/store/contract.ts';
import type { PruneTuning } from '../../src/store/prune.ts';

export interface TestClock {
  now(): number;
  advance(seconds: number): void;
}

export function testClock(start = 1_800_000_000): TestClock {
  let t = start;
  return { now: () => t, advance: (s) => void (t += s) };
}

let counter = 0;
const uid = (p: string) => `${p}_${process.pid}_${++counter}`;

/** A rejection with StoreConflictError carrying `code`: callers tell a duplicate client from a duplicate key by it. */
const conflict = (code: string) => (e: unknown) => e instanceof StoreConflictError && e.code === code;

export function clientRecord(overrides: Partial<ClientRecord> = {}, now = 1_800_000_000): ClientRecord {
  return {
    id: uid('client'),
    authMethod: 'client_secret',
    secretMethod: null,
    allowedOrigins: [],
    secretHash: 'hash-of-secret',
    jwks: null,
    jwksUri: null,
    scopes: ['api:read', 'api:write'],
    audiences: ['https://api.test'],
    grantTypes: ['client_credentials'],
    accessTokenTtl: null,
    exchangeRetargetAudiences: false,
    redirectUris: [],
    dpopBoundAccessTokens: false,
    name: null,
    disabled: false,
    createdAt: now,
    updatedAt: now,
    ...overrides,
  };
}

export function newGrant(overrides: Partial<NewGrant> = {}, now = 1_800_000_000): NewGrant {
  return {
    id: uid('g'),
    parentId: null,
    kind: 'token_exchange',
    issuer: 'https://issuer.test',
    subject: 'alice',
    clientId: 'agent',
    act: null,
    scopes: ['api:read'],
    audiences: ['https://api.test'],
    createdAt: now,
    expiresAt: now + 3600,
    ...overrides,
  };
}

function refresh(grantId: string, overrides: Partial<RefreshTokenRecord> = {}, now = 1_800_000_000): RefreshTokenRecord {
  return {
    hash: uid('rt'),
    grantId,
    clientId: 'agent',
    createdAt: now,
    expiresAt: now + 3600,
    rotatedAt: null,
    revokedAt: null,
    ...overrides,
  };
}

export function code(overrides: Partial<AuthorizationCodeRecord> = {}, now = 1_800_000_000): AuthorizationCodeRecord {
  return {
    hash: uid('code'),
    clientId: 'agent',
    redirectUri: 'https://app.test/cb',
    codeChallenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    subject: 'alice@example.com',
    issuer: 'https://issuer.test',
    scopes: ['api:read'],
    audiences: ['https://api.test'],
    createdAt: now,
    expiresAt: now + 60,
    consumedAt: null,
    grantId: null,
    jkt: null,
    approvalSince: now,
    ...overrides,
  };
}

/** The login-session scope of the codes' issuer (`loginSessionScope('https://issuer.test')`). */
const LOGIN_SCOPE = 'https://issuer.test#login-sessions';

function consent(overrides: Partial<RememberedConsentRecord> = {}, now = 1_800_000_000): RememberedConsentRecord {
  return {
    subject: uid('person'),
    clientId: 'agent',
    issuer: 'https://issuer.test',
    identitySource: 'source-1',
    scopes: ['api:read', 'api:write'],
    scopesDigest: 'scopes-digest-1',
    audiences: ['https://api.test'],
    redirectUri: 'https://app.test/cb',
    clientFingerprint: 'fp-1',
    approvalHash: 'approval-hash-1',
    createdAt: now,
    expiresAt: now + 3600,
    ...overrides,
  };
}

function event(overrides: Partial<AuditEvent> = {}): AuditEvent {
  return { id: uuidv7(), time: Date.now(), kind: 'token.issued', decision: 'allow', reason: 'ok', ...overrides };
}

async function created(store: Store, g: NewGrant, now: number): Promise<GrantRecord> {
  const r = await store.createGrant(g, now);
  assert.equal(typeof r, 'object', `createGrant answered ${String(r)}`);
  return r as GrantRecord;
}

/**
 * Run the whole contract against a backend. `makeStore` opens a fresh, empty store, with `tuning`
 * when given (the prune tests open one with tiny batches).
 */
export function runStoreContract(name: string, makeStore: (tuning?: PruneTuning) => Promise<Store>, clock: TestClock = testClock()): void {
  describe(`store contract: ${name}`, () => {
    let store: Store;
    before(async () => {
      store = await makeStore();
      // The clients the grants below name: a grant's client must exist and be enabled.
      for (const id of ['agent', 'x']) await store.createClient(clientRecord({ id }));
    });
    after(async () => {
      await store.close();
    });

    describe('clients', () => {
      it('finds a client id ignoring ASCII case, and nothing else', async () => {
        await store.createClient(clientRecord({ id: 'Case.Client_1' }));
        for (const id of ['Case.Client_1', 'case.client_1', 'CASE.CLIENT_1'])
          assert.equal(await store.findClientIdIgnoringCase(id), 'Case.Client_1', id);
        for (const id of ['case.client_', 'case.client_12', 'case%client_1', 'case_client_1'])
          assert.equal(await store.findClientIdIgnoringCase(id), undefined, id);
        assert.equal(await store.deleteClient('Case.Client_1'), true);
        assert.equal(await store.findClientIdIgnoringCase('case.client_1'), undefined);
      });

      it('refuses a client over a limit on clients of its id prefix (dynamic registration cap), and counts only that prefix', async () => {
        const prefix = `${uid('cap')}_`;
        const limit = { idPrefix: prefix, max: 2 };
        // Ids outside the prefix, including ones sorting right after it and a lookalike in another case, do not count.
        await store.createClient(clientRecord({ id: `${prefix.slice(0, -1)}\`x` }));
        await store.createClient(clientRecord({ id: `${prefix.toUpperCase()}x` }));
        await store.createClient(clientRecord({ id: `${prefix}a` }), { limit });
        await store.createClient(clientRecord({ id: `${prefix}b` }), { limit });
        await assert.rejects(
          store.createClient(clientRecord({ id: `${prefix}c` }), { limit }),
          (e) => e instanceof StoreCapacityError && e.code === 'client_limit_reached',
        );
        assert.equal(await store.getClient(`${prefix}c`), undefined, 'nothing written');
        // Without a limit (the operator's CLI) the prefix may still grow; a freed place is usable again.
        assert.equal(await store.deleteClient(`${prefix}a`), true);
        await store.createClient(clientRecord({ id: `${prefix}c` }), { limit });
      });

      it('never lets concurrent creations under a limit exceed it', async () => {
        const prefix = `${uid('race')}_`;
        const limit = { idPrefix: prefix, max: 3 };
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, (_, i) => store.createClient(clientRecord({ id: `${prefix}${i}` }), { limit })),
        );
        assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3);
        for (const r of results)
          if (r.status === 'rejected')
            assert.ok(r.reason instanceof StoreCapacityError && r.reason.code === 'client_limit_reached', String(r.reason));
        assert.equal((await store.listClients()).filter((c) => c.id.startsWith(prefix)).length, 3);
      });

      it('creates, reads, lists, updates and deletes a client', async () => {
        const c = clientRecord({ scopes: ['a', 'b:*'], jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y' }] } });
        await store.createClient(c);
        assert.deepEqual(await store.getClient(c.id), c);
        assert.ok((await store.listClients()).some((x) => x.id === c.id));
        const updated = await store.updateClient(c.id, { disabled: true, scopes: ['a'] }, clock.now() + 5);
        assert.equal(updated?.disabled, true);
        assert.deepEqual(updated?.scopes, ['a']);
        assert.equal(updated?.updatedAt, clock.now() + 5);
        assert.deepEqual((await store.getClient(c.id))?.scopes, ['a']);
        assert.equal(await store.deleteClient(c.id), true);
        assert.equal(await store.getClient(c.id), undefined);
        assert.equal(await store.deleteClient(c.id), false);
      });

      it('keeps the token-exchange re-targeting flag', async () => {
        const c = clientRecord({ exchangeRetargetAudiences: true });
        await store.createClient(c);
        assert.equal((await store.getClient(c.id))?.exchangeRetargetAudiences, true);
        const d = clientRecord();
        await store.createClient(d);
        assert.equal((await store.getClient(d.id))?.exchangeRetargetAudiences, false);
      });

      it('keeps a secret client’s registered secret method, and none (either) when it has none', async () => {
        for (const method of ['client_secret_basic', 'client_secret_post', null] as const) {
          const c = clientRecord({ secretMethod: method });
          await store.createClient(c);
          assert.deepEqual(await store.getClient(c.id), c);
          // An update of anything else leaves it as it was.
          assert.equal((await store.updateClient(c.id, { disabled: true }, clock.now() + 1))?.secretMethod, method);
          assert.equal((await store.listClients()).find((x) => x.id === c.id)?.secretMethod, method);
        }
      });

      it('keeps a client’s allowed origins, updates them alone, and bumps the clients version', async () => {
        const c = clientRecord({ authMethod: 'none', secretHash: null, allowedOrigins: ['https://app.test', 'http://localhost:5173'] });
        await store.createClient(c);
        assert.deepEqual(await store.getClient(c.id), c);
        const before = (await store.versions()).clients;
        const updated = await store.updateClient(c.id, { allowedOrigins: ['https://other.test'] }, clock.now() + 1);
        assert.deepEqual(updated?.allowedOrigins, ['https://other.test']);
        assert.deepEqual({ ...updated, allowedOrigins: c.allowedOrigins, updatedAt: c.updatedAt }, c);
        assert.notEqual((await store.versions()).clients, before);
        // Another change leaves them as they are; an empty list clears them.
        assert.deepEqual((await store.updateClient(c.id, { disabled: true }, clock.now() + 2))?.allowedOrigins, ['https://other.test']);
        assert.deepEqual((await store.updateClient(c.id, { allowedOrigins: [] }, clock.now() + 3))?.allowedOrigins, []);
        assert.deepEqual((await store.listClients()).find((x) => x.id === c.id)?.allowedOrigins, []);
      });

      it('updates the token-exchange re-targeting flag both ways, leaving the rest alone, and bumps the clients version', async () => {
        const c = clientRecord({ scopes: ['a'], disabled: true });
        await store.createClient(c);
        const v0 = (await store.versions()).clients;
        const on = await store.updateClient(c.id, { exchangeRetargetAudiences: true }, clock.now() + 7);
        assert.deepEqual(on, { ...c, exchangeRetargetAudiences: true, updatedAt: clock.now() + 7 });
        assert.deepEqual(await store.getClient(c.id), on);
        const v1 = (await store.versions()).clients;
        assert.ok(v1 > v0);
        const off = await store.updateClient(c.id, { exchangeRetargetAudiences: false }, clock.now() + 8);
        assert.equal(off?.exchangeRetargetAudiences, false);
        assert.equal((await store.getClient(c.id))?.exchangeRetargetAudiences, false);
        assert.ok((await store.versions()).clients > v1);
        assert.equal(await store.updateClient('nope', { exchangeRetargetAudiences: true }, clock.now()), undefined);
      });

      it('keeps the DPoP-bound flag (RFC 9449 §5.2), off by default, updates it alone both ways, and bumps the clients version', async () => {
        const c = clientRecord({ dpopBoundAccessTokens: true });
        await store.createClient(c);
        assert.deepEqual(await store.getClient(c.id), c);
        assert.equal((await store.listClients()).find((x) => x.id === c.id)?.dpopBoundAccessTokens, true);
        const d = clientRecord();
        await store.createClient(d);
        assert.equal((await store.getClient(d.id))?.dpopBoundAccessTokens, false);
        // An update of anything else leaves it as it was.
        assert.equal((await store.updateClient(c.id, { exchangeRetargetAudiences: true }, clock.now() + 1))?.dpopBoundAccessTokens, true);
        const v0 = (await store.versions()).clients;
        const off = await store.updateClient(c.id, { dpopBoundAccessTokens: false }, clock.now() + 2);
        assert.deepEqual(off, { ...c, exchangeRetargetAudiences: true, dpopBoundAccessTokens: false, updatedAt: clock.now() + 2 });
        assert.deepEqual(await store.getClient(c.id), off);
        const v1 = (await store.versions()).clients;
        assert.ok(v1 > v0);
        assert.equal((await store.updateClient(c.id, { dpopBoundAccessTokens: true }, clock.now() + 3))?.dpopBoundAccessTokens, true);
        assert.equal((await store.getClient(c.id))?.dpopBoundAccessTokens, true);
        assert.ok((await store.versions()).clients > v1);
        assert.equal(await store.updateClient('nope', { dpopBoundAccessTokens: true }, clock.now()), undefined);
      });

      it('refuses a duplicate client id with StoreConflictError (code client_exists)', async () => {
        const c = clientRecord();
        await store.createClient(c);
        await assert.rejects(store.createClient(c), conflict('client_exists'));
      });

      it('returns undefined when updating an unknown client', async () => {
        assert.equal(await store.updateClient('nope', { disabled: true }, clock.now()), undefined);
      });

      it('bumps the clients version on every change', async () => {
        const v0 = (await store.versions()).clients;
        const c = clientRecord();
        await store.createClient(c);
        const v1 = (await store.versions()).clients;
        assert.ok(v1 > v0);
        await store.updateClient(c.id, { disabled: true }, clock.now());
        const v2 = (await store.versions()).clients;
        assert.ok(v2 > v1);
        await store.deleteClient(c.id);
        assert.ok((await store.versions()).clients > v2);
      });
    });

    describe('signing keys', () => {
      it('adds, lists in activation order, deletes, and bumps the keys version', async () => {
        const v0 = (await store.versions()).keys;
        const k1 = {
          kid: uid('kid'),
          alg: 'ES256' as const,
          publicJwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' },
          sealedPrivateKey: 'sealed',
          createdAt: clock.now(),
          activatesAt: clock.now() + 100,
        };
        const k0 = { ...k1, kid: uid('kid'), activatesAt: clock.now() };
        await store.addSigningKey(k1);
        await store.addSigningKey(k0);
        const list = (await store.listSigningKeys()).filter((k) => k.kid === k0.kid || k.kid === k1.kid);
        assert.deepEqual(
          list.map(({ seq: _, ...k }) => k),
          [k0, k1],
        );
        assert.ok((await store.versions()).keys >= v0 + 2);
        await assert.rejects(store.addSigningKey(k0), conflict('signing_key_exists'));
        assert.equal(await store.deleteSigningKey(k0.kid), true);
        assert.equal(await store.deleteSigningKey(k0.kid), false);
      });

      it('numbers each key added (seq) in the order it was added, whatever its kid or schedule, never reusing a number (migration 22)', async () => {
        const key = (kid: string) => ({
          kid,
          alg: 'ES256' as const,
          publicJwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' },
          sealedPrivateKey: 'sealed',
          createdAt: clock.now(),
          activatesAt: clock.now(),
        });
        // Kids against the order of adding: the store's seq, not the kid, tells which came later.
        const prefix = uid('kid');
        const added = [key(`${prefix}-z`), key(`${prefix}-m`), key(`${prefix}-a`)];
        for (const k of added) await store.addSigningKey(k);
        const seqs = async () => {
          const listed = await store.listSigningKeys();
          return added.map((k) => listed.find((r) => r.kid === k.kid)?.seq);
        };
        const [a, b, c] = (await seqs()) as number[];
        assert.ok(Number.isSafeInteger(a) && (b as number) > (a as number) && (c as number) > (b as number), JSON.stringify([a, b, c]));
        // The newest key deleted: the next one still gets a number past it.
        assert.equal(await store.deleteSigningKey(`${prefix}-a`), true);
        const next = key(`${prefix}-0`);
        await store.addSigningKey(next);
        const seq = (await store.listSigningKeys()).find((r) => r.kid === next.kid)?.seq;
        assert.ok((seq as number) > (c as number), `${seq} after ${c}`);
        for (const k of [...added, next]) await store.deleteSigningKey(k.kid);
      });

      it('adds a key unlessPendingAfter only when none activates after that time: of concurrent such adds, exactly one', async () => {
        // Far past every other test's keys, which activate within minutes of the clock.
        const after = clock.now() + 50_000_000;
        const key = () => ({
          kid: uid('kid'),
          alg: 'ES256' as const,
          publicJwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' },
          sealedPrivateKey: 'sealed',
          createdAt: clock.now(),
          activatesAt: after + 100,
        });
        const keys = Array.from({ length: 5 }, key);
        const added = await Promise.all(keys.map((k) => store.addSigningKey(k, { unlessPendingAfter: after })));
        assert.equal(added.filter(Boolean).length, 1, added.join(','));
        const stored = (await store.listSigningKeys()).filter((k) => keys.some((x) => x.kid === k.kid));
        assert.equal(stored.length, 1);
        assert.equal(await store.addSigningKey(key(), { unlessPendingAfter: after + 100 }), true, 'none activates after that later time');
        assert.equal(await store.addSigningKey(key()), true, 'unconditional');
        for (const k of await store.listSigningKeys()) if (k.activatesAt > after) await store.deleteSigningKey(k.kid);
      });

      it('seals the end of the listed keys in the same write as the key added, only where their MAC is still `from`; the end kept once deleted (migration 25)', async () => {
        const key = (mac: string) => ({
          kid: uid('kid'),
          alg: 'ES256' as const,
          publicJwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' },
          sealedPrivateKey: 'sealed',
          createdAt: clock.now(),
          activatesAt: clock.now() - 20_000_000,
          mac,
        });
        const old = key('mac-old');
        await store.addSigningKey(old);
        const first = { ...key('mac-first'), retiresAt: clock.now() + 5, successorKid: 'later' };
        const second = key('mac-second');
        // Two rotations sealing the same key: the first one's write lands, the second adds nothing.
        const seal = (successor: string, mac: string) => ({
          kid: old.kid,
          from: 'mac-old',
          retiresAt: clock.now(),
          successorKid: successor,
          mac,
        });
        assert.equal(await store.addSigningKey(first, { seal: [seal(first.kid, 'mac-sealed')] }), true);
        const v0 = (await store.versions()).keys;
        await assert.rejects(store.addSigningKey(second, { seal: [seal(second.kid, 'mac-other')] }), conflict('signing_key_stale'));
        assert.equal((await store.versions()).keys, v0, 'nothing written');
        const listed = await store.listSigningKeys();
        assert.equal(
          listed.some((r) => r.kid === second.kid),
          false,
        );
        const { seq: _, ...sealed } = listed.find((r) => r.kid === old.kid) ?? { seq: 0 };
        assert.deepEqual(sealed, { ...old, retiresAt: clock.now(), successorKid: first.kid, mac: 'mac-sealed' });
        const { seq: __, ...added } = listed.find((r) => r.kid === first.kid) ?? { seq: 0 };
        assert.deepEqual(added, first, 'a key added with its end keeps it');
        assert.equal(await store.deleteSigningKey(old.kid), true);
        const { sealedPrivateKey: ___, ...publicPart } = sealed as typeof old;
        assert.deepEqual(
          (await store.listRemovedSigningKeys()).find((r) => r.kid === old.kid),
          publicPart,
        );
        await store.deleteSigningKey(first.kid);
      });

      it('keeps a deleted key’s public part, never its private key, so a leaked token it signed is still recognised', async () => {
        const k = {
          kid: uid('kid'),
          alg: 'ES256' as const,
          publicJwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' },
          sealedPrivateKey: 'sealed-private',
          createdAt: clock.now(),
          activatesAt: clock.now(),
        };
        await store.addSigningKey(k);
        assert.equal(
          (await store.listRemovedSigningKeys()).some((r) => r.kid === k.kid),
          false,
          'not removed yet',
        );
        assert.equal(await store.deleteSigningKey(k.kid), true);
        const { sealedPrivateKey: _, ...publicPart } = k;
        const removed = (await store.listRemovedSigningKeys()).filter((r) => r.kid === k.kid);
        assert.deepEqual(removed, [publicPart]);
        assert.equal(JSON.stringify(removed).includes('sealed-private'), false);
        assert.equal(
          (await store.listSigningKeys()).some((r) => r.kid === k.kid),
          false,
        );
      });

      it('keeps a key’s MAC, with its public part once deleted; upgrades rows without one in one write, only while unchanged', async () => {
        const base = {
          alg: 'ES256' as const,
          publicJwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' },
          createdAt: clock.now(),
          activatesAt: clock.now() - 10_000_000,
        };
        const macd = { ...base, kid: uid('kid'), sealedPrivateKey: 'sealed-a', mac: 'mac-a' };
        const legacy = { ...base, kid: uid('kid'), sealedPrivateKey: 'sealed-b' };
        const gone = { ...base, kid: uid('kid'), sealedPrivateKey: 'sealed-c' };
        for (const k of [macd, legacy, gone]) await store.addSigningKey(k);
        assert.equal(await store.deleteSigningKey(macd.kid), true);
        assert.equal(await store.deleteSigningKey(gone.kid), true);
        const { sealedPrivateKey: _, ...macdPublic } = macd;
        assert.deepEqual(
          (await store.listRemovedSigningKeys()).find((r) => r.kid === macd.kid),
          macdPublic,
        );
        assert.equal((await store.listSigningKeys()).find((r) => r.kid === legacy.kid)?.mac, undefined);

        const v0 = (await store.versions()).keys;
        // Raced: the sealed key is no longer `from`; nothing is written, the removed key's MAC neither.
        assert.equal(
          await store.upgradeSigningKeys({
            keys: [{ kid: legacy.kid, from: 'other', sealedPrivateKey: 'sealed-b2', mac: 'mac-b' }],
            removed: [{ kid: gone.kid, mac: 'mac-c' }],
          }),
          false,
        );
        assert.equal((await store.listRemovedSigningKeys()).find((r) => r.kid === gone.kid)?.mac, undefined);
        assert.equal(
          await store.upgradeSigningKeys({
            keys: [{ kid: legacy.kid, from: 'sealed-b', sealedPrivateKey: 'sealed-b2', mac: 'mac-b' }],
            removed: [
              { kid: gone.kid, mac: 'mac-c' },
              { kid: macd.kid, mac: 'replaced' },
            ],
          }),
          true,
        );
        const upgraded = (await store.listSigningKeys()).find((r) => r.kid === legacy.kid);
        assert.deepEqual([upgraded?.sealedPrivateKey, upgraded?.mac], ['sealed-b2', 'mac-b']);
        const removed = await store.listRemovedSigningKeys();
        assert.equal(removed.find((r) => r.kid === gone.kid)?.mac, 'mac-c');
        assert.equal(removed.find((r) => r.kid === macd.kid)?.mac, 'mac-a', 'a MAC present is never replaced');
        assert.ok((await store.versions()).keys > v0);
        await store.deleteSigningKey(legacy.kid);
      });
    });

    describe('grants', () => {
      it('refuses a grant for an unknown or disabled client (client_inactive) and writes nothing', async () => {
        const now = clock.now();
        const unknown = newGrant({ clientId: uid('nobody') }, now);
        assert.equal(await store.createGrant(unknown, now), 'client_inactive');
        assert.equal(await store.getGrant(unknown.id), undefined);
        const c = clientRecord({}, now);
        await store.createClient(c);
        await created(store, newGrant({ clientId: c.id }, now), now);
        await store.updateClient(c.id, { disabled: true }, now);
        const late = newGrant({ clientId: c.id }, now);
        assert.equal(await store.createGrant(late, now), 'client_inactive');
        assert.equal(await store.getGrant(late.id), undefined);
        await store.updateClient(c.id, { disabled: false }, now);
        await created(store, newGrant({ clientId: c.id }, now), now);
        await store.deleteClient(c.id);
        assert.equal(await store.createGrant(newGrant({ clientId: c.id }, now), now), 'client_inactive');
      });

      it('decides each of many grants created at once on its own client and parent', async () => {
        const now = clock.now();
        const on = clientRecord({}, now);
        const off = clientRecord({}, now);
        await store.createClient(on);
        await store.createClient(off);
        await store.updateClient(off.id, { disabled: true }, now);
        const live = await created(store, newGrant({ clientId: on.id }, now), now);
        const dead = await created(store, newGrant({ clientId: on.id }, now), now);
        await store.revokeGrants({ grantId: dead.id }, { at: now, reason: 'test', entryExpiresAt: now + 600 });
        // Created together: a backend that writes these in one transaction must still
        // check every one (a cached answer for one client or parent must not decide another's).
        const results = await Promise.all([
          store.createGrant(newGrant({ clientId: on.id, parentId: live.id }, now), now),
          store.createGrant(newGrant({ clientId: off.id, parentId: live.id }, now), now),
          store.createGrant(newGrant({ clientId: on.id, parentId: dead.id }, now), now),
          store.createGrant(newGrant({ clientId: on.id, parentId: live.id }, now), now),
          store.createGrant(newGrant({ clientId: off.id }, now), now),
          store.createGrant(newGrant({ clientId: on.id, parentId: dead.id }, now), now),
        ]);
        assert.deepEqual(
          results.map((r) => (typeof r === 'string' ? r : `depth ${r.depth}`)),
          ['depth 1', 'client_inactive', 'parent_inactive', 'depth 1', 'client_inactive', 'parent_inactive'],
        );
      });

      it('assigns root and depth from the parent', async () => {
        const now = clock.now();
        const root = await created(store, newGrant({}, now), now);
        assert.equal(root.rootId, root.id);
        assert.equal(root.depth, 0);
        const child = await created(store, newGrant({ parentId: root.id, issuer: 'https://tessera.test' }, now), now);
        assert.equal(child.rootId, root.id);
        assert.equal(child.issuer, root.issuer, 'the subject keeps its issuer along the chain');
        assert.equal(child.depth, 1);
        const grandchild = await created(store, newGrant({ parentId: child.id }, now), now);
        assert.equal(grandchild.rootId, root.id);
        assert.equal(grandchild.depth, 2);
        assert.deepEqual(await store.getGrant(grandchild.id), grandchild);
        assert.deepEqual(
          (await store.grantAncestors(grandchild.id)).map((g) => g.id),
          [root.id, child.id],
        );
        assert.deepEqual(
          (await store.grantSubtree(root.id)).map((g) => g.id),
          [root.id, child.id, grandchild.id],
        );
        assert.deepEqual(await store.grantSubtree('unknown'), []);
      });

      it('reads a grant tree bounded (a tree of a million grants was read whole): grantSubtree(id, limit) is the first limit grants in tree order (depth, creation, id), grantAncestors(id, limit) the nearest limit', async () => {
        const now = clock.now();
        const root = await created(store, newGrant({}, now), now);
        // Children created out of id order: within a level, creation time comes first, then the id.
        const c = [
          await created(store, newGrant({ id: `g_c-${randomBytes(6).toString('hex')}`, parentId: root.id, createdAt: now + 2 }, now), now),
          await created(store, newGrant({ id: `g_b-${randomBytes(6).toString('hex')}`, parentId: root.id, createdAt: now + 1 }, now), now),
          await created(store, newGrant({ id: `g_a-${randomBytes(6).toString('hex')}`, parentId: root.id, createdAt: now + 2 }, now), now),
        ];
        const [c0, c1, c2] = c as [GrantRecord, GrantRecord, GrantRecord];
        const g0 = await created(store, newGrant({ parentId: c0.id, createdAt: now + 3 }, now), now);
        const g1 = await created(store, newGrant({ parentId: c1.id, createdAt: now + 4 }, now), now);
        const leaf = await created(store, newGrant({ parentId: g1.id, createdAt: now + 5 }, now), now);
        const order = [root.id, c1.id, c2.id, c0.id, g0.id, g1.id, leaf.id];
        assert.deepEqual(
          (await store.grantSubtree(root.id)).map((g) => g.id),
          order,
        );
        for (const limit of [1, 2, 4, 5, 6, 7, 8]) {
          assert.deepEqual(
            (await store.grantSubtree(root.id, limit)).map((g) => g.id),
            order.slice(0, limit),
            `limit ${limit}`,
          );
        }
        assert.deepEqual(
          (await store.grantSubtree(c1.id, 2)).map((g) => g.id),
          [c1.id, g1.id],
        );
        assert.deepEqual(await store.grantSubtree('unknown', 3), []);
        assert.deepEqual(
          (await store.grantAncestors(leaf.id)).map((g) => g.id),
          [root.id, c1.id, g1.id],
        );
        assert.deepEqual(
          (await store.grantAncestors(leaf.id, 2)).map((g) => g.id),
          [c1.id, g1.id],
        );
        assert.deepEqual(
          (await store.grantAncestors(leaf.id, 3)).map((g) => g.id),
          [root.id, c1.id, g1.id],
        );
      });

      it('keeps act, scopes, audiences and a null expiry', async () => {
        const now = clock.now();
        const act = { sub: 'agent', act: { sub: 'broker', iss: 'https://idp.test' } };
        const g = await created(store, newGrant({ act, expiresAt: null, scopes: ['x', 'y'], audiences: ['a', 'b'] }, now), now);
        assert.deepEqual(await store.getGrant(g.id), g);
      });

      it('refuses a child of a missing, revoked or expired parent', async () => {
        const now = clock.now();
        assert.equal(await store.createGrant(newGrant({ parentId: 'missing' }, now), now), 'parent_inactive');
        const expired = await created(store, newGrant({ expiresAt: now + 10 }, now), now);
        assert.equal(await store.createGrant(newGrant({ parentId: expired.id }, now), now + 10), 'parent_inactive');
        const revoked = await created(store, newGrant({}, now), now);
        await store.revokeGrants({ grantId: revoked.id }, { at: now, reason: 'test', entryExpiresAt: now + 600 });
        const attempt = newGrant({ parentId: revoked.id }, now);
        assert.equal(await store.createGrant(attempt, now), 'parent_inactive');
        assert.equal(await store.getGrant(attempt.id), undefined);
      });

      it('refuses a duplicate grant id', async () => {
        const now = clock.now();
        const g = newGrant({}, now);
        await created(store, g, now);
        await assert.rejects(store.createGrant(g, now), conflict('grant_exists'));
      });

      it('revokes a grant with its whole subtree three levels deep, and nothing else', async () => {
        const now = clock.now();
        const root = await created(store, newGrant({}, now), now);
        const a = await created(store, newGrant({ parentId: root.id }, now), now);
        const b = await created(store, newGrant({ parentId: root.id }, now), now);
        const a1 = await created(store, newGrant({ parentId: a.id }, now), now);
        const a11 = await created(store, newGrant({ parentId: a1.id }, now), now);
        const seq0 = (await store.versions()).revocations;
        const revoked = await store.revokeGrants({ grantId: a.id }, { at: now, reason: 'incident', entryExpiresAt: now + 600 });
        assert.deepEqual(revoked.map((g) => g.id).sort(), [a.id, a1.id, a11.id].sort());
        for (const id of [a.id, a1.id, a11.id]) {
          const g = await store.getGrant(id);
          assert.equal(g?.revokedAt, now);
          assert.equal(g?.revokedReason, 'incident');
        }
        assert.equal((await store.getGrant(root.id))?.revokedAt, null);
        assert.equal((await store.getGrant(b.id))?.revokedAt, null);
        const entries = await store.revocationsSince(seq0, now);
        assert.deepEqual(entries.map((e) => [e.kind, e.value]).sort(), [a.id, a1.id, a11.id].map((id) => ['grant', id]).sort());
        // Revoking again reports nothing new and logs nothing new.
        assert.deepEqual(await store.revokeGrants({ grantId: a.id }, { at: now, reason: 'again', entryExpiresAt: now + 600 }), []);
        assert.equal((await store.revocationsSince(seq0, now)).length, 3);
      });

      it('revokes by subject (optionally per issuer) and by client, with subtrees', async () => {
        const now = clock.now();
        const subject = uid('carol');
        const client = uid('client');
        await store.createClient(clientRecord({ id: client }, now));
        const s1 = await created(store, newGrant({ subject, issuer: 'https://idp.one' }, now), now);
        const s2 = await created(store, newGrant({ subject, issuer: 'https://idp.two' }, now), now);
        const s1child = await created(store, newGrant({ parentId: s1.id, subject, clientId: client }, now), now);
        const other = await created(store, newGrant({ clientId: client }, now), now);
        const otherChild = await created(store, newGrant({ parentId: other.id, clientId: 'x' }, now), now);
        const byIssuer = await store.revokeGrants(
          { subject, issuer: 'https://idp.two' },
          { at: now, reason: 'r', entryExpiresAt: now + 600 },
        );
        assert.deepEqual(
          byIssuer.map((g) => g.id),
          [s2.id],
        );
        const bySubject = await store.revokeGrants({ subject }, { at: now, reason: 'r', entryExpiresAt: now + 600 });
        assert.deepEqual(bySubject.map((g) => g.id).sort(), [s1.id, s1child.id].sort());
        const byClient = await store.revokeGrants({ clientId: client }, { at: now, reason: 'r', entryExpiresAt: now + 600 });
        assert.deepEqual(byClient.map((g) => g.id).sort(), [other.id, otherChild.id].sort());
        assert.deepEqual(byClient.find((g) => g.id === otherChild.id)?.clientId, 'x');
      });

      it('bounds revocation entries by the grant expiry (plus the largest clock skew a verifier allows past exp) and the given horizon', async () => {
        const now = clock.now();
        const short = await created(store, newGrant({ expiresAt: now + 60 }, now), now);
        const open = await created(store, newGrant({ expiresAt: null }, now), now);
        const seq0 = (await store.versions()).revocations;
        await store.revokeGrants({ grantId: short.id }, { at: now, reason: 'r', entryExpiresAt: now + 600 });
        await store.revokeGrants({ grantId: open.id }, { at: now, reason: 'r', entryExpiresAt: now + 600 });
        const entries = await store.revocationsSince(seq0, now);
        assert.equal(entries.find((e) => e.value === short.id)?.expiresAt, now + 60 + REVOCATION_ENTRY_SKEW);
        assert.equal(entries.find((e) => e.value === open.id)?.expiresAt, now + 600);
        // Expired entries are no longer returned.
        assert.deepEqual(
          (await store.revocationsSince(seq0, now + 60 + REVOCATION_ENTRY_SKEW)).map((e) => e.value),
          [open.id],
        );
      });

      it('keeps a revoked grant in the log after the grant expired, while a verifier still accepts its tokens within its clock skew', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({ expiresAt: now + 60 }, now), now);
        const seq0 = (await store.versions()).revocations;
        await store.revokeGrants({ grantId: g.id }, { at: now, reason: 'r', entryExpiresAt: now + 600 });
        // A verifier accepts a token until exp + clock_skew (at most 60 s); one starting 30 s after
        // the grant (and its last token) expired must still read the revocation, also after a prune.
        await store.prune(now + 90);
        assert.deepEqual(
          (await store.revocationsSince(seq0, now + 90)).map((e) => e.value),
          [g.id],
        );
      });
    });

    describe('subject revocation at grant creation', () => {
      const IDP = 'https://idp.one';
      const entry = (subject: string, issuer: string, at: number) => ({
        kind: 'subject' as const,
        value: subject,
        issuer,
        at,
        expiresAt: at + 86_400,
      });

      it('an older external token of a subject revoked by another process begins no root grant: refused inside the insert (subject_revoked), with no sync of the revocation list', async () => {
        const t = clock.now();
        const subject = uid('mallory');
        // Another process (the CLI, another instance) revokes the subject at t through the store;
        // this one has read nothing of it.
        const held = await created(store, newGrant({ subject, issuer: IDP }, t), t);
        let seen: readonly string[] = [];
        const revoked = await store.revokeGrants(
          { subject },
          {
            at: t,
            reason: 'cli',
            entryExpiresAt: t + 600,
            alsoLog: (grants) => {
              seen = grants.map((g) => g.id);
              return [entry(subject, IDP, t)];
            },
          },
        );
        assert.deepEqual(
          revoked.map((g) => g.id),
          [held.id],
        );
        assert.deepEqual(seen, [held.id], 'alsoLog is given the grants it revoked');
        const later = t + 5;
        // Issued at or before t: refused, nothing written.
        for (const iat of [t - 100, t]) {
          const g = newGrant({ subject, issuer: IDP, createdAt: later }, later);
          assert.equal(await store.createGrant(g, later, { subjectIssuedAt: iat }), 'subject_revoked', `iat ${iat - t}`);
          assert.equal(await store.getGrant(g.id), undefined);
        }
        // Issued after t: allowed.
        await created(store, newGrant({ subject, issuer: IDP, createdAt: later }, later), later);
        const after = await store.createGrant(newGrant({ subject, issuer: IDP, createdAt: later }, later), later, {
          subjectIssuedAt: t + 1,
        });
        assert.equal(typeof after, 'object', String(after));
        // The entry is the subject's at that issuer only: another issuer's same-named subject, or
        // another subject, is not held to it.
        const other = await store.createGrant(newGrant({ subject, issuer: 'https://idp.two' }, later), later, { subjectIssuedAt: t - 100 });
        assert.equal(typeof other, 'object', String(other));
        const someone = await store.createGrant(newGrant({ subject: uid('bob'), issuer: IDP }, later), later, { subjectIssuedAt: t - 100 });
        assert.equal(typeof someone, 'object', String(someone));
      });

      it('decides each external root grant of a batch created at once on its own subject revocation', async () => {
        const t = clock.now();
        const revokedSubject = uid('mallory');
        await store.appendRevocations([entry(revokedSubject, IDP, t)]);
        const results = await Promise.all([
          store.createGrant(newGrant({ subject: revokedSubject, issuer: IDP }, t), t, { subjectIssuedAt: t }),
          store.createGrant(newGrant({ subject: uid('bob'), issuer: IDP }, t), t, { subjectIssuedAt: t }),
          store.createGrant(newGrant({ subject: revokedSubject, issuer: IDP }, t), t, { subjectIssuedAt: t + 1 }),
        ]);
        assert.deepEqual(
          results.map((r) => (typeof r === 'string' ? r : 'created')),
          ['subject_revoked', 'created', 'created'],
        );
      });

      it('a root grant racing a subject revocation: it is revoked with the others, or refused', async () => {
        const t = clock.now();
        for (let i = 0; i < 5; i++) {
          const subject = uid('mallory');
          await created(store, newGrant({ subject, issuer: IDP }, t), t);
          const g = newGrant({ subject, issuer: IDP }, t);
          const [revoked, result] = await Promise.all([
            store.revokeGrants({ subject }, { at: t, reason: 'r', entryExpiresAt: t + 600, alsoLog: () => [entry(subject, IDP, t)] }),
            store.createGrant(g, t, { subjectIssuedAt: t }),
          ]);
          if (result === 'subject_revoked') assert.equal(await store.getGrant(g.id), undefined);
          else
            assert.ok(
              revoked.some((r) => r.id === g.id) && (await store.getGrant(g.id))?.revokedAt === t,
              'a grant created first is revoked',
            );
        }
      });

      it('appends the entries alsoLog returns with the revocation, also when it revokes no grant', async () => {
        const t = clock.now();
        const subject = uid('nobody');
        const seq0 = (await store.versions()).revocations;
        const revoked = await store.revokeGrants(
          { subject },
          { at: t, reason: 'r', entryExpiresAt: t + 600, alsoLog: (grants) => (grants.length === 0 ? [entry(subject, IDP, t)] : []) },
        );
        assert.deepEqual(revoked, []);
        const log = await store.revocationsSince(seq0, t);
        assert.deepEqual(
          log.map((e) => [e.kind, e.value, e.issuer, e.at]),
          [['subject', subject, IDP, t]],
        );
        assert.equal(await store.createGrant(newGrant({ subject, issuer: IDP }, t), t, { subjectIssuedAt: t }), 'subject_revoked');
      });
    });

    describe('actor grant at grant creation', () => {
      // An actor token of this issuer (token exchange's actor_token) stands for its grant: one
      // revoked by another process (the CLI, another instance) is refused inside the insert, before
      // this one's revocation list has the entry.
      const revoke = (id: string, at: number) => store.revokeGrants({ grantId: id }, { at, reason: 'cli', entryExpiresAt: at + 600 });

      it('refuses a grant whose actor grant was revoked (actor_inactive) and writes nothing', async () => {
        const now = clock.now();
        const actor = await created(store, newGrant({ subject: 'agent', kind: 'client_credentials' }, now), now);
        await revoke(actor.id, now);
        for (const parentId of [null, (await created(store, newGrant({}, now), now)).id]) {
          const g = newGrant({ parentId }, now);
          assert.equal(await store.createGrant(g, now, { actorGrantId: actor.id }), 'actor_inactive', `parent ${parentId}`);
          assert.equal(await store.getGrant(g.id), undefined);
        }
      });

      it('refuses a grant whose actor grant’s ancestor was revoked (actor_inactive)', async () => {
        const now = clock.now();
        const root = await created(store, newGrant({}, now), now);
        const mid = await created(store, newGrant({ parentId: root.id }, now), now);
        const actor = await created(store, newGrant({ parentId: mid.id, subject: 'agent' }, now), now);
        await revoke(root.id, now);
        const g = newGrant({}, now);
        assert.equal(await store.createGrant(g, now, { actorGrantId: actor.id }), 'actor_inactive');
        assert.equal(await store.getGrant(g.id), undefined);
      });

      it('refuses a grant naming an unknown actor grant (actor_inactive)', async () => {
        const now = clock.now();
        const g = newGrant({}, now);
        assert.equal(await store.createGrant(g, now, { actorGrantId: uid('missing') }), 'actor_inactive');
        assert.equal(await store.getGrant(g.id), undefined);
      });

      it('refuses a grant whose actor grant has expired (actor_inactive)', async () => {
        const now = clock.now();
        const actor = await created(store, newGrant({ subject: 'agent', expiresAt: now + 10 }, now), now);
        const g = newGrant({ createdAt: now + 10 }, now + 10);
        assert.equal(await store.createGrant(g, now + 10, { actorGrantId: actor.id }), 'actor_inactive');
        assert.equal(await store.getGrant(g.id), undefined);
      });

      it('creates a grant whose actor grant is active, as a root or a child (the actor grant is no part of its tree)', async () => {
        const now = clock.now();
        const actor = await created(store, newGrant({ subject: 'agent', kind: 'client_credentials' }, now), now);
        const root = await store.createGrant(newGrant({}, now), now, { actorGrantId: actor.id });
        assert.equal(typeof root, 'object', String(root));
        const r = root as GrantRecord;
        assert.equal(r.rootId, r.id);
        const child = await store.createGrant(newGrant({ parentId: r.id }, now), now, { actorGrantId: actor.id });
        assert.equal(typeof child, 'object', String(child));
        assert.equal((child as GrantRecord).rootId, r.id);
        // The actor's own token as the subject too: its grant is both parent and actor.
        const self = await store.createGrant(newGrant({ parentId: actor.id }, now), now, { actorGrantId: actor.id });
        assert.equal(typeof self, 'object', String(self));
        // Each records its actor grant, as created and as read back; a grant without one records none.
        for (const g of [r, child as GrantRecord, self as GrantRecord]) {
          assert.equal(g.actorGrantId, actor.id);
          assert.equal((await store.getGrant(g.id))?.actorGrantId, actor.id);
        }
        assert.equal(actor.actorGrantId, null);
        assert.equal((await store.getGrant(actor.id))?.actorGrantId, null);
        assert.deepEqual(
          (await store.grantSubtree(r.id)).map((g) => [g.id, g.actorGrantId]),
          [
            [r.id, actor.id],
            [(child as GrantRecord).id, actor.id],
          ],
        );
        // The self-acted grant is reported once when its parent (and actor) is revoked.
        const revoked = await revoke(actor.id, now);
        assert.deepEqual(revoked.map((g) => g.id).sort(), [actor.id, r.id, (child as GrantRecord).id, (self as GrantRecord).id].sort());
      });

      it('decides each grant of a batch created at once on its own actor grant', async () => {
        const now = clock.now();
        const live = await created(store, newGrant({ subject: 'agent' }, now), now);
        const dead = await created(store, newGrant({ subject: 'agent' }, now), now);
        await revoke(dead.id, now);
        const results = await Promise.all([
          store.createGrant(newGrant({}, now), now, { actorGrantId: live.id }),
          store.createGrant(newGrant({}, now), now, { actorGrantId: dead.id }),
          store.createGrant(newGrant({ parentId: live.id }, now), now, { actorGrantId: live.id }),
          store.createGrant(newGrant({ parentId: live.id }, now), now, { actorGrantId: dead.id }),
          store.createGrant(newGrant({}, now), now),
        ]);
        assert.deepEqual(
          results.map((r) => (typeof r === 'string' ? r : 'created')),
          ['created', 'actor_inactive', 'created', 'actor_inactive', 'created'],
        );
      });
    });

    describe('revocation of an actor’s grant', () => {
      // A grant exchanged with an actor token of this issuer records that token's grant
      // (actorGrantId): revoking the actor's grant, by any selector or cascade, revokes it with its
      // subtree, transitively, in the same transaction, and logs each.
      const revoke = (id: string, at: number) =>
        store.revokeGrants({ grantId: id }, { at, reason: 'agent_compromised', entryExpiresAt: at + 600 });
      const actedBy = async (actorGrantId: string, now: number, overrides: Partial<NewGrant> = {}) => {
        const r = await store.createGrant(newGrant(overrides, now), now, { actorGrantId });
        assert.equal(typeof r, 'object', String(r));
        return r as GrantRecord;
      };
      const ids = (gs: readonly { id: string }[]) => gs.map((g) => g.id).sort();

      it('revokes the grants created with the actor’s grant, in every tree, with their subtrees, their refresh tokens and a log entry each; nothing else', async () => {
        const now = clock.now();
        const agent = await created(store, newGrant({ subject: 'agent', kind: 'client_credentials' }, now), now);
        const alice = await created(store, newGrant({ subject: uid('alice') }, now), now);
        const bob = await created(store, newGrant({ subject: uid('bob') }, now), now);
        const forAlice = await actedBy(agent.id, now, { parentId: alice.id });
        const below = await created(store, newGrant({ parentId: forAlice.id }, now), now);
        const forBob = await actedBy(agent.id, now, { parentId: bob.id });
        // Not acted by the agent: a sibling in alice's tree, another agent's acting in bob's.
        const sibling = await created(store, newGrant({ parentId: alice.id }, now), now);
        const otherAgent = await created(store, newGrant({ subject: 'agent-2' }, now), now);
        const other = await actedBy(otherAgent.id, now, { parentId: bob.id });
        const rt = refresh(below.id, {}, now);
        await store.createRefreshToken(rt);
        const seq0 = (await store.versions()).revocations;
        const revoked = await revoke(agent.id, now);
        assert.deepEqual(ids(revoked), ids([agent, forAlice, below, forBob]));
        for (const g of [agent, forAlice, below, forBob]) {
          const read = await store.getGrant(g.id);
          assert.equal(read?.revokedAt, now);
          assert.equal(read?.revokedReason, 'agent_compromised');
        }
        for (const g of [alice, bob, sibling, otherAgent, other]) assert.equal((await store.getGrant(g.id))?.revokedAt, null);
        assert.equal((await store.getRefreshToken(rt.hash))?.revokedAt, now);
        const log = await store.revocationsSince(seq0, now);
        assert.deepEqual(
          log.map((e) => [e.kind, e.value]).sort(),
          ids(revoked).map((id) => ['grant', id]),
        );
        // Revoked again: nothing new.
        assert.deepEqual(await revoke(agent.id, now), []);
      });

      it('is transitive: through a grant acted with a grant acted with the revoked one, and through a child of the actor’s grant used as an actor', async () => {
        const now = clock.now();
        const agent = await created(store, newGrant({ subject: 'agent' }, now), now);
        const x = await actedBy(agent.id, now);
        const y = await actedBy(x.id, now, { subject: uid('carol') });
        const z = await created(store, newGrant({ parentId: y.id }, now), now);
        const agentChild = await created(store, newGrant({ parentId: agent.id }, now), now);
        const w = await actedBy(agentChild.id, now, { subject: uid('dave') });
        assert.deepEqual(ids(await revoke(agent.id, now)), ids([agent, x, y, z, agentChild, w]));
      });

      it('ends when two agents acted for each other: each revocation revokes what derives from its grant once, and not the other agent’s own grant', async () => {
        const now = clock.now();
        const a = await created(store, newGrant({ subject: 'agent-a' }, now), now);
        const b = await created(store, newGrant({ subject: 'agent-b' }, now), now);
        // A acting for B (a child of B's grant, with A's), B acting for A (a child of A's, with B's).
        const aForB = await actedBy(a.id, now, { parentId: b.id });
        const bForA = await actedBy(b.id, now, { parentId: a.id });
        const aForBForA = await actedBy(a.id, now, { parentId: bForA.id });
        assert.deepEqual(ids(await revoke(a.id, now)), ids([a, aForB, bForA, aForBForA]));
        assert.equal((await store.getGrant(b.id))?.revokedAt, null);
        assert.deepEqual(ids(await revoke(b.id, now)), [b.id]);
      });

      it('through every selector and cascade: subject, client, an access token’s exchanges, a refresh token’s reuse, an authorization code’s reuse', async () => {
        const now = clock.now();
        const opts = { at: now, reason: 'r', entryExpiresAt: now + 600 };
        // The subject (an agent's client-credentials grants are its own subject's).
        const agentSubject = uid('agent');
        const bySubject = await created(store, newGrant({ subject: agentSubject }, now), now);
        const actedBySubject = await actedBy(bySubject.id, now);
        assert.deepEqual(ids(await store.revokeGrants({ subject: agentSubject }, opts)), ids([bySubject, actedBySubject]));
        // The client.
        const client = uid('client');
        await store.createClient(clientRecord({ id: client }));
        const byClient = await created(store, newGrant({ clientId: client, subject: client }, now), now);
        const actedByClient = await actedBy(byClient.id, now);
        assert.deepEqual(ids(await store.revokeGrants({ clientId: client }, opts)), ids([byClient, actedByClient]));
        // An access token's exchanges: the grant exchanged from it was an actor since.
        const tokenGrant = await created(store, newGrant({}, now), now);
        const exchanged = await created(store, newGrant({ parentId: tokenGrant.id, subjectJti: 'jti-acted' }, now), now);
        const actedByExchanged = await actedBy(exchanged.id, now);
        assert.deepEqual(
          ids(await store.revokeGrants({ exchangedFrom: 'jti-acted', tokenGrantId: tokenGrant.id }, opts)),
          ids([exchanged, actedByExchanged]),
        );
        // A refresh token's reuse.
        const family = await created(store, newGrant({}, now), now);
        const actedByFamily = await actedBy(family.id, now);
        const rt = refresh(family.id, {}, now);
        await store.createRefreshToken(rt);
        const rotation = { clientId: 'agent', nextExpiresAt: now + 3600, now, graceSeconds: 0, entryExpiresAt: now + 600 };
        assert.equal((await store.rotateRefreshToken(rt.hash, { ...rotation, nextHash: uid('rt') })).status, 'rotated');
        const reused = await store.rotateRefreshToken(rt.hash, { ...rotation, nextHash: uid('rt') });
        assert.equal(reused.status, 'reused');
        if (reused.status === 'reused') assert.deepEqual([...reused.revokedGrantIds].sort(), ids([family, actedByFamily]));
        // An authorization code's reuse.
        const c = code({ subject: uid('person') }, now);
        await store.createAuthorizationCode(c);
        const redeem = (grant: NewGrant) =>
          store.redeemAuthorizationCode(c.hash, {
            clientId: 'agent',
            loginScope: LOGIN_SCOPE,
            grant,
            refreshToken: null,
            now,
            entryExpiresAt: now + 600,
          });
        const first = await redeem(newGrant({ kind: 'authorization_code', subject: c.subject }, now));
        assert.equal(first.status, 'redeemed');
        if (first.status !== 'redeemed') return;
        const actedByCode = await actedBy(first.grant.id, now);
        const again = await redeem(newGrant({ kind: 'authorization_code', subject: c.subject }, now));
        assert.equal(again.status, 'reused');
        if (again.status === 'reused') assert.deepEqual([...again.revokedGrantIds].sort(), ids([first.grant, actedByCode]));
      });

      it('reaching more trees than a revocation locks one by one (300), revokes them all', async () => {
        const now = clock.now();
        const agent = await created(store, newGrant({ subject: 'agent' }, now), now);
        const roots = await Promise.all(Array.from({ length: 300 }, () => created(store, newGrant({ subject: uid('person') }, now), now)));
        const acted = await Promise.all(roots.map((r) => actedBy(agent.id, now, { parentId: r.id })));
        const revoked = await revoke(agent.id, now);
        assert.deepEqual(ids(revoked), ids([agent, ...acted]));
        for (const r of roots.slice(0, 5)) assert.equal((await store.getGrant(r.id))?.revokedAt, null);
      });

      it('racing the creation of grants acted with it, and of children of those, leaves none of them unrevoked: each is refused or revoked', async () => {
        for (let round = 0; round < 10; round++) {
          const now = clock.now();
          const agent = await created(store, newGrant({ subject: 'agent' }, now), now);
          const person = await created(store, newGrant({ subject: uid('person') }, now), now);
          const acted = await actedBy(agent.id, now, { parentId: person.id });
          const racing = [
            store.createGrant(newGrant({ parentId: person.id }, now), now, { actorGrantId: agent.id }),
            store.createGrant(newGrant({}, now), now, { actorGrantId: agent.id }),
            store.createGrant(newGrant({ parentId: acted.id }, now), now),
            store.createGrant(newGrant({ parentId: acted.id }, now), now, { actorGrantId: agent.id }),
          ];
          const [, ...results] = await Promise.all([revoke(agent.id, now), ...racing]);
          for (const r of results) {
            if (typeof r === 'string') {
              assert.ok(r === 'actor_inactive' || r === 'parent_inactive', r);
              continue;
            }
            assert.equal((await store.getGrant(r.id))?.revokedAt, now, `round ${round}: a grant created racing the revocation outlived it`);
          }
          assert.equal((await store.getGrant(person.id))?.revokedAt, null);
        }
      });
    });

    describe('grants exchanged from an access token', () => {
      // Revoking an access token of this issuer revokes what was exchanged from it: the caller
      // selects those grants by the token's jti and appends the token's own entry in the same
      // transaction (alsoLog), as the token service does.
      const tokenEntry = (jti: string, at: number) => ({ kind: 'token' as const, value: jti, issuer: null, at, expiresAt: at + 600 });
      const revokeToken = (jti: string, at: number, tokenGrantId: string) =>
        store.revokeGrants(
          { exchangedFrom: jti, tokenGrantId },
          { at, reason: 'access_token_revoked', entryExpiresAt: at + 600, alsoLog: () => [tokenEntry(jti, at)] },
        );

      it('keeps the jti of the subject and actor tokens a grant was exchanged from, and null when none is given', async () => {
        const now = clock.now();
        const parent = await created(store, newGrant({}, now), now);
        const child = await created(store, newGrant({ parentId: parent.id, subjectJti: uid('jti'), actorJti: uid('jti') }, now), now);
        assert.deepEqual(await store.getGrant(child.id), child);
        assert.equal(typeof child.subjectJti, 'string');
        assert.equal(typeof child.actorJti, 'string');
        assert.equal((await store.getGrant(parent.id))?.subjectJti, null);
        assert.equal((await store.getGrant(parent.id))?.actorJti, null);
        assert.deepEqual(
          (await store.grantSubtree(parent.id)).map((g) => [g.id, g.subjectJti, g.actorJti]),
          [
            [parent.id, null, null],
            [child.id, child.subjectJti, child.actorJti],
          ],
        );
      });

      it('revoking a token revokes the grants exchanged from it (as subject or as actor) with their subtrees, their refresh tokens and the token’s entry in one go; not the token’s own grant, nor a sibling exchanged from another token of that grant', async () => {
        const now = clock.now();
        const [t1, t2, actorJti] = [uid('jti'), uid('jti'), uid('jti')];
        const user = await created(store, newGrant({ kind: 'authorization_code' }, now), now);
        const a = await created(store, newGrant({ parentId: user.id, subjectJti: t1 }, now), now);
        const b = await created(store, newGrant({ parentId: a.id, subjectJti: uid('jti') }, now), now);
        const c = await created(store, newGrant({ parentId: b.id, subjectJti: uid('jti') }, now), now);
        const sibling = await created(store, newGrant({ parentId: user.id, subjectJti: t2 }, now), now);
        const siblingChild = await created(store, newGrant({ parentId: sibling.id, subjectJti: uid('jti') }, now), now);
        // Another subject's grant in another tree, exchanged with t1 as the actor token.
        const other = await created(store, newGrant({ subject: uid('bob') }, now), now);
        const acted = await created(store, newGrant({ parentId: other.id, subjectJti: uid('jti'), actorJti: t1 }, now), now);
        const actedByAnother = await created(store, newGrant({ parentId: other.id, subjectJti: uid('jti'), actorJti }, now), now);
        const tokens = {
          a: refresh(a.id),
          c: refresh(c.id),
          acted: refresh(acted.id),
          sibling: refresh(sibling.id),
          user: refresh(user.id),
        };
        for (const t of Object.values(tokens)) await store.createRefreshToken(t);
        const seq0 = (await store.versions()).revocations;
        const revoked = await revokeToken(t1, now, user.id);
        assert.deepEqual(revoked.map((g) => g.id).sort(), [a.id, b.id, c.id, acted.id].sort());
        for (const id of [a.id, b.id, c.id, acted.id]) {
          const g = await store.getGrant(id);
          assert.equal(g?.revokedAt, now, id);
          assert.equal(g?.revokedReason, 'access_token_revoked');
        }
        for (const id of [user.id, sibling.id, siblingChild.id, other.id, actedByAnother.id]) {
          assert.equal((await store.getGrant(id))?.revokedAt, null, `${id} is not exchanged from t1`);
        }
        for (const k of ['a', 'c', 'acted'] as const) assert.equal((await store.getRefreshToken(tokens[k].hash))?.revokedAt, now, k);
        for (const k of ['sibling', 'user'] as const) assert.equal((await store.getRefreshToken(tokens[k].hash))?.revokedAt, null, k);
        assert.deepEqual(
          (await store.revocationsSince(seq0, now)).map((e) => [e.kind, e.value]).sort(),
          [...[a.id, b.id, c.id, acted.id].map((id) => ['grant', id]), ['token', t1]].sort(),
        );
        assert.equal(await store.tokenRevoked(t1), true);
        // Again: nothing new is revoked.
        assert.deepEqual(
          await store.revokeGrants({ exchangedFrom: t1, tokenGrantId: user.id }, { at: now, reason: 'again', entryExpiresAt: now + 600 }),
          [],
        );
      });

      it('appends the token’s entry also when nothing was exchanged from it', async () => {
        const now = clock.now();
        const jti = uid('jti');
        const seq0 = (await store.versions()).revocations;
        assert.deepEqual(await revokeToken(jti, now, uid('g')), []);
        assert.deepEqual(
          (await store.revocationsSince(seq0, now)).map((e) => [e.kind, e.value]),
          [['token', jti]],
        );
      });

      it('attack: a token revoked by another process is exchanged again before this one read the revocation: refused inside the insert (subject_revoked, actor_inactive), writing nothing', async () => {
        const now = clock.now();
        const parent = await created(store, newGrant({}, now), now);
        const [subjectJti, actorJti] = [uid('jti'), uid('jti')];
        await revokeToken(subjectJti, now, parent.id);
        await revokeToken(actorJti, now, parent.id);
        const bySubject = newGrant({ parentId: parent.id, subjectJti }, now);
        assert.equal(await store.createGrant(bySubject, now), 'subject_revoked');
        assert.equal(await store.getGrant(bySubject.id), undefined);
        const byActor = newGrant({ parentId: parent.id, subjectJti: uid('jti'), actorJti }, now);
        assert.equal(await store.createGrant(byActor, now), 'actor_inactive');
        assert.equal(await store.getGrant(byActor.id), undefined);
        // A token entry appended alone (another process revoking the token only) refuses it too.
        const alone = uid('jti');
        await store.appendRevocations([tokenEntry(alone, now)]);
        assert.equal(await store.createGrant(newGrant({ parentId: parent.id, subjectJti: alone }, now), now), 'subject_revoked');
        // Batched with others: each decided on its own tokens.
        const results = await Promise.all([
          store.createGrant(newGrant({ parentId: parent.id, subjectJti }, now), now),
          store.createGrant(newGrant({ parentId: parent.id, subjectJti: uid('jti') }, now), now),
          store.createGrant(newGrant({ parentId: parent.id, subjectJti: uid('jti'), actorJti }, now), now),
          store.createGrant(newGrant({ parentId: parent.id, subjectJti: uid('jti'), actorJti: uid('jti') }, now), now),
        ]);
        assert.deepEqual(
          results.map((r) => (typeof r === 'string' ? r : 'created')),
          ['subject_revoked', 'created', 'actor_inactive', 'created'],
        );
      });

      it('an exchange racing the revocation of its subject or actor token: its grant is revoked with the others, or refused', async () => {
        const now = clock.now();
        const parent = await created(store, newGrant({}, now), now);
        for (let i = 0; i < 6; i++) {
          const jti = uid('jti');
          const asActor = i % 2 === 1;
          await created(store, newGrant({ parentId: parent.id, ...(asActor ? { actorJti: jti } : { subjectJti: jti }) }, now), now);
          const g = newGrant({ parentId: parent.id, ...(asActor ? { subjectJti: uid('jti'), actorJti: jti } : { subjectJti: jti }) }, now);
          const [revoked, result] = await Promise.all([revokeToken(jti, now, parent.id), store.createGrant(g, now)]);
          if (typeof result === 'string') {
            assert.equal(result, asActor ? 'actor_inactive' : 'subject_revoked');
            assert.equal(await store.getGrant(g.id), undefined);
          } else {
            assert.ok(
              revoked.some((r) => r.id === g.id) && (await store.getGrant(g.id))?.revokedAt === now,
              'a grant created first is revoked',
            );
          }
          assert.equal((await store.getGrant(parent.id))?.revokedAt, null);
        }
      });
    });

    describe('refresh tokens', () => {
      const opts = (now: number, nextHash: string, clientId = 'agent') => ({
        clientId,
        nextHash,
        nextExpiresAt: now + 7200,
        now,
        graceSeconds: 0,
        entryExpiresAt: now + 600,
      });

      it('rotates a current token: the old one is marked, the successor never outlives the grant', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({ expiresAt: now + 3600 }, now), now);
        const t = refresh(g.id, {}, now);
        await store.createRefreshToken(t);
        assert.deepEqual(await store.getRefreshToken(t.hash), t);
        const next = uid('rt');
        const r = await store.rotateRefreshToken(t.hash, opts(now + 1, next));
        assert.equal(r.status, 'rotated');
        if (r.status !== 'rotated') return;
        assert.equal(r.grant.id, g.id);
        assert.equal(r.next.hash, next);
        assert.equal(r.next.expiresAt, now + 3600);
        assert.equal((await store.getRefreshToken(t.hash))?.rotatedAt, now + 1);
        assert.deepEqual(await store.getRefreshToken(next), r.next);
      });

      it('keeps a DPoP-bound token’s key thumbprint (RFC 9449 §5) and hands it to every successor', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({}, now), now);
        const t = refresh(g.id, { jkt: 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs' }, now);
        await store.createRefreshToken(t);
        assert.deepEqual(await store.getRefreshToken(t.hash), t);
        const next = uid('rt');
        const r = await store.rotateRefreshToken(t.hash, opts(now + 1, next));
        assert.equal(r.status, 'rotated');
        if (r.status !== 'rotated') return;
        assert.equal(r.next.jkt, t.jkt);
        assert.equal((await store.getRefreshToken(next))?.jkt, t.jkt);
        const unbound = refresh(g.id, {}, now);
        await store.createRefreshToken(unbound);
        assert.equal('jkt' in ((await store.getRefreshToken(unbound.hash)) ?? {}), false);
      });

      it('binds an unbound token’s successor to bindJkt, and never rebinds a bound token to another key', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({}, now), now);
        const key = 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs';
        const unbound = refresh(g.id, {}, now);
        await store.createRefreshToken(unbound);
        const next = uid('rt');
        const r = await store.rotateRefreshToken(unbound.hash, { ...opts(now + 1, next), bindJkt: key });
        assert.equal(r.status === 'rotated' && r.next.jkt, key);
        assert.equal((await store.getRefreshToken(next))?.jkt, key);
        const after = uid('rt');
        const again = await store.rotateRefreshToken(next, { ...opts(now + 2, after), bindJkt: 'another-key' });
        assert.equal(again.status === 'rotated' && again.next.jkt, key);
        assert.equal((await store.getRefreshToken(after))?.jkt, key);
      });

      it('refuses unknown, expired, other-client and revoked-grant tokens without side effects', async () => {
        const now = clock.now();
        assert.equal((await store.rotateRefreshToken('unknown', opts(now, uid('rt')))).status, 'invalid');
        const g = await created(store, newGrant({}, now), now);
        const expired = refresh(g.id, { expiresAt: now + 5 }, now);
        await store.createRefreshToken(expired);
        assert.equal((await store.rotateRefreshToken(expired.hash, opts(now + 5, uid('rt')))).status, 'invalid');
        const t = refresh(g.id, {}, now);
        await store.createRefreshToken(t);
        assert.equal((await store.rotateRefreshToken(t.hash, opts(now, uid('rt'), 'someone-else'))).status, 'invalid');
        assert.equal((await store.getRefreshToken(t.hash))?.rotatedAt, null);
        await store.revokeGrants({ grantId: g.id }, { at: now, reason: 'r', entryExpiresAt: now + 600 });
        assert.equal((await store.getRefreshToken(t.hash))?.revokedAt, now);
        assert.equal((await store.rotateRefreshToken(t.hash, opts(now, uid('rt')))).status, 'invalid');
      });

      it('treats a rotated token presented again as reuse: the family and its subtree are revoked', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({}, now), now);
        const derived = await created(store, newGrant({ parentId: g.id }, now), now);
        const t = refresh(g.id, {}, now);
        await store.createRefreshToken(t);
        const n1 = uid('rt');
        assert.equal((await store.rotateRefreshToken(t.hash, opts(now, n1))).status, 'rotated');
        const seq0 = (await store.versions()).revocations;
        // Reuse in the same second is still reuse (no grace configured).
        const reuse = await store.rotateRefreshToken(t.hash, opts(now, uid('rt')));
        assert.equal(reuse.status, 'reused');
        if (reuse.status !== 'reused') return;
        assert.equal(reuse.grantId, g.id);
        assert.deepEqual([...reuse.revokedGrantIds].sort(), [g.id, derived.id].sort());
        assert.equal((await store.getGrant(g.id))?.revokedReason, 'refresh_token_reused');
        assert.notEqual((await store.getRefreshToken(n1))?.revokedAt, null);
        assert.equal((await store.rotateRefreshToken(n1, opts(now + 1, uid('rt')))).status, 'invalid');
        assert.equal((await store.revocationsSince(seq0, now)).length, 2);
      });

      it('refuses without revoking inside the grace period', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({}, now), now);
        const t = refresh(g.id, {}, now);
        await store.createRefreshToken(t);
        await store.rotateRefreshToken(t.hash, { ...opts(now, uid('rt')), graceSeconds: 10 });
        const again = await store.rotateRefreshToken(t.hash, { ...opts(now + 9, uid('rt')), graceSeconds: 10 });
        assert.equal(again.status, 'grace');
        assert.equal((await store.getGrant(g.id))?.revokedAt, null);
        const late = await store.rotateRefreshToken(t.hash, { ...opts(now + 10, uid('rt')), graceSeconds: 10 });
        assert.equal(late.status, 'reused');
      });

      describe('reuse interval (a retry after a lost response)', () => {
        const within = (now: number, nextHash: string, extra: { bindJkt?: string; clientId?: string } = {}) => ({
          ...opts(now, nextHash, extra.clientId),
          reuseIntervalSeconds: 30,
          ...(extra.bindJkt ? { bindJkt: extra.bindJkt } : {}),
        });

        it('within it, the token rotated one generation ago is rotated again: the successor the lost response carried is retired (its reuse revokes the family), the new one current, the interval counted from the first rotation', async () => {
          const now = clock.now();
          const g = await created(store, newGrant({}, now), now);
          const t = refresh(g.id, {}, now);
          await store.createRefreshToken(t);
          const lost = uid('rt');
          assert.equal((await store.rotateRefreshToken(t.hash, within(now, lost))).status, 'rotated');
          const n2 = uid('rt');
          const retry = await store.rotateRefreshToken(t.hash, within(now + 10, n2));
          assert.equal(retry.status, 'rotated');
          if (retry.status !== 'rotated') return;
          assert.equal(retry.retry, true);
          assert.equal(retry.grant.id, g.id);
          assert.equal(retry.next.hash, n2);
          assert.equal(retry.next.rotatedAt, null);
          assert.equal((await store.getRefreshToken(lost))?.rotatedAt, now + 10);
          assert.equal((await store.getRefreshToken(t.hash))?.rotatedAt, now);
          // Again within the interval (from the first rotation, not the retry): a retry.
          const n3 = uid('rt');
          assert.equal((await store.rotateRefreshToken(t.hash, within(now + 29, n3))).status, 'rotated');
          assert.equal((await store.getRefreshToken(n2))?.rotatedAt, now + 29);
          // The family goes on from the newest; the retired successor presented is a reuse.
          assert.equal((await store.rotateRefreshToken(n3, within(now + 29, uid('rt')))).status, 'rotated');
          const reuse = await store.rotateRefreshToken(lost, within(now + 29, uid('rt')));
          assert.equal(reuse.status, 'reused');
          assert.equal((await store.getGrant(g.id))?.revokedReason, 'refresh_token_reused');
        });

        it('attack: past it, two generations back, from another client, with another DPoP key, or a revoked family: as without it', async () => {
          const now = clock.now();
          // Past the interval: reuse.
          const g1 = await created(store, newGrant({}, now), now);
          const t1 = refresh(g1.id, {}, now);
          await store.createRefreshToken(t1);
          await store.rotateRefreshToken(t1.hash, within(now, uid('rt')));
          assert.equal((await store.rotateRefreshToken(t1.hash, within(now + 30, uid('rt')))).status, 'reused');
          // Two generations back: reuse.
          const g2 = await created(store, newGrant({}, now), now);
          const t2 = refresh(g2.id, {}, now);
          await store.createRefreshToken(t2);
          const s2 = uid('rt');
          await store.rotateRefreshToken(t2.hash, within(now, s2));
          await store.rotateRefreshToken(s2, within(now, uid('rt')));
          assert.equal((await store.rotateRefreshToken(t2.hash, within(now + 1, uid('rt')))).status, 'reused');
          // Another client: invalid, nothing written.
          const g3 = await created(store, newGrant({}, now), now);
          const t3 = refresh(g3.id, {}, now);
          await store.createRefreshToken(t3);
          const s3 = uid('rt');
          await store.rotateRefreshToken(t3.hash, within(now, s3));
          assert.equal((await store.rotateRefreshToken(t3.hash, within(now + 1, uid('rt'), { clientId: 'other' }))).status, 'invalid');
          assert.equal((await store.getRefreshToken(s3))?.rotatedAt, null);
          // An unbound token whose successor was bound to a DPoP key: a retry with another key (or
          // none) is a reuse; with the same key, a retry.
          const g4 = await created(store, newGrant({}, now), now);
          const t4 = refresh(g4.id, {}, now);
          await store.createRefreshToken(t4);
          await store.rotateRefreshToken(t4.hash, within(now, uid('rt'), { bindJkt: 'key-a' }));
          const same = await store.rotateRefreshToken(t4.hash, within(now + 1, uid('rt'), { bindJkt: 'key-a' }));
          assert.equal(same.status, 'rotated');
          if (same.status === 'rotated') assert.equal(same.next.jkt, 'key-a');
          assert.equal((await store.rotateRefreshToken(t4.hash, within(now + 1, uid('rt'), { bindJkt: 'key-b' }))).status, 'reused');
          const g5 = await created(store, newGrant({}, now), now);
          const t5 = refresh(g5.id, {}, now);
          await store.createRefreshToken(t5);
          await store.rotateRefreshToken(t5.hash, within(now, uid('rt'), { bindJkt: 'key-a' }));
          assert.equal((await store.rotateRefreshToken(t5.hash, within(now + 1, uid('rt')))).status, 'reused');
          // A revoked family: invalid, never revived.
          const g6 = await created(store, newGrant({}, now), now);
          const t6 = refresh(g6.id, {}, now);
          await store.createRefreshToken(t6);
          const s6 = uid('rt');
          await store.rotateRefreshToken(t6.hash, within(now, s6));
          await store.revokeGrants({ grantId: g6.id }, { at: now, reason: 'r', entryExpiresAt: now + 600 });
          assert.equal((await store.rotateRefreshToken(t6.hash, within(now + 1, uid('rt')))).status, 'invalid');
          assert.equal((await store.rotateRefreshToken(s6, within(now + 1, uid('rt')))).status, 'invalid');
        });

        it('concurrent retries of one token are serialized: each is rotated in turn, and exactly one successor is left current', async () => {
          const now = clock.now();
          const g = await created(store, newGrant({}, now), now);
          const t = refresh(g.id, {}, now);
          await store.createRefreshToken(t);
          await store.rotateRefreshToken(t.hash, within(now, uid('rt')));
          const hashes = Array.from({ length: 6 }, () => uid('rt'));
          const results = await Promise.all(hashes.map((h) => store.rotateRefreshToken(t.hash, within(now + 1, h))));
          assert.deepEqual(
            results.map((r) => r.status),
            hashes.map(() => 'rotated'),
          );
          const current = (await Promise.all(hashes.map((h) => store.getRefreshToken(h)))).filter((r) => r?.rotatedAt === null);
          assert.equal(current.length, 1);
          assert.equal((await store.getGrant(g.id))?.revokedAt, null);
        });
      });

      it('lets exactly one of many concurrent rotations of one token succeed', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({}, now), now);
        const t = refresh(g.id, {}, now);
        await store.createRefreshToken(t);
        const results = await Promise.all(
          Array.from({ length: 8 }, () => store.rotateRefreshToken(t.hash, { ...opts(now, uid('rt')), graceSeconds: 60 })),
        );
        assert.equal(results.filter((r) => r.status === 'rotated').length, 1);
        assert.equal(results.filter((r) => r.status === 'grace').length, 7);
      });

      it('a refresh token created under a grant already revoked (token exchange issues it after the grant commits) is stored revoked as of the grant', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({}, now), now);
        await store.revokeGrants({ grantId: g.id }, { at: now + 1, reason: 'r', entryExpiresAt: now + 600 });
        const t = refresh(g.id, {}, now + 2);
        await store.createRefreshToken(t);
        assert.deepEqual(await store.getRefreshToken(t.hash), { ...t, revokedAt: now + 1 });
        assert.equal((await store.rotateRefreshToken(t.hash, opts(now + 2, uid('rt')))).status, 'invalid');
      });

      it('creating a refresh token racing a revocation of its grant leaves no unrevoked refresh token under the revoked grant', async () => {
        const now = clock.now();
        for (let round = 0; round < 25; round++) {
          const grants = await Promise.all(Array.from({ length: 4 }, () => created(store, newGrant({}, now), now)));
          const tokens = grants.map((g) => refresh(g.id, {}, now));
          await Promise.all(
            grants.flatMap((g, i) => {
              const create = store.createRefreshToken(tokens[i] as RefreshTokenRecord);
              const revoke = store.revokeGrants({ grantId: g.id }, { at: now, reason: 'race', entryExpiresAt: now + 600 });
              return round % 2 ? [revoke, create] : [create, revoke];
            }),
          );
          for (const t of tokens) {
            assert.notEqual(
              (await store.getRefreshToken(t.hash))?.revokedAt,
              null,
              `round ${round}: a refresh token under a revoked grant is not revoked`,
            );
          }
        }
      });

      it('rotation racing a revocation of its grant leaves no unrevoked refresh token (the successor included) under the revoked grant', async () => {
        // On PostgreSQL each call runs on its own pooled connection, as on two instances: a
        // cascade whose UPDATE did not see the successor being inserted left it revoked_at NULL.
        const now = clock.now();
        for (let round = 0; round < 25; round++) {
          const grants = await Promise.all(Array.from({ length: 4 }, () => created(store, newGrant({}, now), now)));
          const tokens = grants.map((g) => refresh(g.id, {}, now));
          for (const t of tokens) await store.createRefreshToken(t);
          const successors = tokens.map(() => uid('rt'));
          await Promise.all(
            grants.flatMap((g, i) => {
              const rotate = store.rotateRefreshToken((tokens[i] as RefreshTokenRecord).hash, opts(now, successors[i] as string));
              const revoke = store.revokeGrants({ grantId: g.id }, { at: now, reason: 'race', entryExpiresAt: now + 600 });
              return round % 2 ? [revoke, rotate] : [rotate, revoke];
            }),
          );
          for (const [i, g] of grants.entries()) {
            assert.notEqual((await store.getGrant(g.id))?.revokedAt, null);
            for (const hash of [(tokens[i] as RefreshTokenRecord).hash, successors[i] as string]) {
              const t = await store.getRefreshToken(hash);
              if (t !== undefined)
                assert.notEqual(t.revokedAt, null, `round ${round}: a refresh token under a revoked grant is not revoked`);
            }
          }
        }
      });
    });

    describe('authorization codes', () => {
      const grantFor = (now: number, overrides: Partial<NewGrant> = {}) =>
        newGrant({ kind: 'authorization_code', subject: 'alice@example.com', expiresAt: now + 86_400, ...overrides }, now);
      const redeem = (hash: string, now: number, g: NewGrant, clientId = 'agent', withRefresh = true) =>
        store.redeemAuthorizationCode(hash, {
          clientId,
          loginScope: LOGIN_SCOPE,
          grant: g,
          refreshToken: withRefresh ? refresh(g.id, { clientId }, now) : null,
          now,
          entryExpiresAt: now + 600,
        });

      it('stores a code by hash and redeems it once into a root grant with its refresh token', async () => {
        const now = clock.now();
        const c = code({ subject: uid('person') }, now);
        await store.createAuthorizationCode(c);
        assert.deepEqual(await store.getAuthorizationCode(c.hash), c);
        await assert.rejects(store.createAuthorizationCode(c), conflict('authorization_code_exists'));
        const g = grantFor(now);
        // A public client's refresh token, bound to its DPoP key (RFC 9449 §5).
        const rt = refresh(g.id, { jkt: 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs' }, now);
        const r = await store.redeemAuthorizationCode(c.hash, {
          clientId: 'agent',
          loginScope: LOGIN_SCOPE,
          grant: g,
          refreshToken: rt,
          now: now + 1,
          entryExpiresAt: now + 600,
        });
        assert.equal(r.status, 'redeemed');
        if (r.status !== 'redeemed') return;
        assert.equal(r.grant.id, g.id);
        assert.equal(r.grant.rootId, g.id);
        assert.equal(r.grant.depth, 0);
        assert.equal(r.grant.kind, 'authorization_code');
        assert.deepEqual(await store.getGrant(g.id), r.grant);
        assert.equal((await store.getRefreshToken(rt.hash))?.grantId, g.id);
        assert.equal((await store.getRefreshToken(rt.hash))?.jkt, rt.jkt);
        const after = await store.getAuthorizationCode(c.hash);
        assert.equal(after?.consumedAt, now + 1);
        assert.equal(after?.grantId, g.id);
      });

      it('keeps the DPoP key a code is bound to (dpop_jkt, RFC 9449 §10) through its redemption', async () => {
        const now = clock.now();
        const bound = code({ jkt: 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs' }, now);
        await store.createAuthorizationCode(bound);
        assert.deepEqual(await store.getAuthorizationCode(bound.hash), bound);
        const unbound = code({}, now);
        await store.createAuthorizationCode(unbound);
        assert.equal((await store.getAuthorizationCode(unbound.hash))?.jkt, null);
        assert.equal((await redeem(bound.hash, now + 1, grantFor(now))).status, 'redeemed');
        const after = await store.getAuthorizationCode(bound.hash);
        assert.equal(after?.jkt, bound.jkt);
        assert.equal(after?.consumedAt, now + 1);
      });

      it('treats a redeemed code presented again as a replay: the grant issued from it and its subtree are revoked', async () => {
        const now = clock.now();
        const c = code({ subject: uid('person') }, now);
        await store.createAuthorizationCode(c);
        const g = grantFor(now);
        const rt = refresh(g.id, {}, now);
        await store.redeemAuthorizationCode(c.hash, {
          clientId: 'agent',
          loginScope: LOGIN_SCOPE,
          grant: g,
          refreshToken: rt,
          now,
          entryExpiresAt: now + 600,
        });
        const child = await created(store, newGrant({ parentId: g.id }, now), now);
        const seq0 = (await store.versions()).revocations;
        const again = await redeem(c.hash, now + 2, grantFor(now));
        assert.equal(again.status, 'reused');
        if (again.status !== 'reused') return;
        assert.equal(again.grantId, g.id);
        assert.deepEqual([...again.revokedGrantIds].sort(), [g.id, child.id].sort());
        assert.equal((await store.getGrant(g.id))?.revokedReason, 'authorization_code_reused');
        assert.notEqual((await store.getRefreshToken(rt.hash))?.revokedAt, null);
        assert.equal((await store.revocationsSince(seq0, now)).length, 2);
      });

      it('refuses unknown, expired and other-client codes, writing nothing', async () => {
        const now = clock.now();
        assert.equal((await redeem('unknown', now, grantFor(now))).status, 'invalid');
        const expired = code({ expiresAt: now + 60 }, now);
        await store.createAuthorizationCode(expired);
        const g1 = grantFor(now);
        assert.equal((await redeem(expired.hash, now + 60, g1)).status, 'invalid');
        assert.equal(await store.getGrant(g1.id), undefined);
        const mine = code({}, now);
        await store.createAuthorizationCode(mine);
        const g2 = grantFor(now, { clientId: 'x' });
        assert.equal((await redeem(mine.hash, now, g2, 'x')).status, 'invalid');
        assert.equal(await store.getGrant(g2.id), undefined);
        assert.equal((await store.getAuthorizationCode(mine.hash))?.consumedAt, null);
      });

      it('refuses a code of a disabled client without consuming it', async () => {
        const now = clock.now();
        const client = clientRecord({ disabled: true });
        await store.createClient(client);
        const c = code({ clientId: client.id }, now);
        await store.createAuthorizationCode(c);
        const g = grantFor(now, { clientId: client.id });
        assert.equal((await redeem(c.hash, now, g, client.id)).status, 'client_inactive');
        assert.equal(await store.getGrant(g.id), undefined);
        assert.equal((await store.getAuthorizationCode(c.hash))?.consumedAt, null);
      });

      it('revoking a subject (per issuer when given) or a client deletes its codes not yet redeemed: redeemed after, each is invalid and begins no tree', async () => {
        const now = clock.now();
        const subject = uid('person');
        const mine = code({ subject }, now);
        const elsewhere = code({ subject, issuer: 'https://elsewhere.test' }, now);
        const redeemed = code({ subject }, now);
        for (const c of [mine, elsewhere, redeemed]) await store.createAuthorizationCode(c);
        const g0 = grantFor(now, { subject });
        assert.equal((await redeem(redeemed.hash, now, g0)).status, 'redeemed');
        await store.revokeGrants({ subject, issuer: mine.issuer }, { at: now, reason: 'offboarded', entryExpiresAt: now + 600 });
        const g1 = grantFor(now, { subject });
        assert.equal((await redeem(mine.hash, now + 1, g1)).status, 'invalid');
        assert.equal(await store.getGrant(g1.id), undefined);
        assert.ok(await store.getAuthorizationCode(elsewhere.hash), 'another issuer’s person of the same name keeps theirs');
        assert.equal((await store.getAuthorizationCode(redeemed.hash))?.grantId, g0.id, 'a redeemed code stays for its replay detection');
        await store.revokeGrants({ subject }, { at: now, reason: 'offboarded', entryExpiresAt: now + 600 });
        assert.equal(await store.getAuthorizationCode(elsewhere.hash), undefined);

        const client = clientRecord({}, now);
        await store.createClient(client);
        const theirs = code({ clientId: client.id }, now);
        const others = code({}, now);
        for (const c of [theirs, others]) await store.createAuthorizationCode(c);
        await store.revokeGrants({ clientId: client.id }, { at: now, reason: 'compromised', entryExpiresAt: now + 600 });
        const g2 = grantFor(now, { clientId: client.id });
        assert.equal((await redeem(theirs.hash, now + 1, g2, client.id)).status, 'invalid');
        assert.equal(await store.getGrant(g2.id), undefined);
        assert.ok(await store.getAuthorizationCode(others.hash), 'another client’s code stays');
      });

      it('a redemption racing a subject revocation: its grant is revoked with the others, or the code is refused', async () => {
        const now = clock.now();
        for (let round = 0; round < 5; round++) {
          const subject = uid('person');
          const c = code({ subject }, now);
          await store.createAuthorizationCode(c);
          const g = grantFor(now, { subject });
          const [r] = await Promise.all([
            redeem(c.hash, now, g),
            store.revokeGrants({ subject }, { at: now, reason: 'offboarded', entryExpiresAt: now + 600 }),
          ]);
          const grant = await store.getGrant(g.id);
          if (r.status === 'redeemed') assert.notEqual(grant?.revokedAt ?? null, null, 'redeemed first: revoked with the subject');
          else assert.equal(grant, undefined, 'refused: no grant');
        }
      });

      describe('a subject revocation by another process, not yet read here', () => {
        const loginEntry = (subject: string, at: number, issuer = LOGIN_SCOPE) => ({
          kind: 'subject' as const,
          value: subject,
          issuer,
          at,
          expiresAt: at + 86_400,
        });

        it('a code approved after it in a login session it ended begins no grant: refused inside the redemption (subject_revoked), writing nothing', async () => {
          const t = clock.now();
          const subject = uid('person');
          // The CLI revokes the subject at t: its codes are deleted, its sessions' entry appended.
          await store.revokeGrants({ subject }, { at: t, reason: 'cli', entryExpiresAt: t + 600, alsoLog: () => [loginEntry(subject, t)] });
          // An instance that has not read the entry approves in the person's session afterwards.
          for (const since of [t - 100, t]) {
            const c = code({ subject, createdAt: t + 1, approvalSince: since }, t + 1);
            await store.createAuthorizationCode(c);
            const g = grantFor(t + 1, { subject });
            assert.equal((await redeem(c.hash, t + 2, g)).status, 'subject_revoked', `session from ${since - t}`);
            assert.equal(await store.getGrant(g.id), undefined, 'no grant');
            assert.equal((await store.getAuthorizationCode(c.hash))?.consumedAt, null, 'nothing written');
          }
          // A code stored before approvalSince was kept: dated by its creation.
          const legacy = code({ subject, createdAt: t, approvalSince: null }, t);
          await store.createAuthorizationCode(legacy);
          assert.equal((await redeem(legacy.hash, t + 1, grantFor(t, { subject }))).status, 'subject_revoked');
          // Signed in again after the revocation: a new session, which it does not cover.
          const fresh = code({ subject, createdAt: t + 1, approvalSince: t + 1 }, t + 1);
          await store.createAuthorizationCode(fresh);
          assert.equal((await redeem(fresh.hash, t + 2, grantFor(t + 1, { subject }))).status, 'redeemed');
        });

        it('holds only the subject’s login sessions under the scope given: another subject, or the subject’s tokens at an issuer, are not', async () => {
          const t = clock.now();
          const subject = uid('person');
          await store.appendRevocations([
            loginEntry(subject, t, 'https://issuer.test'),
            loginEntry(subject, t, 'https://other.test#login-sessions'),
          ]);
          const mine = code({ subject, approvalSince: t - 100 }, t);
          const someone = code({ subject: uid('bob'), approvalSince: t - 100 }, t);
          for (const c of [mine, someone]) await store.createAuthorizationCode(c);
          assert.equal((await redeem(mine.hash, t, grantFor(t, { subject }))).status, 'redeemed');
          await store.appendRevocations([loginEntry(subject, t)]);
          assert.equal((await redeem(someone.hash, t, grantFor(t, { subject: someone.subject }))).status, 'redeemed');
        });

        it('a redemption racing it: its grant is revoked with the others, or the code is refused', async () => {
          const t = clock.now();
          for (let round = 0; round < 5; round++) {
            const subject = uid('person');
            const c = code({ subject, approvalSince: t - 100 }, t);
            await store.createAuthorizationCode(c);
            const g = grantFor(t, { subject });
            const [r] = await Promise.all([
              redeem(c.hash, t, g),
              store.revokeGrants({ subject }, { at: t, reason: 'cli', entryExpiresAt: t + 600, alsoLog: () => [loginEntry(subject, t)] }),
            ]);
            const grant = await store.getGrant(g.id);
            if (r.status === 'redeemed') assert.notEqual(grant?.revokedAt ?? null, null, 'redeemed first: revoked with the subject');
            else assert.equal(grant, undefined, 'refused: no grant');
          }
        });
      });

      it('lets exactly one of many concurrent redemptions of one code win', async () => {
        const now = clock.now();
        const c = code({ subject: uid('person') }, now);
        await store.createAuthorizationCode(c);
        const results = await Promise.all(Array.from({ length: 8 }, () => redeem(c.hash, now, grantFor(now))));
        assert.equal(results.filter((r) => r.status === 'redeemed').length, 1);
        assert.equal(results.filter((r) => r.status === 'reused').length, 7);
      });

      it('prunes codes an hour past their expiry, not before', async () => {
        const now = clock.now();
        const c = code({ expiresAt: now + 60 }, now);
        await store.createAuthorizationCode(c);
        await store.prune(now + 60 + CODE_RETENTION - 1);
        assert.ok(await store.getAuthorizationCode(c.hash));
        await store.prune(now + 60 + CODE_RETENTION);
        assert.equal(await store.getAuthorizationCode(c.hash), undefined);
      });
    });

    describe('remembered consents', () => {
      const revoke = (selector: Parameters<Store['revokeGrants']>[0], now: number) =>
        store.revokeGrants(selector, { at: now, reason: 'test', entryExpiresAt: now + 600 });
      const rootFor = (c: RememberedConsentRecord, now: number, kind: NewGrant['kind'] = 'authorization_code') =>
        created(store, newGrant({ kind, subject: c.subject, clientId: c.clientId }, now), now);

      it('stores one consent per subject and client, replaced by a new approval, until it expires', async () => {
        const now = clock.now();
        const c = consent({}, now);
        await store.rememberConsent(c);
        assert.deepEqual(await store.getRememberedConsent(c.subject, 'agent', now), c);
        assert.equal(await store.getRememberedConsent(c.subject, 'x', now), undefined, 'another client');
        assert.equal(await store.getRememberedConsent(uid('person'), 'agent', now), undefined, 'another person');
        const wider = {
          ...c,
          identitySource: 'source-2',
          scopes: ['api:read'],
          scopesDigest: 'scopes-digest-2',
          audiences: [],
          redirectUri: 'http://127.0.0.1/cb',
          approvalHash: 'h2',
          expiresAt: now + 10,
        };
        await store.rememberConsent(wider);
        assert.deepEqual(await store.getRememberedConsent(c.subject, 'agent', now), wider);
        assert.deepEqual(await store.getRememberedConsent(c.subject, 'agent', now + 9), wider);
        assert.equal(await store.getRememberedConsent(c.subject, 'agent', now + 10), undefined, 'expired at expiresAt');
      });

      it('prunes expired consents, not live ones', async () => {
        const now = clock.now();
        const old = consent({ expiresAt: now + 10 }, now);
        const live = consent({ expiresAt: now + 100 }, now);
        await store.rememberConsent(old);
        await store.rememberConsent(live);
        await store.prune(now + 10);
        // Still not returned, and gone: a clock turned back does not bring it back.
        assert.equal(await store.getRememberedConsent(old.subject, 'agent', now), undefined);
        assert.deepEqual(await store.getRememberedConsent(live.subject, 'agent', now), live);
      });

      it('revoking a subject forgets every consent of that subject, grants or none (per issuer when given)', async () => {
        const now = clock.now();
        const a = consent({}, now);
        const b = consent({ subject: a.subject, clientId: 'x' }, now);
        const other = consent({}, now);
        for (const c of [a, b, other]) await store.rememberConsent(c);
        await revoke({ subject: a.subject, issuer: 'https://elsewhere.test' }, now);
        assert.ok(await store.getRememberedConsent(a.subject, 'agent', now), 'another issuer’s subject of the same name');
        await revoke({ subject: a.subject }, now);
        assert.equal(await store.getRememberedConsent(a.subject, 'agent', now), undefined);
        assert.equal(await store.getRememberedConsent(a.subject, 'x', now), undefined);
        assert.ok(await store.getRememberedConsent(other.subject, 'agent', now), 'another person’s consent stays');
        const c = consent({}, now);
        await store.rememberConsent(c);
        await revoke({ subject: c.subject, issuer: c.issuer }, now);
        assert.equal(await store.getRememberedConsent(c.subject, 'agent', now), undefined);
      });

      it('revoking a client, or deleting it, forgets every consent given to it', async () => {
        const now = clock.now();
        const client = clientRecord({}, now);
        await store.createClient(client);
        const a = consent({ clientId: client.id }, now);
        const elsewhere = consent({ subject: a.subject }, now);
        await store.rememberConsent(a);
        await store.rememberConsent(elsewhere);
        await revoke({ clientId: client.id }, now);
        assert.equal(await store.getRememberedConsent(a.subject, client.id, now), undefined);
        assert.ok(await store.getRememberedConsent(a.subject, 'agent', now), 'the person’s consent to another client stays');
        const gone = clientRecord({}, now);
        await store.createClient(gone);
        const b = consent({ clientId: gone.id }, now);
        await store.rememberConsent(b);
        await store.deleteClient(gone.id);
        assert.equal(await store.getRememberedConsent(b.subject, gone.id, now), undefined);
      });

      it('revoking a root authorization_code grant forgets its person’s consent to its client; a child or another kind does not', async () => {
        const now = clock.now();
        const c = consent({}, now);
        await store.rememberConsent(c);
        const root = await rootFor(c, now);
        const child = await created(store, newGrant({ parentId: root.id, subject: c.subject }, now), now);
        await revoke({ grantId: child.id }, now);
        assert.ok(await store.getRememberedConsent(c.subject, 'agent', now), 'a derived grant revoked: the approval stands');
        const minted = await rootFor(c, now, 'mint');
        await revoke({ grantId: minted.id }, now);
        assert.ok(await store.getRememberedConsent(c.subject, 'agent', now), 'not a grant from the consent page');
        const sameClientOtherPerson = consent({}, now);
        await store.rememberConsent(sameClientOtherPerson);
        await revoke({ grantId: root.id }, now);
        assert.equal(await store.getRememberedConsent(c.subject, 'agent', now), undefined);
        assert.ok(await store.getRememberedConsent(sameClientOtherPerson.subject, 'agent', now));
      });

      it('a replayed code’s cascade forgets the consent too', async () => {
        const now = clock.now();
        const c = consent({}, now);
        await store.rememberConsent(c);
        const k = code({ subject: c.subject }, now);
        await store.createAuthorizationCode(k);
        const g = newGrant({ kind: 'authorization_code', subject: c.subject }, now);
        const opts = { clientId: 'agent', loginScope: LOGIN_SCOPE, refreshToken: null, now, entryExpiresAt: now + 600 };
        assert.equal((await store.redeemAuthorizationCode(k.hash, { ...opts, grant: g })).status, 'redeemed');
        assert.ok(await store.getRememberedConsent(c.subject, 'agent', now));
        assert.equal((await store.redeemAuthorizationCode(k.hash, { ...opts, grant: newGrant({}, now) })).status, 'reused');
        assert.equal(await store.getRememberedConsent(c.subject, 'agent', now), undefined);
      });
    });

    describe('revocation log', () => {
      it('appends entries with increasing sequence numbers and reads them back in order', async () => {
        const now = clock.now();
        const seq0 = (await store.versions()).revocations;
        await store.appendRevocations([
          { kind: 'token', value: 'jti-1', issuer: null, at: now, expiresAt: now + 60 },
          { kind: 'subject', value: 'mallory', issuer: 'https://idp.test', at: now, expiresAt: now + 600 },
          { kind: 'client', value: 'bad-client', issuer: 'https://issuer.test', at: now, expiresAt: now + 600 },
        ]);
        const entries = await store.revocationsSince(seq0, now);
        assert.deepEqual(
          entries.map((e) => e.kind),
          ['token', 'subject', 'client'],
        );
        assert.ok(entries.every((e, i) => i === 0 || e.seq > (entries[i - 1]?.seq ?? 0)));
        assert.equal(entries[1]?.issuer, 'https://idp.test');
        assert.equal((await store.versions()).revocations, entries.at(-1)?.seq);
        assert.deepEqual(await store.revocationsSince(entries.at(-1)?.seq ?? 0, now), []);
        assert.equal((await store.revocationsSince(seq0, now, 1)).length, 1);
      });

      it('finds a revoked token by its jti, and no token by a subject or client entry of the same value', async () => {
        const now = clock.now();
        const [jti, other, subject, client] = [uid('jti'), uid('jti'), uid('jti'), uid('jti')];
        assert.equal(await store.tokenRevoked(jti), false);
        await store.appendRevocations([
          { kind: 'token', value: jti, issuer: null, at: now, expiresAt: now + 60 },
          { kind: 'subject', value: subject, issuer: 'https://issuer.test', at: now, expiresAt: now + 600 },
          { kind: 'client', value: client, issuer: 'https://issuer.test', at: now, expiresAt: now + 600 },
        ]);
        assert.equal(await store.tokenRevoked(jti), true);
        assert.equal(await store.tokenRevoked(other), false);
        assert.equal(await store.tokenRevoked(subject), false);
        assert.equal(await store.tokenRevoked(client), false);
      });

      it('appends a token entry under a scope (a login session’s sign-out) once: appended again, twice in one call or by many at once, it adds nothing, moves no sequence number, and is pruned as any entry', async () => {
        const now = clock.now();
        const [session, other] = [uid('session'), uid('session')];
        const ended = (value: string, expiresAt = now + 600) => ({
          kind: 'token' as const,
          value,
          issuer: LOGIN_SCOPE,
          at: now,
          expiresAt,
        });
        const seq0 = (await store.versions()).revocations;
        await store.appendRevocations([ended(session)]);
        const seq1 = (await store.versions()).revocations;
        await store.appendRevocations([ended(session)]);
        await store.appendRevocations([ended(session, now + 900), ended(other), ended(other)]);
        await Promise.all(Array.from({ length: 10 }, () => store.appendRevocations([ended(session)])));
        const entries = (await store.revocationsSince(seq0, now)).filter((e) => e.value === session || e.value === other);
        assert.deepEqual(
          entries.map((e) => [e.value, e.issuer, e.expiresAt]),
          [
            [session, LOGIN_SCOPE, now + 600],
            [other, LOGIN_SCOPE, now + 600],
          ],
          'one entry each, the first appended',
        );
        // Nothing appended, nothing numbered: the counter other processes read stays at the log’s last entry.
        assert.equal(entries[0]?.seq, seq1);
        assert.equal((await store.versions()).revocations, entries[1]?.seq);
        await store.appendRevocations([ended(session), ended(other)]);
        assert.equal((await store.versions()).revocations, entries[1]?.seq, 'an append of nothing new moves nothing');
        // The same value under another scope, or as an access token’s jti (no scope), is another entry.
        await store.appendRevocations([
          { ...ended(session), issuer: 'https://other.test#login-sessions' },
          { ...ended(session), issuer: null },
        ]);
        assert.equal((await store.revocationsSince(seq0, now)).filter((e) => e.value === session).length, 3);
        // Pruned once expired, as every entry; after that it is appended anew.
        const brief = uid('session');
        await store.appendRevocations([ended(brief, now + 1), ended(brief, now + 1)]);
        assert.equal((await store.revocationsSince(seq0, now)).filter((e) => e.value === brief).length, 1);
        await store.prune(now + 1);
        assert.equal((await store.revocationsSince(seq0, now)).filter((e) => e.value === brief).length, 0, 'pruned');
        assert.equal(await store.tokenRevoked(brief), false);
        await store.appendRevocations([ended(brief, now + 1200)]);
        assert.equal((await store.revocationsSince(seq0, now)).filter((e) => e.value === brief).length, 1);
      });

      it('attack: of sign-outs of one login session racing (many calls at once, as instances sharing the store make), exactly one is told it appended the entry; every other, and any later one, is told it appended nothing', async () => {
        const now = clock.now();
        const session = uid('session');
        const ended = { kind: 'token' as const, value: session, issuer: LOGIN_SCOPE, at: now, expiresAt: now + 600 };
        const appended = await Promise.all(Array.from({ length: 12 }, () => store.appendRevocations([ended])));
        assert.deepEqual(
          appended.toSorted((x, y) => y - x),
          [1, ...Array.from({ length: 11 }, () => 0)],
          'one winner',
        );
        assert.equal(await store.appendRevocations([ended]), 0, 'signed out again: nothing appended');
        // Counted per entry: a duplicate within one call, or one already logged, is not counted; the
        // same value as an access token's jti (no scope) is another entry.
        const other = uid('session');
        assert.equal(
          await store.appendRevocations([ended, { ...ended, value: other }, { ...ended, value: other }, { ...ended, issuer: null }]),
          2,
        );
        assert.equal(await store.appendRevocations([]), 0);
      });

      it('attack: of revocations of one access token racing (its jti entry appended by many calls at once, directly and by revokeGrants with exchangedFrom, as instances sharing the store make), exactly one is told it appended the entry, and the log holds it once (each entry is kept in every instance’s memory until the token expires)', async () => {
        const now = clock.now();
        const seq0 = (await store.versions()).revocations;
        const jti = uid('jti');
        const entry = { kind: 'token' as const, value: jti, issuer: null, at: now, expiresAt: now + 600 };
        const told: number[] = [];
        const opts = {
          at: now,
          reason: 'race',
          entryExpiresAt: now + 600,
          alsoLog: () => [entry],
          alsoLogged: (n: number) => {
            told.push(n);
          },
        };
        const direct = await Promise.all([
          ...Array.from({ length: 6 }, () => store.revokeGrants({ exchangedFrom: jti, tokenGrantId: uid('g') }, opts).then(() => -1)),
          ...Array.from({ length: 6 }, () => store.appendRevocations([entry])),
        ]);
        const appended = [...told, ...direct.filter((n) => n >= 0)];
        assert.equal(appended.length, 12, 'every revokeGrants call was told once');
        assert.deepEqual(
          appended.toSorted((x, y) => y - x),
          [1, ...Array.from({ length: 11 }, () => 0)],
          'one winner',
        );
        assert.equal((await store.revocationsSince(seq0, now)).filter((e) => e.value === jti).length, 1, 'one entry');
        assert.equal(await store.tokenRevoked(jti), true);
        assert.equal(await store.appendRevocations([entry, entry]), 0, 'revoked again: nothing appended');
      });

      it('attack: of revocations of one grant racing (many calls at once, by its id and by its subject and client, as instances sharing the store make), each grant of the tree is reported newly revoked by exactly one call', async () => {
        const now = clock.now();
        const client = clientRecord({ id: uid('racing') });
        await store.createClient(client);
        const who = { subject: uid('person'), clientId: client.id };
        const root = await created(store, newGrant(who, now), now);
        const child = await created(store, newGrant({ ...who, parentId: root.id }, now), now);
        const opts = { at: now, reason: 'race', entryExpiresAt: now + 600 };
        const calls = await Promise.all([
          ...Array.from({ length: 6 }, () => store.revokeGrants({ grantId: root.id }, opts)),
          store.revokeGrants({ subject: root.subject }, opts),
          store.revokeGrants({ clientId: root.clientId }, opts),
        ]);
        const reported = calls.flatMap((r) => r.map((g) => g.id)).filter((id) => id === root.id || id === child.id);
        assert.deepEqual(reported.toSorted(), [root.id, child.id].toSorted(), 'each grant reported once in all');
        assert.deepEqual(await store.revokeGrants({ grantId: root.id }, opts), [], 'revoked again: nothing reported');
      });
    });

    describe('replay cache', () => {
      it('accepts a key once until it expires', async () => {
        const now = clock.now();
        const key = uid('jti');
        assert.equal(await store.useOnce(key, now + 30, now), true);
        assert.equal(await store.useOnce(key, now + 30, now + 29), false);
        assert.equal(await store.useOnce(key, now + 90, now + 30), true);
        assert.equal(await store.useOnce(key, now + 90, now + 31), false);
      });

      it('lets exactly one of many concurrent uses of a key succeed', async () => {
        const now = clock.now();
        const key = uid('jti');
        const results = await Promise.all(Array.from({ length: 8 }, () => store.useOnce(key, now + 30, now)));
        assert.equal(results.filter(Boolean).length, 1);
      });
    });

    describe('A2A task owners', () => {
      const claim = async (...args: Parameters<Store['claimA2aTask']>) => {
        const r = await store.claimA2aTask(...args);
        return r === 'full' ? r : r.owner;
      };
      const ownerAt = async (...args: Parameters<Store['a2aTaskOwner']>) => (await store.a2aTaskOwner(...args))?.owner;

      it('answers the record with its expiry: the claimed one, or the other owner’s', async () => {
        const now = clock.now();
        const id = uid('task');
        assert.deepEqual(await store.claimA2aTask('agent', 'task', id, 'alice', now + 60, now), { owner: 'alice', expiresAt: now + 60 });
        assert.deepEqual(await store.claimA2aTask('agent', 'task', id, 'bob', now + 90, now), { owner: 'alice', expiresAt: now + 60 });
        assert.deepEqual(await store.a2aTaskOwner('agent', 'task', id, now), { owner: 'alice', expiresAt: now + 60 });
      });

      it('first claim wins: a second owner gets the first one back, and the record stays the first one’s', async () => {
        const now = clock.now();
        const id = uid('task');
        assert.equal(await ownerAt('agent', 'task', id, now), undefined);
        assert.equal(await claim('agent', 'task', id, 'alice', now + 60, now), 'alice');
        assert.equal(await claim('agent', 'task', id, 'bob', now + 600, now), 'alice');
        assert.equal(await ownerAt('agent', 'task', id, now + 59), 'alice');
        // Bob's claim did not lengthen Alice's record.
        assert.equal(await ownerAt('agent', 'task', id, now + 60), undefined);
      });

      it('keys by route and kind: the same id on another route, or a context of that id, is another record', async () => {
        const now = clock.now();
        const id = uid('task');
        assert.equal(await claim('agent', 'task', id, 'alice', now + 60, now), 'alice');
        assert.equal(await ownerAt('other', 'task', id, now), undefined);
        assert.equal(await ownerAt('agent', 'context', id, now), undefined);
        assert.equal(await claim('agent', 'context', id, 'bob', now + 60, now), 'bob');
        assert.equal(await ownerAt('agent', 'task', id, now), 'alice');
      });

      it('expiry: an expired record is unknown, and then anyone’s to claim', async () => {
        const now = clock.now();
        const id = uid('ctx');
        assert.equal(await claim('agent', 'context', id, 'alice', now + 10, now), 'alice');
        assert.equal(await ownerAt('agent', 'context', id, now + 9), 'alice');
        assert.equal(await ownerAt('agent', 'context', id, now + 10), undefined);
        assert.equal(await claim('agent', 'context', id, 'bob', now + 20, now + 10), 'bob');
        assert.equal(await ownerAt('agent', 'context', id, now + 19), 'bob');
      });

      it('renewal: the owner claiming again keeps it longer, never shorter', async () => {
        const now = clock.now();
        const id = uid('task');
        await store.claimA2aTask('agent', 'task', id, 'alice', now + 10, now);
        assert.equal(await claim('agent', 'task', id, 'alice', now + 100, now + 5), 'alice');
        assert.equal(await ownerAt('agent', 'task', id, now + 99), 'alice');
        assert.equal(await claim('agent', 'task', id, 'alice', now + 50, now + 20), 'alice');
        assert.equal(await ownerAt('agent', 'task', id, now + 99), 'alice');
        assert.equal(await ownerAt('agent', 'task', id, now + 100), undefined);
      });

      it('lets exactly one of many concurrent claimants own a new id', async () => {
        const now = clock.now();
        const id = uid('ctx');
        const owners = await Promise.all(Array.from({ length: 8 }, (_, i) => claim('agent', 'context', id, `p${i}`, now + 60, now)));
        assert.equal(new Set(owners).size, 1);
        assert.equal(await ownerAt('agent', 'context', id, now), owners[0]);
      });

      it('long, user-chosen ids and routes (NULs, any Unicode) are kept apart, each its own record', async () => {
        const now = clock.now();
        const long = `${'x'.repeat(4096)}\u0000é😀`;
        assert.equal(await claim('agent', 'context', long, 'alice', now + 60, now), 'alice');
        assert.equal(await ownerAt('agent', 'context', long, now), 'alice');
        assert.equal(await ownerAt('agent', 'context', long.slice(0, -1), now), undefined);
        assert.equal(await ownerAt('agent', 'context', `${'x'.repeat(4096)}`, now), undefined);
        // The parts of the key cannot be shifted into one another.
        assert.equal(await claim('a', 'task', 'gent', 'alice', now + 60, now), 'alice');
        assert.equal(await ownerAt('ag', 'task', 'ent', now), undefined);
      });

      it('refuses an owner longer than 256 characters (owners are digests), writing nothing', async () => {
        const now = clock.now();
        const id = uid('task');
        await assert.rejects(store.claimA2aTask('agent', 'task', id, 'o'.repeat(257), now + 60, now), RangeError);
        assert.equal(await ownerAt('agent', 'task', id, now), undefined);
      });

      it('limit: an owner’s new record past `limit` live ones on the route is refused (full), writing nothing; renewing one is not', async () => {
        const now = clock.now();
        const route = uid('route');
        const [a, b, c, d] = [uid('t'), uid('t'), uid('t'), uid('t')];
        assert.equal(await claim(route, 'task', a, 'alice', now + 10, now, 3), 'alice');
        assert.equal(await claim(route, 'context', b, 'alice', now + 100, now, 3), 'alice');
        assert.equal(await claim(route, 'task', c, 'alice', now + 100, now, 3), 'alice');
        assert.equal(await claim(route, 'task', d, 'alice', now + 100, now, 3), 'full');
        assert.equal(await ownerAt(route, 'task', d, now), undefined);
        // Her own live record is extended at the limit.
        assert.deepEqual(await store.claimA2aTask(route, 'task', c, 'alice', now + 200, now, 3), { owner: 'alice', expiresAt: now + 200 });
        // Another's live record is answered as it is (the id is not hers to count).
        const bobs = uid('t');
        assert.equal(await claim(route, 'task', bobs, 'bob', now + 100, now, 3), 'bob');
        assert.equal(await claim(route, 'task', bobs, 'alice', now + 100, now, 3), 'bob');
        // Other owners, other routes and calls without a limit are not held to it.
        assert.equal(await claim(uid('route'), 'task', d, 'alice', now + 100, now, 3), 'alice');
        assert.equal(await claim(route, 'task', uid('t'), 'bob', now + 100, now, 3), 'bob');
        // Expired records do not count: once `a` has expired, one more is hers (and `a` again is a new one).
        assert.equal(await claim(route, 'task', d, 'alice', now + 100, now + 10, 3), 'alice');
        assert.equal(await claim(route, 'task', a, 'alice', now + 100, now + 10, 3), 'full');
        assert.equal(await ownerAt(route, 'task', a, now + 10), undefined);
      });

      it('limit: of many concurrent claims of new ids by one owner, exactly `limit` win', async () => {
        const now = clock.now();
        const route = uid('route');
        const results = await Promise.all(Array.from({ length: 10 }, () => claim(route, 'context', uid('c'), 'alice', now + 60, now, 4)));
        assert.equal(results.filter((r) => r === 'alice').length, 4);
        assert.equal(results.filter((r) => r === 'full').length, 6);
      });

      it('release: the owner’s record is taken back (no longer counted against `limit`, anyone’s to claim); another owner’s is left', async () => {
        const now = clock.now();
        const route = uid('route');
        const [a, b] = [uid('t'), uid('t')];
        assert.equal(await claim(route, 'mcp_task_principal', a, 'alice', now + 100, now, 1), 'alice');
        // At her limit: a second claim is refused until the first is taken back (the gateway could not record its task).
        assert.equal(await claim(route, 'mcp_task_principal', b, 'alice', now + 100, now, 1), 'full');
        assert.equal(await store.releaseA2aTask(route, 'mcp_task_principal', a, 'alice'), true);
        assert.equal(await ownerAt(route, 'mcp_task_principal', a, now), undefined);
        assert.equal(await claim(route, 'mcp_task_principal', b, 'alice', now + 100, now, 1), 'alice');
        // Another owner’s record, another kind or route of the id, and none at all are left as they are.
        assert.equal(await store.releaseA2aTask(route, 'mcp_task_principal', b, 'bob'), false);
        assert.equal(await store.releaseA2aTask(route, 'mcp_task', b, 'alice'), false);
        assert.equal(await store.releaseA2aTask(uid('route'), 'mcp_task_principal', b, 'alice'), false);
        assert.equal(await store.releaseA2aTask(route, 'mcp_task_principal', a, 'alice'), false);
        assert.equal(await ownerAt(route, 'mcp_task_principal', b, now), 'alice');
        // Released, the id is anyone’s.
        assert.equal(await claim(route, 'mcp_task_principal', a, 'bob', now + 100, now, 1), 'bob');
      });

      it('prune drops expired records and keeps live ones', async () => {
        const now = clock.now();
        const gone = uid('task');
        const kept = uid('task');
        await store.claimA2aTask('agent', 'task', gone, 'alice', now + 10, now);
        await store.claimA2aTask('agent', 'task', kept, 'alice', now + 100, now);
        await store.prune(now + 10);
        assert.equal(await ownerAt('agent', 'task', kept, now + 10), 'alice');
        // Pruned, so a claim at a time before its old expiry finds it gone (unpruned, it would still be Alice's).
        assert.equal(await claim('agent', 'task', gone, 'bob', now + 20, now), 'bob');
      });
    });

    describe('audit events', () => {
      it('attack: a NUL or a lone surrogate in a caller-chosen field (client_id of a refused request, subject) neither refuses the batch (PostgreSQL text holds no NUL: the other events of the batch would be lost with it) nor escapes a query for it', async () => {
        const base = Date.now();
        const subject = `${uid('nul')}\u0000x\ud800`;
        const events = [
          event({ id: uuidv7(base), subject: uid('before'), client_id: 'c1', time: base }),
          event({ id: uuidv7(base + 1), subject, client_id: 'evil\u0000\udfff', request_id: 'r\u0000', time: base + 1 }),
        ].sort((a, b) => (a.id < b.id ? -1 : 1));
        await store.appendAudit(events);
        const stored = await store.queryAudit({ since: base, until: base + 1 });
        assert.deepEqual(
          stored.filter((e) => events.some((x) => x.id === e.id)),
          events,
        );
        // Looked up by what the event holds, it is found.
        assert.deepEqual(await store.queryAudit({ subject }), [events.find((e) => e.subject === subject)]);
      });

      it('appends and queries by subject, delegation, client, request, time and cursor, in id order', async () => {
        const subject = uid('dave');
        const base = Date.now();
        const events = [
          event({ id: uuidv7(base), subject, client_id: 'c1', delegation_id: 'g1', request_id: 'r1', time: base }),
          event({ id: uuidv7(base + 10), subject, client_id: 'c2', delegation_id: 'g2', time: base + 10, actor_chain: ['x', 'y'] }),
          event({ id: uuidv7(base + 20), subject, client_id: 'c1', delegation_id: 'g1', time: base + 20, detail: { k: 1 } }),
        ].sort((a, b) => (a.id < b.id ? -1 : 1));
        await store.appendAudit(events);
        await store.appendAudit([events[0] as AuditEvent]); // idempotent by id
        assert.deepEqual(await store.queryAudit({ subject }), events);
        assert.deepEqual(
          (await store.queryAudit({ subject, client_id: 'c1' })).map((e) => e.id),
          events.filter((e) => e.client_id === 'c1').map((e) => e.id),
        );
        assert.equal((await store.queryAudit({ subject, delegation_id: 'g2' })).length, 1);
        assert.equal((await store.queryAudit({ subject, request_id: 'r1' })).length, 1);
        assert.equal((await store.queryAudit({ subject, since: base + 10 })).length, 2);
        assert.deepEqual(
          (await store.queryAudit({ subject, after_id: events[0]?.id })).map((e) => e.id),
          events.slice(1).map((e) => e.id),
        );
        assert.equal((await store.queryAudit({ subject, limit: 1 })).length, 1);
      });

      it('queries by jti, by token hash and by kinds (tessera trace), combined with the other filters', async () => {
        const subject = uid('frank');
        const jti = uid('jti');
        const hash = uid('th').slice(-16);
        const base = Date.now();
        const events = [
          event({ id: uuidv7(base), subject, kind: 'token.issued', jti, delegation_id: 'g9', time: base }),
          event({ id: uuidv7(base + 1), subject, kind: 'gateway.request', jti, token_hash: hash, request_id: 'r9', time: base + 1 }),
          event({ id: uuidv7(base + 2), subject, kind: 'gateway.request', token_hash: hash, time: base + 2 }),
          event({ id: uuidv7(base + 3), subject, kind: 'gateway.request', jti: uid('jti'), time: base + 3 }),
        ];
        await store.appendAudit(events);
        const ids = async (q: Omit<AuditQuery, 'subject'>) => (await store.queryAudit({ subject, ...q })).map((e) => e.id);
        assert.deepEqual(await ids({ jti }), [events[0]?.id, events[1]?.id]);
        assert.deepEqual(await ids({ token_hash: hash }), [events[1]?.id, events[2]?.id]);
        assert.deepEqual(await ids({ jti, token_hash: hash }), [events[1]?.id]);
        assert.deepEqual(await ids({ jti, request_id: 'r9' }), [events[1]?.id]);
        assert.deepEqual(await ids({ jti: 'no-such-jti' }), []);
        assert.deepEqual(await ids({ token_hash: 'no-such-hash' }), []);
        assert.deepEqual(await ids({ jti, kinds: ['gateway.request'] }), [events[1]?.id]);
        assert.deepEqual(
          await ids({ kinds: ['token.issued', 'gateway.request'] }),
          events.map((e) => e.id),
        );
        assert.deepEqual(await ids({ kinds: ['grant.revoked'] }), []);
        assert.deepEqual(await ids({ kinds: [] }), [], 'no kind: no event');
        // The event read back is the event written, field for field and in its order (the
        // indexed fields come back from their columns, the rest from the event column).
        assert.deepEqual((await store.queryAudit({ subject, jti }))[1], events[1]);
      });

      it('reads back every field of an event, in the order AuditEvent declares them', async () => {
        const subject = uid('gina');
        const full: AuditEvent = {
          id: uuidv7(),
          time: Date.now(),
          kind: 'gateway.request',
          decision: 'deny',
          reason: 'scope_insufficient',
          request_id: uid('req'),
          route: 'api',
          method: 'POST',
          path: '/items?q=',
          tool: 'search',
          issuer: 'https://issuer.test',
          subject,
          client_id: 'agent',
          actor_chain: ['agent', 'broker'],
          delegation_id: uid('g'),
          jti: uid('jti'),
          token_hash: uid('th').slice(-16),
          scopes_required: ['api:write'],
          scopes_granted: ['api:read'],
          upstream_status: 403,
          bytes_in: 12,
          bytes_out: 0,
          latency_ms: 1.5,
          remote_addr: '127.0.0.1',
          detail: { note: 'x', n: 1, ok: true, list: ['a'] },
        };
        const sparse = event({ subject, id: uuidv7(full.time + 1), time: full.time + 1 });
        await store.appendAudit([full, sparse]);
        const back = await store.queryAudit({ subject });
        assert.deepEqual(back, [full, sparse]);
        assert.equal(JSON.stringify(back[0]), JSON.stringify(full));
        assert.deepEqual(
          Object.keys(back[1] as AuditEvent),
          ['id', 'time', 'kind', 'decision', 'reason', 'subject'],
          'absent fields stay absent',
        );
      });

      it('prunes events older than a cutoff, oldest first, at most limit per call (bounded batches)', async () => {
        const subject = uid('old');
        // Long ago, so no other test's event (written at about now) is older than the cutoffs.
        const base = Date.UTC(2001, 0, 1);
        // Written by hand: uuidv7() never goes back in time within a process.
        const idAt = (ms: number) => `${idFloor(ms)}-7000-8000-${randomBytes(6).toString('hex')}`;
        const events = [0, 1_000, 2_000, 3_000, 4_000].map((dt) => event({ id: idAt(base + dt), subject, time: base + dt }));
        const recent = event({ subject });
        await store.appendAudit([...events, recent]);
        assert.equal(await store.pruneAudit(base + 3_000, 2), 2);
        assert.deepEqual(
          (await store.queryAudit({ subject })).map((e) => e.time - base),
          [2_000, 3_000, 4_000, recent.time - base],
          'the two oldest',
        );
        assert.equal(await store.pruneAudit(base + 3_000, 2), 1);
        assert.equal(await store.pruneAudit(base + 3_000, 2), 0, 'nothing left before the cutoff');
        assert.deepEqual(
          (await store.queryAudit({ subject })).map((e) => e.id),
          [events[3]?.id, events[4]?.id, recent.id],
          'an event at the cutoff is kept',
        );
        assert.equal(await store.pruneAudit(base + 10_000, 1000), 2);
        assert.deepEqual(
          (await store.queryAudit({ subject })).map((e) => e.id),
          [recent.id],
        );
      });

      it('queries a closed time window: since and until, both inclusive', async () => {
        const subject = uid('erin');
        const base = Date.now() - 60_000;
        const events = [0, 1_000, 2_000, 3_000, 4_000].map((dt) => event({ id: uuidv7(base + dt), subject, time: base + dt }));
        await store.appendAudit(events);
        const times = async (q: { since?: number; until?: number }) =>
          (await store.queryAudit({ subject, ...q })).map((e) => e.time - base);
        assert.deepEqual(await times({ since: base + 1_000, until: base + 3_000 }), [1_000, 2_000, 3_000]);
        assert.deepEqual(await times({ until: base + 1_999 }), [0, 1_000]);
        assert.deepEqual(await times({ since: base + 2_000, until: base + 2_000 }), [2_000]);
        assert.deepEqual(await times({ since: base + 3_001, until: base + 3_999 }), []);
        assert.deepEqual(await times({ until: base - 1 }), []);
      });
    });

    describe('prune', () => {
      it('drops expired refresh tokens, replay and revocation entries, and old expired grants', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({ expiresAt: now + 10 }, now), now);
        const keep = await created(store, newGrant({ expiresAt: null }, now), now);
        const t = refresh(g.id, { expiresAt: now + 10 }, now);
        await store.createRefreshToken(t);
        const key = uid('jti');
        await store.useOnce(key, now + 10, now);
        await store.prune(now + 11, { grantsExpiredBefore: now + 11 });
        assert.equal(await store.getRefreshToken(t.hash), undefined);
        assert.equal(await store.getGrant(g.id), undefined);
        assert.ok(await store.getGrant(keep.id));
        assert.equal(await store.useOnce(key, now + 100, now + 11), true);
      });

      // RFC 9700 §4.14.2: a thief who used a stolen refresh token first keeps rotating it; the real
      // client's old (spent) token must still be known when it comes back, or the family lives on.
      const rotation = (now: number, nextHash: string, ttl: number) => ({
        clientId: 'agent',
        nextHash,
        nextExpiresAt: now + ttl,
        now,
        graceSeconds: 0,
        entryExpiresAt: now + 600,
      });

      it('stolen refresh token rotated on by a thief: the spent token outlives its own expiry until its grant expires, so its reuse still revokes the family', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({ expiresAt: now + 1000 }, now), now);
        const spent = refresh(g.id, { expiresAt: now + 10 }, now);
        await store.createRefreshToken(spent);
        // The thief rotates first, then again before each successor expires.
        const n1 = uid('rt');
        assert.equal((await store.rotateRefreshToken(spent.hash, rotation(now + 1, n1, 10))).status, 'rotated');
        const n2 = uid('rt');
        assert.equal((await store.rotateRefreshToken(n1, rotation(now + 9, n2, 10))).status, 'rotated');
        const n3 = uid('rt');
        assert.equal((await store.rotateRefreshToken(n2, rotation(now + 18, n3, 10))).status, 'rotated');
        await store.prune(now + 25);
        assert.ok(await store.getRefreshToken(spent.hash), 'a spent token is kept past its own expiry while its grant lives');
        assert.ok(await store.getRefreshToken(n1), 'every spent token of the family is kept');
        const reuse = await store.rotateRefreshToken(spent.hash, rotation(now + 25, uid('rt'), 10));
        assert.equal(reuse.status, 'reused');
        assert.equal((await store.getGrant(g.id))?.revokedReason, 'refresh_token_reused');
        assert.notEqual((await store.getRefreshToken(n3))?.revokedAt, null, 'the thief’s current token is revoked');
        await store.prune(now + 1000);
        for (const h of [spent.hash, n1, n2, n3]) assert.equal(await store.getRefreshToken(h), undefined, 'gone once the grant expired');
      });

      it('an expired never-rotated refresh token is pruned at its own expiry, and refused without revoking the family', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({ expiresAt: now + 1000 }, now), now);
        const t = refresh(g.id, { expiresAt: now + 10 }, now);
        await store.createRefreshToken(t);
        assert.equal((await store.rotateRefreshToken(t.hash, rotation(now + 10, uid('rt'), 10))).status, 'invalid');
        assert.equal((await store.getGrant(g.id))?.revokedAt, null);
        await store.prune(now + 10);
        assert.equal(await store.getRefreshToken(t.hash), undefined);
      });

      it('a grant without expiry: spent tokens are kept until the family’s last token expired plus the refresh lifetime, then pruned', async () => {
        const now = clock.now();
        const g = await created(store, newGrant({ expiresAt: null }, now), now);
        const spent = refresh(g.id, { expiresAt: now + 10 }, now);
        await store.createRefreshToken(spent);
        const n1 = uid('rt');
        assert.equal((await store.rotateRefreshToken(spent.hash, rotation(now + 1, n1, 10))).status, 'rotated');
        const n2 = uid('rt');
        assert.equal((await store.rotateRefreshToken(n1, rotation(now + 8, n2, 10))).status, 'rotated');
        // The family's last token (n2) expires at now + 18; its spent tokens are kept 10 s (the
        // refresh lifetime) beyond, the first one too although the thief rotated it long ago.
        await store.prune(now + 27);
        assert.ok(await store.getRefreshToken(spent.hash), 'first spent token kept while the family can be used');
        assert.equal(await store.getRefreshToken(n2), undefined, 'the expired, never-rotated token goes at its own expiry');
        assert.equal((await store.rotateRefreshToken(spent.hash, rotation(now + 27, uid('rt'), 10))).status, 'reused');
        await store.prune(now + 28);
        for (const h of [spent.hash, n1]) assert.equal(await store.getRefreshToken(h), undefined, 'bounded: gone after that');
      });
    });

    describe('prune in bounded batches', () => {
      // Two rows a batch, and a budget spent at once: each call deletes one batch, then stops.
      let small: Store;
      before(async () => {
        small = await makeStore({ pruneBatchSize: 2, pruneBudgetMillis: 0 });
        await small.createClient(clientRecord({ id: 'agent' }));
      });
      after(async () => {
        await small.close();
      });

      /** Call prune until it says it is done; the number of calls it took. */
      async function pruneAll(s: Store, now: number, grantsExpiredBefore: number): Promise<number> {
        for (let calls = 1; calls <= 100; calls++) if (await s.prune(now, { grantsExpiredBefore })) return calls;
        assert.fail('prune never finished');
      }

      it('deletes more expired rows than one batch across calls, at most a batch a call once its budget is spent, and keeps the live ones', async () => {
        const now = clock.now();
        const live = await created(small, newGrant({ expiresAt: now + 3600 }, now), now);
        const expired: GrantRecord[] = [];
        for (let i = 0; i < 5; i++) expired.push(await created(small, newGrant({ expiresAt: now + 10 }, now), now));
        const oldTokens: RefreshTokenRecord[] = [];
        for (let i = 0; i < 5; i++) {
          const t = refresh(live.id, { expiresAt: now + 10 }, now);
          await small.createRefreshToken(t);
          oldTokens.push(t);
        }
        const liveToken = refresh(live.id, { expiresAt: now + 3600 }, now);
        await small.createRefreshToken(liveToken);
        const oldKeys = [uid('jti'), uid('jti'), uid('jti')];
        for (const k of oldKeys) assert.equal(await small.useOnce(k, now + 10, now), true);
        const liveKey = uid('jti');
        assert.equal(await small.useOnce(liveKey, now + 3600, now), true);

        const left = async () =>
          (await Promise.all([...oldTokens.map((t) => small.getRefreshToken(t.hash)), ...expired.map((g) => small.getGrant(g.id))])).filter(
            (r) => r !== undefined,
          ).length;
        assert.equal(await small.prune(now + 11, { grantsExpiredBefore: now + 11 }), false, 'not done after one batch');
        const afterOne = await left();
        assert.ok(afterOne >= 10 - 2 && afterOne < 10, `one batch of at most 2 rows, then it stops (${10 - afterOne} deleted)`);
        const calls = await pruneAll(small, now + 11, now + 11);
        assert.ok(calls >= 3, `took ${calls} more calls`);
        assert.equal(await left(), 0, 'every expired row is gone');
        for (const k of oldKeys) assert.equal(await small.useOnce(k, now + 3600, now + 11), true, 'expired replay entry pruned');
        assert.equal(await small.useOnce(liveKey, now + 3600, now + 11), false, 'live replay entry kept');
        assert.ok(await small.getGrant(live.id), 'live grant kept');
        assert.ok(await small.getRefreshToken(liveToken.hash), 'live refresh token kept');
        assert.equal(await small.prune(now + 11, { grantsExpiredBefore: now + 11 }), true, 'nothing left: done in one call');
      });

      it('deletes expired grants children first, so a grant still stored never lacks its parent, across calls', async () => {
        const now = clock.now();
        const chains: GrantRecord[][] = [];
        for (let c = 0; c < 3; c++) {
          const chain = [await created(small, newGrant({ expiresAt: now + 10 }, now), now)];
          for (let d = 1; d < 4; d++) {
            const parent = chain[d - 1] as GrantRecord;
            chain.push(await created(small, newGrant({ parentId: parent.id, expiresAt: now + 10 }, now), now));
          }
          chains.push(chain);
        }
        const liveRoot = await created(small, newGrant({ expiresAt: now + 3600 }, now), now);
        const liveChild = await created(small, newGrant({ parentId: liveRoot.id, expiresAt: now + 3600 }, now), now);
        let done = false;
        for (let calls = 0; !done; calls++) {
          assert.ok(calls < 100, 'prune never finished');
          done = await small.prune(now + 11, { grantsExpiredBefore: now + 11 });
          for (const chain of chains) {
            for (const g of chain) {
              if (g.parentId === null || (await small.getGrant(g.id)) === undefined) continue;
              assert.ok(await small.getGrant(g.parentId), `grant ${g.id} is stored without its parent after ${calls + 1} calls`);
            }
          }
        }
        for (const g of chains.flat()) assert.equal(await small.getGrant(g.id), undefined, 'expired grant pruned');
        assert.ok(await small.getGrant(liveRoot.id), 'live grant kept');
        assert.ok(await small.getGrant(liveChild.id), 'live child kept');
      });
    });
  });
}
