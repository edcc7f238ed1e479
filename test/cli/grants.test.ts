/**
 * `tessera grants tree`'s line for one grant (the command itself runs in token-service-cli.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { grantLine } from '../../src/cli/commands/grants.ts';
import type { GrantRecord } from '../../src/store/contract.ts';

const grant = (act: GrantRecord['act'], actorGrantId: string | null = null): GrantRecord => ({
  id: 'g-2',
  parentId: 'g-1',
  rootId: 'g-1',
  depth: 1,
  kind: 'token_exchange',
  issuer: 'https://idp.test',
  subject: 'alice',
  clientId: 'agent-a',
  act,
  scopes: ['api:read'],
  audiences: ['https://api.test'],
  createdAt: 1_700_000_000,
  expiresAt: 4_000_000_000,
  revokedAt: null,
  revokedReason: null,
  subjectJti: 'jti-1',
  actorJti: null,
  actorGrantId,
});

describe('tessera grants tree: a grant line', () => {
  it('shows the actor, and the issuer of an actor of another issuer (an act with its own iss)', () => {
    assert.match(grantLine(grant({ sub: 'agent-a' }), 1_700_000_001), /^g-2 {2}token_exchange {2}alice → agent-a via agent-a /);
    assert.match(
      grantLine(grant({ sub: 'bot', iss: 'https://idp.test' }), 1_700_000_001),
      /^g-2 {2}token_exchange {2}alice → bot \(https:\/\/idp\.test\) via agent-a /,
    );
  });

  it('names the grant of the actor token it was exchanged with (revoking that grant revokes this one), and nothing without one', () => {
    assert.match(
      grantLine(grant({ sub: 'agent-a' }, 'g-agent'), 1_700_000_001),
      / aud=https:\/\/api\.test {2}actor_grant=g-agent {2}until /,
    );
    assert.doesNotMatch(grantLine(grant({ sub: 'agent-a' }), 1_700_000_001), /actor_grant/);
  });
});
