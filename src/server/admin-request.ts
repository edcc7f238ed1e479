/**
 * The admin API's JSON request bodies, read strictly and refused with every problem named at once:
 * its JSON path (`$.issuer`) and what to write instead, as configuration errors are. A problem
 * names members and kinds of value, never a value (a token pasted into the wrong member is never
 * repeated), and a member name only when it has no token's shape (see `memberPath`).
 *
 * @module
 */
import { editDistance, kindOf } from '../core/errors.ts';
import { STRICT_JSON_FAULTS, type StrictJsonFault } from '../core/jose/json.ts';
import { type BodyProblem, memberPath, OAuthError } from '../core/oauth-errors.ts';
import { holdsToken } from '../core/secret-shape.ts';
import type { GrantSelector } from '../store/contract.ts';

/** A control character, or a lone surrogate (JSON allows "\ud800"; the store would write U+FFFD). */
const UNNAMING = /[\p{Cc}\p{Cs}]/u;

/**
 * Non-empty, no control character, no lone surrogate: what can name a grant, subject or client
 * (PostgreSQL refuses a NUL in text outright, a 500 instead of a refusal).
 */
export function plainText(v: string): boolean {
  return v !== '' && !UNNAMING.test(v);
}

/** The revocation body's members, and what each holds (for "write … instead"). */
const REVOCATION_MEMBERS: Readonly<Record<string, string>> = {
  grant_id: 'the grant id',
  subject: 'the subject',
  issuer: 'the issuer URL',
  client_id: 'the client id',
  token: 'the access or refresh token',
  reason: 'a short reason',
};
const MEMBER_NAMES = Object.keys(REVOCATION_MEMBERS);
const SELECTORS = ['grant_id', 'subject', 'client_id', 'token'] as const;
const ONE_SELECTOR = 'give exactly one of grant_id, subject, client_id and token';

/** Throw the first problem's code with all of them, when there are any. */
function refuse(problems: readonly BodyProblem[]): void {
  const first = problems[0];
  if (first !== undefined) throw new OAuthError(first.code, { problems });
}

/**
 * The names of the top-level object's members in `text` (valid JSON whose top level is an object),
 * each as often as written: `JSON.parse` keeps only the last of a repeated one.
 */
function topLevelNames(text: string): string[] {
  const names: string[] = [];
  let depth = 0;
  let expectName = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const start = i;
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
      if (depth === 1 && expectName) {
        names.push(JSON.parse(text.slice(start, i + 1)) as string);
        expectName = false;
      }
    } else if (c === 0x7b || c === 0x5b) {
      depth++;
      if (depth === 1) expectName = true;
    } else if (c === 0x7d || c === 0x5d) depth--;
    else if (c === 0x2c && depth === 1) expectName = true;
  }
  return names;
}

/**
 * The refusal of a body `JSON.parse` could not read, or read as something other than an object:
 * `request_body_malformed` with the problem at `$` (the parser's position, never its message,
 * which quotes the body).
 */
export function malformedBody(text: string, parsed: { value: unknown } | { error: unknown }): OAuthError {
  let message: string;
  if ('error' in parsed) {
    const at = /position (\d+)/.exec(parsed.error instanceof Error ? parsed.error.message : '')?.[1];
    message =
      text.trim() === ''
        ? 'the body is empty, send one JSON object'
        : `not JSON${at !== undefined ? ` (at position ${at})` : ''}, send one JSON object`;
  } else message = `expected a JSON object, got ${kindOf(parsed.value)}`;
  return new OAuthError('request_body_malformed', { problems: [{ code: 'request_body_malformed', path: '$', message }] });
}

/**
 * The refusal of an object body the strict JSON reader refused (see `strictJsonFault`): a member
 * named twice is named (at the top level, where the admin API's members are), nesting too deep to
 * check is malformed.
 */
export function strictBodyFault(text: string, fault: StrictJsonFault): OAuthError {
  if (fault === 'not_utf8') return new OAuthError('request_not_utf8');
  if (fault === 'too_deep') {
    return new OAuthError('request_body_malformed', {
      problems: [{ code: 'request_body_malformed', path: '$', message: STRICT_JSON_FAULTS.too_deep }],
    });
  }
  const seen = new Set<string>();
  const repeated = new Set<string>();
  for (const name of topLevelNames(text)) (seen.has(name) ? repeated : seen).add(name);
  const problems: BodyProblem[] =
    repeated.size > 0
      ? [...repeated].map((name) => ({
          code: 'request_body_member_repeated',
          path: memberPath('$', name),
          message: 'named more than once, write each member once',
        }))
      : [{ code: 'request_body_member_repeated', path: '$', message: 'a member is named more than once in a nested object' }];
  return new OAuthError('request_body_member_repeated', { problems });
}

