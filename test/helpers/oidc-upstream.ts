/**
 * Upstream OpenID Connect providers for the login tests, on loopback:
 *
 * - {@link startOidcProvider}: a real one (node-oidc-provider) whose interaction logs in a fixed
 *   person (or refuses, as a person clicking "cancel" would) with no HTML to fill in;
 * - {@link startRogueProvider}: discovery, JWKS and a token endpoint that answers with whatever
 *   ID token the test crafts, to play the attacker's or a broken provider's part;
 *
 * and {@link Browser}: fetch with a cookie jar, following redirects by hand.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';
import Provider from 'oidc-provider';

export const UPSTREAM_CLIENT = 'tessera';
export const UPSTREAM_SECRET = 'upstream-client-secret-0123456789abcdef';

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

export interface UpstreamPerson {
  id: string;
  email: string;
  email_verified: boolean;
}

export interface OidcUpstream {
  readonly url: string;
  /** Who the next login signs in as; `deny` makes the interaction end in access_denied. */
  person: UpstreamPerson;
  deny: boolean;
  /** Bind the provider's client to Tessera's callback (known once Tessera listens). */
  configure(callback: string): void;
  close(): Promise<void>;
}

/** A listening server for node-oidc-provider; the provider is built by `configure`. */
export async function startOidcProvider(): Promise<OidcUpstream> {
  let provider: { callback(): (req: IncomingMessage, res: ServerResponse) => void; [k: string]: unknown } | undefined;
  const server = createServer();
  const url = await listen(server);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'upstream-1', alg: 'ES256', use: 'sig' };
  const upstream: OidcUpstream = {
    url,
    person: { id: 'upstream-user-42', email: 'alice@example.com', email_verified: true },
    deny: false,
    configure(callback) {
      // biome-ignore lint/suspicious/noExplicitAny: oidc-provider ships no types
      const p: any = new Provider(url, {
        clients: [
          {
            client_id: UPSTREAM_CLIENT,
            client_secret: UPSTREAM_SECRET,
            redirect_uris: [callback],
            token_endpoint_auth_method: 'client_secret_basic',
            id_token_signed_response_alg: 'ES256',
          },
        ],
        jwks: { keys: [jwk] },
        cookies: { keys: ['upstream-cookie-key-0123456789'] },
        claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
        // The claims in the ID token itself (what most providers do for email/profile).
        conformIdTokenClaims: false,
        findAccount: (_ctx: unknown, id: string) => ({
          accountId: id,
          claims: () => ({ sub: id, email: upstream.person.email, email_verified: upstream.person.email_verified, name: 'Alice' }),
        }),
        interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
        features: { devInteractions: { enabled: false } },
      });
      provider = p;
      server.removeAllListeners('request');
      const handle = p.callback();
      server.on('request', (req: IncomingMessage, res: ServerResponse) => {
        if (!(req.url ?? '').startsWith('/interaction/')) return handle(req, res);
        // The person's part, without a page: log in as `person` (or refuse), then consent.
        (async () => {
          const details = await p.interactionDetails(req, res);
          if (upstream.deny) {
            return p.interactionFinished(req, res, { error: 'access_denied', error_description: 'The person said no.' });
          }
          if (details.prompt.name === 'login') {
            return p.interactionFinished(req, res, { login: { accountId: upstream.person.id } }, { mergeWithLastSubmission: false });
          }
          const grant = new p.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
          grant.addOIDCScope(details.params.scope);
          return p.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
        })().catch(() => {
          res.writeHead(500);
          res.end();
        });
      });
    },
    close: () => close(server),
  };
  void provider;
  return upstream;
}

export interface RogueUpstream {
  readonly url: string;
  /** The provider's own signing key (published in its JWKS). */
  readonly key: KeyObject;
  readonly kid: string;
  /** Answer of the token endpoint: an ID token for the code the callback sent. */
  idToken: () => Promise<string> | string;
  /** Token requests received (their form fields and Authorization header). */
  readonly tokenRequests: { form: URLSearchParams; authorization: string | undefined }[];
  /** When set, the JWKS answers 503 (a provider partly down). */
  jwksDown: boolean;
  /** When set, the token endpoint answers only once this resolves (a slow provider). */
  tokenHold: Promise<void> | undefined;
  /** When set, each JSON answer (discovery, JWKS, token) is sent as this returns it: its path and its text as it would be. */
  rewrite: ((path: string, json: string) => string) | undefined;
  close(): Promise<void>;
}

