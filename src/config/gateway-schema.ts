/**
 * Configuration of the gateway (routes, upstreams, upstream credentials), audit output and
 * operations endpoints. Owned by the gateway work; the top-level schema imports it.
 *
 * Checks that need the rest of the configuration (a `jwt` route needs `issuers`, rule scopes must
 * exist in the catalogue) are in `src/gateway/check.ts`; they run in the same parse (`configSchema`)
 * and are reported with the same paths. Whether `exchange` has a token service depends on how the
 * gateway runs: `compileGateway` and the CLI commands check it.
 *
 * @module
 */
import { z } from 'zod';
import { quoted } from '../core/errors.ts';
import { always, trusted } from './cross-check.ts';
import { DAY, TIMER_MAX } from './duration.ts';
import { checkListenerTimeouts, listenerLimitFields, listenerLimitsRule } from './listener-schema.ts';
import { operationsFields, operationsRule } from './operations-schema.ts';
import { duration, filePath, ruleSchema } from './verifier-schema.ts';

const SIZE = /^(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?$/i;
const SIZE_UNIT: Record<string, number> = { b: 1, kb: 1024, kib: 1024, mb: 1024 ** 2, mib: 1024 ** 2, gb: 1024 ** 3, gib: 1024 ** 3 };

/** Parse a byte size: a number of bytes, or `64kb`, `10mb`, `1gb` (binary units). */
export function parseSize(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const m = SIZE.exec(value.trim());
  if (!m) return undefined;
  return Math.floor(Number(m[1]) * (SIZE_UNIT[(m[2] ?? 'b').toLowerCase()] as number));
}

/** A byte size: a number of bytes or a string with a unit. Parsed to bytes. */
export const byteSize = (description: string) =>
  z
    .union([z.number(), z.string()])
    .transform((v, ctx) => {
      const n = parseSize(v);
      if (n === undefined) {
        ctx.addIssue({ code: 'custom', message: `${quoted(v)} is not a size; write bytes (65536) or a unit (64kb, 10mb)` });
        return z.NEVER;
      }
      return n;
    })
    .meta({ description });

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Defaults of these go through the transform as `prefault`s: a `default` after a transform is an
// output value, which the generated reference (JSON Schema of the input) leaves out.
const headerName = (description: string) =>
  z
    .string()
    .regex(HEADER_NAME, 'not a valid HTTP header name')
    .transform((v) => v.toLowerCase())
    .meta({ description });

const ROUTE_ID = /^[A-Za-z0-9_.:-]{1,64}$/;

const AUTH_KINDS = ['none', 'jwt', 'static', 'introspection'] as const;
const authKind = z.enum(AUTH_KINDS, {
  error: (i) =>
    i.input === undefined
      ? `required; write one of ${AUTH_KINDS.join(', ')} (or a list of them)`
      : `${quoted(i.input)} is not an authentication method; use one of ${AUTH_KINDS.join(', ')}`,
});

/** Names for the identity headers the gateway may send upstream. */
export const IDENTITY_FIELDS = ['subject', 'subject_issuer', 'client', 'issuer', 'actors', 'delegation', 'scopes', 'token_id'] as const;
export type IdentityField = (typeof IDENTITY_FIELDS)[number];

const upstreamUrl = z
  .string()
  .refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), { message: 'write an absolute http:// or https:// URL' })
  .refine((v) => !URL.canParse(v) || (new URL(v).search === '' && new URL(v).hash === ''), {
    message: 'an upstream URL has no query or fragment',
  })
  .refine((v) => !URL.canParse(v) || (new URL(v).username === '' && new URL(v).password === ''), {
    message: 'put upstream credentials in `credential`, not in the URL',
  })
  .meta({ description: 'Upstream base URL; its path is prefixed to the forwarded path.' });

const timeoutsSchema = z.strictObject({
  connect: duration('Time to open a connection to the upstream (504 after).', TIMER_MAX).optional(),
  header: duration('Time from sending the request to the upstream response headers (504 after).', TIMER_MAX).optional(),
  idle: duration('Longest silence while a response body streams (the response is cut after).', TIMER_MAX).optional(),
});

