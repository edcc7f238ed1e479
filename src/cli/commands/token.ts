/**
 * `tessera token decode TOKEN [--jwks URL|FILE]`: header, claims, expiry countdown, actor chain and,
 * with keys, the verification verdict and its reason code.
 * `tessera token mint` (development) and `tessera token exchange` (RFC 8693) run the token service
 * in-process against the store, as an operator acting for a registered client.
 */

import { createHash } from 'node:crypto';
import type { Command } from 'commander';
import { quoted } from '../../core/errors.ts';
import { IDENTITY_RULE, validIdentity } from '../../core/identity.ts';
import { JWS_ALGORITHMS } from '../../core/jose/algorithms.ts';
import { decodeUnverified } from '../../core/jose/decode.ts';
import type { JsonObject } from '../../core/jose/json.ts';
import { OAuthError } from '../../core/oauth-errors.ts';
import { actorLabel } from '../../core/verify/principal.ts';
import type { ClientRecord } from '../../store/contract.ts';
import { list, readArg, ttlArg, ttlWithin, withConfig } from '../options.ts';
import { CliError, printable, printJson, refusal } from '../output.ts';

/**
 * The token endpoint says "Client authentication failed." whatever went wrong with the client; the
 * operator running these commands authenticated nothing, and is told what is wrong with it.
 */
function clientProblem(id: string): (e: unknown) => never {
  return (e) => {
    if (e instanceof OAuthError && e.code === 'client_unknown') throw refusal(e.code, `no client ${quoted(id)}`);
    if (e instanceof OAuthError && e.code === 'client_disabled') {
      throw refusal(e.code, `client "${id}" is disabled; enable it with \`tessera clients enable ${id}\``);
    }
    // As the token endpoint refuses it a request without a proof: these commands prove no key, and
    // a token bound to a key the operator names would be bound without proof of possession.
    if (e instanceof OAuthError && e.code === 'client_dpop_proof_required') {
      throw refusal(
        e.code,
        `client "${id}" is DPoP-bound (dpop_bound_access_tokens) and gets no bearer token; request its token at the token endpoint with a DPoP proof, or unbind it with \`tessera clients update ${id} --no-dpop-bound\``,
      );
    }
    throw e;
  };
}

/**
 * The token endpoint's refusals of a scope or audience name neither what was asked nor what is
 * allowed (a client learns nothing of its registration); the operator minting is told both, and
 * which flag to change.
 */
function mintProblem(client: ClientRecord | undefined, scopes: readonly string[], audiences: readonly string[]): (e: unknown) => never {
  return (e) => {
    if (client !== undefined && e instanceof OAuthError) {
      const asked = (values: readonly string[]) => values.map((v) => quoted(v)).join(', ');
      if (e.code === 'scope_not_allowed' && scopes.length > 0) {
        throw refusal(
          e.code,
          `--scope ${asked(scopes)}: client ${quoted(client.id)} may be granted only ${client.scopes.join(' ') || '(no scopes)'}`,
        );
      }
      if (e.code === 'target_not_allowed' && audiences.length > 0) {
        throw refusal(
          e.code,
          `--audience ${asked(audiences)}: client ${quoted(client.id)} may get tokens only for ${client.audiences.join(' ')}`,
        );
      }
      if (e.code === 'target_required') {
        throw refusal(
          e.code,
          `client ${quoted(client.id)} has several audiences; choose one with --audience (${client.audiences.join(' ')})`,
        );
      }
    }
    throw e;
  };
}

function countdown(exp: unknown, now: number): string {
  if (typeof exp !== 'number') return 'no exp claim';
  const left = exp - now;
  const abs = Math.abs(left);
  const text =
    abs >= 3600
      ? `${Math.floor(abs / 3600)}h${Math.floor((abs % 3600) / 60)}m`
      : abs >= 60
        ? `${Math.floor(abs / 60)}m${abs % 60}s`
        : `${abs}s`;
  return left > 0 ? `expires in ${text}` : `expired ${text} ago`;
}

/** The `act` chain, current actor first; an actor of another issuer than the token's as `sub (iss)`. */
function actorChain(claims: JsonObject): string[] {
  const chain: string[] = [];
  const tokenIssuer = typeof claims.iss === 'string' ? claims.iss : undefined;
  let act = claims.act as JsonObject | undefined;
  while (act && typeof act === 'object' && chain.length < 32) {
    chain.push(actorLabel({ subject: String(act.sub), ...(typeof act.iss === 'string' ? { issuer: act.iss } : {}) }, tokenIssuer));
    act = act.act as JsonObject | undefined;
  }
  return chain;
}

export interface DecodeReport {
  header: JsonObject;
  claims: JsonObject;
  token_hash: string;
  expiry: string;
  actor_chain: string[];
  verification: { verified: boolean; code?: string; status?: number; reason?: string; note?: string };
}

