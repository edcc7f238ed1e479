/**
 * The MCP session table: bound to the principal that created it, bounded, expiring.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Principal } from '../../../src/core/verify/principal.ts';
import { McpSessions, ownerOf } from '../../../src/gateway/mcp/sessions.ts';

const principal = (subject: string, clientId = 'agent', issuer = 'https://issuer.test') =>
  ({ kind: 'jwt', issuer, subject, clientId, tokenHash: `h-${subject}` }) as unknown as Principal;

describe('MCP sessions', () => {
  it('binds a session to issuer, subject and client', () => {
    let now = 0;
    const s = new McpSessions(() => now);
    s.record('r', 'sid', principal('alice'), 1000, 10);
    assert.equal(s.check('r', 'sid', principal('alice'), 1000), 'ok');
    assert.equal(s.check('r', 'sid', principal('bob'), 1000), 'mcp_session_principal_mismatch');
    assert.equal(s.check('r', 'sid', principal('alice', 'other-agent'), 1000), 'mcp_session_principal_mismatch');
    assert.equal(s.check('r', 'sid', principal('alice', 'agent', 'https://evil.test'), 1000), 'mcp_session_principal_mismatch');
    assert.equal(s.check('other-route', 'sid', principal('alice'), 1000), 'mcp_session_unknown');
    assert.equal(s.check('r', 'never-created', principal('alice'), 1000), 'mcp_session_unknown');
    now = 999;
    assert.equal(s.check('r', 'sid', principal('alice'), 1000), 'ok');
  });

  it('an upstream cannot hand a bound session to another principal', () => {
    const s = new McpSessions(() => 0);
    s.record('r', 'sid', principal('alice'), 1000, 10);
    s.record('r', 'sid', principal('mallory'), 1000, 10);
    assert.equal(s.check('r', 'sid', principal('mallory'), 1000), 'mcp_session_principal_mismatch');
    assert.equal(s.check('r', 'sid', principal('alice'), 1000), 'ok');
  });

  it('forgets idle sessions, and the least recently used beyond the bound', () => {
    let now = 0;
    const s = new McpSessions(() => now);
    s.record('r', 'a', principal('alice'), 1000, 2);
    s.record('r', 'b', principal('alice'), 1000, 2);
    now = 900;
    assert.equal(s.check('r', 'a', principal('alice'), 1000), 'ok'); // a used: b is now the oldest
    s.record('r', 'c', principal('alice'), 1000, 2);
    assert.equal(s.size, 2);
    assert.equal(s.check('r', 'b', principal('alice'), 1000), 'mcp_session_unknown');
    now = 1899;
    assert.equal(s.check('r', 'a', principal('alice'), 1000), 'ok');
    now = 2899;
    assert.equal(s.check('r', 'c', principal('alice'), 1000), 'mcp_session_unknown');
    s.forget('r', 'a');
    assert.equal(s.check('r', 'a', principal('alice'), 1000), 'mcp_session_unknown');
  });

  it('owners of static tokens are the token id, never the token', () => {
    const p = { kind: 'static', issuer: 'static', staticTokenId: 'ci', tokenHash: 'abc' } as unknown as Principal;
    assert.equal(ownerOf(p), 'static\nci');
  });
});
