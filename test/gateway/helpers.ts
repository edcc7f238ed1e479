/**
 * Gateway test fixtures: real upstream servers on loopback (port 0) that record what they
 * receive, a gateway on its own server with an in-memory audit sink, and tokens signed by jose.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createTcpServer, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { parse as parseYaml } from 'yaml';
import { MemoryAuditSink } from '../../src/audit/sinks/memory.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema, type TesseraConfig, type TesseraConfigInput } from '../../src/config/schema.ts';
import type { GatewayDeps } from '../../src/gateway/gateway.ts';
import { type ServedGateway, serveGateway } from '../../src/gateway/serve.ts';
import { blockUntil } from '../helpers/net.ts';
import { AUDIENCE, claims, ISSUER, makeKey, sign, type TestKey } from '../helpers/tokens.ts';

export { AUDIENCE, ISSUER };

/** What an upstream saw. */
export interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly rawHeaders: string[];
  readonly body: string;
}

export interface Upstream {
  readonly url: string;
  readonly server: Server;
  readonly seen: Seen[];
  close(): Promise<void>;
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

const echo: UpstreamHandler = (req, res) => {
  const text = JSON.stringify({ ok: true, method: req.method, url: req.url });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
};

/** An upstream that records requests (after reading their bodies) and answers with `handler`. */
export async function startUpstream(handler: UpstreamHandler = echo): Promise<Upstream> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body });
      handler(req, res, body);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const key: TestKey = makeKey('ES256');

export const UPSTREAM_TOKEN = 'upstream-secret-token-value-0123456789';
export const STATIC_TOKEN = 'static-gateway-token-0123456789-abcdefghij';

/** Verifier fields: one issuer (ES256, the shared test key), one static token, a scope catalogue. */
export function baseConfig(): TesseraConfigInput {
  return {
    issuers: [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }],
    static_tokens: [{ id: 'ci', token: STATIC_TOKEN, scopes: ['api:read'] }],
    scopes: { 'api:read': {}, 'api:write': { implies: ['api:read'] }, admin: {} },
    dpop: { mode: 'disabled' },
  };
}