/** Decode and optionally verify a token. Exported for tests. */
export async function decodeToken(token: string, options: { jwks?: string; audience?: string }): Promise<DecodeReport> {
  const decoded = decodeUnverified(token);
  if (!decoded) throw new CliError('not a compact JWT (three base64url segments with a JSON header and claims)');
  const { header, claims } = decoded;
  const now = Math.floor(Date.now() / 1000);
  const report: DecodeReport = {
    header,
    claims,
    token_hash: createHash('sha256').update(token).digest('base64url').slice(0, 16),
    expiry: countdown(claims.exp, now),
    actor_chain: actorChain(claims),
    verification: { verified: false, note: 'not verified: pass --jwks URL|FILE to check the signature and claims' },
  };
  if (options.jwks) {
    if (typeof claims.iss !== 'string') {
      report.verification = { verified: false, code: 'token_claim_missing', reason: 'the token has no iss claim' };
      return report;
    }
    const aud =
      options.audience ?? (typeof claims.aud === 'string' ? claims.aud : Array.isArray(claims.aud) ? String(claims.aud[0]) : undefined);
    const isUrl = /^https?:\/\//.test(options.jwks);
    if (!isUrl) {
      // Read here (at most 512 KiB) to say what is wrong with the file as --jwks, not as the
      // issuers[0].jwks.file of a configuration the operator never wrote.
      const { readJwksFile } = await import('../../jwks/local.ts');
      const read = readJwksFile(options.jwks);
      if ('problem' in read) throw new CliError(`--jwks: cannot load a JWKS from ${options.jwks}: ${read.problem}`);
    }
    const { createVerifier } = await import('../../verifier.ts');
    const verifier = createVerifier({
      issuers: [
        {
          issuer: claims.iss,
          audiences: [aud ?? '(none)'],
          algorithms: JWS_ALGORITHMS.filter((a) => !a.startsWith('HS')),
          ...(isUrl ? { jwks_uri: options.jwks } : { jwks: { file: options.jwks } }),
          required_claims: [],
        },
      ],
    });
    const result = await verifier.verifyToken(token);
    report.verification = result.ok
      ? {
          verified: true,
          ...(options.audience ? {} : { note: `audience checked against the token's own aud "${aud}"; pass --audience to check yours` }),
        }
      : { verified: false, code: result.error.code, status: result.error.status, reason: result.error.description };
  }
  return report;
}

