/**
 * A2A discovery: the agent card (`/.well-known/agent-card.json`, and the older
 * `/.well-known/agent.json`) is public; everything else on an A2A route needs a token. The card is
 * given in the configuration or fetched from the upstream, and served with the security schemes
 * that describe Tessera's tokens: `BearerAuth` (HTTP bearer, JWT) and the OAuth 2
 * `client_credentials` flow of the token service, with a matching `security` requirement.
 *
 * @module
 */
import type { z } from 'zod';
import type { a2aSchema } from '../config/gateway-schema.ts';
import type { Clock } from '../core/ports.ts';
import type { CompiledUpstream } from './compile.ts';

export const AGENT_CARD_PATHS = ['/.well-known/agent-card.json', '/.well-known/agent.json'] as const;

type A2aConfig = z.output<typeof a2aSchema>;

/** The interface lists of a card: `additionalInterfaces` (A2A 0.3) and `supportedInterfaces` (1.0). */
const INTERFACE_LISTS = ['additionalInterfaces', 'supportedInterfaces'] as const;

/**
 * `url` moved from `from` (the upstream's card URL) to `to` (`a2a.url`): the same URL or one under
 * it (`from/rest`) keeps its place under `to`, one already at or under `to` stays; any other URL is
 * `undefined` (not the gateway's).
 */
function movedUrl(url: unknown, from: string, to: string): string | undefined {
  if (typeof url !== 'string') return undefined;
  // Already the gateway's (a configured card naming its public URL).
  const own = to.replace(/\/+$/, '');
  if (url === to || url === own || url.startsWith(`${own}/`)) return url;
  const base = from.replace(/\/+$/, '');
  if (url === from || url === base) return to;
  if (base === '' || !url.startsWith(`${base}/`)) return undefined;
  return `${own}${url.slice(base.length)}`;
}

/** `value` without its `security` and `securityRequirements` members (the upstream's own schemes). */
function withoutSecurity(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  const { security: _s, securityRequirements: _r, ...rest } = value as Record<string, unknown>;
  return rest;
}

/**
 * Whether `card` is written in the A2A 1.0 shape (ProtoJSON of `lf.a2a.v1.AgentCard`, spec §4.4.1
 * and §5.5) rather than 0.3's. A top-level `protocolVersion` says so when present (0.3 requires it;
 * 1.0 moved it to each `AgentInterface`, §4.4.6, but cards still carry it): `1` or later is 1.0.
 * Without it, a card is 1.0 when it has 1.0's `supportedInterfaces` and no `url` (required in 0.3,
 * removed in 1.0), or 1.0's `securityRequirements` and no 0.3 `security`, or a security scheme in
 * 1.0's one-of shape (`{"httpAuthSecurityScheme": {...}}`, §4.5.1) rather than 0.3's `type`.
 */
export function isA2aV1Card(card: Readonly<Record<string, unknown>>): boolean {
  const pv = card.protocolVersion;
  if (typeof pv === 'string' && /^\d+(\.|$)/.test(pv)) return Number.parseInt(pv, 10) >= 1;
  if (Array.isArray(card.supportedInterfaces) && card.url === undefined) return true;
  if (Array.isArray(card.securityRequirements) && card.security === undefined) return true;
  const schemes = card.securitySchemes;
  if (typeof schemes === 'object' && schemes !== null && !Array.isArray(schemes)) {
    for (const scheme of Object.values(schemes)) {
      if (typeof scheme !== 'object' || scheme === null || 'type' in scheme) continue;
      if (Object.keys(scheme).some((k) => k.endsWith('SecurityScheme'))) return true;
    }
  }
  return false;
}

const BEARER_DESCRIPTION = 'A Tessera access token (RFC 9068 JWT) in the Authorization header.';
const OAUTH2_DESCRIPTION = "Tokens from Tessera's token service.";

