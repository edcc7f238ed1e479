/**
 * A2A discovery: the agent card (`/.well-known/agent-card.json`, and the older
 * `/.well-known/agent.json`) is public; everything else on an A2A route needs a token. The card is
 * given in the configuration or fetched from the upstream, and served with the security schemes
 * that describe Tessera's tokens: `BearerAuth` (HTTP bearer, JWT) and the OAuth 2
 * `client_credentials` flow of the token service, with a matching `security` requirement.
 *
 * @module
 */
import type { ServerResponse } from 'node:http';
import type { z } from 'zod';
import type { a2aSchema } from '../../config/gateway-schema.ts';
import type { Clock } from '../../core/ports.ts';
import type { CompiledUpstream } from '../compile.ts';
import { REPRESENTATION_HEADERS } from '../http/headers.ts';
import { hasDuplicateKeys } from '../mcp/message.ts';
import { type ForwardCallbacks, ForwardHandler, plainEncoding, rawHeader } from '../proxy/forward.ts';
import { a2aFold } from './message.ts';

export const AGENT_CARD_PATHS = ['/.well-known/agent-card.json', '/.well-known/agent.json'] as const;

export type A2aConfig = z.output<typeof a2aSchema>;
/** The settings a card is rewritten with. */
type CardSettings = Pick<A2aConfig, 'url' | 'scopes' | 'token_url'>;

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

/**
 * Where the gateway serves a route's agent, as the caller reached it: what the card's URLs naming
 * the upstream become when `a2a.url` is unset.
 */
export interface GatewayEndpoint {
  /**
   * The gateway's base URL, as its RFC 9728 metadata names it: `server.public_url` (with its path,
   * no trailing slash), else the request's origin (its Host, or what a proxy in
   * `gateway.trust_proxy` forwards).
   */
  readonly base: string;
  /** What the rewritten card depends on besides the card (the base and the host the route was matched for): the cache key. */
  readonly key: string;
  /** The upstream's origin (`upstream.url`). */
  readonly upstreamOrigin: string;
  /** The route's own path at the gateway (its `path_prefix`, `/` without one): the endpoint named when the card's is not reached through the route. */
  readonly endpoint: string;
  /** The gateway path that reaches upstream path `path` through the route, `undefined` when none does. */
  readonly pathOf: (path: string) => string | undefined;
}

/**
 * `url` as the gateway serves it: kept when it is already the gateway's (at or under `ep.base`);
 * an http(s) URL at one of `origins` (the upstream's) whose path the route reaches, the same path
 * at the gateway; anything else `undefined` (not the gateway's).
 */
function gatewayUrl(url: unknown, ep: GatewayEndpoint, origins: ReadonlySet<string>): string | undefined {
  if (typeof url !== 'string') return undefined;
  if (url === ep.base || url.startsWith(`${ep.base}/`)) return url;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !origins.has(u.origin)) return undefined;
  const path = ep.pathOf(u.pathname);
  return path === undefined ? undefined : `${ep.base}${path}${u.search}`;
}