export const credentialSchema = z
  .discriminatedUnion(
    'type',
    [
      z.strictObject({ type: z.literal('none').meta({ description: 'Send no credential upstream.' }) }),
      z.strictObject({
        type: z.literal('static'),
        // Sent as a header value: a control character (a secret file's trailing newline) cannot be
        // one, and Node would refuse it on every request (502), or throw answering a forward-auth check.
        token: z
          .string()
          .regex(
            /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/,
            'the token must be printable ASCII, without control characters (a trailing newline?) or spaces at either end',
          )
          .meta({
            description:
              'The upstream token, normally `${GATEWAY_TOKEN}` from the environment. One of `static_tokens` is refused at load: the upstream could present it to the gateway with that token’s scopes.',
          }),
        header: headerName('Header carrying it.').prefault('authorization'),
        scheme: z
          .string()
          .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]*$/)
          .default('Bearer')
          .meta({ description: 'Scheme before the token (`Bearer`); empty for a bare value (an API key header).' }),
      }),
      z.strictObject({
        type: z.literal('exchange'),
        audience: z.string().min(1).meta({ description: "The upstream's audience for minted tokens." }),
        scopes: z
          .array(z.string().min(1))
          .optional()
          .meta({ description: "Scopes minted tokens may carry (∩ the caller's); default: the matched rule's scopes." }),
        max_ttl: duration('Longest lifetime of a minted token (never beyond the caller token).', DAY).prefault('5m'),
        refresh_before: duration('Mint a new token when the cached one has less than this left.', DAY).prefault('30s'),
        mint_timeout: duration(
          'How long the requests waiting for a token to be minted wait (0.1 s to 1 m); then each gets 502 `upstream_credential_unavailable` (audited with `upstream_error: mint_timeout`) and nothing is sent upstream. ' +
            'Keep it a few seconds: a mint of the token service is a few store calls, each bounded by the store’s own timeout (`store.postgres.request_timeout`, `store.sqlite.busy_timeout`, 5 s by default), ' +
            'and while a token issuer hangs, each waiting caller holds its connection (a slot of `gateway.limits.max_connections`) until this passes. ' +
            'A token minted after it, if still valid, is cached for the caller’s next request.',
          60,
          0.1,
        )
          .refine((v) => v >= 0.1, { message: 'write at least 0.1s: every mint would fail' })
          .prefault('5s'),
        max_in_flight: z.number().int().min(1).default(64).meta({
          description:
            'Calls to the token service unsettled at once on this route, those past `mint_timeout` included (a hung call counts until it ends); one caller holds at most two (the one given up on and a new try). A mint past it is refused at once with 503 `upstream_credential_busy` and Retry-After (audited with `upstream_error: mints_in_flight`), never queued: a cold start (a restart, a reload that changes the route’s `audience`, `scopes`, `max_ttl` or `refresh_before`) with more distinct callers at once than this refuses the excess at once, so raise it for a route with many callers. A reload that leaves those four unchanged keeps the route’s cached tokens and goes on counting its calls under way against the new value; one that changes them, or a route renamed or added again, counts afresh. Default 64.',
        }),
        cache_size: z.number().int().min(0).default(10_000).meta({
          description:
            'Minted tokens cached, per caller and rule: keyed by what the mint read of the caller token (its hash, subject, client, scopes, expiry, chain, grant, key binding) and the scopes it asked for, so a token whose introspected answer changes gets a new one. Kept across a reload that leaves the route’s `audience`, `scopes`, `max_ttl` and `refresh_before` unchanged (a changed size keeps the newest), with the tokens being minted at the reload, which are cached at the new size when they come. 0: none.',
        }),
      }),
      z.strictObject({
        type: z
          .literal('passthrough')
          .meta({ description: "Forward the caller's own Authorization header (needs `gateway.allow_passthrough`)." }),
      }),
    ],
    { error: () => 'write credential.type: none, static, exchange or passthrough' },
  )
  .meta({ description: 'How the gateway authenticates to the upstream. Callers never see it.' });

export const a2aSchema = z
  .strictObject({
    card: z
      .record(z.string(), z.unknown())
      .optional()
      .meta({ description: 'The agent card; when omitted it is fetched from the upstream at `card_path`.' }),
    card_path: z.string().startsWith('/').default('/.well-known/agent-card.json').meta({ description: 'Upstream path of the agent card.' }),
    cache_ttl: duration('How long a fetched card is served before it is fetched again.', 30 * DAY).prefault('60s'),
    url: z.string().url().optional().meta({
      description:
        'Public URL of the agent’s endpoint, written into the card’s `url` and its interfaces at or under the upstream’s card URL (interfaces elsewhere are dropped). Unset: the gateway’s URL for the route, as its RFC 9728 metadata names it (server.public_url, else the origin the request came to: its Host, or what a proxy in gateway.trust_proxy forwards), followed by the path that reaches each URL of the card at the upstream’s origin through the route (strip_prefix put back; the card’s `url` at the route’s path_prefix when none does). Never the upstream’s own address, which would send clients around the gateway. An interface elsewhere (another host or port, a path the route does not reach) is dropped rather than kept: the gateway does not protect it, and a client would send it the Tessera token the card asks for.',
    }),
    token_url: z.string().url().meta({ description: 'OAuth 2 token endpoint advertised for the client_credentials flow.' }),
    scopes: z
      .record(z.string().min(1), z.string())
      .default({})
      .meta({ description: 'Scopes advertised in the OAuth 2 flow: name → description.' }),
    bind_tasks: z.boolean().default(true).meta({
      description:
        "Bind tasks and contexts to the principal that created them: a request naming another principal's task (tasks/get, tasks/cancel, tasks/resubscribe, push notification configs, a message continuing it) is refused as an unknown task (-32001), listing tasks and the HTTP+JSON binding's task paths are refused. Kept in the store under `tessera serve` (shared by every instance on it, kept across restarts); in the process under `tessera gateway`, where a restart forgets every task and other instances do not know it: route each caller to one, or set false and let the upstream check ownership. Forward-auth checks for the route are refused (the proxy shows neither bodies nor answers).",
    }),
    task_ttl: duration(
      'How long a task or context stays bound after it was last named; after it, it is unknown to the gateway.',
      30 * DAY,
    ).prefault('24h'),
    max_tasks_per_principal: z.number().int().min(1).max(1_000_000).default(10_000).meta({
      description:
        'With bind_tasks: the most live tasks and contexts (together) one principal may own on this route. A request naming a new one past it is refused (503, JSON-RPC -32000, a2a_task_registry_full), and so is an answer naming one (nothing of it relayed; the agent did the work, so agents should not be driven to it): a caller reaches it only by creating tasks faster than task_ttl ends them. Renewing one it owns is never refused. Under `tessera gateway` the process also holds at most 100 000 in all.',
    }),
    allow_private_push_urls: z.boolean().default(false).meta({
      description:
        'Let callers name push notification webhooks (a `url` in a pushNotificationConfig, in a push notification config call) at internal addresses: loopback, private, link-local (cloud metadata), shared, reserved or multicast IPs, `localhost`, names under `.localhost`, `.local`, `.internal` or `.home.arpa`, single-label names, or a scheme other than http and https. The agent calls the webhook from where it runs, behind the gateway; by default such a URL is refused before the agent sees it (400, JSON-RPC -32602, a2a_push_url_refused). A public name resolving to an internal address is the agent’s to refuse when it connects.',
    }),
    max_answer_size: byteSize(
      'With bind_tasks: the largest answer the gateway reads for the tasks and contexts it names, a JSON answer or any answer to a request other than GET or HEAD but a 2xx event stream (held whole until read), or one event of an event stream. A larger held answer is refused (502 a2a_upstream_answer_too_large, nothing relayed) and an event stream is cut before the larger event ends: an answer not read would leave its ids unrecorded. Raise it for agents answering large artifacts inline. Default 4mb.',
    ).prefault('4mb'),
  })
  .meta({ description: 'A2A discovery: the public agent card, served with Tessera security schemes.' });

