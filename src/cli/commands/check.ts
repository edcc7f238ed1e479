/**
 * `tessera check URL --token T`: the conformance checks a user would otherwise script by hand
 * against a protected resource (Tessera's gateway or any RFC 6750 resource server):
 *
 * 1. public discovery is reachable without a token (agent card or RFC 9728 metadata);
 * 2. the protected URL answers 401 with a Bearer challenge without a token;
 * 3. 401 for a malformed token;
 * 4. 401 for a token sent without the `Bearer` scheme;
 * 5. 2xx with the valid token (with `--mcp`: a JSON-RPC `initialize` POST, its session ended after);
 * 6. the agent card advertises the bearer scheme and requires it (not with `--mcp`);
 * 7. with `--mcp` (MCP authorization, RFC 9728 §5.1): the 401 challenge carries `resource_metadata`,
 *    and the document there names an authorization server and, as its `resource`, the checked URL
 *    (same origin, the URL's path within the resource's: what MCP clients accept), read at that
 *    resource's own well-known URL (RFC 9728 §3.3).
 *
 * One pass/fail line each (what the server answered with its control characters escaped); exit 1
 * when any check fails. The token is never printed.
 */

import { Buffer } from 'node:buffer';
import type { Command } from 'commander';
import { quoted } from '../../core/errors.ts';
import { metadataUrlOf } from '../../gateway/mcp/metadata.ts';
import { CliError, printable, printJson } from '../output.ts';

export interface CheckResult {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: string;
}

/** Most of an answer's body read: any discovery document fits; the rest is left unread. */
const MAX_BODY = 64 * 1024;

/**
 * The first {@link MAX_BODY} bytes of `res`'s body, the rest cancelled: a body that never ends
 * (or a large one) must neither fill memory nor hold the verdict until the timeout.
 */
async function readBody(res: Response): Promise<string> {
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < MAX_BODY) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).subarray(0, MAX_BODY).toString('utf8');
}

/**
 * One request. The body is read only when `read` says a check needs it (a 200 discovery
 * document); otherwise it is cancelled once the status and headers are in, so a server that
 * answers and then goes silent does not hold the verdict until the timeout.
 */
async function get(
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
  init: { method?: string; body?: string } = {},
  read: (status: number) => boolean = () => false,
): Promise<Answer | string> {
  try {
    const res = await fetch(url, { ...init, headers, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
    if (read(res.status)) return { status: res.status, headers: res.headers, body: await readBody(res) };
    await res.body?.cancel().catch(() => undefined);
    return { status: res.status, headers: res.headers, body: '' };
  } catch (e) {
    if ((e as Error).name === 'TimeoutError') return 'timed out';
    // fetch says only "fetch failed"; its cause says why (ECONNREFUSED: nothing listens there, ENOTFOUND: no such host).
    const code = (e as { cause?: { code?: unknown } }).cause?.code;
    return typeof code === 'string' ? `unreachable (${code})` : 'unreachable';
  }
}

/**
 * Why a server refused the valid token, as its challenge says (RFC 6750 §3: `error`,
 * `error_description`, and for `insufficient_scope` the `scope` needed), so that a revoked,
 * expired or under-scoped token reads as such rather than as a bare status.
 */
function refusal(a: Answer): string {
  const challenge = a.headers.get('www-authenticate') ?? '';
  const param = (name: string) => new RegExp(`(?:^|[\\s,])${name}="([^"]*)"`).exec(challenge)?.[1];
  const error = param('error');
  if (error === undefined) return '';
  const description = param('error_description');
  const scope = param('scope');
  return ` (${error}${description ? `: ${description}` : ''}${scope ? `; needs scope ${scope}` : ''})`;
}

function json(body: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(body) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Only a 200 answer's document is read. */
const ok200 = (status: number) => status === 200;

const bearerChallenge = (a: Answer) => /(^|,\s*)Bearer\b/i.test(a.headers.get('www-authenticate') ?? '');

/** The MCP client's first message (MCP 2025-06-18, lifecycle). */
const INITIALIZE = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'tessera-check', version: '1' } },
});

/** Does the card advertise an HTTP bearer scheme and require it somewhere in `security`? */
export function cardAdvertisesBearer(card: Record<string, unknown>): string | undefined {
  const schemes = card.securitySchemes;
  if (typeof schemes !== 'object' || schemes === null) return 'no securitySchemes';
  const bearer = Object.entries(schemes as Record<string, unknown>).find(([, s]) => {
    const o = s as { type?: unknown; scheme?: unknown };
    return o?.type === 'http' && typeof o.scheme === 'string' && o.scheme.toLowerCase() === 'bearer';
  });
  if (!bearer) return 'no http/bearer scheme in securitySchemes';
  const security = card.security;
  if (!Array.isArray(security) || !security.some((req) => typeof req === 'object' && req !== null && bearer[0] in req)) {
    return `security does not require ${bearer[0]}`;
  }
  return undefined;
}