/**
 * Tessera's schemes and requirements in the shape of the card's version.
 *
 * 0.3 (OpenAPI-style, A2A 0.3 §5.5 `AgentCard.securitySchemes` / `security`): `{type: 'http',
 * scheme: 'bearer', bearerFormat}` and `{type: 'oauth2', flows: {clientCredentials}}`, required by
 * `security: [{BearerAuth: []}, {OAuth2: [scopes]}]` (either one).
 *
 * 1.0 (spec §4.5 Security Objects, `a2a.proto` package `lf.a2a.v1`, in ProtoJSON camelCase per
 * §5.5): `SecurityScheme` is a one-of whose member names the kind — `httpAuthSecurityScheme`
 * (`HTTPAuthSecurityScheme`: `scheme`, `bearerFormat`, `description`, §4.5.3) and
 * `oauth2SecurityScheme` (`OAuth2SecurityScheme`: `description`, `flows`, §4.5.4; `OAuthFlows`
 * one-of `clientCredentials`: `tokenUrl`, `scopes`, §4.5.7, §4.5.9); `AgentCard.securityRequirements`
 * is a list of `SecurityRequirement` (`schemes`: map of scheme name to `StringList` `{list}`),
 * any one of which suffices.
 */
function tesseraSecurity(config: A2aConfig, v1: boolean): Record<string, unknown> {
  const scopes = config.scopes;
  const tokenUrl = config.token_url;
  if (v1) {
    return {
      securitySchemes: {
        BearerAuth: { httpAuthSecurityScheme: { scheme: 'Bearer', bearerFormat: 'JWT', description: BEARER_DESCRIPTION } },
        OAuth2: {
          oauth2SecurityScheme: { description: OAUTH2_DESCRIPTION, flows: { clientCredentials: { tokenUrl, scopes: { ...scopes } } } },
        },
      },
      securityRequirements: [{ schemes: { BearerAuth: { list: [] } } }, { schemes: { OAuth2: { list: Object.keys(scopes) } } }],
    };
  }
  return {
    securitySchemes: {
      BearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: BEARER_DESCRIPTION },
      OAuth2: { type: 'oauth2', description: OAUTH2_DESCRIPTION, flows: { clientCredentials: { tokenUrl, scopes: { ...scopes } } } },
    },
    security: [{ BearerAuth: [] }, { OAuth2: Object.keys(scopes) }],
  };
}

/**
 * Replace the card's security description with Tessera's, in the shape of the card's version
 * ({@link isA2aV1Card}, {@link tesseraSecurity}). Nothing of the upstream's own security
 * is republished: its schemes and requirements (`securitySchemes`, `security`,
 * `securityRequirements`, and the same per skill) are replaced or dropped, and its `signatures`
 * (made over the upstream's card, not this one) are dropped. With `a2a.url`, the card's `url` is
 * that URL (0.3 only: 1.0 has no `url`) and so are its interfaces (`additionalInterfaces`,
 * `supportedInterfaces`) at or under the upstream's card URL; interfaces elsewhere (another host, a
 * gRPC port) are not the gateway's and are dropped, so that no client is sent around it to the
 * upstream's own address. Used for the public card and for the authenticated extended card alike.
 */
export function withTesseraSecurity(card: Readonly<Record<string, unknown>>, config: A2aConfig): Record<string, unknown> {
  const v1 = isA2aV1Card(card);
  const out: Record<string, unknown> = { ...card };
  delete out.signatures;
  delete out.security;
  delete out.securityRequirements;
  if (Array.isArray(out.skills)) out.skills = out.skills.map(withoutSecurity);
  if (config.url !== undefined) {
    const to = config.url;
    const lists = INTERFACE_LISTS.map((k) => out[k]);
    // The upstream's endpoint: its card's `url`, else (A2A 1.0 has none) its first interface's.
    let from = typeof card.url === 'string' ? card.url : undefined;
    for (const list of lists) {
      if (from === undefined && Array.isArray(list)) {
        const first = (list[0] as { url?: unknown } | undefined)?.url;
        if (typeof first === 'string') from = first;
      }
    }
    for (const [i, k] of INTERFACE_LISTS.entries()) {
      const list = lists[i];
      if (list === undefined) continue;
      const kept: unknown[] = [];
      if (Array.isArray(list) && from !== undefined) {
        for (const entry of list) {
          if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) continue;
          const url = movedUrl((entry as { url?: unknown }).url, from, to);
          if (url !== undefined) kept.push({ ...entry, url });
        }
      }
      out[k] = kept;
    }
  }
  Object.assign(out, tesseraSecurity(config, v1));
  if (config.url !== undefined && (!v1 || typeof card.url === 'string')) out.url = config.url;
  return out;
}