export const mcpSchema = z
  .strictObject({
    max_message_size: byteSize('Largest JSON-RPC request body the gateway reads before deciding (413 after). Default 1mb.').prefault('1mb'),
    resource: z
      .string()
      .url()
      // RFC 9728 §2 / RFC 8707 §2: an absolute URI without a fragment; a query would be dropped from
      // the metadata URL derived from it, so it is refused rather than silently moved.
      .refine((u) => !u.includes('#') && !u.includes('?'), {
        message: 'an MCP resource identifier has no query or fragment (RFC 9728 §2); write e.g. https://mcp.example.com/mcp',
      })
      .optional()
      .meta({
        description:
          "The protected resource's identifier (RFC 9728 `resource`), e.g. https://mcp.example.com/mcp, without a query or fragment. Default: the public URL (server.public_url or the request's) followed by the route's path_prefix.",
      }),
    authorization_servers: z.array(z.string().url()).min(1).optional().meta({
      description:
        'Issuer URLs of the authorization servers advertised in the metadata. Default: the issuer of the token service under `tessera serve`, else the `issuers` the gateway trusts.',
    }),
    scopes_supported: z
      .array(z.string().min(1))
      .optional()
      .meta({ description: "Scopes advertised in the metadata (`scopes_supported`). Default: every scope the route's rules name." }),
    filter_tools_list: z.boolean().default(true).meta({
      description:
        "List in a tools/list answer only the tools the caller's token may call (each decided by the rules as a tools/call of it would be), in a JSON answer and in an SSE stream alike; every SSE stream of the route (a GET resuming one with Last-Event-ID replays stored responses) has any response carrying tools filtered the same way, and one compressed anyway is refused. false: every tool the upstream lists reaches the caller.",
    }),
    max_tools_list_size: byteSize(
      'Largest tools/list result (one JSON answer, or the SSE response event answering a tools/list) the gateway reads whole to filter; a larger one is answered with a JSON-RPC error, never passed unfiltered. On the other SSE streams of the route, a response event, and any other JSON answer (the MCP SDK in JSON mode may answer a request with a pending tools/list’s result of the same id), is held up to this size; a larger one whose result has shown no tools member by then (a large tools/call result) streams on, and is cut before its end if one shows up later. Default 4mb.',
    ).prefault('4mb'),
    bind_tasks: z.boolean().default(true).meta({
      description:
        'Bind MCP tasks (MCP 2025-11-25: a request with `params.task` runs as a task) to the principal and the tool that created them: the task id in the answer to a task-augmented tools/call (JSON or SSE, read before a byte of it is relayed) is recorded as the caller’s, and a tasks/get, tasks/result, tasks/cancel (any tasks/… method but tasks/list) naming another principal’s task or one the gateway never saw created is refused as not found (404, JSON-RPC -32602, mcp_task_foreign or mcp_task_unknown); one naming the caller’s own task is decided again as a tools/call of the tool that created it (a token no longer allowed that tool is refused 403). So is any request or notification whose params._meta `io.modelcontextprotocol/related-task` names a task (an upstream runs it in that task’s context); one whose related task is not one string taskId is refused (400, mcp_message_invalid). tasks/list is refused (mcp_task_list_refused) unless list_tasks. Not over the legacy HTTP+SSE transport: a task-augmented tools/call or a tasks/list posted on a legacy session (?sessionId=) is refused before the upstream (400, JSON-RPC -32600, mcp_task_legacy_refused), since its answer goes on the session’s GET stream, where the task could not be recorded for its creator. Kept in the store under `tessera serve` (shared by every instance on it, kept across restarts); in the process under `tessera gateway`, where a restart forgets every task and other instances do not know it. false: the upstream alone decides who may read a task.',
    }),
    task_ttl: duration(
      'With bind_tasks: how long a task stays bound after it was last named; after it, it is unknown to the gateway.',
      30 * DAY,
    ).prefault('24h'),
    max_tasks_per_principal: z.number().int().min(1).max(1_000_000).default(10_000).meta({
      description:
        'With bind_tasks: the most live tasks one principal may own on this route, whatever tools created them. An answer creating one past it is refused (503, JSON-RPC -32000, mcp_task_registry_full; nothing of it relayed, though the upstream created the task). Under `tessera gateway` the process also holds at most 100 000 records in all: two for each MCP task (its owner and tool, its principal counted), one for each A2A id.',
    }),
    list_tasks: z.boolean().default(false).meta({
      description:
        'With bind_tasks: let tasks/list through, its answer filtered to the caller’s own tasks (recorded as its, created by a tool its token may call now; JSON or SSE, held whole up to 4mb, an SSE answer rebuilt without event ids so it cannot be resumed), its nextCursor sealed for the caller (an upstream’s cursor may name another principal’s task; a cursor not sealed for the caller is refused, 400 mcp_message_invalid). A page may come back shorter than the upstream’s, even empty, with a nextCursor: page on. Every other answer and stream of the route is then read for a task list, which is refused (a resumed stream replaying one, the legacy HTTP+SSE transport’s GET stream; 502 or the event replaced by a JSON-RPC error, reason mcp_upstream_task_list_refused, metric kind task_list_refused), even with filter_tools_list false. Default false: tasks/list is refused (400, JSON-RPC -32601, mcp_task_list_refused).',
    }),
  })
  .meta({
    description:
      'An MCP (Streamable HTTP) route: the gateway reads each JSON-RPC request body to authorize tools/call by tool, lists in tools/list answers only the tools the caller may call, serves RFC 9728 protected resource metadata and signs session ids for their principal. `mcp: {}` takes the defaults.',
  });

