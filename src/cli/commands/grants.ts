/**
 * `tessera grants tree ID`: who delegated what to whom: the grant's ancestors and its subtree.
 */

import type { Command } from 'commander';
import { quoted } from '../../core/errors.ts';
import { actorLabel } from '../../core/verify/principal.ts';
import { GRANT_TREE_MAX_NODES } from '../../issuer/grant-tree.ts';
import type { GrantRecord } from '../../store/contract.ts';
import { iso, withConfig } from '../options.ts';
import { CliError, printable, printJson } from '../output.ts';

/** One grant as `tessera grants tree` prints it (before control characters are escaped). */
export function grantLine(g: GrantRecord, now: number): string {
  const state =
    g.revokedAt !== null
      ? `REVOKED ${iso(g.revokedAt)} (${g.revokedReason})`
      : g.expiresAt !== null && g.expiresAt <= now
        ? 'expired'
        : 'active';
  // An actor of another issuer (an `act` with its own `iss`) is shown with it, as in the audit trail.
  const actor =
    g.act && typeof g.act.sub === 'string'
      ? ` → ${actorLabel({ subject: g.act.sub, ...(typeof g.act.iss === 'string' ? { issuer: g.act.iss } : {}) })}`
      : '';
  // The grant of the actor token it was exchanged with: revoking that grant revokes this one too.
  const actorGrant = g.actorGrantId !== null ? `  actor_grant=${g.actorGrantId}` : '';
  return `${g.id}  ${g.kind}  ${g.subject}${actor} via ${g.clientId}  scope=${g.scopes.join(' ') || '-'}  aud=${g.audiences.join(' ')}${actorGrant}  until ${iso(g.expiresAt)}  ${state}`;
}

export function registerGrants(program: Command): void {
  const grants = program.command('grants').description('Inspect delegation grants.');
  withConfig(grants.command('tree'))
    .description(
      `Show a grant with its ancestors and every grant derived from it: at most ${GRANT_TREE_MAX_NODES} grants of its subtree (the first, breadth-first) and ${GRANT_TREE_MAX_NODES} ancestors (the nearest), with a last line saying so when there are more.`,
    )
    .argument('<grant_id>')
    .option('--json', 'print one JSON object {ancestors, subtree, truncated}')
    .action(async (id: string, opts: { config?: string; json?: boolean }) => {
      const { withService } = await import('../context.ts');
      const tree = await withService(opts.config, false, async ({ service }) => service.grantTree(id));
      if (!tree) throw new CliError(`no grant ${quoted(id)}`);
      if (opts.json) return printJson(tree);
      const now = Math.floor(Date.now() / 1000);
      const out: string[] = [];
      for (const [i, g] of tree.ancestors.entries()) out.push(`${'  '.repeat(i)}${grantLine(g, now)}`);
      const children = new Map<string, GrantRecord[]>();
      for (const g of tree.subtree) if (g.parentId !== null) children.set(g.parentId, [...(children.get(g.parentId) ?? []), g]);
      const walk = (g: GrantRecord, indent: number): void => {
        out.push(`${'  '.repeat(indent)}${g.id === id ? '* ' : ''}${grantLine(g, now)}`);
        for (const c of children.get(g.id) ?? []) walk(c, indent + 1);
      };
      if (tree.subtree[0]) walk(tree.subtree[0], tree.ancestors.length);
      if (tree.truncated) {
        out.push(
          `… truncated: at most ${GRANT_TREE_MAX_NODES} grants of the subtree (the first, breadth-first) and ${GRANT_TREE_MAX_NODES} ancestors (the nearest) are shown`,
        );
      }
      // Subjects and actors are whatever an identity provider put in its tokens: control characters escaped.
      process.stdout.write(`${out.map(printable).join('\n')}\n`);
    });
}