/** The largest agent card read from an upstream. */
const MAX_CARD_BYTES = 256 * 1024;
/** How long after a failed card fetch the upstream is not asked again (at most `cache_ttl`). */
const RETRY_AFTER_FAILURE_MS = 5000;

/** Serves one route's agent card: configured, or fetched from the upstream and cached. */
export class AgentCardSource {
  readonly #config: A2aConfig;
  readonly #upstream: CompiledUpstream;
  readonly #credential: { header: string; value: string } | undefined;
  readonly #clock: Clock;
  #cached: { body: string; until: number } | undefined;
  #fetching: Promise<string | undefined> | undefined;
  /** Until when (epoch ms) a failed fetch is not tried again. */
  #failedUntil = 0;

  constructor(options: {
    config: A2aConfig;
    upstream: CompiledUpstream;
    credential: { header: string; value: string } | undefined;
    clock: Clock;
  }) {
    this.#config = options.config;
    this.#upstream = options.upstream;
    this.#credential = options.credential;
    this.#clock = options.clock;
    if (options.config.card)
      this.#cached = { body: JSON.stringify(withTesseraSecurity(options.config.card, options.config)), until: Infinity };
  }

  get maxAge(): number {
    return Math.round(this.#config.cache_ttl);
  }

  /**
   * The card as JSON text, or `undefined` when it cannot be had (no config, upstream down). After a
   * failed fetch the upstream is not asked again for {@link RETRY_AFTER_FAILURE_MS} (at most
   * `cache_ttl`): the card is public, and each anonymous request must not become an upstream request.
   */
  async body(): Promise<string | undefined> {
    const now = this.#clock();
    if (this.#cached && now < this.#cached.until) return this.#cached.body;
    if (now < this.#failedUntil) return this.#cached?.body;
    this.#fetching ??= this.#fetch().finally(() => {
      this.#fetching = undefined;
    });
    const fetched = await this.#fetching;
    if (fetched === undefined) this.#failedUntil = this.#clock() + Math.min(RETRY_AFTER_FAILURE_MS, this.#config.cache_ttl * 1000);
    // Serve the last good card when the upstream fails.
    return fetched ?? this.#cached?.body;
  }

  async #fetch(): Promise<string | undefined> {
    const u = this.#upstream;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.#credential) headers[this.#credential.header] = this.#credential.value;
    try {
      const res = await u.dispatcher.request({
        method: 'GET',
        path: `${u.basePath}${this.#config.card_path}`,
        headers,
        headersTimeout: u.headersTimeout,
        bodyTimeout: u.headersTimeout,
      });
      if (res.statusCode !== 200) {
        await res.body.dump();
        return undefined;
      }
      // Read at most MAX_CARD_BYTES: a larger (or endless) card is refused when it passes them.
      const chunks: Buffer[] = [];
      let total = 0;
      for await (const chunk of res.body) {
        total += (chunk as Buffer).length;
        if (total > MAX_CARD_BYTES) {
          res.body.destroy();
          return undefined;
        }
        chunks.push(chunk as Buffer);
      }
      const card = JSON.parse(Buffer.concat(chunks, total).toString('utf8')) as unknown;
      if (typeof card !== 'object' || card === null || Array.isArray(card)) return undefined;
      const body = JSON.stringify(withTesseraSecurity(card as Record<string, unknown>, this.#config));
      this.#cached = { body, until: this.#clock() + this.#config.cache_ttl * 1000 };
      return body;
    } catch {
      return undefined;
    }
  }
}