export const rateLimitSchema = z
  .strictObject({
    key: z.enum(['subject', 'client', 'ip']).default('subject').meta({
      description:
        'Whose requests share a bucket: `ip` is the client address (an IPv6 address by its /64); `subject` and `client` fall back to it on routes without authentication.',
    }),
    rate: z
      .number()
      .min(0.0000116, 'write at least 0.0000116, about one request a day (a refused client is told to wait at most a day)')
      .meta({ description: 'Sustained requests per second; at least 0.0000116, about one a day.' }),
    burst: z.number().int().min(1).optional().meta({ description: 'Bucket size (default: rate, at least 1).' }),
    max_keys: z.number().int().min(1).default(100_000).meta({ description: 'Buckets kept (oldest evicted).' }),
  })
  .meta({ description: 'Token-bucket rate limit per route; 429 with Retry-After when empty.' });

export const authFailureLimitSchema = z
  .strictObject({
    rate: z
      .number()
      .min(0.0000116, 'write at least 0.0000116, about one failure a day (a refused client is told to wait at most a day)')
      .meta({ description: 'Failed authentications per second an address regains; at least 0.0000116, about one a day.' }),
    burst: z
      .number()
      .int()
      .min(1)
      .default(10)
      .meta({ description: 'Failed authentications an address may make in a row before it is refused (default 10).' }),
    max_keys: z.number().int().min(1).default(100_000).meta({
      description:
        'Addresses kept (oldest evicted; an evicted one starts full again). Only addresses short of failures are kept: one whose bucket refills is dropped.',
    }),
  })
  .meta({
    description:
      'A token bucket of failed authentications per client address (as `rate_limit.key: ip` counts it: through `trust_proxy`, an IPv6 address by its /64), shared by every route that needs a token. Only a token refused as `invalid_token` (malformed, expired, revoked, inactive, unknown, for another audience) spends it; a missing token does not. An address whose bucket is empty is refused with 429 `auth_failure_rate_limited` and Retry-After before its token is checked: no verifier work, no call to the introspection endpoint. Default: off (see docs/gateway.md).',
  });

