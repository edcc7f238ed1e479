/**
 * `tessera revoke --token|--grant|--subject|--client`: revocations written to the store; running
 * servers apply them within milliseconds on PostgreSQL (the commit notifies them), within
 * `token_service.sync_interval` on SQLite. A grant is revoked with its subtree.
 */
import type { Command } from 'commander';
import { quoted } from '../../core/errors.ts';
import { holdsToken } from '../../core/secret-shape.ts';
import type { GrantSelector } from '../../store/contract.ts';
import { iso, readArg, withConfig } from '../options.ts';
import { printable, printJson, refusal } from '../output.ts';

export function registerRevoke(program: Command): void {
  withConfig(program.command('revoke'))
    .description(
      'Revoke a token, a grant (with every grant derived from it), a subject’s grants or a client’s grants. Running servers apply it within milliseconds on PostgreSQL, within token_service.sync_interval on SQLite.',
    )
    .option(
      '--token <token>',
      'an access token this issuer signed (- reads it from stdin), with every grant exchanged from it (token exchange, as subject or actor token) and their subtrees, not its own grant; or a refresh token of this issuer, with its grant (the rotation family and its access tokens) and the grant’s subtree, as RFC 7009 revokes it',
    )
    .option('--grant <id>', 'a grant id (the grant_id claim); its whole subtree is revoked')
    .option(
      '--subject <sub>',
      'every grant of this subject, and every consent it approved that is remembered (when none is left: "revoked 0 grants" and why that can be)',
    )
    .option(
      '--issuer <iss>',
      'with --subject: only the subject of this issuer (this one, one in issuers, or one the subject holds a grant of; any other is refused)',
    )
    .option(
      '--client <id>',
      'every grant issued to this client, and every consent to it that is remembered (when none is left: "revoked 0 grants" and why that can be)',
    )
    .option(
      '--reason <text>',
      'reason stored with the revoked grants and recorded in the audit trail (one holding a token is refused)',
      'cli',
    )
    .option(
      '--json',
      'print one JSON object: {revoked_token, grant_id, revoked_grants} for --token of an access token (revoked_grants: the grants exchanged from the token, revoked with it), else {revoked_grants}, with already_revoked {grant_id, revoked_at, reason} when the --grant named (or the refresh token’s grant) was revoked before',
    )
    .action(
      async (opts: {
        config?: string;
        token?: string;
        grant?: string;
        subject?: string;
        issuer?: string;
        client?: string;
        reason: string;
        json?: boolean;
      }) => {
        // What it names, on record with a refusal too.
        const given = (['token', 'grant', 'subject', 'client'] as const).filter((k) => opts[k] !== undefined);
        const empty = (['token', 'grant', 'subject', 'issuer', 'client'] as const).find((k) => opts[k] === '');
        const named: Record<string, string> =
          empty !== undefined || given.length !== 1
            ? {}
            : opts.grant !== undefined
              ? { selector: 'grant_id', target: opts.grant }
              : opts.subject !== undefined
                ? { selector: 'subject', target: opts.subject, ...(opts.issuer !== undefined ? { issuer: opts.issuer } : {}) }
                : opts.client !== undefined
                  ? { selector: 'client_id', target: opts.client }
                  : { selector: 'token' };
        // Refused before the store is read, the refusal is still on record (with the admin API's codes).
        const refused =
          // An empty value is an unset "$VAR" in a script: it names nothing, and "revoked 0 grant(s)"
          // with exit 0 would read as done.
          empty !== undefined
            ? refusal('admin_revoke_member_invalid', `--${empty} is empty; nothing was revoked`)
            : given.length !== 1
              ? refusal('admin_revoke_selector_invalid', 'give exactly one of --token, --grant, --subject, --client')
              : opts.issuer !== undefined && opts.subject === undefined
                ? refusal('admin_revoke_issuer_without_subject', '--issuer goes with --subject')
                : // Stored with each revoked grant and written into grant.revoked: a pasted token is refused.
                  holdsToken(opts.reason)
                  ? refusal('admin_revoke_reason_token', '--reason holds a token; nothing was revoked')
                  : undefined;
        // Why a subject or client revocation matched no grant, for the line printed (never in --json).
        let unmatched: string | undefined;
        const { withAdminWrite } = await import('../context.ts');
        // Every revocation is on record as admin.action by cli, whatever it matched: a subject with
        // no grant here still writes its subject entries, and a refusal is an attempt.
        const result = await withAdminWrite(
          opts.config,
          false,
          { action: 'revoke', ...named },
          async ({ service }) => {
            const reason: Record<string, string> = opts.token === undefined ? { revoke_reason: opts.reason } : {};
            // A grant named that revoked nothing was revoked before (with its subtree): say when
            // and why, rather than a bare "revoked 0 grant(s)" that reads as a failure.
            const alreadyRevoked = async (grantId: string, revoked: readonly unknown[]) => {
              const before = revoked.length === 0 ? await service.store.getGrant(grantId) : undefined;
              return before?.revokedAt != null
                ? { already_revoked: { grant_id: before.id, revoked_at: iso(before.revokedAt), reason: before.revokedReason } }
                : {};
            };
            if (opts.token !== undefined) {
              const token = await readArg(opts.token, '--token');
              // A refresh token: its grant (the rotation family) with its subtree, as RFC 7009
              // revokes it for its client, answered as --grant is; the grant names it on record.
              const family = await service.revokeRefreshToken(token, opts.reason, 'cli');
              if (family !== undefined) {
                service.auditCliAction('ok', {
                  action: 'revoke',
                  ...named,
                  token_type: 'refresh_token',
                  target: family.grantId,
                  revoke_reason: opts.reason,
                  revoked: family.revokedGrants.length,
                });
                return { revoked_grants: [...family.revokedGrants], ...(await alreadyRevoked(family.grantId, family.revokedGrants)) };
              }
              const revoked = await service.revokeAccessToken(token, 'cli');
              if (!revoked) {
                throw refusal('admin_not_found', 'not a valid, unexpired access or refresh token of this issuer; nothing to revoke');
              }
              // The token itself is never written: its jti names it.
              service.auditCliAction('ok', {
                action: 'revoke',
                ...named,
                target: revoked.jti,
                revoked: 1,
                // The grants exchanged from the token, revoked with it.
                ...(revoked.revokedGrants.length > 0 ? { grants_revoked: revoked.revokedGrants.length } : {}),
              });
              return { revoked_token: revoked.jti, grant_id: revoked.grantId, revoked_grants: [...revoked.revokedGrants] };
            }
            const selector: GrantSelector =
              opts.grant !== undefined
                ? { grantId: opts.grant }
                : opts.subject !== undefined
                  ? { subject: opts.subject, ...(opts.issuer !== undefined ? { issuer: opts.issuer } : {}) }
                  : { clientId: opts.client as string };
            if ('grantId' in selector && (await service.store.getGrant(selector.grantId)) === undefined) {
              throw refusal('admin_not_found', `no grant ${quoted(selector.grantId)}`);
            }
            const revoked = await service.revokeGrants(selector, opts.reason, 'cli');
            service.auditCliAction('ok', { action: 'revoke', ...named, ...reason, revoked: revoked.length });
            if (revoked.length === 0 && 'subject' in selector) {
              const of = selector.issuer !== undefined ? ` of ${selector.issuer}` : '';
              unmatched = `subject ${quoted(selector.subject)}${of} has no grant here left to revoke (none was issued for it, or every one was revoked before)`;
            } else if (revoked.length === 0 && 'clientId' in selector) {
              unmatched =
                (await service.clients.get(selector.clientId)) === undefined
                  ? `no client ${quoted(selector.clientId)} is registered here, and no grant of it is left to revoke`
                  : `client ${quoted(selector.clientId)} has no grant here left to revoke (none was issued to it, or every one was revoked before)`;
            }
            return {
              revoked_grants: revoked.map((g) => g.id),
              ...('grantId' in selector ? await alreadyRevoked(selector.grantId, revoked) : {}),
            };
          },
          refused,
        );
        if (opts.json) return printJson(result);
        if ('revoked_token' in result) {
          const exchanged = result.revoked_grants;
          process.stdout.write(
            `revoked token ${result.revoked_token}${exchanged.length ? ` and ${exchanged.length} grant(s) exchanged from it: ${exchanged.join(' ')}` : ''}; to revoke its whole delegation run: tessera revoke --grant ${result.grant_id}\n`,
          );
        } else if (result.already_revoked) {
          const a = result.already_revoked;
          process.stdout.write(
            `${printable(`grant ${a.grant_id} was already revoked at ${a.revoked_at}${a.reason !== null ? ` (${a.reason})` : ''}, with every grant derived from it; nothing more to revoke`)}\n`,
          );
        } else if (unmatched !== undefined) {
          process.stdout.write(`${printable(`revoked 0 grants: ${unmatched}`)}\n`);
        } else {
          process.stdout.write(
            `revoked ${result.revoked_grants.length} grant(s)${result.revoked_grants.length ? `: ${result.revoked_grants.join(' ')}` : ''}\n`,
          );
        }
      },
    );
}
