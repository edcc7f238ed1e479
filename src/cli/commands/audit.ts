/**
 * `tessera audit query|tail`: read the audit trail back from the store. Every gateway decision and
 * token-service event is one row; filters select by subject, delegation (grant) id, client, request
 * id and time. Events never hold a token or a header value, so printing them is safe.
 */

import type { Command } from 'commander';
import type { AuditEvent, AuditQuery } from '../../audit/event.ts';
import { terminalSafeJson } from '../../audit/sinks/jsonl.ts';
import { quoted } from '../../core/errors.ts';
import type { Store } from '../../store/contract.ts';
import { withConfig } from '../options.ts';
import { CliError, printable, printJson } from '../output.ts';

interface Filters {
  config?: string;
  subject?: string;
  delegation?: string;
  client?: string;
  requestId?: string;
  jti?: string;
  tokenHash?: string;
  since?: string;
  until?: string;
  limit?: number;
  json?: boolean;
}

/** How far back `tail -f` looks again on each poll: well beyond any producer's flush interval. */
const FOLLOW_WINDOW_MS = 30_000;

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** The earliest time a Date holds (ECMA-262 §21.4.1.1), epoch ms. */
const EARLIEST = -8.64e15;

/** A time option: a duration back from now (`15m`, `2h`, `7d`) or an ISO 8601 time. Returns epoch ms. */
function parseTime(flag: string, value: string, now: number): number {
  const rel = /^(\d+)([smhd])$/.exec(value);
  if (rel) {
    const t = now - Number(rel[1]) * (UNITS[rel[2] as string] as number);
    // Past the earliest Date (271821 BC) the number means nothing, and PostgreSQL refuses it as a bigint.
    if (!(t >= EARLIEST)) throw new CliError(`${flag} ${value} reaches back before the earliest date there is; give a shorter duration`);
    return t;
  }
  // A time of day without Z or an offset is the local time to Date.parse, while every time shown
  // (and a date alone) is UTC: which one was meant is not guessed.
  if (/^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(value)) {
    throw new CliError(
      `${flag} ${quoted(value)} has no time zone; add Z for UTC (2026-11-22T10:00:00Z) or an offset (2026-11-22T10:00:00+01:00)`,
    );
  }
  const t = Date.parse(value);
  const ymd = /^(\d{4})-(\d{2})-(\d{2})/.exec(value);
  // Date.parse rolls a day past the month's end over (2026-02-30 is March 2nd): refuse it instead.
  const day = ymd && new Date(Date.UTC(Number(ymd[1]), Number(ymd[2]) - 1, Number(ymd[3])));
  if (day && Number.isFinite(t) && day.getUTCMonth() === Number(ymd[2]) - 1 && day.getUTCDate() === Number(ymd[3])) return t;
  throw new CliError(`${flag} must be a duration (15m, 2h, 7d) or an ISO time (2026-11-22T10:00:00Z), not ${quoted(value)}`);
}

/** `--since`: where the window starts (inclusive). */
export function parseSince(value: string, now = Date.now()): number {
  return parseTime('--since', value, now);
}

/** `--until`: where the window ends (inclusive), in the same syntax as `--since`. */
export function parseUntil(value: string, now = Date.now()): number {
  return parseTime('--until', value, now);
}

function limitArg(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 10_000) throw new CliError(`--limit must be an integer from 1 to 10000, not ${quoted(v)}`);
  return n;
}

const FILTER_FLAGS = [
  ['subject', '--subject'],
  ['delegation', '--delegation'],
  ['client', '--client'],
  ['requestId', '--request-id'],
  ['jti', '--jti'],
  ['tokenHash', '--token-hash'],
] as const;

function queryOf(f: Filters, since: number | undefined, until?: number): AuditQuery {
  // An unset "$VAR" in a script: an empty filter matches no event, which reads as "nothing happened".
  for (const [key, flag] of FILTER_FLAGS) if (f[key] === '') throw new CliError(`${flag} is empty; give a value or leave the filter out`);
  return {
    ...(f.subject !== undefined ? { subject: f.subject } : {}),
    ...(f.delegation !== undefined ? { delegation_id: f.delegation } : {}),
    ...(f.client !== undefined ? { client_id: f.client } : {}),
    ...(f.requestId !== undefined ? { request_id: f.requestId } : {}),
    ...(f.jti !== undefined ? { jti: f.jti } : {}),
    ...(f.tokenHash !== undefined ? { token_hash: f.tokenHash } : {}),
    ...(since !== undefined ? { since } : {}),
    ...(until !== undefined ? { until } : {}),
  };
}