export function registerToken(program: Command): void {
  const token = program.command('token').description('Inspect, mint and exchange tokens.');
  token
    .command('decode')
    .description('Show a JWT header, claims, expiry and actor chain; with --jwks, verify it and print the reason code.')
    .argument('<token>', 'the JWT (use - to read it from stdin, which keeps it out of shell history)')
    .option('--jwks <url|file>', 'JWKS URL or file to verify the signature and claims against')
    .option('--audience <aud>', 'audience the token must carry (default: its own first aud)')
    .option('--json', 'print one JSON object')
    .action(async (input: string, opts: { jwks?: string; audience?: string; json?: boolean }) => {
      const raw = await readArg(input, '<token>');
      const report = await decodeToken(raw, opts);
      // An invalid verdict is a failure whatever the output format.
      if (report.verification.code) process.exitCode = 1;
      if (opts.json) return printJson(report);
      // Every value here is the token's, and the token is anyone's: printed line by line with its
      // control characters (and the bidirectional overrides JSON leaves as they are) escaped.
      const v = report.verification;
      const lines = [
        `header  ${JSON.stringify(report.header)}`,
        ...`claims  ${JSON.stringify(report.claims, null, 2).replace(/\n/g, '\n        ')}`.split('\n'),
        `hash    ${report.token_hash}`,
        `expiry  ${report.expiry}`,
        `actors  ${report.actor_chain.length ? report.actor_chain.join(' ← ') : '(none)'}`,
        v.verified
          ? `verdict valid${v.note ? ` (${v.note})` : ''}`
          : v.code
            ? `verdict INVALID ${v.code}: ${v.reason}`
            : `verdict ${v.note}`,
      ];
      process.stdout.write(`${lines.map(printable).join('\n')}\n`);
    });

  withConfig(token.command('mint'))
    .description(
      'Development: mint an access token for a registered client (as client_credentials would), printed on stdout; refused for a DPoP-bound client (it gets no bearer token).',
    )
    .requiredOption('--client <id>', 'the client the token is issued to')
    .option('--scope <scopes...>', 'scopes (default: all of the client’s)')
    .option('--audience <aud...>', 'audience (default: the client’s only audience)')
    .option('--ttl <duration>', 'lifetime (default: the client’s)')
    .option(
      '--subject <sub>',
      'mint for this subject as a new root grant, to try delegation chains without an IdP (1-256 printable characters, no spaces, as the login paths require)',
    )
    .option('--json', 'print the token response as JSON (with grant_id and jti)')
    .action(
      async (opts: {
        config?: string;
        client: string;
        scope?: string[];
        audience?: string[];
        ttl?: string;
        subject?: string;
        json?: boolean;
      }) => {
        // Refused before the store is read, the refusal is still on record (with the token
        // endpoint's codes: a subject it would refuse is request_parameter_invalid).
        let ttl: number | undefined;
        let refused: CliError | undefined;
        try {
          ttl = opts.ttl === undefined ? undefined : ttlArg('--ttl', opts.ttl);
        } catch (e) {
          if (!(e instanceof CliError)) throw e;
          refused = e;
        }
        refused ??=
          opts.subject === ''
            ? refusal(
                'request_parameter_invalid',
                '--subject is empty; name the subject to mint for (--subject alice), or leave it out to mint for the client',
              )
            : opts.subject !== undefined && !validIdentity(opts.subject)
              ? refusal('request_parameter_invalid', `--subject: ${IDENTITY_RULE}`)
              : undefined;
        const scopes = list(opts.scope);
        const audiences = list(opts.audience);
        // An admin write: a refusal is on record as one admin.action deny, as the others are.
        const { withAdminWrite } = await import('../context.ts');
        const minted = await withAdminWrite(
          opts.config,
          true,
          { action: 'token_mint', target: opts.client },
          async ({ service, store }) => {
            if (ttl !== undefined) ttlWithin('--ttl', ttl, service.config.max_access_token_ttl);
            return service
              .mint({
                clientId: opts.client,
                scopes,
                audiences,
                ...(ttl !== undefined ? { ttl } : {}),
                ...(opts.subject !== undefined ? { subject: opts.subject } : {}),
                by: 'cli',
              })
              .catch(clientProblem(opts.client))
              .catch(async (e: unknown) => mintProblem(await store.getClient(opts.client).catch(() => undefined), scopes, audiences)(e));
          },
          refused,
        );
        if (opts.json) return printJson(minted);
        process.stdout.write(`${minted.access_token}\n`);
      },
    );

  withConfig(token.command('exchange'))
    .description(
      'RFC 8693 token exchange for a registered client: a narrower token delegated to it, printed on stdout; refused for a DPoP-bound client (it gets no bearer token).',
    )
    .requiredOption('--client <id>', 'the client receiving the token (the actor unless --actor-token is given)')
    .requiredOption('--subject-token <token>', 'the token whose authority is delegated (- reads it from stdin)')
    .option('--subject-token-type <type>', 'access_token or jwt', 'access_token')
    .option('--actor-token <token>', 'a token naming the actor (- reads it from stdin)')
    .option('--scope <scopes...>', 'requested scopes (default: subject ∩ client)')
    .option('--audience <aud...>', 'requested audiences')
    .option('--json', 'print the token response as JSON')
    .action(
      async (opts: {
        config?: string;
        client: string;
        subjectToken: string;
        subjectTokenType: string;
        actorToken?: string;
        scope?: string[];
        audience?: string[];
        json?: boolean;
      }) => {
        const [{ withAdminWrite }, { ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE }] = await Promise.all([
          import('../context.ts'),
          import('../../issuer/service.ts'),
        ]);
        /** `--subject-token-type`: the short names, and the URNs they stand for (RFC 8693 §3). */
        const SUBJECT_TOKEN_TYPES: Readonly<Record<string, string>> = { access_token: ACCESS_TOKEN_TYPE, jwt: JWT_TOKEN_TYPE };
        const given = opts.subjectTokenType;
        const subjectTokenType = Object.hasOwn(SUBJECT_TOKEN_TYPES, given)
          ? SUBJECT_TOKEN_TYPES[given]
          : Object.values(SUBJECT_TOKEN_TYPES).find((urn) => urn === given);
        if (subjectTokenType === undefined) {
          throw new CliError(
            `--subject-token-type ${JSON.stringify(given)} is not a token type the token service exchanges; write ${Object.keys(SUBJECT_TOKEN_TYPES).join(' or ')}`,
          );
        }
        if (opts.subjectToken === '-' && opts.actorToken === '-') {
          throw new CliError('only one of --subject-token and --actor-token can be read from stdin (-)');
        }
        const params = new URLSearchParams({
          subject_token: await readArg(opts.subjectToken, '--subject-token'),
          subject_token_type: subjectTokenType,
        });
        if (opts.actorToken !== undefined) {
          params.set('actor_token', await readArg(opts.actorToken, '--actor-token'));
          params.set('actor_token_type', ACCESS_TOKEN_TYPE);
        }
        const scopes = list(opts.scope);
        if (scopes.length) params.set('scope', scopes.join(' '));
        for (const a of list(opts.audience)) params.append('audience', a);
        const result = await withAdminWrite(opts.config, true, { action: 'token_exchange', target: opts.client }, async ({ service }) =>
          service.exchangeAs(opts.client, params).catch(clientProblem(opts.client)),
        );
        if (opts.json) return printJson(result);
        process.stdout.write(`${result.access_token}\n`);
      },
    );
}