/** Run the checks against `url` (the protected resource) with a valid `token`. */
export async function runChecks(
  url: string,
  token: string,
  options: { timeoutMs?: number; agentCard?: boolean; mcp?: boolean } = {},
): Promise<CheckResult[]> {
  const timeout = options.timeoutMs ?? 5000;
  const origin = new URL(url).origin;
  const results: CheckResult[] = [];
  const add = (name: string, ok: boolean, detail: string) => results.push({ name, ok, detail });

  // 1. discovery
  let card: Record<string, unknown> | undefined;
  let cardStatus = 'not found';
  const found: string[] = [];
  for (const path of ['/.well-known/agent-card.json', '/.well-known/agent.json', '/.well-known/oauth-protected-resource']) {
    const a = await get(`${origin}${path}`, { accept: 'application/json' }, timeout, {}, ok200);
    if (typeof a === 'string') {
      cardStatus = a;
      continue;
    }
    const doc = a.status === 200 ? json(a.body) : undefined;
    if (doc) {
      found.push(path);
      if (path !== '/.well-known/oauth-protected-resource' && !card) card = doc;
    } else if (path === '/.well-known/agent-card.json') cardStatus = `status ${a.status}`;
  }
  add(
    'public discovery reachable without a token',
    found.length > 0,
    found.length ? found.join(', ') : 'no agent card or protected resource metadata',
  );

  // 2-5. the protected URL
  const expect401 = (name: string, a: Answer | string, needChallenge: boolean) => {
    if (typeof a === 'string') add(name, false, a);
    else if (a.status !== 401) add(name, false, `status ${a.status}, expected 401`);
    else if (needChallenge && !bearerChallenge(a)) add(name, false, '401 without a Bearer WWW-Authenticate challenge');
    else add(name, true, `401 ${a.headers.get('www-authenticate') ?? ''}`.trim());
  };
  const anonymous = await get(url, {}, timeout);
  expect401('protected path refuses a request without a token', anonymous, true);
  expect401('a malformed token is refused', await get(url, { authorization: 'Bearer not-a.valid-token.x' }, timeout), true);
  expect401('a token without the Bearer scheme is refused', await get(url, { authorization: token }, timeout), false);
  const bearer = `Bearer ${token}`;
  const ok = options.mcp
    ? await get(
        url,
        { authorization: bearer, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        timeout,
        {
          method: 'POST',
          body: INITIALIZE,
        },
      )
    : await get(url, { authorization: bearer }, timeout);
  if (typeof ok === 'string') add('the valid token is accepted', false, ok);
  else {
    const accepted = ok.status >= 200 && ok.status < 300;
    add('the valid token is accepted', accepted, `status ${ok.status}${options.mcp ? ' to initialize' : ''}${accepted ? '' : refusal(ok)}`);
    // Leave no session behind on the server (Streamable HTTP: DELETE ends it).
    const session = ok.headers.get('mcp-session-id');
    if (options.mcp && session !== null)
      await get(url, { authorization: bearer, 'mcp-session-id': session }, timeout, { method: 'DELETE' });
  }

  if (options.mcp) {
    await mcpChecks(url, anonymous, timeout, add);
    return results;
  }

  // 6. agent card
  if (options.agentCard !== false) {
    if (!card) add('the agent card advertises the bearer scheme', false, `agent card ${cardStatus}`);
    else {
      const problem = cardAdvertisesBearer(card);
      add('the agent card advertises the bearer scheme', problem === undefined, problem ?? 'http/bearer in securitySchemes and security');
    }
  }
  return results;
}

/**
 * Why an MCP client connecting to `url` would refuse the metadata's `resource` (undefined: it
 * accepts it). As the MCP SDK's client does (checkResourceAllowed): the same origin, and the URL's
 * path within the resource's. And RFC 9728 §3.3: the document must be the one at the resource's
 * own well-known URL.
 */
export function resourceProblem(url: string, metadataUrl: string, resource: unknown): string | undefined {
  if (typeof resource !== 'string' || !URL.canParse(resource)) return 'no resource URL in the metadata';
  const r = new URL(resource);
  const u = new URL(url);
  const slash = (p: string) => (p.endsWith('/') ? p : `${p}/`);
  if (r.origin !== u.origin || !slash(u.pathname).startsWith(slash(r.pathname)))
    return `resource ${resource} does not cover ${url}; MCP clients refuse it`;
  const expected = metadataUrlOf(resource);
  if (new URL(metadataUrl).href !== new URL(expected).href)
    return `metadata read at ${metadataUrl}, but resource ${resource} has it at ${expected} (RFC 9728 §3.3)`;
  return undefined;
}

/** 7. MCP: the challenge leads a client to the metadata, the metadata to a token service, for this URL. */
async function mcpChecks(
  url: string,
  anonymous: Answer | string,
  timeout: number,
  add: (name: string, ok: boolean, detail: string) => void,
) {
  const challenge = typeof anonymous === 'string' ? '' : (anonymous.headers.get('www-authenticate') ?? '');
  const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge)?.[1];
  const pointed = metadataUrl !== undefined && URL.canParse(metadataUrl);
  add(
    'the 401 challenge points at the protected resource metadata',
    pointed,
    pointed ? `resource_metadata="${metadataUrl}"` : 'no resource_metadata in WWW-Authenticate',
  );
  if (!pointed) {
    add('the protected resource metadata names an authorization server', false, 'no metadata URL to read');
    add('the protected resource metadata names the checked URL as its resource', false, 'no metadata URL to read');
    return;
  }
  const a = await get(metadataUrl, { accept: 'application/json' }, timeout, {}, ok200);
  const doc = typeof a === 'string' || a.status !== 200 ? undefined : json(a.body);
  const servers = doc?.authorization_servers;
  const named = Array.isArray(servers) && servers.length > 0 && servers.every((v) => typeof v === 'string' && URL.canParse(v));
  add(
    'the protected resource metadata names an authorization server',
    named && typeof doc?.resource === 'string',
    typeof a === 'string'
      ? a
      : doc === undefined
        ? `status ${a.status}, no JSON document`
        : named
          ? (servers as string[]).join(', ')
          : 'authorization_servers missing or empty',
  );
  const problem = doc === undefined ? 'no metadata document' : resourceProblem(url, metadataUrl, doc.resource);
  add(
    'the protected resource metadata names the checked URL as its resource',
    problem === undefined,
    problem ?? `resource ${String(doc?.resource)}`,
  );
}

