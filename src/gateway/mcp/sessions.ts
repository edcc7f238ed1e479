/**
 * MCP sessions bound to their principal, statelessly. When an upstream answers with
 * `Mcp-Session-Id: S`, the caller receives `S.<mac>`, where the MAC covers the route, `S` and the
 * principal (issuer, subject, client; or the static token id) under the gateway's session key. A
 * request presenting `S.<mac>` is let through, with the bare `S`, only when the MAC verifies for
 * the principal making it. Nothing is remembered: every gateway instance holding the same key
 * accepts the session, across restarts; whether the session still exists is the upstream's to say.
 *
 * @module
 */
import { createHmac, createSecretKey, hkdfSync, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Principal } from '../../core/verify/principal.ts';

/** MCP Streamable HTTP: a session id is visible ASCII (0x21-0x7E). Longer ids than this are refused. */
export const MAX_SESSION_ID = 512;
const VISIBLE = /^[\x21-\x7e]+$/;
/** HMAC-SHA-256 truncated to 128 bits, base64url without padding. */
const MAC_BYTES = 16;
const MAC_CHARS = 22;
const MAC = /^[A-Za-z0-9_-]{22}$/;
const CONTEXT = 'tessera mcp session v1\n';
const EVENT_CONTEXT = 'tessera mcp event v1\n';

/** HKDF `info` for the session key, from the master key (`tessera serve`) or `gateway.mcp_session_secret`. */
export const SESSION_KEY_INFO = 'tessera mcp session v1';

/**
 * Who a session belongs to: the same for every token of that principal. A token naming neither a
 * subject nor a client names no one, so its session belongs to that token alone: otherwise every
 * such token of the issuer would open every other one's sessions.
 */
export function ownerOf(p: Principal): readonly (string | null)[] {
  if (p.kind === 'static') return ['static', p.staticTokenId ?? p.tokenHash];
  if (p.subject === undefined && p.clientId === undefined) return ['anonymous-token', p.issuer, p.tokenHash];
  return ['token', p.issuer, p.subject ?? null, p.clientId ?? null];
}

/** The session key from `gateway.mcp_session_secret` (HKDF-SHA-256, so the secret is never the key itself). */
export function sessionKeyFromSecret(secret: string): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), Buffer.alloc(0), SESSION_KEY_INFO, 32)));
}

/** A random session key: sessions then last as long as the process, on this instance only. */
export function randomSessionKey(): KeyObject {
  return createSecretKey(randomBytes(32));
}

/** Is `id` an acceptable upstream session id (visible ASCII, at most {@link MAX_SESSION_ID})? */
export function validSessionId(id: string): boolean {
  return id.length <= MAX_SESSION_ID && VISIBLE.test(id);
}

function mac(key: KeyObject, context: string, fields: readonly (string | null)[], principal: Principal): string {
  // JSON of an array of strings is unambiguous (each one quoted and escaped, lone surrogates
  // included), so no two (route, id, owner) triples give the same input.
  const input = context + JSON.stringify([...fields, ...ownerOf(principal)]);
  return createHmac('sha256', key).update(input, 'utf8').digest().subarray(0, MAC_BYTES).toString('base64url');
}

/** `id.<mac>` split, when it has that form and `id` is valid; `undefined` otherwise. */
function split(presented: string): { readonly id: string; readonly given: string } | undefined {
  const dot = presented.lastIndexOf('.');
  if (dot < 1 || presented.length - dot - 1 !== MAC_CHARS) return undefined;
  const id = presented.slice(0, dot);
  const given = presented.slice(dot + 1);
  if (!MAC.test(given) || !validSessionId(id)) return undefined;
  return { id, given };
}

// Compared as text, not decoded: base64url has several spellings of the last character's
// unused bits, and each would otherwise be another valid id for the same session.
function sameMac(given: string, expected: string): boolean {
  return timingSafeEqual(Buffer.from(given, 'latin1'), Buffer.from(expected, 'latin1'));
}

/** The id the caller receives for the upstream's session `id` (a valid one, see {@link validSessionId}). */
export function signSession(key: KeyObject, route: string, id: string, principal: Principal): string {
  return `${id}.${mac(key, CONTEXT, [route, id], principal)}`;
}

export type OpenedSession =
  | { readonly ok: true; readonly id: string }
  | { readonly ok: false; readonly reason: 'mcp_session_unknown' | 'mcp_session_principal_mismatch' };

/**
 * The upstream's session id in `presented`, when its MAC verifies for `principal` on `route`.
 * Not of the form `S.<mac>` (unsigned, truncated, not visible ASCII): `mcp_session_unknown`.
 * A MAC that does not verify: `mcp_session_principal_mismatch`; another principal's session, a
 * forged MAC and one made under another key cannot be told apart.
 */
export function openSession(key: KeyObject, route: string, presented: string, principal: Principal): OpenedSession {
  const parts = split(presented);
  if (parts === undefined) return { ok: false, reason: 'mcp_session_unknown' };
  if (!sameMac(parts.given, mac(key, CONTEXT, [route, parts.id], principal)))
    return { ok: false, reason: 'mcp_session_principal_mismatch' };
  return { ok: true, id: parts.id };
}

/**
 * The id the caller receives for an SSE event id the upstream sent: `id.<mac>`, the MAC over the
 * route, the session the stream belongs to (`null` without one) and the caller's principal, as for
 * sessions but under its own context, so a session id never passes for an event id or back.
 * Resuming a stream (`Last-Event-ID`) then names only an event this caller was sent on this
 * session: an upstream whose event store is shared across sessions would otherwise replay another
 * session's events to whoever names one of their ids (MCP 2025-06-18, "Resumability and Redelivery").
 */
export function signEventId(key: KeyObject, route: string, session: string | null, id: string, principal: Principal): string {
  return `${id}.${mac(key, EVENT_CONTEXT, [route, session, id], principal)}`;
}

/** The upstream's event id in a `Last-Event-ID` the gateway signed for `principal` on this session, or `undefined`. */
export function openEventId(
  key: KeyObject,
  route: string,
  session: string | null,
  presented: string,
  principal: Principal,
): string | undefined {
  const parts = split(presented);
  if (parts === undefined || !sameMac(parts.given, mac(key, EVENT_CONTEXT, [route, session, parts.id], principal))) return undefined;
  return parts.id;
}