export const routeSchema = z
  .strictObject({
    id: z
      .string()
      .regex(ROUTE_ID, 'write 1-64 letters, digits, and . _ : -')
      .meta({ description: 'Route id (audit events, metrics labels).' }),
    match: z
      .strictObject({
        host: z
          .string()
          .regex(/^(\*\.)?[A-Za-z0-9.-]+$/, 'write a host name (api.example.com) or a wildcard (*.example.com), without port')
          .transform((v) => v.toLowerCase())
          .optional()
          .meta({ description: 'Host (without port), exact or `*.suffix`; omitted matches any host.' }),
        path_prefix: z
          .string()
          .startsWith('/')
          .optional()
          .meta({ description: 'Segment-wise prefix: `/api` matches `/api` and `/api/x`, not `/apix`.' }),
        path: z.string().startsWith('/').optional().meta({ description: 'Path pattern (`/v1/:tenant/**`) as in rules.' }),
        methods: z
          .array(z.string().regex(/^[A-Za-z]+$/, 'an HTTP method'))
          .min(1)
          .transform((a) => a.map((m) => m.toUpperCase()))
          .optional()
          .meta({ description: 'Methods; omitted matches any. GET also matches HEAD (frameworks run GET handlers for it).' }),
      })
      .prefault({})
      .meta({ description: 'Which requests this route takes. Routes are tried in order; the first match wins.' }),
    upstream: z.strictObject({
      url: upstreamUrl,
      strip_prefix: z.string().startsWith('/').optional().meta({ description: 'Removed from the path before forwarding.' }),
      preserve_host: z.boolean().default(false).meta({ description: "Send the caller's Host instead of the upstream's." }),
      connections: z.number().int().min(1).default(128).meta({ description: 'Keep-alive connections to this upstream.' }),
      timeouts: timeoutsSchema.prefault({}),
      credential: credentialSchema.prefault({ type: 'none' }),
    }),
    auth: z
      .union([authKind, z.array(authKind).min(1)])
      .transform((v) => (Array.isArray(v) ? [...new Set(v)] : [v]))
      .meta({
        description:
          'How callers authenticate: none (public), jwt, static, introspection, or a list tried in order (`jwt` takes only tokens shaped as a JWS, `eyJ…` with two dots; any other token goes to the next method).',
      }),
    audience: z.string().min(1).optional().meta({ description: 'The caller token `aud` must contain this (jwt and introspection).' }),
    rules: z.array(ruleSchema).optional().meta({
      description:
        'Method/path(/tool/rpc) → scopes; first match decides (a rule an earlier one always matches first is refused at load), no match is 403. `[{}]` allows any authenticated caller.',
    }),
    case_insensitive_paths: z.boolean().default(false).meta({
      description:
        'Match the route and its rules case-insensitively (`/API/Admin` is `/api/admin`), for upstreams that ignore case. Only literal segments: a `:param` keeps the case sent and claim conditions compare exactly (`sub: ":id"` under `/Users/:id` holds on `/users/ABC` for the subject `ABC`, not `abc`). ASCII letters only, as upstreams fold the rest their own way: a path with a character that a case mapping makes an ASCII letter (`ı`, `ſ`, `İ`, Kelvin `K`, `ß`, `ﬁ`; `/admın` is `/admin` to .NET, Java and Python) is refused (400 `request_path_invalid`), as is one NFKC makes ASCII, for upstreams that normalize Unicode (fullwidth `ａ` and `／`, `ĳ`, `𝐚`, `²`; a soft hyphen or zero-width space in an otherwise ASCII segment), and a literal segment, path_prefix or upstream.strip_prefix outside ASCII is refused at load. Default: case-sensitive. A trailing slash never matters (`/a/` is `/a`).',
    }),
    identity_headers: z
      .array(z.enum(IDENTITY_FIELDS))
      .default([])
      .meta({
        description: `Identity facts sent upstream in the headers named by gateway.identity_headers: ${IDENTITY_FIELDS.join(', ')}.`,
      }),
    rate_limit: rateLimitSchema.optional(),
    max_body_size: byteSize('Largest request body for this route (default gateway.limits.max_body_size).').optional(),
    websocket: z
      .boolean()
      .default(true)
      .meta({ description: 'Allow WebSocket upgrades (authenticated before the upgrade). Never on an MCP or A2A route.' }),
    a2a: a2aSchema.optional(),
    mcp: mcpSchema.optional(),
  })
  .superRefine((r, ctx) => {
    const ok = trusted(ctx.issues);
    if (ok('auth')) {
      const publicRoute = r.auth.includes('none');
      if (publicRoute && r.auth.length > 1)
        ctx.addIssue({ code: 'custom', path: ['auth'], message: '"none" cannot be combined with other methods' });
      if (publicRoute) {
        if (ok('rules') && r.rules !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: ['rules'],
            message: 'a public route (auth: none) has no rules; remove them or require auth',
          });
        const credential = ok('upstream', 'credential') ? r.upstream.credential.type : undefined;
        if (credential === 'exchange' || credential === 'passthrough')
          ctx.addIssue({
            code: 'custom',
            path: ['upstream', 'credential', 'type'],
            message: `${credential} needs an authenticated caller; use static or none on a public route`,
          });
        if (ok('identity_headers') && r.identity_headers.length > 0)
          ctx.addIssue({ code: 'custom', path: ['identity_headers'], message: 'a public route has no identity to send' });
        if (ok('a2a') && r.a2a)
          ctx.addIssue({ code: 'custom', path: ['auth'], message: 'an A2A route protects everything but its card; set auth: jwt' });
        if (ok('mcp') && r.mcp)
          ctx.addIssue({
            code: 'custom',
            path: ['auth'],
            message: 'an MCP route authorizes tool calls and binds sessions to callers; set auth: jwt (or introspection, static)',
          });
        if (ok('rate_limit') && r.rate_limit && r.rate_limit.key !== 'ip')
          ctx.addIssue({ code: 'custom', path: ['rate_limit', 'key'], message: 'a public route can only rate-limit by ip' });
        if (ok('audience') && r.audience !== undefined)
          ctx.addIssue({ code: 'custom', path: ['audience'], message: 'a public route checks no audience' });
      } else if (ok('rules') && r.rules === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['rules'],
          message: 'list the rules for this route; write `rules: [{}]` to allow any caller with a valid token',
        });
      }
    }
    for (const [j, rule] of (Array.isArray(r.rules) ? r.rules : []).entries()) {
      // Only an MCP route's bodies are read: elsewhere the tool and the JSON-RPC method are never
      // known, and the rule could only ever refuse.
      if (ok('rules', j, 'tool') && ok('mcp') && rule.tool !== undefined && r.mcp === undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['rules', j, 'tool'],
          message:
            'a tool rule needs an MCP route, whose JSON-RPC bodies the gateway reads; add `mcp: {}` to this route, or remove `tool` and match by method and path',
        });
      if (ok('rules', j, 'rpc') && ok('mcp') && rule.rpc !== undefined && r.mcp === undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['rules', j, 'rpc'],
          message:
            'an rpc rule needs an MCP route, whose JSON-RPC bodies the gateway reads; add `mcp: {}` to this route, or remove `rpc` and match by method and path',
        });
    }
    // The gateway serves a route as MCP or as A2A, not both: an MCP route's requests never reach the
    // A2A handling, so its extended card would be relayed raw.
    if (ok('mcp') && ok('a2a') && r.mcp !== undefined && r.a2a !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['a2a'],
        message: 'a route is an MCP route or an A2A route, not both; give each its own route (and path_prefix)',
      });
    if (ok('mcp') && ok('match', 'path') && r.mcp !== undefined && r.match.path !== undefined && r.mcp.resource === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['mcp', 'resource'],
        message:
          'an MCP route matched by a path pattern has no path to advertise; match it with path_prefix (e.g. /mcp), or set mcp.resource to its URL',
      });
    // MCP authorization: a server accepts only tokens issued for it. Without a route audience, any
    // audience the issuer lists passes (a token minted for another API of the same issuer); with
    // another audience than the advertised resource, the tokens clients get for it (RFC 8707) fail.
    if (ok('mcp') && ok('auth') && ok('audience') && r.mcp !== undefined && r.auth.some((a) => a === 'jwt' || a === 'introspection')) {
      if (r.audience === undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['audience'],
          message:
            'an MCP route accepts only tokens issued for it (MCP authorization); set audience: to the MCP resource URL, e.g. https://mcp.example.com/mcp',
        });
      else if (r.mcp.resource !== undefined && r.audience !== r.mcp.resource)
        ctx.addIssue({
          code: 'custom',
          path: ['audience'],
          message: `clients request tokens for the advertised resource ${r.mcp.resource} (RFC 8707), which this audience refuses; set audience: ${r.mcp.resource}`,
        });
    }
    if (ok('match', 'path') && ok('match', 'path_prefix') && r.match.path !== undefined && r.match.path_prefix !== undefined)
      ctx.addIssue({ code: 'custom', path: ['match', 'path'], message: 'give either path (a pattern) or path_prefix, not both' });
    // As for a pattern's literals (core/policy.ts): matched without case, the prefix is folded as
    // JavaScript folds it, which an upstream ignoring case need not share outside ASCII.
    if (ok('match', 'path_prefix') && ok('case_insensitive_paths') && r.case_insensitive_paths && r.match.path_prefix !== undefined) {
      const prefix = r.match.path_prefix;
      let decoded = prefix;
      try {
        decoded = decodeURIComponent(prefix);
      } catch {}
      if (/[\u{80}-\u{10ffff}]/u.test(decoded))
        ctx.addIssue({
          code: 'custom',
          path: ['match', 'path_prefix'],
          message: `${JSON.stringify(prefix)} has characters outside ASCII, whose case JavaScript folds otherwise than some upstreams do ("ß" is "ss" to Python’s casefold, "Σ" has two lower cases), so a path spelled another way would pass this route by; match it with an ASCII prefix, or a path pattern with * or a :name parameter for that segment, or leave case_insensitive_paths off on this route`,
        });
    }
    // The same for what is stripped: compared without case as the match is (prefixEnd), a prefix
    // outside ASCII would be missed in a spelling an upstream folding its own way reads as it.
    if (ok('upstream') && ok('case_insensitive_paths') && r.case_insensitive_paths && r.upstream.strip_prefix !== undefined) {
      const strip = r.upstream.strip_prefix;
      let decoded = strip;
      try {
        decoded = decodeURIComponent(strip);
      } catch {}
      if (/[\u{80}-\u{10ffff}]/u.test(decoded))
        ctx.addIssue({
          code: 'custom',
          path: ['upstream', 'strip_prefix'],
          message: `${JSON.stringify(strip)} has characters outside ASCII, whose case JavaScript folds otherwise than some upstreams do ("ß" is "ss" to Python’s casefold, "Σ" has two lower cases), so a path spelled another way would keep it (/STRASSE/x is /straße/x to such an upstream, but not stripped by /straße); strip an ASCII prefix (the route’s ASCII path_prefix), or leave case_insensitive_paths off on this route`,
        });
    }
  }, always)
  .meta({ description: 'One route: which requests, which upstream, who may call it and with what.' });