/** The origin of an http(s) URL, else `undefined`. */
function httpOrigin(url: string): string | undefined {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.origin : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The card members a lenient client reads whatever their spelling ({@link a2aFold}: Go's
 * encoding/json binds `URL` and `Signatures` case-blind, protobuf JSON parsers of A2A 1.0 SDKs
 * accept the proto names `supported_interfaces` and `security_schemes`, pydantic `security_requirements`):
 * every spelling is rewritten or dropped as the exact one is.
 */
const DROPPED_MEMBERS: ReadonlySet<string> = new Set(['signatures', 'security', 'securityrequirements', 'securityschemes']);
const SKILL_DROPPED_MEMBERS: ReadonlySet<string> = new Set(['security', 'securityrequirements']);
const INTERFACE_MEMBERS: ReadonlySet<string> = new Set(['additionalinterfaces', 'supportedinterfaces']);

/** `value` without its `security` and `securityRequirements` members in any spelling (the upstream's own schemes). */
function withoutSecurity(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).filter(([k]) => !SKILL_DROPPED_MEMBERS.has(a2aFold(k))));
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
function tesseraSecurity(config: CardSettings, v1: boolean): Record<string, unknown> {
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
 * (made over the upstream's card, not this one) are dropped.
 *
 * Nor are the upstream's own addresses, which would send clients around the gateway (and tell its
 * internal names): with `a2a.url`, the card's `url` is that URL (0.3 only: 1.0 has no `url`) and
 * so are its interfaces (`additionalInterfaces`, `supportedInterfaces`) at or under the upstream's
 * card URL. Without it and with `endpoint` (the gateway serving the card), each interface at the
 * upstream's origin (`upstream.url`'s, or that of the card's own endpoint) is named at the gateway
 * under the path that reaches it through the route ({@link GatewayEndpoint.pathOf}), and the
 * card's `url` likewise, else the route's own endpoint. Interfaces elsewhere (another host, a gRPC
 * port, a path the route does not reach) are not the gateway's and are dropped: a client would
 * send them the Tessera token the card asks for. Each of these members is read in every spelling a
 * lenient client reads it in ({@link DROPPED_MEMBERS}): `Signatures`, `security_schemes` and
 * `supported_interfaces` are dropped or rewritten like the exact ones. Used for the public card
 * and for the authenticated extended card alike.
 */
export function withTesseraSecurity(
  card: Readonly<Record<string, unknown>>,
  config: CardSettings,
  endpoint?: GatewayEndpoint,
): Record<string, unknown> {
  const v1 = isA2aV1Card(card);
  const out: Record<string, unknown> = { ...card };
  const interfaces: string[] = [];
  const urls: string[] = [];
  for (const [k, v] of Object.entries(out)) {
    const n = a2aFold(k);
    if (DROPPED_MEMBERS.has(n)) delete out[k];
    else if (n === 'skills' && Array.isArray(v)) out[k] = v.map(withoutSecurity);
    else if (INTERFACE_MEMBERS.has(n)) interfaces.push(k);
    else if (n === 'url') urls.push(k);
  }
  let to: string | undefined;
  if (config.url !== undefined || endpoint !== undefined) {
    // The upstream's endpoint: its card's `url`, else (A2A 1.0 has none) its first interface's.
    let from = [card.url, ...urls.map((k) => card[k])].find((u): u is string => typeof u === 'string');
    for (const k of [...INTERFACE_LISTS, ...interfaces]) {
      const list = out[k];
      if (from === undefined && Array.isArray(list)) {
        const first = (list[0] as { url?: unknown } | undefined)?.url;
        if (typeof first === 'string') from = first;
      }
    }
    let moved: (url: unknown) => string | undefined;
    if (config.url !== undefined) {
      const target = config.url;
      to = target;
      moved = (url) => (from === undefined ? undefined : movedUrl(url, from, target));
    } else {
      const ep = endpoint as GatewayEndpoint;
      const origins = new Set([ep.upstreamOrigin]);
      const own = from === undefined ? undefined : httpOrigin(from);
      if (own !== undefined) origins.add(own);
      const target = gatewayUrl(from, ep, origins) ?? `${ep.base}${ep.endpoint}`;
      to = target;
      moved = (url) => (url === from ? target : gatewayUrl(url, ep, origins));
    }
    for (const k of interfaces) {
      const list = out[k];
      const kept: unknown[] = [];
      if (Array.isArray(list)) {
        for (const entry of list) {
          if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) continue;
          const url = moved((entry as { url?: unknown }).url);
          // Another spelling of `url` beside it (`URL`) would be the address a Go client reads.
          const rest = Object.fromEntries(Object.entries(entry).filter(([e]) => a2aFold(e) !== 'url'));
          if (url !== undefined) kept.push({ ...rest, url });
        }
      }
      out[k] = kept;
    }
    for (const k of urls) out[k] = to;
  }
  Object.assign(out, tesseraSecurity(config, v1));
  if (to !== undefined && (!v1 || typeof card.url === 'string')) out.url = to;
  return out;
}

/** The largest agent card read from an upstream. */
const MAX_CARD_BYTES = 256 * 1024;
/** How long after a failed card fetch the upstream is not asked again (at most `cache_ttl`). */
const RETRY_AFTER_FAILURE_MS = 5000;

/** The most renderings of one card kept (one per base URL and host it was asked for under). */
const MAX_RENDERINGS = 16;

/** A card as configured or fetched, until when it is served, and its renderings by {@link GatewayEndpoint.key}. */
interface CachedCard {
  readonly card: Readonly<Record<string, unknown>>;
  readonly until: number;
  readonly bodies: Map<string, string>;
}

