/**
 * MCP session ids signed for their principal: `S.<mac>`, checked without any table.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Principal } from '../../../src/core/verify/principal.ts';
import { signedHead } from '../../../src/gateway/mcp/forward.ts';
import { openSession, randomSessionKey, sessionKeyFromSecret, signSession } from '../../../src/gateway/mcp/sessions.ts';

const principal = (subject: string | undefined, clientId: string | undefined = 'agent', issuer = 'https://issuer.test') =>
  ({ kind: 'jwt', issuer, subject, clientId, tokenHash: `h-${subject}` }) as unknown as Principal;
const staticPrincipal = (id: string) => ({ kind: 'static', issuer: 'static', staticTokenId: id, tokenHash: 'h' }) as unknown as Principal;

const key = sessionKeyFromSecret('a-session-secret-of-at-least-32-characters');
const alice = principal('alice');
const SID = 'c0ffee00-1234-4abc-8def-0123456789ab';

describe('MCP session ids', () => {
  it('the caller receives S.<mac> (128-bit base64url MAC), which opens to S for the same principal and route', () => {
    const signed = signSession(key, 'mcp', SID, alice);
    assert.match(signed, /^c0ffee00-1234-4abc-8def-0123456789ab\.[A-Za-z0-9_-]{22}$/);
    assert.deepEqual(openSession(key, 'mcp', signed, alice), { ok: true, id: SID });
    // Another token of the same principal is the same owner.
    assert.deepEqual(openSession(key, 'mcp', signed, { ...alice, tokenHash: 'other' } as Principal), { ok: true, id: SID });
    // Session ids may contain dots: the MAC is after the last one.
    const dotted = signSession(key, 'mcp', 'a.b.c', alice);
    assert.deepEqual(openSession(key, 'mcp', dotted, alice), { ok: true, id: 'a.b.c' });
  });

  it('another principal (subject, client, issuer or static token) or another route cannot open it', () => {
    const signed = signSession(key, 'mcp', SID, alice);
    const mismatch = { ok: false, reason: 'mcp_session_principal_mismatch' };
    assert.deepEqual(openSession(key, 'mcp', signed, principal('bob')), mismatch);
    assert.deepEqual(openSession(key, 'mcp', signed, principal('alice', 'other-agent')), mismatch);
    assert.deepEqual(openSession(key, 'mcp', signed, principal('alice', 'agent', 'https://evil.test')), mismatch);
    assert.deepEqual(openSession(key, 'other-route', signed, alice), mismatch);
    const ci = signSession(key, 'mcp', SID, staticPrincipal('ci'));
    assert.deepEqual(openSession(key, 'mcp', ci, staticPrincipal('ci')), { ok: true, id: SID });
    assert.deepEqual(openSession(key, 'mcp', ci, staticPrincipal('cd')), mismatch);
  });

  it('tokens naming neither subject nor client: each one owns its sessions alone, not every such token of the issuer', () => {
    const nobody = (hash: string) => ({ kind: 'jwt', issuer: 'https://issuer.test', tokenHash: hash }) as unknown as Principal;
    const signed = signSession(key, 'mcp', SID, nobody('h-1'));
    assert.deepEqual(openSession(key, 'mcp', signed, nobody('h-1')), { ok: true, id: SID });
    assert.deepEqual(openSession(key, 'mcp', signed, nobody('h-2')), { ok: false, reason: 'mcp_session_principal_mismatch' });
  });

  it('field boundaries are unambiguous: moving characters between subject and client gives another MAC', () => {
    const a = signSession(key, 'mcp', SID, principal('ab', 'c'));
    assert.deepEqual(openSession(key, 'mcp', a, principal('a', 'bc')), { ok: false, reason: 'mcp_session_principal_mismatch' });
    const missing = signSession(key, 'mcp', SID, principal(undefined, undefined));
    assert.deepEqual(openSession(key, 'mcp', missing, principal('', '')), { ok: false, reason: 'mcp_session_principal_mismatch' });
    // A newline in a subject cannot stand in for the next field.
    const nl = signSession(key, 'mcp', SID, principal('alice\nagent', ''));
    assert.deepEqual(openSession(key, 'mcp', nl, principal('alice', '\nagent')), { ok: false, reason: 'mcp_session_principal_mismatch' });
  });

  it('forged, modified or truncated MACs are refused', () => {
    const signed = signSession(key, 'mcp', SID, alice);
    const mac = signed.slice(-22);
    const flip = (c: string) => (c === 'A' ? 'B' : 'A');
    const mismatch = { ok: false, reason: 'mcp_session_principal_mismatch' };
    const unknown = { ok: false, reason: 'mcp_session_unknown' };
    // Each position changed, the last one included (base64url spells its unused bits several ways).
    for (const i of [0, 10, 21]) {
      const changed = `${SID}.${mac.slice(0, i)}${flip(mac[i] as string)}${mac.slice(i + 1)}`;
      assert.deepEqual(openSession(key, 'mcp', changed, alice), mismatch, `position ${i}`);
    }
    // The last character carries 2 bits and 4 unused ones: the next letter decodes to the same
    // bytes, yet is another spelling, refused.
    const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const respelled = `${SID}.${mac.slice(0, 21)}${ALPHABET[ALPHABET.indexOf(mac.at(-1) as string) + 1]}`;
    assert.ok(Buffer.from(respelled.slice(-22), 'base64url').equals(Buffer.from(mac, 'base64url')));
    assert.deepEqual(openSession(key, 'mcp', respelled, alice), mismatch);
    // The MAC of another session id.
    assert.deepEqual(openSession(key, 'mcp', `other-session.${mac}`, alice), mismatch);
    // Signed under another key.
    assert.deepEqual(openSession(randomSessionKey(), 'mcp', signed, alice), mismatch);
    // Malformed: no MAC, truncated, padded, empty id, not visible ASCII, too long.
    for (const bad of [
      SID,
      `${SID}.`,
      signed.slice(0, -1),
      `${signed}=`,
      `${signed}A`,
      `.${mac}`,
      `${SID} .${mac}`,
      `${SID}\u00e9.${mac}`,
      `${'x'.repeat(513)}.${mac}`,
      `${SID}.${mac.slice(0, 21)}+`,
    ])
      assert.deepEqual(openSession(key, 'mcp', bad, alice), unknown, JSON.stringify(bad));
  });

  it('the same secret gives the same key (instances share sessions); another secret does not', () => {
    const signed = signSession(key, 'mcp', SID, alice);
    assert.deepEqual(openSession(sessionKeyFromSecret('a-session-secret-of-at-least-32-characters'), 'mcp', signed, alice), {
      ok: true,
      id: SID,
    });
    assert.equal(openSession(sessionKeyFromSecret('another-session-secret-of-32-characters!'), 'mcp', signed, alice).ok, false);
  });

  it("the upstream's Mcp-Session-Id is replaced by the signed one; invalid or repeated ones are refused", () => {
    const head = (...pairs: string[]) => pairs.map((p) => Buffer.from(p, 'latin1'));
    const sign = (id: string) => `${id}.signed`;
    const out = signedHead(head('Content-Type', 'text/event-stream', 'Mcp-Session-Id', 'abc'), sign);
    assert.deepEqual(out?.map(String), ['Content-Type', 'text/event-stream', 'Mcp-Session-Id', 'abc.signed']);
    assert.deepEqual(signedHead(head('content-type', 'application/json'), sign)?.map(String), ['content-type', 'application/json']);
    for (const bad of ['has space', 'caf\u00e9', '', 'x'.repeat(513), 'tab\there'])
      assert.equal(signedHead(head('mcp-session-id', bad), sign), undefined, JSON.stringify(bad));
    assert.equal(signedHead(head('mcp-session-id', 'a', 'Mcp-Session-Id', 'a'), sign), undefined);
    assert.deepEqual(signedHead(head('mcp-session-id', 'x'.repeat(512)), sign)?.map(String), [
      'mcp-session-id',
      `${'x'.repeat(512)}.signed`,
    ]);
  });
});
