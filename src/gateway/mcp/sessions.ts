/**
 * MCP sessions bound to their principal. When an upstream answers with `Mcp-Session-Id`, the
 * gateway remembers which principal (issuer, subject, client; or the static token id) the session
 * belongs to. A request presenting the id is let through only for that principal; an id the gateway
 * never saw created, or forgot, is refused too (fail closed): the MCP transport answers an unknown
 * session with 404, and clients then start a new session, which the gateway records.
 *
 * In memory, bounded (least recently used forgotten first) and expiring after an idle time. Several
 * gateway instances need requests of one session to reach the instance that saw it created.
 *
 * @module
 */
import type { Clock } from '../../core/ports.ts';
import type { Principal } from '../../core/verify/principal.ts';

/** Who a session belongs to: the same for every token of that principal. */
export function ownerOf(p: Principal): string {
  if (p.kind === 'static') return `static\n${p.staticTokenId ?? p.tokenHash}`;
  return `${p.issuer}\n${p.subject ?? ''}\n${p.clientId ?? ''}`;
}

export type SessionCheck = 'ok' | 'mcp_session_unknown' | 'mcp_session_principal_mismatch';

interface Entry {
  readonly owner: string;
  expires: number;
}

export class McpSessions {
  readonly #entries = new Map<string, Entry>();
  readonly #clock: Clock;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** May `principal` use session `id` of route `route`? A use refreshes its idle timer. */
  check(route: string, id: string, principal: Principal, idleMs: number): SessionCheck {
    const key = `${route}\n${id}`;
    const e = this.#entries.get(key);
    const now = this.#clock();
    if (e === undefined) return 'mcp_session_unknown';
    if (e.expires <= now) {
      this.#entries.delete(key);
      return 'mcp_session_unknown';
    }
    if (e.owner !== ownerOf(principal)) return 'mcp_session_principal_mismatch';
    // Most recently used last: the first entries are the ones to forget.
    this.#entries.delete(key);
    e.expires = now + idleMs;
    this.#entries.set(key, e);
    return 'ok';
  }

  /**
   * The upstream created (or confirmed) session `id` for `principal`. A session already bound to
   * another principal keeps its owner: an upstream cannot hand one caller's session to another.
   */
  record(route: string, id: string, principal: Principal, idleMs: number, max: number): void {
    const key = `${route}\n${id}`;
    const now = this.#clock();
    const owner = ownerOf(principal);
    const e = this.#entries.get(key);
    if (e !== undefined && e.expires > now && e.owner !== owner) return;
    this.#entries.delete(key);
    this.#entries.set(key, { owner, expires: now + idleMs });
    while (this.#entries.size > max) this.#entries.delete(this.#entries.keys().next().value as string);
    // Expired entries at the front go too (they are the least recently used).
    for (const [k, v] of this.#entries) {
      if (v.expires > now) break;
      this.#entries.delete(k);
    }
  }

  /** The session ended (DELETE answered, or the upstream no longer knows it). */
  forget(route: string, id: string): void {
    this.#entries.delete(`${route}\n${id}`);
  }
}