/** baseConfig’s issuer with its keys served by `jwks` (listening on loopback, at /jwks.json) instead of inline. */
export function issuersAt(jwks: Server): TesseraConfigInput['issuers'] {
  return [
    {
      issuer: ISSUER,
      audiences: [AUDIENCE],
      algorithms: ['ES256'],
      jwks_uri: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`,
    },
  ];
}

type RouteInput = NonNullable<TesseraConfigInput['gateway']>['routes'][number];

/** An MCP route `mcp` on `/mcp` in front of `upstream`, JWT-authenticated for AUDIENCE; `extra` adds or replaces settings. */
export function mcpRoute(upstream: string, rules: RouteInput['rules'], extra: Partial<RouteInput> = {}): RouteInput {
  return {
    id: 'mcp',
    match: { path_prefix: '/mcp' },
    upstream: { url: upstream },
    auth: 'jwt',
    audience: AUDIENCE,
    rules,
    mcp: {},
    ...extra,
  };
}

/** Settings of a route's `a2a` section. */
type A2aInput = NonNullable<RouteInput['a2a']>;

/**
 * A gateway with the `agent:invoke` scope and an A2A route `agent` on `/agent` in front of `upstream`,
 * JWT-authenticated, needing agent:invoke; `route` adds or replaces route settings, `deps` is passed
 * to the gateway (a task store, say).
 */
export function startA2aGateway(
  upstream: string,
  a2a: A2aInput,
  { route = {}, deps = {} }: { route?: Partial<RouteInput>; deps?: GatewayDeps } = {},
): Promise<TestGateway> {
  return startGateway(
    {
      ...baseConfig(),
      scopes: { 'agent:invoke': {} },
      gateway: {
        routes: [
          {
            id: 'agent',
            match: { path_prefix: '/agent' },
            upstream: { url: upstream },
            auth: 'jwt',
            rules: [{ scopes: ['agent:invoke'] }],
            ...route,
            a2a,
          },
        ],
      },
    },
    deps,
  );
}

export function parse(input: TesseraConfigInput, env: Record<string, string> = {}): TesseraConfig {
  return parseConfig(configSchema, input, { env });
}

/** An example's `tessera.yaml` as parsed YAML, for a test to adjust. */
export interface ExampleConfig {
  gateway: { forward_auth: Record<string, unknown>; routes: Record<string, unknown>[] };
  [section: string]: unknown;
}

/**
 * An example's `tessera.yaml` (examples/<name>/), trusting the test issuer and pointing its first
 * route at `upstream`, then `edit`, ready for {@link startGateway}.
 */
export function exampleConfig(example: URL, upstream: string, edit?: (config: ExampleConfig) => void): TesseraConfigInput {
  const config = parseYaml(readFileSync(new URL('tessera.yaml', example), 'utf8')) as ExampleConfig;
  config.server = { host: '127.0.0.1', port: 0 };
  config.issuers = [{ issuer: ISSUER, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { keys: [key.jwk] } }];
  const route = config.gateway.routes[0] as { audience?: string; upstream: { url: string } };
  route.audience = AUDIENCE;
  route.upstream.url = upstream;
  edit?.(config);
  return config as TesseraConfigInput;
}

/** A token from the test issuer with `overrides` applied to standard claims. */
export function token(overrides: Record<string, unknown> = {}): Promise<string> {
  return sign(key, claims(overrides));
}

export interface TestGateway {
  readonly url: string;
  readonly served: ServedGateway;
  readonly audit: MemoryAuditSink;
  close(): Promise<void>;
}

export const silent = pino({ level: 'silent' });

export async function startGateway(
  input: TesseraConfigInput,
  deps: GatewayDeps = {},
  env: Record<string, string> = {},
): Promise<TestGateway> {
  const audit = new MemoryAuditSink();
  const served = await serveGateway(
    { config: parse(input, env), host: '127.0.0.1', port: 0 },
    { logger: silent, ...deps, auditSinks: [audit, ...(deps.auditSinks ?? [])] },
  );
  return {
    url: served.url,
    served,
    audit,
    close: () => served.close({ drainTimeoutMs: 500 }),
  };
}

/** Flush the gateway's audit queue and return the `gateway.request` events. */
export async function requestEvents(gw: TestGateway) {
  await gw.served.gateway.audit.flush();
  return gw.audit.events.filter((e) => e.kind === 'gateway.request');
}

/**
 * The answer every MCP and A2A body refusal over the size limit is: 413, a JSON-RPC error (-32000,
 * id null: the body is not read), the connection closed, audited as `request_too_large`.
 */
export async function assertRpcTooLarge(gw: TestGateway, res: Response): Promise<void> {
  assert.equal(res.status, 413);
  assert.equal(res.headers.get('content-type'), 'application/json');
  assert.equal(res.headers.get('cache-control'), 'no-store');
  assert.equal(res.headers.get('connection'), 'close');
  assert.equal(res.headers.get('www-authenticate'), null);
  assert.deepEqual(await res.json(), {
    jsonrpc: '2.0',
    id: null,
    error: { code: -32000, message: 'The request body exceeds the configured limit.' },
  });
  const e = (await requestEvents(gw)).at(-1);
  assert.equal(e?.reason, 'request_too_large');
  assert.equal(e?.decision, 'deny');
}

/** RFC 6455 §1.3: the Sec-WebSocket-Accept an upstream computes from a key. */
export const wsAcceptOf = (key: string): string => createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
/** The RFC 6455 §1.3 sample Sec-WebSocket-Key. */
export const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
/** The status code of a raw HTTP response. */
export const rawStatus = (response: string): number => Number(response.split(' ')[1]);
/** The Sec-WebSocket-Key of a raw request head. */
export const wsKeyOf = (head: string): string | undefined => /\r\nsec-websocket-key: *([^\r]*)/i.exec(head)?.[1];

/** A raw WebSocket upgrade request for `path` (Host: a) carrying `Authorization: Bearer <bearer>`, for {@link rawHttp}. */
export function wsUpgradeRequest(path: string, bearer: string): string {
  return (
    `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
    `Sec-WebSocket-Key: ${WS_KEY}\r\nAuthorization: Bearer ${bearer}\r\n\r\n`
  );
}

/** The status a WebSocket upgrade of `path` on `url` with `headers` gets: 101 when it is upgraded (the socket is then closed). */
export function upgradeStatus(url: string, path: string, headers: Record<string, string>): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port: Number(new URL(url).port),
      path,
      headers: { ...headers, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': WS_KEY },
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('upgrade', (_res, socket) => {
      socket.destroy();
      resolve(101);
    });
    req.on('error', reject);
    req.end();
  });
}

/** An app and a gateway (from `example`, with `env`) that both close idle connections after 1 s, for proxies' idle-race tests. */
export interface IdleRace {
  readonly app: Upstream;
  readonly gw: TestGateway;
  /** When, in ms after its last request, each closes an idle connection (Node adds keepAliveTimeoutBuffer). */
  closesAfter(): number;
}