/** `url` without its userinfo (`user:password@`), to be printed. */
export function withoutUserinfo(url: string): string {
  if (!URL.canParse(url)) return url.replace(/\/\/[^/?#]*@/, '//');
  const u = new URL(url);
  u.username = '';
  u.password = '';
  return u.href;
}

function timeoutArg(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 600_000) throw new CliError(`--timeout must be milliseconds from 1 to 600000, not ${quoted(v)}`);
  return n;
}

export function registerCheck(program: Command): void {
  program
    .command('check')
    .description('Check a protected URL the way a client would: discovery, 401s, the valid token, the agent card.')
    .argument('<url>', 'a protected URL, without user:password@ (e.g. https://gateway.example.com/api/items)')
    .option('--token <token>', 'a valid access token for the URL (default: $TESSERA_TOKEN)')
    .option('--no-agent-card', 'skip the agent card check (not an A2A agent)')
    .option(
      '--mcp',
      'the URL is an MCP endpoint: send an initialize with the token, check the RFC 9728 challenge and metadata (no agent card)',
    )
    .option('--timeout <ms>', 'per-request timeout in milliseconds', timeoutArg, 5000)
    .option('--json', 'print the results as JSON')
    .action(async (url: string, opts: { token?: string; agentCard: boolean; mcp?: boolean; timeout: number; json?: boolean }) => {
      // The URL first: it is the argument, and a missing --token is the lesser mistake to report.
      // Printed without its userinfo (a password, often), which fetch would refuse to send anyway.
      if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol))
        throw new CliError(
          `${quoted(withoutUserinfo(url))} is not an http(s) URL; give the protected URL to check, e.g. http://127.0.0.1:8080/api/hello`,
        );
      const u = new URL(url);
      if (u.username !== '' || u.password !== '')
        throw new CliError(
          `${withoutUserinfo(url)} was given with credentials (user:password@), which are not sent: give the URL without them`,
        );
      const token = opts.token ?? process.env.TESSERA_TOKEN;
      if (!token) throw new CliError('give --token (or set TESSERA_TOKEN)');
      const results = await runChecks(url, token, { timeoutMs: opts.timeout, agentCard: opts.agentCard, mcp: opts.mcp === true });
      if (opts.json) printJson({ url, ok: results.every((r) => r.ok), results });
      // A detail quotes what the server answered (its challenge, its metadata), and the server is
      // whatever the URL reached: escaped, so it cannot forge a PASS line or rewrite the screen.
      else for (const r of results) process.stdout.write(`${printable(`${r.ok ? 'PASS' : 'FAIL'}  ${r.name}: ${r.detail}`)}\n`);
      const failed = results.filter((r) => !r.ok).length;
      if (failed > 0) throw new CliError(`${failed} of ${results.length} checks failed`);
    });
}
