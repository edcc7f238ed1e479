/**
 * `tessera keys list|rotate`: signing keys and their schedule. A rotated key is published at once
 * and signs after `publish_ahead`; a running server follows without a restart.
 */
import type { Command } from 'commander';
import { SIGNING_ALGORITHMS, type SigningAlgorithm } from '../../config/signing-algorithms.ts';
import type { KeyStatus } from '../../issuer/keys.ts';
import { iso, withConfig } from '../options.ts';
import { printable, printJson, refusal } from '../output.ts';

function describeKey(k: KeyStatus): Record<string, unknown> {
  return {
    kid: k.kid,
    alg: k.alg,
    state: k.state,
    created_at: iso(k.createdAt),
    activates_at: iso(k.activatesAt),
    retires_at: iso(k.retiresAt),
    published_until: iso(k.publishedUntil),
    authenticated_end: iso(k.sealedEnd),
    successor: k.successor,
    ...(k.invalid !== undefined ? { invalid: k.invalid } : {}),
  };
}

export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('List and rotate signing keys (private keys are never printed).');

  withConfig(keys.command('list'))
    .description('Signing keys with their state: pending, active, retired (still published), expired.')
    .option('--json', 'print a JSON array')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const { withService } = await import('../context.ts');
      const status = await withService(opts.config, false, async ({ service }) => service.keys.status());
      if (opts.json) return printJson(status.map(describeKey));
      if (status.length === 0) return void process.stdout.write('no signing keys; run `tessera init`\n');
      for (const k of status) {
        const when =
          k.state === 'pending'
            ? `signs from ${iso(k.activatesAt)}`
            : k.state === 'retired'
              ? `published until ${iso(k.publishedUntil)}`
              : '';
        // The end sealed into the key's own row: past it, it never signs, whatever the other rows say.
        const sealed =
          k.sealedEnd === null ? '' : `${when === '' ? '' : ', '}ends ${iso(k.sealedEnd)} (authenticated, successor ${k.successor ?? '?'})`;
        const refused = k.invalid === undefined ? '' : `  REFUSED (not published, not signing): ${k.invalid}`;
        // kid and alg are the stored row's: one planted by whoever can write to the database (the
        // case `refused` reports) could hold terminal escapes.
        process.stdout.write(`${printable(`${k.state.padEnd(8)} ${k.alg.padEnd(6)} ${k.kid}  ${when}${sealed}${refused}`)}\n`);
      }
    });

  withConfig(keys.command('rotate'))
    .description(
      'Add a new signing key: published now, signing after keys.publish_ahead, and never before jwks_max_age + sync_interval + 61 s, the clock skew allowed between instances (or at once with --now).',
    )
    .option(
      '--now',
      'activate at once (after a key compromise, or when /readyz names a refused signing key; verifiers find it on their kid-miss refetch); of two in the same second, the later one signs',
    )
    .option('--alg <alg>', `algorithm of the new key (${SIGNING_ALGORITHMS.join(', ')}; default keys.algorithm)`)
    .option('--json', 'print one JSON object')
    .action(async (opts: { config?: string; now?: boolean; alg?: string; json?: boolean }) => {
      const refused =
        opts.alg !== undefined && !(SIGNING_ALGORITHMS as readonly string[]).includes(opts.alg)
          ? refusal('key_algorithm_unsupported', `--alg must be one of ${SIGNING_ALGORITHMS.join(', ')}`)
          : undefined;
      const { withAdminWrite } = await import('../context.ts');
      const { StoreConflictError } = await import('../../store/contract.ts');
      const { status, pending } = await withAdminWrite(
        opts.config,
        true,
        { action: 'key_rotate' },
        async ({ service }) => {
          const pendingKey = () => service.keys.status().find((k) => k.state === 'pending');
          const refuse = (p: KeyStatus) =>
            refusal(
              'key_pending',
              `key ${p.kid} is already pending (signs from ${iso(p.activatesAt)}): wait for it, or add a key that signs at once with --now (${p.kid} still takes over from ${iso(p.activatesAt)})`,
            );
          const pending = pendingKey();
          // --now does not replace a pending key: that one still takes over at its time.
          if (pending && !opts.now) throw refuse(pending);
          let record: Awaited<ReturnType<typeof service.rotateSigningKey>>;
          try {
            record = await service.rotateSigningKey(
              {
                ...(opts.now ? { immediate: true } : {}),
                ...(opts.alg ? { algorithm: opts.alg as SigningAlgorithm } : {}),
              },
              'cli',
            );
          } catch (e) {
            // Another process added a pending key since this one read the keys.
            if (!(e instanceof StoreConflictError && e.code === 'signing_key_pending')) throw e;
            await service.keys.reload();
            const other = pendingKey();
            throw other ? refuse(other) : refusal('key_pending', 'another signing key became pending meanwhile; nothing was added');
          }
          return { status: service.keys.status().find((k) => k.kid === record.kid) as KeyStatus, pending };
        },
        refused,
      );
      if (opts.json) return printJson(describeKey(status));
      const after = pending ? `; key ${pending.kid} is still pending and takes over from ${iso(pending.activatesAt)}` : '';
      // `pending` is a stored row (its kid as written to the database).
      process.stdout.write(
        `${printable(`new ${status.alg} key ${status.kid}: published now, ${status.state === 'active' ? 'signing now' : `signing from ${iso(status.activatesAt)}`}${after}`)}\n`,
      );
    });
}
