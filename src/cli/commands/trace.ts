/**
 * `tessera trace ID`: the delegation chain an id belongs to, in one screen: from the root grant
 * (whose authority, approved when, by which client) through each token exchange down to the tokens
 * and the gateway decisions that used them, with the revocations that touched it.
 *
 * The id may be a request id, a jti, a grant id or a token's short hash; which one is found by
 * looking it up. A pasted token (a JWT, a refresh token, a static or opaque token) is looked up by
 * its short hash (and a JWT also by its `jti` claim) and is never printed: output and errors name
 * an argument only when the store already holds it as an id or it has an id's shape.
 */
import { Buffer } from 'node:buffer';
import type { Command } from 'commander';
import type { Trace, TraceApproval, TraceGrant, TraceRequest, TraceToken } from '../../audit/trace.ts';
import { TRACE_KINDS, type TraceKind } from '../../audit/trace-kinds.ts';
import { CLIENT_SECRET_PREFIX, REFRESH_TOKEN_PREFIX, sha256, tokenHash } from '../../issuer/secrets.ts';
import type { Store } from '../../store/contract.ts';
import { readArg, withConfig } from '../options.ts';
import { CliError, printable, printJson } from '../output.ts';
import { fieldValue } from './audit.ts';

const KIND_NAMES: Record<TraceKind, string> = {
  request: 'request id',
  jti: 'jti',
  grant: 'grant id',
  'token-hash': 'token hash',
};

/** One way to look the argument up. */
interface Candidate {
  readonly kind: TraceKind;
  readonly value: string;
  /** Derived from a pasted token: printed as `display`, never as the argument. */
  readonly fromToken: boolean;
  readonly display: string;
}

