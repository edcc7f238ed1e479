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

/** Replace the card's security description with Tessera's. */
export function withTesseraSecurity(card: Readonly<Record<string, unknown>>, config: A2aConfig): Record<string, unknown> {
  const scopes = config.scopes;
  const out: Record<string, unknown> = { ...card };
  out.securitySchemes = {
    BearerAuth: {
      type: 'http',
      scheme: 'bearer',
      bearerFormat: 'JWT',
      description: 'A Tessera access token (RFC 9068 JWT) in the Authorization header.',
    },
    OAuth2: {
      type: 'oauth2',
      description: "Tokens from Tessera's token service.",
      flows: { clientCredentials: { tokenUrl: config.token_url, scopes: { ...scopes } } },
    },
  };
  out.security = [{ BearerAuth: [] }, { OAuth2: Object.keys(scopes) }];
  if (config.url !== undefined) out.url = config.url;
  return out;
}

/** Serves one route's agent card: configured, or fetched from the upstream and cached. */
export class AgentCardSource {
  readonly #config: A2aConfig;
  readonly #upstream: CompiledUpstream;
  readonly #credential: { header: string; value: string } | undefined;
  readonly #clock: Clock;
  #cached: { body: string; until: number } | undefined;
  #fetching: Promise<string | undefined> | undefined;

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

  /** The card as JSON text, or `undefined` when it cannot be had (no config, upstream down). */
  async body(): Promise<string | undefined> {
    const now = this.#clock();
    if (this.#cached && now < this.#cached.until) return this.#cached.body;
    this.#fetching ??= this.#fetch().finally(() => {
      this.#fetching = undefined;
    });
    const fetched = await this.#fetching;
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
      const text = await res.body.text();
      if (text.length > 256 * 1024) return undefined;
      const card = JSON.parse(text) as unknown;
      if (typeof card !== 'object' || card === null || Array.isArray(card)) return undefined;
      const body = JSON.stringify(withTesseraSecurity(card as Record<string, unknown>, this.#config));
      this.#cached = { body, until: this.#clock() + this.#config.cache_ttl * 1000 };
      return body;
    } catch {
      return undefined;
    }
  }
}
