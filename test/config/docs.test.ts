/**
 * docs/configuration.md is generated from the zod schema by `npm run docs`; this fails when the
 * committed file is stale (fastify's test:validator:integrity).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { renderConfigurationDocs } from '../../scripts/config-docs.ts';
import { verifierFields } from '../../src/config/verifier-schema.ts';

describe('docs/configuration.md', () => {
  const rendered = renderConfigurationDocs();

  it('is what `npm run docs` generates from the current schema', () => {
    const committed = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
    assert.ok(committed === rendered, 'docs/configuration.md is stale: run `npm run docs` and commit the result');
  });

  it('describes every verifier option', () => {
    const sections = Object.keys(verifierFields);
    const rows = rendered.split('\n').filter((l) => l.startsWith('| `'));
    const undocumented = rows
      .map((l) => l.split(' | '))
      .filter(([key]) => sections.includes((key as string).slice(3).split(/[.[]/)[0]?.replace(/`$/, '') as string))
      .filter((cells) => (cells[3] as string).trim() === '|')
      .map(([key]) => key);
    assert.deepEqual(undocumented, []);
  });

  it('documents defaults and durations from the schema', () => {
    assert.ok(rendered.includes('| `issuers[].jwks_cache.miss_cooldown` | duration ≤ 1d | `"30s"` |'));
    assert.ok(rendered.includes('| `max_token_size` | integer 256–65536 | `8192` |'));
    assert.ok(rendered.includes('| `issuers[].audiences` | list of string (at least 1), **required** |'));
  });

  it('documents the shapes of a setting that has several (credential, by type) and the defaults of header names', () => {
    // credential was one row typed "any": none of static's or exchange's keys were in the reference.
    assert.doesNotMatch(rendered, /\| any \|/);
    assert.ok(rendered.includes('| `gateway.routes[].upstream.credential.type` | one of `none`, `static`, `exchange`, `passthrough`'));
    assert.match(
      rendered,
      /\| `gateway\.routes\[\]\.upstream\.credential\.refresh_before` \| duration ≤ 1d \| `"30s"` \| \(`type: exchange`\)/,
    );
    // A default of a transformed (lower-cased) value was left out: the identity header names were blank.
    assert.ok(rendered.includes('| `gateway.identity_headers.subject` | string | `"x-tessera-subject"` |'));
    assert.ok(rendered.includes('| `gateway.forward_auth.shared_secret.header` | string | `"x-tessera-forward-auth"` |'));
  });
  it('every configuration key README.md, docs/ and the example READMEs name under a top-level section exists', () => {
    // A renamed or removed key left in prose is followed literally by whoever configures from it.
    const keys = new Set<string>();
    for (const m of rendered.matchAll(/^\| `([^`]+)` \|/gm)) {
      const segs = (m[1] as string).replace(/\[\]/g, '').split('.');
      for (let j = 1; j <= segs.length; j++) keys.add(segs.slice(0, j).join('.'));
    }
    const sections = new Set([...keys].filter((k) => !k.includes('.')));
    // Audit event kinds (`gateway.request`) share the shape; read from the AuditKind union.
    const eventSource = readFileSync(new URL('../../src/audit/event.ts', import.meta.url), 'utf8');
    const kinds = new Set([...eventSource.matchAll(/^ {2}\| '([a-z_]+\.[a-z_]+)'/gm)].map((m) => m[1]));
    const root = new URL('../../', import.meta.url);
    const files = [
      'README.md',
      ...readdirSync(new URL('docs/', root))
        .filter((f) => f.endsWith('.md') && f !== 'configuration.md')
        .map((f) => `docs/${f}`),
      ...readdirSync(new URL('examples/', root)).map((d) => `examples/${d}/README.md`),
    ];
    const unknown: string[] = [];
    for (const file of files) {
      const text = readFileSync(new URL(file, root), 'utf8');
      for (const m of text.matchAll(/`([a-z_]+(?:\[\])?(?:\.[a-z0-9_]+(?:\[\])?)+)(?:: [^`]*)?`/g)) {
        const name = (m[1] as string).replace(/\[\]/g, '');
        if (sections.has(name.split('.')[0] as string) && !keys.has(name) && !kinds.has(name)) unknown.push(`${file}: ${m[1]}`);
      }
    }
    assert.ok(kinds.has('gateway.stream_closed'));
    assert.deepEqual(unknown, []);
  });
});