/** Serves one route's agent card: configured, or fetched from the upstream and cached. */
export class AgentCardSource {
  readonly #config: A2aConfig;
  readonly #upstream: CompiledUpstream;
  readonly #credential: { header: string; value: string } | undefined;
  readonly #clock: Clock;
  #cached: CachedCard | undefined;
  #fetching: Promise<CachedCard | undefined> | undefined;
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
    if (options.config.card) this.#cached = { card: options.config.card, until: Infinity, bodies: new Map() };
  }

  /** The route's `a2a` settings (the extended card is rewritten with them). */
  get config(): A2aConfig {
    return this.#config;
  }

  get maxAge(): number {
    return Math.round(this.#config.cache_ttl);
  }

  /**
   * Whether the card served depends on where the caller reached the gateway: no `a2a.url`, so its
   * URLs are `endpoint`'s ({@link withTesseraSecurity}).
   */
  get perEndpoint(): boolean {
    return this.#config.url === undefined;
  }

  /**
   * The card as JSON text, as served at `endpoint`, or `undefined` when it cannot be had (no
   * config, upstream down). After a failed fetch the upstream is not asked again for
   * {@link RETRY_AFTER_FAILURE_MS} (at most `cache_ttl`): the card is public, and each anonymous
   * request must not become an upstream request.
   */
  async body(endpoint: GatewayEndpoint): Promise<string | undefined> {
    const cached = await this.#current();
    return cached === undefined ? undefined : this.#render(cached, endpoint);
  }

  async #current(): Promise<CachedCard | undefined> {
    const now = this.#clock();
    if (this.#cached && now < this.#cached.until) return this.#cached;
    if (now < this.#failedUntil) return this.#cached;
    this.#fetching ??= this.#fetch().finally(() => {
      this.#fetching = undefined;
    });
    const fetched = await this.#fetching;
    if (fetched === undefined) this.#failedUntil = this.#clock() + Math.min(RETRY_AFTER_FAILURE_MS, this.#config.cache_ttl * 1000);
    // Serve the last good card when the upstream fails.
    return fetched ?? this.#cached;
  }

  /** The card rewritten for `endpoint`, kept for the next caller reaching the gateway alike. */
  #render(cached: CachedCard, endpoint: GatewayEndpoint): string {
    const key = this.perEndpoint ? endpoint.key : '';
    let body = cached.bodies.get(key);
    if (body === undefined) {
      body = JSON.stringify(withTesseraSecurity(cached.card, this.#config, endpoint));
      // A caller names its Host: keep a few, the oldest out first.
      if (cached.bodies.size >= MAX_RENDERINGS) cached.bodies.delete(cached.bodies.keys().next().value as string);
      cached.bodies.set(key, body);
    }
    return body;
  }

  async #fetch(): Promise<CachedCard | undefined> {
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
      this.#cached = { card: card as Record<string, unknown>, until: this.#clock() + this.#config.cache_ttl * 1000, bodies: new Map() };
      return this.#cached;
    } catch {
      return undefined;
    }
  }
}

// ---- The authenticated extended agent card ----
//
// A2A lets an authenticated client fetch a fuller card than the public one: 0.2 `GET
// {url}/../agent/authenticatedExtendedCard`; 0.3 JSON-RPC `agent/getAuthenticatedExtendedCard` and
// HTTP+JSON `GET /v1/card`; 1.0 `GetExtendedAgentCard` (JSON-RPC and gRPC) and HTTP+JSON `GET
// /extendedAgentCard` (also `/{tenant}/extendedAgentCard`; spec §3.1.11, §5.3, `a2a.proto`
// `A2AService.GetExtendedAgentCard`). It is the upstream's card with the upstream's endpoints,
// schemes and signatures, so it is rewritten as the public card is ({@link withTesseraSecurity}),
// and refused (502) whenever it cannot be read whole: a stream, a compressed or non-JSON body, more
// than {@link MAX_CARD_BYTES}.

/** Path endings of the extended card's REST (and gRPC) forms, lower case, compared case-blind. */
const EXTENDED_CARD_PATHS = [
  '/agent/authenticatedextendedcard',
  '/v1/card',
  '/extendedagentcard',
  '/getextendedagentcard',
  'a2aservice/getagentcard',
];

/** JSON-RPC methods answering with the extended card (0.3, 1.0), lower case. */
const EXTENDED_CARD_METHODS = new Set(['agent/getauthenticatedextendedcard', 'getextendedagentcard']);

/** `path` in lower case without its trailing `/` and `.`, as {@link isUpstreamCardPath} compares paths. */
function cardPathKey(path: string): string {
  let end = path.length;
  while (end > 0 && (path.charCodeAt(end - 1) === 0x2f || path.charCodeAt(end - 1) === 0x2e)) end--;
  return path.slice(0, end).toLowerCase();
}

