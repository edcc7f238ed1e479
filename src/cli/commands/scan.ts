/**
 * `tessera scan PATH...`: leak response. Finds this issuer's tokens in files and logs (access
 * tokens whose signature verifies under one of its keys, refresh tokens whose hash is stored, so
 * nothing else is ever reported), says where each is and whether it still works, and with
 * `--revoke` revokes the live ones through the operator's revocation path. A token's value is
 * never printed: findings name it by `jti` and the short hash the audit trail uses.
 */
import { createHash } from 'node:crypto';
import { type Command, CommanderError } from 'commander';
import { ConfigError, quoted } from '../../core/errors.ts';
import { BoundedMap } from '../../core/verify/bounded-map.ts';
import type { LeakedToken, LeakState } from '../../issuer/leaks.ts';
import type { Candidate } from '../../scan/candidates.ts';
import { checkPaths, type ScanNote, ScanPathError, scanPaths } from '../../scan/files.ts';
import { StoreUnavailableError } from '../../store/contract.ts';
import { iso, withConfig } from '../options.ts';
import { CliError, printable, printJson, refusal } from '../output.ts';

/**
 * Places listed per distinct token: a token logged on every request of a multi-GB log must not
 * fill memory; the rest are counted (`summary.omitted`).
 */
export const MAX_PLACES_PER_TOKEN = 100;

/**
 * Exit codes, as documented in `--help` and docs/token-service.md. `incomplete`: no live token
 * found, but some input was not read, so "nothing found" is not an answer a CI step may pass on.
 */
export const SCAN_EXIT = { clean: 0, live: 1, failed: 2, incomplete: 3 } as const;

/**
 * Whether a note means input went unread. A `loop` does not (the directory it names was already
 * scanned: a link loop, or a second link to it, as a file reached twice is scanned once; or links
 * pointing at each other, which end nowhere), nor a `broken_link` (there is nothing to read).
 */
export function leftUnread(note: ScanNote): boolean {
  return note.reason !== 'loop' && note.reason !== 'broken_link';
}

/**
 * A revocation failed part-way through `--revoke` (the store went away): the message is the
 * failure's, then what this run had revoked before it, by jti and grant id (never a token).
 * `known` is the failure as the command would have reported it alone (`toCliError(cause)`).
 */
export class ScanRevokeError extends Error {
  override readonly name = 'ScanRevokeError';
  readonly revoked: { readonly tokens: readonly string[]; readonly grants: readonly string[] };
  constructor(cause: unknown, revoked: { readonly tokens: readonly string[]; readonly grants: readonly string[] }, known: unknown) {
    const why =
      known instanceof CliError || known instanceof StoreUnavailableError
        ? known.message
        : `unexpected error: ${cause instanceof Error ? cause.message : String(cause)}`;
    const { tokens, grants } = revoked;
    super(
      `${why}; before it failed, this run revoked ${tokens.length} token(s)${tokens.length ? `: ${tokens.join(' ')}` : ''}; ${grants.length} grant(s)${
        grants.length ? `: ${grants.join(' ')}` : ''
      }`,
      { cause },
    );
    this.revoked = { tokens: [...tokens], grants: [...grants] };
  }
}

/** One place a token was found (the `--json` shape of a finding). */
export interface ScanFinding {
  readonly path: string;
  readonly line: number;
  readonly column: number;
  readonly kind: LeakedToken['kind'];
  readonly token_hash: string;
  readonly jti: string | null;
  readonly subject: string | null;
  readonly client_id: string;
  readonly grant_id: string;
  /** Epoch seconds. */
  readonly expires_at: number;
  readonly state: LeakState;
}