/** A provider the test scripts: discovery, JWKS, and a token endpoint returning `idToken()`. */
export async function startRogueProvider(): Promise<RogueUpstream> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = 'rogue-1';
  const tokenRequests: RogueUpstream['tokenRequests'] = [];
  let url = '';
  const rogue: RogueUpstream = {
    get url() {
      return url;
    },
    key: privateKey,
    kid,
    idToken: () => '',
    tokenRequests,
    jwksDown: false,
    tokenHold: undefined,
    rewrite: undefined,
    close: () => close(server),
  };
  const server = createServer((req, res) => {
    const json = (body: unknown) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const text = JSON.stringify(body);
      res.end(rogue.rewrite === undefined ? text : rogue.rewrite(path as string, text));
    };
    const path = (req.url ?? '').split('?')[0];
    if (path === '/.well-known/openid-configuration') {
      return json({
        issuer: url,
        authorization_endpoint: `${url}/authorize`,
        token_endpoint: `${url}/token`,
        jwks_uri: `${url}/jwks`,
        response_types_supported: ['code'],
        code_challenge_methods_supported: ['S256'],
      });
    }
    if (path === '/jwks' && rogue.jwksDown) {
      res.writeHead(503);
      return res.end();
    }
    if (path === '/jwks') return json({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' }] });
    if (path === '/token' && req.method === 'POST') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', async () => {
        tokenRequests.push({ form: new URLSearchParams(Buffer.concat(chunks).toString()), authorization: req.headers.authorization });
        await rogue.tokenHold;
        json({ access_token: 'upstream-at', token_type: 'Bearer', id_token: await rogue.idToken() });
      });
      return;
    }
    res.writeHead(404);
    res.end();
  });
  url = await listen(server);
  return rogue;
}

/**
 * An ID token `rogue` issues for {@link UPSTREAM_CLIENT} with `claims` (sub `rogue-user` unless
 * they name one), valid 5 minutes from now; signed with its own key unless `key` and `kid` are given.
 */
export function rogueIdToken(rogue: RogueUpstream, claims: Record<string, unknown>, key = rogue.key, kid = rogue.kid): Promise<string> {
  return new SignJWT({ sub: 'rogue-user', ...claims })
    .setProtectedHeader({ alg: 'ES256', kid })
    .setIssuer(rogue.url)
    .setAudience(UPSTREAM_CLIENT)
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(key);
}

/** A browser: a cookie jar over every host (as cookies ignore ports), redirects followed by hand. */
export class Browser {
  readonly jar = new Map<string, string>();
  /** Every Set-Cookie header received, as sent. */
  readonly setCookies: string[] = [];

  cookieHeader(): string {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.jar.size > 0) headers.set('cookie', this.cookieHeader());
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of res.headers.getSetCookie()) {
      this.setCookies.push(line);
      const [pair] = line.split(';');
      const eq = (pair as string).indexOf('=');
      const name = (pair as string).slice(0, eq).trim();
      const value = (pair as string).slice(eq + 1).trim();
      if (/max-age=0\b/i.test(line) || /expires=Thu, 01 Jan 1970/i.test(line) || value === '') this.jar.delete(name);
      else this.jar.set(name, value);
    }
    return res;
  }

  /** GET `url` and follow redirects until `stop(url)` says so; the last response and its URL. */
  async follow(url: string, stop: (u: URL) => boolean, max = 15): Promise<{ res: Response; url: URL }> {
    let current = new URL(url);
    for (let i = 0; i < max; i++) {
      if (stop(current)) return { res: new Response(null, { status: 299 }), url: current };
      const res = await this.fetch(current.href);
      const location = res.headers.get('location');
      if (res.status < 300 || res.status >= 400 || location === null) return { res, url: current };
      await res.arrayBuffer();
      current = new URL(location, current);
    }
    throw new Error('too many redirects');
  }
}