/**
 * Whether `path` (normalized), reaching the upstream on an authenticated request, asks for one of
 * the upstream's own cards, whose answer the gateway rewrites: the extended card, or the public
 * card under a well-known card path or the route's `card_path`. Compared without case and without
 * trailing `/` or `.`: ASP.NET routes ignore case, and several servers ignore a trailing slash or
 * dot. The exact well-known paths are served by the gateway itself; these spellings
 * (`agent-card.json/`, which Express's non-strict routing serves, `Agent-Card.json` to a case-blind
 * router) and `card_path` under the route's prefix reach the upstream.
 */
export function isUpstreamCardPath(path: string, cardPath: string): boolean {
  const p = cardPathKey(path);
  if (EXTENDED_CARD_PATHS.some((suffix) => p.endsWith(suffix)) || AGENT_CARD_PATHS.some((suffix) => p.endsWith(suffix))) return true;
  const own = cardPathKey(cardPath);
  return own !== '' && p.endsWith(own);
}

export type A2aBody =
  | {
      readonly ok: true;
      readonly extendedCard: boolean;
      /** The parsed body (`undefined` when empty). */
      readonly value?: unknown;
    }
  | {
      readonly ok: false;
      /** Not strict UTF-8 JSON (JSON-RPC's parse error), else JSON the gateway will not forward (an invalid request). */
      readonly parse: boolean;
    };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Read a request body on an A2A route: does it call a JSON-RPC method answered by the extended
 * card? A body that is not strict UTF-8 JSON is refused: upstream parsers read more than
 * `JSON.parse` does (Python's `json.loads` takes `NaN` and `Infinity`, and UTF-16 or UTF-32 JSON,
 * told by a BOM or a NUL among the first four bytes, RFC 4627 §3; Go's `encoding/json` takes
 * invalid UTF-8 as U+FFFD), so such a body passed unread could still call for the card. A message
 * repeating a key is refused (parsers differ on which one counts), and so is a batch holding an
 * extended-card call (its answer could not be told from the others'). The method is compared
 * without case or surrounding space, under any key spelled `method` in any case (System.Text.Json
 * and Go's encoding/json bind keys case-blind), NULs included (segmentio/encoding before 0.5.4
 * matched `method\u0000` as `method`, GHSA-q382-vc8q-7jhj). A message spelling `method` twice, one
 * of them naming the card, is refused: a case-sensitive upstream reads the exact `method`
 * (`tasks/get`), a case-blind one the last, and a call taken for the card would otherwise pass on
 * as another.
 */
export function readA2aBody(body: Uint8Array): A2aBody {
  if (body.length === 0) return { ok: true, extendedCard: false };
  const b0 = body[0] as number;
  const b1 = body[1];
  if ((b0 === 0xfe && b1 === 0xff) || (b0 === 0xff && b1 === 0xfe)) return { ok: false, parse: true };
  for (let i = 0; i < Math.min(4, body.length); i++) if (body[i] === 0) return { ok: false, parse: true };
  let text: string;
  let value: unknown;
  try {
    text = utf8.decode(body);
    value = JSON.parse(text);
  } catch {
    return { ok: false, parse: true };
  }
  if (hasDuplicateKeys(text)) return { ok: false, parse: false };
  const messages = Array.isArray(value) ? value : [value];
  let extendedCard = false;
  for (const m of messages) {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) continue;
    let methods = 0;
    let card = false;
    for (const [k, v] of Object.entries(m)) {
      if (k.replaceAll('\u0000', '').toLowerCase() !== 'method') continue;
      methods++;
      if (typeof v === 'string' && EXTENDED_CARD_METHODS.has(v.trim().toLowerCase())) card = true;
    }
    if (card && methods > 1) return { ok: false, parse: false };
    if (card) extendedCard = true;
  }
  if (extendedCard && Array.isArray(value)) return { ok: false, parse: false };
  return { ok: true, extendedCard, value };
}

/** How an extended card arrives: the whole body (REST) or a JSON-RPC response's `result`. */
export type ExtendedCardForm = 'rest' | 'rpc';

/** The extended card could not be read whole, or is not a card: nothing of it is relayed. */
export class ExtendedCardInvalid extends Error {
  override readonly name = 'ExtendedCardInvalid';
  readonly code = 'a2a_extended_card_invalid';
  constructor() {
    super('the upstream extended agent card cannot be rewritten');
  }
}