/** The argument, classified: what to look it up as, and how it may be named in output. */
export interface TraceArgument {
  /** Looked up as ids; the store holding one of them makes it printable. */
  readonly ids: readonly Candidate[];
  /** Derived from a pasted token, tried in order when no id matches. */
  readonly token: readonly Candidate[];
  /** How errors name the argument: the argument itself only when it has an id's shape. */
  readonly label: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const GRANT_ID = /^g_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TOKEN_HASH = /^[A-Za-z0-9_-]{16}$/;
const JWT = /^[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]+$/;
const PRINTABLE = /^[\x21-\x7e]{1,256}$/;

/** The `jti` claim of a JWT, unverified (it is only a lookup key; the trace says so). */
function jtiClaim(jwt: string): string | undefined {
  try {
    const payload = JSON.parse(Buffer.from(jwt.split('.')[1] as string, 'base64url').toString('utf8')) as { jti?: unknown };
    return typeof payload.jti === 'string' && PRINTABLE.test(payload.jti) ? payload.jti : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Classify the argument. Refuses, without echoing it, a client secret and anything that is no id
 * at all; `kind` restricts the lookups to one kind.
 */
export function classifyArgument(arg: string, kind?: TraceKind): TraceArgument {
  if (arg === '') throw new CliError('the ID is empty; give a request id, jti, grant id or token hash');
  if (arg.startsWith(CLIENT_SECRET_PREFIX)) {
    throw new CliError('that is a client secret, not an ID; nothing was looked up. If it leaked, rotate it with `tessera clients update`');
  }
  const hash = tokenHash(arg);
  const asToken = (k: TraceKind, value: string, display: string): Candidate => ({ kind: k, value, fromToken: true, display });
  const hashCandidate = asToken('token-hash', hash, `the pasted token (token hash ${hash})`);
  const only = (cs: Candidate[]) => (kind === undefined ? cs : cs.filter((c) => c.kind === kind));
  if (arg.startsWith(REFRESH_TOKEN_PREFIX) || JWT.test(arg)) {
    const jti = arg.startsWith(REFRESH_TOKEN_PREFIX) ? undefined : jtiClaim(arg);
    const token = [
      hashCandidate,
      ...(jti !== undefined ? [asToken('jti', jti, `jti ${jti} (read from the pasted token; its signature was not checked)`)] : []),
    ];
    return { ids: [], token: only(token), label: `the pasted token (token hash ${hash})` };
  }
  if (!PRINTABLE.test(arg)) {
    throw new CliError('the ID must be printable ASCII without spaces, at most 256 characters (a request id, jti, grant id or token hash)');
  }
  const shaped = UUID.test(arg) || GRANT_ID.test(arg) || TOKEN_HASH.test(arg);
  const ids = TRACE_KINDS.filter((k) => k !== 'token-hash' || TOKEN_HASH.test(arg)).map(
    (k): Candidate => ({ kind: k, value: arg, fromToken: false, display: `${KIND_NAMES[k]} ${arg}` }),
  );
  return {
    ids: only(ids),
    // A static or opaque token pasted as is: the gateway recorded its short hash.
    token: shaped ? [] : only([hashCandidate]),
    label: shaped ? `"${arg}"` : 'the given ID',
  };
}

/** Which candidate the store knows; refuses an id that several kinds know. */
export async function resolveArgument(
  store: Pick<Store, 'getGrant' | 'queryAudit' | 'getRefreshToken'>,
  arg: string,
  a: TraceArgument,
): Promise<Candidate> {
  const { isKnownAs } = await import('../../audit/trace.ts');
  const known: Candidate[] = [];
  for (const c of a.ids) if (await isKnownAs(store, c.kind, c.value)) known.push(c);
  if (known.length > 1) {
    const kinds = known.map((c) => KIND_NAMES[c.kind]);
    throw new CliError(
      `"${arg}" matches a ${kinds.slice(0, -1).join(', a ')} and a ${kinds.at(-1)}; choose one with --kind ${known.map((c) => c.kind).join('|')}`,
    );
  }
  if (known[0] !== undefined) return known[0];
  if (arg.startsWith(REFRESH_TOKEN_PREFIX)) {
    const record = await store.getRefreshToken(sha256(arg));
    if (record !== undefined)
      return { kind: 'grant', value: record.grantId, fromToken: true, display: `the pasted refresh token's grant ${record.grantId}` };
  }
  for (const c of a.token) if (await isKnownAs(store, c.kind, c.value)) return c;
  const kinds = [...new Set([...a.ids, ...a.token].map((c) => KIND_NAMES[c.kind]))];
  throw new CliError(
    `nothing matches ${a.label} as a ${new Intl.ListFormat('en', { type: 'disjunction' }).format(kinds)}, in the audit trail or the grants`,
  );
}

// Rendering: a tree, one node per grant, token and decision.

interface Node {
  readonly lines: readonly string[];
  readonly children: readonly Node[];
}

function render(node: Node, prefix: string, last: boolean, root: boolean, out: string[]): void {
  out.push(`${prefix}${root ? '' : last ? '└── ' : '├── '}${node.lines[0]}`);
  const inner = root ? prefix : `${prefix}${last ? '    ' : '│   '}`;
  for (const line of node.lines.slice(1)) out.push(`${inner}${node.children.length > 0 ? '│   ' : '    '}${line}`);
  node.children.forEach((c, i) => {
    render(c, inner, i === node.children.length - 1, false, out);
  });
}

const t = (iso: string | null) => (iso === null ? '-' : iso.replace('.000Z', 'Z'));
const join = (parts: readonly (string | false | null | undefined)[]) => parts.filter(Boolean).join(' · ');
/**
 * A value from the trail as one word of a line, as `tessera audit query` writes it
 * ({@link fieldValue}): a subject, client, actor, path or tool holding a space, `"`, a backslash or
 * a control character is a JSON string, so it cannot pass for fields or lines of its own.
 */
const v = (value: string) => fieldValue(value);
/** A list of values (scopes, audiences) as one field, space-separated, `-` when empty. */
const list = (values: readonly string[]) => values.map(v).join(' ') || '-';

function requestLine(r: TraceRequest): string {
  return (
    join([
      `${t(r.time)}  ${r.decision} ${v(r.reason)}`,
      r.method !== null && r.path !== null && `${v(r.method)} ${v(r.path)}`,
      r.kind !== 'gateway.request' && r.kind,
      r.route !== null && `route ${v(r.route)}`,
      r.tool !== null && `tool ${v(r.tool)}`,
      r.upstream_status !== null && `upstream ${r.upstream_status}`,
      r.latency_ms !== null && `${Math.round(r.latency_ms * 10) / 10} ms`,
      r.request_id !== null && `request ${v(r.request_id)}`,
    ]) + (r.matched ? '  ◀' : '')
  );
}

function tokenNode(k: TraceToken, grant: string): Node {
  const more: Node[] = k.more_requests ? [{ lines: [`… more uses: tessera audit query --jti ${v(k.jti)}`], children: [] }] : [];
  return {
    lines: [
      `token ${v(k.jti)}  ${k.event}${k.matched ? '  ◀' : ''}`,
      join([`issued ${t(k.issued_at)}`, `expires ${t(k.expires_at)}`, k.request_id !== null && `request ${v(k.request_id)}`]),
      join([`scope ${list(k.scopes)}`, k.audiences.length > 0 && `aud ${list(k.audiences)}`]),
      ...(k.requests.length === 0 && !k.more_requests ? [`no gateway decision used it (grant ${v(grant)})`] : []),
    ],
    children: [...k.requests.map((r): Node => ({ lines: [requestLine(r)], children: [] })), ...more],
  };
}

function approvalLine(a: TraceApproval): string {
  const how =
    a.method === 'consent_page'
      ? `on the consent page ${t(a.time)}`
      : `${t(a.time)} by a remembered consent (${a.remembered_from === null ? 'its consent page approval is no longer in the trail' : `consent page ${t(a.remembered_from.time)}${a.remembered_from.request_id !== null ? ` request ${v(a.remembered_from.request_id)}` : ''}`})`;
  return join([
    `approved by ${a.subject !== null ? v(a.subject) : '-'} ${how}`,
    a.redirect_uri !== null ? `for ${v(a.redirect_uri)}` : null,
    a.login !== null ? `signed in ${t(a.login.time)}${a.login.provider !== null ? ` at ${v(a.login.provider)}` : ''}` : null,
  ]);
}

function grantNode(g: TraceGrant, children: Map<string | null, TraceGrant[]>): Node {
  const lines = !g.in_store
    ? [`grant ${v(g.id)}  (no longer in the store: pruned after it expired)${g.focus ? '  ◀' : ''}`]
    : [
        join([
          `grant ${v(g.id)}  ${g.kind}`,
          g.parent_id === null ? 'root' : `actor ${g.actor_chain.map((a) => fieldValue(a, />/)).join(' > ')}`,
          g.revoked_at !== null ? `REVOKED ${t(g.revoked_at)} (${v(g.revoked_reason ?? '-')})` : null,
        ]) + (g.focus ? '  ◀' : ''),
        join([`subject ${v(g.subject ?? '-')}`, `client ${v(g.client_id ?? '-')}`, `issuer ${v(g.issuer ?? '-')}`]),
        join([`scope ${list(g.scopes)}`, `aud ${list(g.audiences)}`]),
        join([`created ${t(g.created_at)}`, `expires ${t(g.expires_at)}`]),
        ...(g.approval === null ? [] : [approvalLine(g.approval)]),
      ];
  const more: Node[] = g.more_tokens ? [{ lines: [`… more tokens: tessera audit query --delegation ${v(g.id)}`], children: [] }] : [];
  return {
    lines,
    children: [...g.tokens.map((k) => tokenNode(k, g.id)), ...more, ...(children.get(g.id) ?? []).map((c) => grantNode(c, children))],
  };
}

/**
 * The human form of a trace: a header, the grant trees, then stray decisions and revocations.
 * A value from the trail holding a space, `"`, a backslash or a control character (an MCP tool
 * name any caller chose, a subject from an identity provider's token) is a JSON string ({@link v}),
 * and control characters left are escaped.
 */
export function formatTrace(trace: Trace, heading: string): string {
  const out: string[] = [heading, ''];
  const ids = new Set(trace.grants.map((g) => g.id));
  const children = new Map<string | null, TraceGrant[]>();
  for (const g of trace.grants) {
    const parent = g.parent_id !== null && ids.has(g.parent_id) ? g.parent_id : null;
    children.set(parent, [...(children.get(parent) ?? []), g]);
  }
  for (const root of children.get(null) ?? []) {
    render(grantNode(root, children), '', true, true, out);
    out.push('');
  }
  if (trace.requests.length > 0) {
    out.push('decisions with no grant in the store');
    for (const r of trace.requests) out.push(`  ${requestLine(r)}`);
    out.push('');
  }
  if (trace.revocations.length > 0) {
    out.push('revocations');
    for (const r of trace.revocations) {
      out.push(
        `  ${join([
          `${t(r.time)}  ${r.kind} ${v(r.reason)}`,
          r.delegation_id !== null && `grant ${v(r.delegation_id)}`,
          r.jti !== null && `jti ${v(r.jti)}`,
          r.token_hash !== null && `token hash ${v(r.token_hash)}`,
          r.by !== null && `by ${v(r.by)}`,
        ])}`,
      );
    }
    out.push('');
  }
  if (trace.truncated) out.push('(some entries were left out to fit one screen; the hints above name the query for the rest)');
  return `${out.map(printable).join('\n').trimEnd()}\n`;
}

function kindArg(v: string): TraceKind {
  if ((TRACE_KINDS as readonly string[]).includes(v)) return v as TraceKind;
  throw new CliError(`--kind must be one of ${TRACE_KINDS.join(', ')}, not "${v.replace(/[^\x20-\x7e]/g, '?').slice(0, 40)}"`);
}

export function registerTrace(program: Command): void {
  withConfig(program.command('trace'))
    .description(
      'Rebuild the delegation chain of a request id, jti, grant id or token hash: from the root grant through each token exchange to the tokens and the gateway decisions that used them, with revocations.',
    )
    .argument('<id>', 'a request id (X-Request-Id), jti, grant id (g_…) or token hash; - reads it from stdin (for a pasted token)')
    .option('--kind <kind>', `look the id up only as this: ${TRACE_KINDS.join(', ')} (when it matches several)`, kindArg)
    .option('--json', 'print one JSON object (see docs/gateway.md, "tessera trace")')
    .addHelpText(
      'after',
      `
Examples:
  tessera trace 0f8e2c1a-5d7b-4c2e-9a61-3b2d4f5e6a7b        # a request id from X-Request-Id, or a jti
  tessera trace g_0193a6f2-…                               # a grant: its ancestors and everything below it
  pbpaste | tessera trace -                                # a token: looked up by its hash, never printed
  tessera trace -- -hPfCmzAqgriAuJ4                        # an id that starts with '-' goes after --

Exit status: 0 when something matched, 1 with a one-line reason otherwise.`,
    )
    .action(async (id: string, opts: { config?: string; kind?: TraceKind; json?: boolean }) => {
      const fromStdin = id === '-';
      const arg = (await readArg(id, '<id>')).trim();
      const a = classifyArgument(arg, opts.kind);
      const [{ withStore }, { buildTrace, isEmptyTrace }] = await Promise.all([import('../context.ts'), import('../../audit/trace.ts')]);
      const { trace, heading } = await withStore(opts.config, async (store) => {
        const c = await resolveArgument(store, arg, a);
        if (c.fromToken && !fromStdin) {
          process.stderr.write('tessera: note: a token given as an argument stays in the shell history; pass - to read it from stdin\n');
        }
        const trace = await buildTrace(store, c.kind, c.value, { fromToken: c.fromToken });
        return { trace, heading: `trace of ${c.display}` };
      });
      // The id was seen a moment ago; the trail may since have been pruned.
      if (isEmptyTrace(trace)) throw new CliError(`nothing matches ${a.label}`);
      if (opts.json) return printJson(trace);
      process.stdout.write(formatTrace(trace, heading));
    });
}