/** `--since` and `--until` read against one `now`; a window that ends before it starts is refused. */
export function windowOf(f: Pick<Filters, 'since' | 'until'>, now = Date.now()): { since?: number; until?: number } {
  const since = f.since !== undefined ? parseSince(f.since, now) : undefined;
  const until = f.until !== undefined ? parseUntil(f.until, now) : undefined;
  if (since !== undefined && until !== undefined && until < since) {
    throw new CliError(
      `--until (${new Date(until).toISOString()}) is before --since (${new Date(since).toISOString()}); the window must end after it starts`,
    );
  }
  return { ...(since !== undefined ? { since } : {}), ...(until !== undefined ? { until } : {}) };
}

// A value shown bare: no space of any kind (the fields' separator is two spaces, and `GET /path`
// has one), no control or format character, no `"` and no backslash (which `printable` leaves as
// it is, so a value holding the two characters `\n` would read as an escaped line break).
const BARE = /^[^\p{White_Space}\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}"\\]+$/u;

/**
 * `value` as one field of a summary line: as it is when {@link BARE}, else as a JSON string, so a
 * subject, client id, issuer or path that holds `  client=admin` or a forged line cannot pass for
 * fields of its own. `also` are more characters that quote it (`>`, the actor chain's separator).
 */
export function fieldValue(value: string, also?: RegExp): string {
  return BARE.test(value) && !also?.test(value) ? value : JSON.stringify(value);
}

/**
 * One human line per event: time, kind, decision/reason, who, what (control characters escaped).
 * A subject comes with the issuer it belongs to (`sub_iss`, the event's `subject_issuer`, else
 * its `issuer`), so two identity providers' `alice` read apart. A value with a space, a `"`, a
 * backslash or a control character in it (a subject from an identity provider's token, a path
 * a forward-auth proxy reported) is written as a JSON string ({@link fieldValue}).
 */
export function formatEvent(e: AuditEvent): string {
  const subjectIssuer = e.subject_issuer ?? e.issuer;
  const v = (value: string) => fieldValue(value);
  const who = [
    e.subject !== undefined ? `sub=${v(e.subject)}` : '',
    e.subject !== undefined && subjectIssuer !== undefined ? `sub_iss=${v(subjectIssuer)}` : '',
    e.client_id !== undefined ? `client=${v(e.client_id)}` : '',
    e.actor_chain?.length ? `act=${e.actor_chain.map((a) => fieldValue(a, />/)).join('>')}` : '',
    e.delegation_id !== undefined ? `grant=${v(e.delegation_id)}` : '',
  ].filter(Boolean);
  const what = [
    e.route !== undefined ? `route=${v(e.route)}` : '',
    e.method !== undefined && e.path !== undefined ? `${v(e.method)} ${v(e.path)}` : '',
    e.upstream_status !== undefined ? `upstream=${e.upstream_status}` : '',
    e.latency_ms !== undefined ? `${e.latency_ms}ms` : '',
  ].filter(Boolean);
  return printable([new Date(e.time).toISOString(), e.kind, `${e.decision}:${v(e.reason)}`, ...who, ...what].join('  '));
}

/**
 * Every event matching `query`, oldest first, handed to `fn` a page at a time as it is read (never
 * all of them held at once).
 */
export async function forEachEvent(
  store: Pick<Store, 'queryAudit'>,
  query: AuditQuery,
  fn: (event: AuditEvent) => void,
  pageSize = 1000,
): Promise<void> {
  let after: string | undefined;
  for (;;) {
    const page = await store.queryAudit({ ...query, ...(after ? { after_id: after } : {}), limit: pageSize });
    for (const e of page) fn(e);
    if (page.length < pageSize) return;
    after = (page.at(-1) as AuditEvent).id;
  }
}