/** The `--json` document. */
export interface ScanReport {
  readonly findings: ScanFinding[];
  readonly summary: {
    readonly files_scanned: number;
    readonly bytes_scanned: number;
    /** Places a token was found, listed or not. */
    readonly occurrences: number;
    /** Places not listed in `findings`: beyond the first {@link MAX_PLACES_PER_TOKEN} of a token. */
    readonly omitted: number;
    /** Distinct tokens found (one token can be found in many places). */
    readonly tokens: number;
    /** Distinct tokens live when found. */
    readonly live: number;
    /** False when some input was not read (a `skipped` note other than `loop`, `broken_link`): exit 3 unless 1. */
    readonly complete: boolean;
  };
  readonly skipped: ScanNote[];
  /** With `--revoke` (or `--revoke-grant`): what this run revoked; `null` otherwise. */
  readonly revoked: { readonly tokens: string[]; readonly grants: string[] } | null;
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** `--max-size`: bytes, or a number with K, M, G or T (binary multiples; `KB`, `KiB` alike). */
export function parseSize(value: string): number {
  const m = /^(\d+)\s*([bkmgt]?)(?:i?b)?$/i.exec(value.trim());
  const unit = UNITS[(m?.[2] ?? '').toLowerCase()];
  if (!m || unit === undefined || Number(m[1]) < 1) {
    throw new CliError(`--max-size must be a size such as 500M, 4G or 1048576 (bytes), not ${quoted(value)}`, SCAN_EXIT.failed, {
      reason: 'scan_max_size_invalid',
    });
  }
  return Number(m[1]) * unit;
}

interface Options {
  config?: string;
  revoke?: boolean;
  revokeGrant?: boolean;
  maxSize: string;
  json?: boolean;
}

/** A live token, with where it was first seen; its value is kept only to revoke it. */
interface Live {
  readonly token: string | undefined;
  readonly leak: LeakedToken;
  readonly location: string;
}

/** Run a scan against an opened token service. Exported for tests. */
export async function runScan(
  paths: readonly string[],
  options: { readonly revoke: boolean; readonly revokeGrant: boolean; readonly maxFileSize: number; readonly chunkSize?: number },
  service: {
    identifyLeak(candidate: string): Promise<LeakedToken | undefined>;
    revokeLeak(
      token: string,
      leak: LeakedToken,
      o: { grant: boolean; location: string },
    ): Promise<{ token: string | null; grants: readonly string[] }>;
  },
): Promise<ScanReport> {
  const findings: ScanFinding[] = [];
  const skipped: ScanNote[] = [];
  // By the token's SHA-256: a token logged on every request is verified once. Bounded: a log full
  // of distinct foreign tokens must not fill memory.
  const known = new BoundedMap<string, LeakedToken | null>(10_000);
  const revoking = options.revoke || options.revokeGrant;
  /** Places found per distinct token (by SHA-256). */
  const tokens = new Map<string, number>();
  const live = new Map<string, Live>();
  let occurrences = 0;
  const onCandidate = async (path: string, c: Candidate): Promise<void> => {
    const hash = createHash('sha256').update(c.value).digest('base64url');
    let leak = known.get(hash);
    if (leak === undefined) {
      leak = (await service.identifyLeak(c.value)) ?? null;
      known.set(hash, leak);
    }
    if (leak === null) return;
    const location = `${path}:${c.line}:${c.column}`;
    const places = (tokens.get(hash) ?? 0) + 1;
    tokens.set(hash, places);
    occurrences++;
    if (leak.state === 'live' && !live.has(hash)) live.set(hash, { token: revoking ? c.value : undefined, leak, location });
    if (places > MAX_PLACES_PER_TOKEN) return;
    findings.push({
      path,
      line: c.line,
      column: c.column,
      kind: leak.kind,
      token_hash: leak.tokenHash,
      jti: leak.jti,
      subject: leak.subject,
      client_id: leak.clientId,
      grant_id: leak.grantId,
      expires_at: leak.expiresAt,
      state: leak.state,
    });
  };
  const totals = await scanPaths(paths, {
    maxFileSize: options.maxFileSize,
    ...(options.chunkSize !== undefined ? { chunkSize: options.chunkSize } : {}),
    onCandidate,
    onNote: (note) => skipped.push(note),
  });
  let revoked: ScanReport['revoked'] = null;
  if (revoking) {
    const done = { tokens: [] as string[], grants: [] as string[] };
    const grantsDone = new Set<string>();
    for (const { token, leak, location } of live.values()) {
      const grant = options.revokeGrant || leak.kind === 'refresh_token';
      if (grant && grantsDone.has(leak.grantId)) continue;
      if (token === undefined) continue; // kept whenever revoking
      let r: { token: string | null; grants: readonly string[] };
      try {
        r = await service.revokeLeak(token, leak, { grant: options.revokeGrant, location });
      } catch (e) {
        // What the command would have said of the failure alone (toCliError: a refused revocation).
        const { toCliError } = await import('../context.ts');
        throw new ScanRevokeError(e, done, toCliError(e));
      }
      if (r.token !== null) done.tokens.push(r.token);
      for (const g of r.grants) {
        grantsDone.add(g);
        done.grants.push(g);
      }
      if (grant) grantsDone.add(leak.grantId);
    }
    revoked = done;
  }
  return {
    findings,
    summary: {
      files_scanned: totals.files,
      bytes_scanned: totals.bytes,
      occurrences,
      omitted: occurrences - findings.length,
      tokens: tokens.size,
      live: live.size,
      complete: !skipped.some(leftUnread),
    },
    skipped,
    revoked,
  };
}

/** The exit code a finished scan reports: live tokens left first, then input left unread. */
export function scanExit(report: ScanReport): number {
  const unrevoked = report.revoked === null ? report.summary.live : 0;
  if (unrevoked > 0) return SCAN_EXIT.live;
  return report.summary.complete ? SCAN_EXIT.clean : SCAN_EXIT.incomplete;
}

function findingLine(f: ScanFinding): string {
  const who = [
    f.jti !== null ? `jti=${f.jti}` : '',
    `sub=${f.subject ?? '?'}`,
    `client=${f.client_id}`,
    `grant=${f.grant_id}`,
    `exp=${iso(f.expires_at)}`,
    `hash=${f.token_hash}`,
  ].filter(Boolean);
  return `${f.path}:${f.line}:${f.column}  ${f.kind}  ${f.state === 'live' ? 'LIVE' : f.state}  ${who.join('  ')}`;
}

function printText(report: ScanReport): void {
  const out: string[] = report.findings.map(findingLine);
  const s = report.summary;
  out.push(
    `${s.occurrences} finding(s) of ${s.tokens} token(s) in ${s.files_scanned} file(s) scanned; ${s.live} live${
      s.omitted ? `; ${s.omitted} place(s) not listed (over ${MAX_PLACES_PER_TOKEN} for one token)` : ''
    }${report.skipped.length ? `; ${report.skipped.length} path(s) skipped` : ''}`,
  );
  if (report.revoked) {
    const { tokens, grants } = report.revoked;
    out.push(
      `revoked ${tokens.length} token(s)${tokens.length ? `: ${tokens.join(' ')}` : ''}; ${grants.length} grant(s)${
        grants.length ? `: ${grants.join(' ')}` : ''
      }`,
    );
  } else if (s.live > 0) {
    out.push(`revoke them: tessera scan --revoke ... (or --revoke-grant to kill each token's whole delegation)`);
  }
  const unread = report.skipped.filter(leftUnread).length;
  if (unread > 0) out.push(`incomplete: ${unread} path(s) not scanned (listed on stderr); exit ${scanExit(report)}`);
  // File names are anyone's choice: a newline or an escape sequence in one must not forge a line.
  process.stdout.write(`${out.map(printable).join('\n')}\n`);
}

const HELP = `
Only tokens that verify count: an access token must carry a valid signature from one of this
issuer's keys (every key the store holds, retired ones included, and the public part kept of
each key housekeeping removed: its tokens show as expired) and this issuer's iss; a refresh
token (trt_...) must be one the store holds. A token is never printed: findings name it by jti,
grant and the short hash the audit trail uses.

States: live (usable now), expired, revoked, rotated (a refresh token already exchanged).

Skipped input (binary, over --max-size, unreadable, not a regular file) is listed on stderr
(skipped in --json); a directory reached again through a link, a loop of links and a link to
nothing are noted but leave nothing unread. Symbolic links are followed, but a directory outside
all the paths given is not walked into (a link to / or /proc/self would walk the whole
filesystem): give its target as a path too. A link to a file elsewhere is read. /proc, /sys and
/dev are not walked into unless a path in them is given.

Exit codes:
  0  every path read, no live token found (or, with --revoke, every live one was revoked)
  1  live tokens found and not revoked (fail a CI build that leaks tokens)
  2  the scan could not run (a path that does not exist, a bad option, no data directory)
  3  no live token found, but some input was skipped (a directory out included): the answer is partial

Examples:
  tessera scan /var/log/app                   report what leaked, exit 1 if anything is live
  tessera scan --json build/ logs/app.log     the same as one JSON document
  tessera scan --revoke /var/log/app          revoke each live token by jti (a refresh token: its family)
  tessera scan --revoke-grant /var/log/app    revoke each live token's whole delegation subtree
`;

export function registerScan(program: Command): void {
  withConfig(program.command('scan'))
    .description(
      "Find this issuer's tokens in files and logs (verified, so nothing else is reported), say whether each is still live, and with --revoke revoke them.",
    )
    .argument('<paths...>', 'files and directories (walked recursively)')
    .option(
      '--revoke',
      'revoke every live token found: an access token by jti (with every grant exchanged from it), a refresh token with its family',
    )
    .option('--revoke-grant', "revoke every live token's delegation (grant) with its whole subtree (implies --revoke)")
    .option('--max-size <size>', 'skip files larger than this, with a note (500M, 4G, bytes)', '4G')
    .option('--json', 'print one JSON object {findings, summary, skipped, revoked}')
    .addHelpText('after', HELP)
    // Usage errors exit 2 like every other failure to run, so 1 always means "live tokens found".
    .exitOverride((e) => {
      throw e.exitCode === 0 ? e : new CommanderError(SCAN_EXIT.failed, e.code, e.message);
    })
    .action(async (paths: string[], opts: Options) => {
      const revoking = opts.revoke === true || opts.revokeGrant === true;
      try {
        // Every path is checked before the store is opened: a typo fails fast and clearly. With
        // --revoke it is an admin write's refusal, on record as one admin.action deny.
        let refused: CliError | undefined;
        let maxFileSize = 0;
        try {
          maxFileSize = parseSize(opts.maxSize);
          await checkPaths(paths);
        } catch (e) {
          if (!revoking || !(e instanceof CliError || e instanceof ScanPathError)) throw e;
          refused = e instanceof CliError ? e : refusal('scan_path_invalid', e.message);
        }
        const options = { revoke: opts.revoke === true, revokeGrant: opts.revokeGrant === true, maxFileSize };
        const { withAdminWrite, withService, refusalCode } = await import('../context.ts');
        const report = !revoking
          ? await withService(opts.config, false, ({ service }) => runScan(paths, options, service))
          : await withAdminWrite(
              opts.config,
              false,
              { action: opts.revokeGrant === true ? 'scan_revoke_grant' : 'scan_revoke' },
              // A revocation failed part-way: its own code (store_unavailable), with what was revoked before it in the message.
              ({ service }) =>
                runScan(paths, options, service).catch((e: unknown) => {
                  throw e instanceof ScanRevokeError ? refusal(refusalCode(e.cause), e.message) : e;
                }),
              refused,
            );
        if (opts.json) printJson(report);
        else {
          for (const n of report.skipped) process.stderr.write(`${printable(`tessera: skipped ${n.path}: ${n.message}`)}\n`);
          printText(report);
        }
        process.exitCode = scanExit(report);
      } catch (e) {
        if (e instanceof ScanPathError || e instanceof StoreUnavailableError || e instanceof ScanRevokeError)
          throw new CliError(e.message, SCAN_EXIT.failed);
        if (e instanceof CliError) throw new CliError(e.message, SCAN_EXIT.failed);
        if (e instanceof ConfigError) throw e;
        throw new CliError(`unexpected error: ${e instanceof Error ? e.message : String(e)}`, SCAN_EXIT.failed);
      }
    });
}
