/**
 * docs/cli.md's command reference is generated from the commands themselves (their `--help`) by
 * `npm run docs`: this fails when an option is added, renamed or described anew without the docs.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
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
  it('every tessera command line in README.md, docs/ and the example READMEs names a command and options it has', () => {
    // Users run these as written: a renamed command or option fails at their terminal, or worse, in a script.
    const options = new Map<string, Set<string>>();
    const walk = (c: Command, path: string[]) => {
      for (const sub of c.commands) {
        const p = [...path, sub.name()];
        options.set(
          p.join(' '),
          new Set(['--help', '-h', ...sub.options.flatMap((o) => [o.long, o.short].filter((f) => f !== undefined))]),
        );
        walk(sub, p);
      }
    };
    walk(buildProgram(), []);
    const root = new URL('../../', import.meta.url);
    const files = [
      'README.md',
      ...readdirSync(new URL('docs/', root))
        .filter((f) => f.endsWith('.md') && f !== 'cli.md')
        .map((f) => `docs/${f}`),
      ...readdirSync(new URL('examples/', root)).map((d) => `examples/${d}/README.md`),
    ];
    const wrong: string[] = [];
    let seen = 0;
    for (const file of files) {
      const lines = readFileSync(new URL(file, root), 'utf8').split('\n');
      lines.forEach((line, i) => {
        // `tessera <command words> <arguments>` in a code block or a backticked span, up to a comment.
        for (const m of line.matchAll(/(?:^|[`\s(])(?:npx )?tessera ((?:[a-z][a-z-]* ?)+)([^`\n#|]*)/g)) {
          const words = (m[1] as string).trim().split(' ');
          let command: string | undefined;
          for (let n = words.length; n > 0 && command === undefined; n--) {
            const c = words.slice(0, n).join(' ');
            if (options.has(c)) command = c;
          }
          // Prose ("tessera serve's gateway", "tessera mcp session v1" MAC contexts) names no command line.
          if (command === undefined) continue;
          seen++;
          for (const o of `${m[1]} ${m[2]}`.matchAll(/(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])/g)) {
            if (!options.get(command)?.has(o[1] as string)) wrong.push(`${file}:${i + 1}: tessera ${command} ${o[1]}`);
          }
        }
      });
    }
    assert.ok(seen > 50, `only ${seen} command lines found: the pattern no longer matches the docs`);
    assert.deepEqual(wrong, []);
  });
});