/** `gateway.limits`: the listener’s limits ({@link listenerLimitFields}) and the gateway’s body limit. */
export const limitsSchema = z
  .strictObject({
    ...listenerLimitFields,
    max_body_size: byteSize('Largest request body (413 after).').prefault('10mb'),
  })
  .superRefine(checkListenerTimeouts)
  .prefault({})
  .meta({ description: `Limits of the listener and of the requests the gateway forwards. ${listenerLimitsRule}` });

const loopbackPeers = ['127.0.0.0/8', '::1'];

export const gatewaySchema = z
  .strictObject({
    routes: z.array(routeSchema).min(1, 'list at least one route').meta({ description: 'Routes, tried in order.' }),
    exchange_client: z
      .string()
      .min(1)
      .optional()
      .meta({
        description:
          'The token-service client the gateway acts as when it mints `exchange` credentials (in `tessera serve`). ' +
          'Register it with the token-exchange grant and the upstream audiences, not DPoP-bound (`clients add --dpop-bound`, RFC 9449 dpop_bound_access_tokens): the gateway proves no DPoP key when it mints and sends the token upstream as a bearer token, so such a client is refused at start, and each mint for one bound later fails (502 `upstream_credential_unavailable`, audited with `upstream_error: client_dpop_proof_required`).',
      }),
    trust_proxy: z
      .array(z.string().min(1), {
        error: (i) =>
          typeof i.input === 'boolean'
            ? 'write the addresses or CIDRs of the proxies in front of the gateway, e.g. trust_proxy: ["10.0.0.0/8", "127.0.0.1/32"] ([] trusts none)'
            : 'write a list of addresses or CIDRs, e.g. ["10.0.0.0/8", "127.0.0.1/32"]',
      })
      .default([])
      .meta({
        description:
          'Proxies in front of the gateway (addresses or CIDRs). X-Forwarded-For is walked from the right past these to find the client; X-Forwarded-Host/-Proto (their rightmost entry, the one the nearest proxy wrote) are believed, and Forwarded extended, only from them. Default: none.',
      }),
    auth_failure_limit: authFailureLimitSchema.optional(),
    trust_sub_id: z.array(z.string().min(1)).default([]).meta({
      description:
        'Issuers (each one of `issuers`) whose tokens’ RFC 9493 `sub_id` (`iss_sub` format, naming the token’s own `sub`) is believed to name the issuer the subject belongs to: identity header `subject_issuer`, `rate_limit.key: subject` and the audit event’s `subject_issuer`. List the token service of a `tessera serve` whose tokens this gateway verifies, never an identity provider: one listed could pass its users off as another issuer’s. The token service in the same process (`tessera serve`) is always believed. Default: none.',
    }),
    allow_passthrough: z
      .boolean()
      .default(false)
      .meta({ description: "Permit `credential: passthrough` (the caller's token reaches the upstream). Logged as a warning." }),
    identity_headers: z
      .strictObject({
        subject: headerName('Subject header.').prefault('x-tessera-subject'),
        client: headerName('Client id header.').prefault('x-tessera-client-id'),
        issuer: headerName('Issuer header.').prefault('x-tessera-issuer'),
        subject_issuer: headerName(
          'Subject issuer header: the issuer the subject belongs to. For a token of the token service of `tessera serve` (in the same process, or listed in `gateway.trust_sub_id`, or introspected with `introspection.trust_sub_id`) issued for another issuer’s subject, the issuer its RFC 9493 `sub_id` names; else the token’s issuer.',
        ).prefault('x-tessera-subject-issuer'),
        actors: headerName(
          'Actor chain header (current actor first, comma-separated; an actor whose `act` names an issuer other than the token’s as `sub (iss)`; a space, parenthesis, comma or `%` in a subject or issuer percent-encoded).',
        ).prefault('x-tessera-actor-chain'),
        delegation: headerName('Delegation (grant) id header.').prefault('x-tessera-delegation-id'),
        scopes: headerName('Granted scopes header (space-separated).').prefault('x-tessera-scopes'),
        token_id: headerName('Token id (`jti`) header.').prefault('x-tessera-token-id'),
      })
      .prefault({})
      .meta({ description: 'Names of identity headers. Inbound copies of all of them are always stripped.' }),
    strip_headers: z
      .array(headerName('A header name.'))
      .default([])
      .meta({ description: 'Further inbound headers never forwarded (e.g. another proxy’s identity headers).' }),
    strip_cookies: z.array(z.string().min(1)).default([]).meta({
      description:
        'Cookies never forwarded upstream (session cookies of the gateway’s domain). The token service’s login cookies never are, listed or not.',
    }),
    limits: limitsSchema,
    timeouts: z
      .strictObject({
        connect: duration('Time to open a connection to an upstream (504 after).', TIMER_MAX).prefault('5s'),
        header: duration('Time to the upstream response headers (504 after).', TIMER_MAX).prefault('30s'),
        idle: duration('Longest silence while a response body streams.', TIMER_MAX).prefault('5m'),
      })
      .prefault({})
      .meta({ description: 'Upstream timeouts; routes may override them.' }),
    forward_auth: z
      .strictObject({
        enabled: z.boolean().default(false),
        flavor: z
          .enum(['nginx', 'traefik', 'caddy', 'envoy'], {
            error: (i) => `${quoted(i.input)} is not a forward-auth flavor; write nginx, traefik, caddy or envoy`,
          })
          .optional()
          .meta({
            description:
              'The proxy that calls the endpoint (required when enabled): nginx (X-Original-URI/-Method/-Host), traefik or caddy (X-Forwarded-Uri/-Method/-Host) or envoy (ext_authz path_prefix). Only its headers are read.',
          }),
        path: z.string().startsWith('/').default('/_tessera/auth').meta({
          description:
            'Endpoint for nginx auth_request, Traefik ForwardAuth and Caddy forward_auth; Envoy ext_authz uses it as path_prefix (`<path>/<original path>`).',
        }),
        allowed_peers: z
          .array(z.string().min(1))
          .default(loopbackPeers)
          .meta({ description: 'Addresses or CIDRs allowed to call it: the answer carries the upstream credential.' }),
        shared_secret: z
          .strictObject({
            header: headerName('Header the proxy adds to every check.').prefault('x-tessera-forward-auth'),
            value: z
              .string()
              .min(16, 'use at least 16 characters, normally `${FORWARD_AUTH_SECRET}` from the environment')
              .meta({ description: 'The secret, normally `${FORWARD_AUTH_SECRET}` from the environment.' }),
          })
          .optional()
          .meta({
            description:
              'A secret the proxy sends with every check (compared in constant time); checks without it get 403. Required when a route injects a credential (static or exchange).',
          }),
        cache_ttl: duration(
          'Let nginx cache an allow decision this long (X-Accel-Expires, never past the token expiry; never for a DPoP-bound token, whose proof is single-use). ' +
            'A revoked token then keeps passing nginx for up to this long; 0 (default) disables it.',
          60,
        ).prefault(0),
      })
      .prefault({})
      .meta({ description: 'The decision pipeline as an authorization endpoint for proxies you already run.' }),
    operations: z
      .strictObject({
        ...operationsFields,
        jwks_max_stale: duration(
          'How long a remote JWKS may stay past its TTL (refreshes failing) before /readyz reports not ready; the last good keys are used meanwhile.',
          30 * DAY,
        ).prefault('1h'),
      })
      .prefault({})
      .meta({ description: `Probes and Prometheus metrics. ${operationsRule}` }),
    mcp_session_secret: z
      .string()
      .min(32, 'use at least 32 characters, normally `${MCP_SESSION_SECRET}` from the environment (e.g. `openssl rand -base64 32`)')
      .optional()
      .meta({
        description:
          'Key material for signing MCP session ids, normally `${MCP_SESSION_SECRET}` from the environment. Gateways with the same secret accept each other’s sessions, across restarts. Default: under `tessera serve`, a key derived from the master key; under `tessera gateway`, a random key per process (sessions then end with the process and stay on one instance).',
      }),
    drain_timeout: duration(
      'The deadline of a graceful shutdown (SIGTERM), shared by the requests in flight and the audit events: requests may finish until then, then connections are cut; the audit events still queued (the gateway’s and, under `tessera serve`, the token service’s) get what is left of it, and at least 1 s (or `drain_timeout`, when shorter) after the drain, then those not written are counted in one `audit_events_lost` log line (each of the two its own) and dropped. The process is gone `drain_timeout` + 1 s after SIGTERM at the latest: set Kubernetes’ `terminationGracePeriodSeconds` to at least that.',
      TIMER_MAX,
    ).prefault('10s'),
    watch_config: z.boolean().default(true).meta({ description: 'Reload when the configuration file changes (SIGHUP always reloads).' }),
  })
  .superRefine((g, ctx) => {
    const ok = trusted(ctx.issues);
    const routes = Array.isArray(g.routes) ? g.routes : [];
    const credential = (i: number) => (ok('routes', i, 'upstream', 'credential') ? routes[i]?.upstream.credential.type : undefined);
    const seen = new Set<string>();
    for (const [i, r] of routes.entries()) {
      if (ok('routes', i, 'id')) {
        if (seen.has(r.id)) ctx.addIssue({ code: 'custom', path: ['routes', i, 'id'], message: `route id ${quoted(r.id)} is used twice` });
        seen.add(r.id);
      }
      if (credential(i) === 'passthrough' && ok('allow_passthrough') && !g.allow_passthrough)
        ctx.addIssue({
          code: 'custom',
          path: ['routes', i, 'upstream', 'credential', 'type'],
          message: "passthrough sends the caller's token to the upstream; set gateway.allow_passthrough: true to permit it",
        });
    }
    const forwardAuth = ok('forward_auth', 'enabled') && g.forward_auth.enabled;
    if (forwardAuth && ok('forward_auth', 'flavor') && g.forward_auth.flavor === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['forward_auth', 'flavor'],
        message: 'say which proxy calls the forward-auth endpoint: write flavor: nginx, traefik, caddy or envoy',
      });
    if (forwardAuth && ok('forward_auth', 'shared_secret') && g.forward_auth.shared_secret === undefined) {
      const injecting = routes.findIndex((_, i) => credential(i) === 'static' || credential(i) === 'exchange');
      if (injecting >= 0)
        ctx.addIssue({
          code: 'custom',
          path: ['forward_auth', 'shared_secret'],
          message: `forward-auth answers carry the upstream credential of route "${routes[injecting]?.id}"; add shared_secret: { header: X-Tessera-Forward-Auth, value: "\${FORWARD_AUTH_SECRET}" } and have the proxy send that header`,
        });
    }
    if (ok('identity_headers')) {
      const names = Object.values(g.identity_headers);
      if (new Set(names).size !== names.length)
        ctx.addIssue({ code: 'custom', path: ['identity_headers'], message: 'each identity header needs its own name' });
      for (const [i, n] of names.entries()) {
        if (n === 'authorization' || n === 'host' || n === 'cookie')
          ctx.addIssue({ code: 'custom', path: ['identity_headers', i], message: `${quoted(n)} cannot be an identity header` });
      }
    }
  }, always)
  .meta({ description: 'The gateway: routes to upstreams, their authentication and rules.' });

