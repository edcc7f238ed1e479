/**
 * docs/cli.md's command reference is generated from the commands themselves (their `--help`) by
 * `npm run docs`: this fails when an option is added, renamed or described anew without the docs.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { Command } from 'commander';
import { renderCliDocs } from '../../scripts/cli-docs.ts';
import { buildProgram } from '../../src/cli/main.ts';

describe('docs/cli.md', () => {
  const rendered = renderCliDocs();

  it('is what `npm run docs` generates from the current commands', () => {
    const committed = readFileSync(new URL('../../docs/cli.md', import.meta.url), 'utf8');
    assert.ok(committed === rendered, 'docs/cli.md is stale: run `npm run docs` and commit the result');
  });

  it('documents every command and every option of its --help (init --upstream-port, revoke --reason, check --timeout were nowhere)', () => {
    const missing: string[] = [];
    const walk = (c: Command, path: string[]) => {
      for (const sub of c.commands) {
        const p = [...path, sub.name()];
        if (sub.commands.length === 0) {
          const start = rendered.indexOf(`### \`tessera ${p.join(' ')}`);
          if (start < 0) missing.push(p.join(' '));
          const section = rendered.slice(start, rendered.indexOf('\n### ', start + 1));
          for (const o of sub.options) if (!section.includes(`\`${o.flags}\``)) missing.push(`${p.join(' ')} ${o.flags}`);
        }
        walk(sub, p);
      }
    };
    walk(buildProgram(), []);
    assert.deepEqual(missing, []);
  });
});
