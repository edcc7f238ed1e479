/**
 * The subject's-issuer fixture: a real `tessera serve` (SQLite in a temp dir, a free port) whose
 * token service trusts two identity providers (the test issuer {@link ISSUER} and the partner
 * {@link IDP2}) for token exchange, a client `broker` that exchanges their tokens for the token
 * service's, and a loopback upstream recording what it receives. Its gateway, when it has one, and
 * a standalone one in front of it serve the same two routes ({@link subjectRoutes}).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { initialize } from '../../src/cli/commands/init.ts';
import { type RunningServer, startServer } from '../../src/cli/commands/serve.ts';
import type { TesseraConfigInput } from '../../src/config/schema.ts';
import { TOKEN_EXCHANGE } from '../../src/issuer/service.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';
import { claims, makeKey, sign, type TestKey } from '../helpers/tokens.ts';
import { AUDIENCE, ISSUER, key, requestEvents, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

/** The second identity provider, whose users share names with the test issuer's. */
export const IDP2 = 'https://partner-idp.test';
export const idp2Key: TestKey = makeKey('ES256', 'partner-1');

type RouteInput = NonNullable<TesseraConfigInput['gateway']>['routes'][number];

/** A token of the test issuer (or, with `k` and an `iss`, of another) for alice, scope api:read. */
export const idpToken = (over: Record<string, unknown> = {}, k: TestKey = key): Promise<string> =>
  sign(k, claims({ iss: ISSUER, sub: 'alice', aud: AUDIENCE, scope: 'api:read', ...over }));

/** A token of the partner identity provider for `sub`, scope api:read. */
export const partnerToken = (sub: string): Promise<string> => sign(idp2Key, claims({ iss: IDP2, sub, aud: AUDIENCE, scope: 'api:read' }));

/** The token service at `url` as an issuer a gateway verifies by its JWKS. */
export function tokenServiceIssuer(url: string) {
  return { issuer: url, audiences: [`${url}/api`], jwks_uri: `${url}/.well-known/jwks.json`, token_type: 'at+jwt' };
}

/**
 * `/whoami` sends the subject, issuer and subject's issuer upstream; `/limited` allows one request
 * per subject (rate 0.001/s, burst 1). Both need api:read.
 */
export function subjectRoutes(upstream: string, auth: 'jwt' | 'introspection'): RouteInput[] {
  return [
    {
      id: 'whoami',
      match: { path_prefix: '/whoami' },
      upstream: { url: upstream },
      auth,
      rules: [{ scopes: ['api:read'] }],
      identity_headers: ['subject', 'issuer', 'subject_issuer'],
    },
    {
      id: 'limited',
      match: { path_prefix: '/limited' },
      upstream: { url: upstream },
      auth,
      rules: [{ scopes: ['api:read'] }],
      rate_limit: { key: 'subject', rate: 0.001, burst: 1 },
    },
  ];
}

export interface SubjectIssuerFixture {
  /** The token service's URL (its issuer). */
  readonly url: string;
  readonly upstream: Upstream;
  readonly running: RunningServer;
  /** The broker exchanges an identity provider's token for one of the token service, for `${url}/api`. */
  exchange(subjectToken: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * Starts the fixture in a temp dir named `prefix`. With `serveGateway`, `tessera serve` also
 * trusts its own token service and runs a gateway with {@link subjectRoutes} on `auth: jwt`.
 * TESSERA_MASTER_KEY is unset while it runs (the master key is the one `initialize` writes).
 */
export async function startSubjectIssuerFixture(prefix: string, options: { serveGateway?: boolean } = {}): Promise<SubjectIssuerFixture> {
  const savedMaster = process.env.TESSERA_MASTER_KEY;
  delete process.env.TESSERA_MASTER_KEY;
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const upstream = await startUpstream();
  const issuers = [
    ...(options.serveGateway ? [tokenServiceIssuer(url)] : []),
    { issuer: ISSUER, audiences: [AUDIENCE], jwks: { keys: [key.jwk] } },
    { issuer: IDP2, audiences: [AUDIENCE], jwks: { keys: [idp2Key.jwk] } },
  ];
  const gateway = options.serveGateway ? { watch_config: false, routes: subjectRoutes(upstream.url, 'jwt') } : undefined;
  // YAML takes JSON as it is.
  writeFileSync(
    join(dir, 'tessera.yaml'),
    `data_dir: .tessera
server: { host: 127.0.0.1, port: ${port} }
issuers: ${JSON.stringify(issuers)}
scopes:
  api:read: {}
${gateway ? `gateway: ${JSON.stringify(gateway)}\n` : ''}`,
  );
  const close = async (running?: RunningServer) => {
    await running?.close();
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
    if (savedMaster !== undefined) process.env.TESSERA_MASTER_KEY = savedMaster;
  };
  let running: RunningServer | undefined;
  let brokerSecret: string;
  try {
    await initialize({ config: join(dir, 'tessera.yaml') });
    const logStream = new Writable({ write: (_chunk, _encoding, done) => done() });
    running = await startServer({ config: join(dir, 'tessera.yaml'), logger: pino({ level: 'warn' }, logStream) });
    const broker = await running.service.registerClient({
      id: 'broker',
      scopes: ['api:read'],
      audiences: [`${url}/api`],
      grantTypes: [TOKEN_EXCHANGE],
    });
    brokerSecret = broker.secret as string;
  } catch (e) {
    await close(running);
    throw e;
  }
  const server = running;
  return {
    url,
    upstream,
    running: server,
    async exchange(subjectToken) {
      const res = await fetch(`${url}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: basic('broker', brokerSecret), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: TOKEN_EXCHANGE,
          subject_token: subjectToken,
          subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          audience: `${url}/api`,
        }),
      });
      const body = (await res.json()) as { access_token: string };
      assert.equal(res.status, 200, JSON.stringify(body));
      return body.access_token;
    },
    close: () => close(server),
  };
}

/**
 * Calls a standalone gateway's /whoami with `token` and an inbound `x-tessera-subject-issuer` the
 * gateway must drop: what the upstream received and the request's audit event.
 */
export async function whoamiThrough(gw: TestGateway, upstream: Upstream, token: string) {
  const res = await fetch(`${gw.url}/whoami`, {
    headers: { authorization: `Bearer ${token}`, 'x-tessera-subject-issuer': 'https://evil.test' },
  });
  assert.equal(res.status, 200, await res.clone().text());
  await res.arrayBuffer();
  const events = await requestEvents(gw);
  return { headers: upstream.seen.at(-1)?.headers as Record<string, unknown>, event: events.at(-1) as unknown as Record<string, unknown> };
}

/** The status of a GET of `${base}/limited` with `token`. */
export async function limitedStatus(base: string, token: string): Promise<number> {
  const res = await fetch(`${base}/limited`, { headers: { authorization: `Bearer ${token}` } });
  await res.arrayBuffer();
  return res.status;
}