/**
 * The rewritten answer carrying an extended card, or `undefined` when `text` is not one: REST, a
 * JSON object (the card); JSON-RPC, an object whose `result` is the card (rewritten), or an error
 * response (no `result`), passed as it is.
 */
export function rewriteExtendedCard(
  text: string,
  form: ExtendedCardForm,
  config: A2aConfig,
  endpoint?: GatewayEndpoint,
): string | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const object = value as Record<string, unknown>;
  if (form === 'rest') return JSON.stringify(withTesseraSecurity(object, config, endpoint));
  const result = object.result;
  if (typeof result === 'object' && result !== null && !Array.isArray(result)) {
    return JSON.stringify({ ...object, result: withTesseraSecurity(result as Record<string, unknown>, config, endpoint) });
  }
  if (result === undefined && typeof object.error === 'object' && object.error !== null) return JSON.stringify(object);
  return undefined;
}

/** `application/json`, `application/a2a+json` or another `+json` type. */
export function isJsonType(value: string | undefined): boolean {
  if (value === undefined) return false;
  const type = (value.split(';')[0] as string).trim().toLowerCase();
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

/**
 * Forwards an extended-card request: a 2xx answer is read whole (at most {@link MAX_CARD_BYTES},
 * JSON, uncompressed, not a stream), rewritten ({@link rewriteExtendedCard}) and sent with its new
 * length; anything else of a 2xx fails the exchange with {@link ExtendedCardInvalid} (502, nothing
 * relayed). Other statuses pass as on any route.
 */
export class ExtendedCardForwardHandler extends ForwardHandler {
  readonly #form: ExtendedCardForm;
  readonly #config: A2aConfig;
  readonly #endpoint: GatewayEndpoint | undefined;
  #head: { status: number; raw: Buffer[]; resume: () => void } | undefined;
  readonly #chunks: Buffer[] = [];
  #total = 0;

  constructor(
    res: ServerResponse,
    cb: ForwardCallbacks,
    extra: readonly string[],
    form: ExtendedCardForm,
    config: A2aConfig,
    ownCredential = false,
    endpoint?: GatewayEndpoint,
  ) {
    super(res, cb, extra, ownCredential);
    this.#form = form;
    this.#config = config;
    this.#endpoint = endpoint;
  }

  override onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    // Only a 2xx carries a card; anything else (a 401 to the gateway's own credential included) goes as on any route.
    if (status < 200 || status >= 300) return super.onHeaders(status, raw, resume);
    // A header sent twice (null) is ambiguous: refused like a wrong one.
    const length = rawHeader(raw, 'content-length');
    if (
      !isJsonType(rawHeader(raw, 'content-type') ?? undefined) ||
      !plainEncoding(rawHeader(raw, 'content-encoding')) ||
      length === null ||
      (length !== undefined && !(Number(length) <= MAX_CARD_BYTES))
    ) {
      this.abort(new ExtendedCardInvalid());
      return false;
    }
    this.#head = { status, raw, resume };
    return true;
  }

  override onData(chunk: Buffer): boolean {
    if (this.#head === undefined) return super.onData(chunk);
    this.#total += chunk.length;
    if (this.#total > MAX_CARD_BYTES) {
      this.abort(new ExtendedCardInvalid());
      return false;
    }
    this.#chunks.push(chunk);
    return true;
  }

  override onComplete(): void {
    const head = this.#head;
    if (head === undefined) {
      super.onComplete();
      return;
    }
    this.#head = undefined;
    let text: string | undefined;
    try {
      text = utf8.decode(Buffer.concat(this.#chunks, this.#total));
    } catch {
      text = undefined;
    }
    const body = text === undefined ? undefined : rewriteExtendedCard(text, this.#form, this.#config, this.#endpoint);
    if (body === undefined) {
      // The exchange is over upstream: fail it here (502 to the caller, nothing relayed).
      this.onError(new ExtendedCardInvalid());
      return;
    }
    const bytes = Buffer.from(body, 'utf8');
    const raw: Buffer[] = [];
    for (let i = 0; i < head.raw.length; i += 2) {
      const name = head.raw[i] as Buffer;
      if (REPRESENTATION_HEADERS.has(name.toString('latin1').toLowerCase())) continue;
      raw.push(name, head.raw[i + 1] as Buffer);
    }
    raw.push(Buffer.from('content-length'), Buffer.from(String(bytes.length)));
    if (!super.onHeaders(head.status, raw, head.resume)) return;
    super.onData(bytes);
    super.onComplete();
  }
}