function filterOptions(command: Command): Command {
  return withConfig(command)
    .option('--subject <sub>', 'only events about this subject')
    .option('--delegation <grant>', 'only events of this delegation (grant) id')
    .option('--client <id>', 'only events of this client')
    .option('--request-id <id>', 'only events of this request')
    .option('--jti <jti>', 'only events of this token (its jti)')
    .option('--token-hash <hash>', 'only events of this token (its 16-character short hash)')
    .option('--json', 'JSON instead of summary lines: query prints one array, tail one event per line');
}

export function registerAudit(program: Command): void {
  const audit = program.command('audit').description('Read the audit trail: one event per gateway decision and token-service event.');

  filterOptions(audit.command('query'))
    .description(
      'Print the events that match the filters, oldest first. When none does: "no events match" on stderr and exit 0 (with --json, an empty array).',
    )
    .option('--since <when>', 'from this time: a duration back (15m, 2h, 7d) or an ISO time with Z or an offset')
    .option(
      '--until <when>',
      'up to this instant (inclusive), written as for --since: with it, a closed window (a date alone is its midnight UTC)',
    )
    .option('--limit <n>', 'at most this many events (1-10000)', limitArg, 100)
    .action(async (f: Filters) => {
      const limit = f.limit ?? 100;
      const { since, until } = windowOf(f);
      const { withStore } = await import('../context.ts');
      // One more than asked tells whether the limit cut anything off.
      const found = await withStore(f.config, (store) => store.queryAudit({ ...queryOf(f, since, until), limit: limit + 1 }));
      const events = found.slice(0, limit);
      if (found.length > limit || (limit === 10_000 && found.length === limit)) {
        process.stderr.write(
          `tessera: showing the first ${limit} matching events, oldest first; narrow --since/--until or raise --limit\n`,
        );
      }
      if (f.json) return printJson(events);
      // Nothing printed would read as a command that did nothing: say so, where a pipe does not see it.
      if (events.length === 0) return void process.stderr.write('tessera: no events match\n');
      process.stdout.write(events.map((e) => `${formatEvent(e)}\n`).join(''));
    });

  filterOptions(audit.command('tail'))
    .description(
      'Print recent events (default: the last 15 minutes), then, with --follow, new ones as they are written. When none matches: "no events match" on stderr and exit 0 (with --follow, "no events match yet; waiting for new ones", then it waits).',
    )
    .option('--since <when>', 'start here instead of 15 minutes ago', '15m')
    .option('-f, --follow', 'keep printing new events (polls the store every second)')
    .action(async (f: Filters & { follow?: boolean }) => {
      const since = parseSince(f.since ?? '15m');
      const { withStore } = await import('../context.ts');
      await withStore(f.config, async (store) => {
        const print = (e: AuditEvent) => process.stdout.write(f.json ? `${terminalSafeJson(JSON.stringify(e))}\n` : `${formatEvent(e)}\n`);
        const all = (from: number, fn: (e: AuditEvent) => void) => forEachEvent(store, queryOf(f, from), fn);
        // Producers batch their writes (the gateway flushes every audit.flush_interval), so an event
        // can land after one with a later id: following re-reads a trailing window and prints
        // what it has not printed yet, instead of trusting an id cursor. Only that window is
        // remembered: a busy trail's last 15 minutes would not fit in memory.
        const printed = new Map<string, number>();
        let any = false;
        await all(since, (e) => {
          any = true;
          print(e);
          if (f.follow && e.time >= Date.now() - FOLLOW_WINDOW_MS) printed.set(e.id, e.time);
        });
        // As query says it: nothing printed would read as a command that did nothing (or hung, with -f).
        if (!any) process.stderr.write(f.follow ? 'tessera: no events match yet; waiting for new ones\n' : 'tessera: no events match\n');
        if (!f.follow) return;
        let stopped = false;
        const stop = () => {
          stopped = true;
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        while (!stopped) {
          await new Promise((r) => setTimeout(r, 1000));
          const from = Math.max(since, Date.now() - FOLLOW_WINDOW_MS);
          await all(from, (e) => {
            if (printed.has(e.id)) return;
            print(e);
            printed.set(e.id, e.time);
          });
          for (const [id, time] of printed) if (time < from) printed.delete(id);
        }
      });
    });
}