/** Start an {@link IdleRace}: the app's keepAliveTimeout and the gateway's limits.keep_alive_timeout at 1 s. */
export async function startIdleRace(example: URL, env: Record<string, string>): Promise<IdleRace> {
  const app = await startUpstream();
  app.server.keepAliveTimeout = 1000;
  const config = exampleConfig(example, app.url, (c) => {
    (c.gateway as Record<string, unknown>).limits = { keep_alive_timeout: '1s' };
  });
  const gw = await startGateway(config, {}, env);
  assert.equal(gw.served.server.keepAliveTimeoutBuffer, app.server.keepAliveTimeoutBuffer);
  return { app, gw, closesAfter: () => 1000 + (app.server.keepAliveTimeoutBuffer ?? 0) };
}

/** Until the returned function is called: once `gw` has answered a request `match` accepts, block this process's loop until `end`. */
export function blockAfterAnswer(gw: TestGateway, match: (req: IncomingMessage) => boolean, end: number): () => void {
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    if (!match(req)) return;
    res.once('finish', () => setImmediate(() => blockUntil(end)));
  };
  gw.served.server.prependListener('request', onRequest);
  return () => gw.served.server.off('request', onRequest);
}

/** What a {@link startRawUpstream} answers to one request: the bytes to write, or nothing for its default 200. */
export type RawAnswer = (head: string, body: string, socket: Socket) => string | undefined;

/** An upstream on raw TCP: every byte each connection sent, as received. */
export interface RawUpstream {
  readonly url: string;
  /** The bytes of each connection (latin1), in the order the connections came. */
  readonly connections: string[];
  /** The request lines read, across connections. */
  readonly requests: string[];
  close(): Promise<void>;
}

/**
 * An upstream that records exactly what it receives (no HTTP parser between the wire and the
 * test) and answers each request (Content-Length or chunked body read whole) with `answer`, by
 * default `200` with the body `ok`. For attacks on framing: what the gateway wrote, byte for byte.
 */
export async function startRawUpstream(answer: RawAnswer = () => undefined): Promise<RawUpstream> {
  const connections: string[] = [];
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  const server = createTcpServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const index = connections.push('') - 1;
    let buf = '';
    socket.on('data', (d: Buffer) => {
      const text = d.toString('latin1');
      connections[index] += text;
      buf += text;
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        let rest = buf.slice(end + 4);
        let body = '';
        const length = /\r\ncontent-length: *(\d+)/i.exec(head);
        if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
          let at = 0;
          for (;;) {
            const eol = rest.indexOf('\r\n', at);
            if (eol < 0) return;
            const size = Number.parseInt(rest.slice(at, eol), 16);
            if (size === 0) {
              const fin = rest.indexOf('\r\n\r\n', eol - 2);
              if (fin < 0) return;
              rest = rest.slice(fin + 4);
              break;
            }
            if (rest.length < eol + 2 + size + 2) return;
            body += rest.slice(eol + 2, eol + 2 + size);
            at = eol + 2 + size + 2;
          }
        } else if (length) {
          const n = Number(length[1]);
          if (rest.length < n) return;
          body = rest.slice(0, n);
          rest = rest.slice(n);
        }
        buf = rest;
        requests.push(head.slice(0, head.indexOf('\r\n')));
        socket.write(answer(head, body, socket) ?? 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    connections,
    requests,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The log lines a gateway writes, parsed, and the pino logger (level info) that writes them there. */
export function capturedLog(): { lines: Record<string, unknown>[]; logger: pino.Logger } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { lines, logger: pino({ level: 'info' }, stream) };
}

/** The message of every refused upstream answer and upstream failure: nothing of the upstream's own. */
export const UPSTREAM_UNAVAILABLE = 'The upstream service is unavailable.';

/**
 * A refusal answered as the JSON-RPC error an A2A or MCP client reads: `status`, `Content-Type:
 * application/json`, no challenge, and a JSON-RPC 2.0 error response echoing the call's `id`.
 */
export async function assertRpcError(
  res: Response,
  expected: { status: number; id: string | number | null; code: number; message: string },
): Promise<void> {
  assert.equal(res.status, expected.status);
  assert.equal(res.headers.get('content-type'), 'application/json');
  assert.equal(res.headers.get('www-authenticate'), null);
  assert.deepEqual(await res.json(), { jsonrpc: '2.0', id: expected.id, error: { code: expected.code, message: expected.message } });
}