export const auditSchema = z
  .strictObject({
    stdout: z.boolean().default(false).meta({ description: 'Write audit events as JSON lines to stdout.' }),
    file: filePath().optional().meta({
      description:
        "Append audit events as JSON lines to this file (a relative path is read from the configuration file's directory): created mode 0600; never opened through a symlink at its path; an existing file that another user owns (`chown` it to the user Tessera runs as, or remove it) or that its group or every user may write (`chmod go-w` it) is refused (at start and on reload), since they could forge or erase events. Rotate it by renaming it, then SIGHUP; one deleted or renamed away without a SIGHUP is noticed before the next batch and opened again at its path (an `audit_file_reopened` warning; a file found there that another user owns or that its group or every user may write gets no event until it is fixed).",
    }),
    batch_size: z.number().int().min(1).max(10_000).default(256).meta({ description: 'Events written per batch.' }),
    flush_interval: duration('Longest time an event waits before it is written.', TIMER_MAX).prefault('1s'),
    max_queue: z.number().int().min(1).max(1_000_000).default(100_000).meta({
      description:
        'Events held in memory while an output is slow or failing (the store keeps what it refused for its next attempt), by the gateway and by the token service each; what `on_queue_full` says happens beyond it. With `refuse`, the token service keeps the records of revocations already made (`grant.revoked`, `token.revoked`, `login.signed_out`; not one that revoked or ended nothing) past it, up to twice it (a fixed ceiling; beyond, they are dropped and logged as `audit_events_dropped`). At most 1 000 000 (an event is about 1 KB).',
    }),
    on_queue_full: z.enum(['drop', 'refuse']).default('drop').meta({
      description:
        'While the audit queue holds `max_queue` events: `drop` serves on and drops the events that do not fit (counted in `tessera_audit_events_dropped_total`); `refuse` fails closed: `file` and `stdout` keep the batches they refuse and try them again, as the store does, so a failing output fills the queue too, and while it is full the gateway answers new requests and forward-auth checks with 503 `audit_unavailable` and the token service its token, introspection, registration, authorization (consent page), login callback and admin grant-tree requests with 503 `temporarily_unavailable` (`Retry-After: 5`; revocations and sign-outs are always served: they take access away), /readyz reports not ready, until the outputs take the queue again. The operations paths keep answering.',
    }),
  })
  .meta({ description: 'Audit trail outputs.' });

export type GatewayConfig = z.output<typeof gatewaySchema>;
export type GatewayConfigInput = z.input<typeof gatewaySchema>;
export type RouteConfig = z.output<typeof routeSchema>;
export type CredentialConfig = z.output<typeof credentialSchema>;
export type AuditConfig = z.output<typeof auditSchema>;
export type McpConfig = z.output<typeof mcpSchema>;