/** What is wrong with `value` as member `name`'s value, or `undefined` when it is right. */
function valueProblem(name: string, value: unknown): string | undefined {
  if (typeof value === 'string' && plainText(value)) return undefined;
  const what = REVOCATION_MEMBERS[name] as string;
  // An unset "$IDP" in a script: an ignored issuer would revoke the subject at every issuer.
  const orLeaveOut = name === 'issuer' ? ', or leave issuer out to revoke the subject at every issuer' : '';
  if (typeof value !== 'string') return `expected ${what} as a non-empty string, got ${kindOf(value)}${orLeaveOut}`;
  if (value === '') return `expected ${what} as a non-empty string, got an empty string${orLeaveOut}`;
  return 'holds a control character or a lone surrogate, which names nothing here, remove it';
}

/**
 * The admin API's revocation body, read strictly: an ignored member could only widen what is
 * revoked (`{"subject":"alice","issuer":""}`, an unset `$IDP`, or a misspelt `isuer` would revoke
 * alice at every issuer), so an unknown member, a value that is no non-empty string, and `issuer`
 * without `subject` are refused, as `tessera revoke` refuses them. Every problem is reported; the
 * error's code (for the audit trail) is the first one's.
 * @throws {OAuthError} `admin_revoke_*`, with {@link OAuthError.problems}.
 */
export function revocationRequest(body: Record<string, unknown>): { token?: string; selector?: GrantSelector; reason?: string } {
  const problems: BodyProblem[] = [];
  for (const [k, v] of Object.entries(body)) {
    if (!Object.hasOwn(REVOCATION_MEMBERS, k)) {
      // A name thousands of characters long is no typo of one of six short names.
      const typo = k.length <= 32 ? k : '';
      const close = MEMBER_NAMES.filter((m) => editDistance(m, typo) <= 2).sort((a, b) => editDistance(a, typo) - editDistance(b, typo))[0];
      problems.push({
        code: 'admin_revoke_member_unknown',
        path: memberPath('$', k),
        message:
          close !== undefined
            ? `unknown member, did you mean ${close}?`
            : `unknown member, remove it (the members are ${MEMBER_NAMES.join(', ')})`,
      });
      continue;
    }
    const wrong = valueProblem(k, v);
    if (wrong !== undefined) problems.push({ code: 'admin_revoke_member_invalid', path: `$.${k}`, message: wrong });
  }
  const given = SELECTORS.filter((k) => Object.hasOwn(body, k));
  if (given.length !== 1) {
    problems.push({
      code: 'admin_revoke_selector_invalid',
      path: '$',
      message: given.length === 0 ? `names nothing to revoke, ${ONE_SELECTOR}` : `names ${given.join(' and ')}, ${ONE_SELECTOR}`,
    });
  }
  if (Object.hasOwn(body, 'issuer') && !Object.hasOwn(body, 'subject')) {
    problems.push({
      code: 'admin_revoke_issuer_without_subject',
      path: '$.issuer',
      message: 'given without subject, add subject or remove issuer',
    });
  }
  // Stored with each revoked grant and written into grant.revoked: a pasted token is refused.
  if (typeof body.reason === 'string' && holdsToken(body.reason)) {
    problems.push({
      code: 'admin_revoke_reason_token',
      path: '$.reason',
      message: 'holds a token, which would be stored with the grants and written into the audit trail, write the reason without it',
    });
  }
  refuse(problems);
  const b = body as Record<string, string | undefined>;
  const reason = b.reason !== undefined ? { reason: b.reason } : {};
  if (b.token !== undefined) return { token: b.token, ...reason };
  const selector: GrantSelector =
    b.grant_id !== undefined
      ? { grantId: b.grant_id }
      : b.subject !== undefined
        ? { subject: b.subject, ...(b.issuer !== undefined ? { issuer: b.issuer } : {}) }
        : { clientId: b.client_id as string };
  return { selector, ...reason };
}
