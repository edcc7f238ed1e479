/**
 * Configuration shown in the docs is copied into tessera.yaml as it stands: every ```yaml block of
 * README.md, docs/ and the example READMEs, and every examples/<name>/tessera.yaml, must load with
 * the current schema and the checks the command that runs it adds (`tessera serve` for the docs,
 * `tessera gateway` for the examples, as their READMEs run them).
 *
 * A block that shows only part of a file says so on the line before its fence:
 * `<!-- partial config -->` (keys at the top level) or `<!-- partial config: gateway.routes[] -->`
 * (the keys of one item there). It cannot load alone, so its keys are checked against the reference
 * (docs/configuration.md, generated from the schema) instead: a renamed key still fails here.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { renderConfigurationDocs } from '../../scripts/config-docs.ts';
import { parseConfigText } from '../../src/config/load.ts';
import type { ConfigCheck } from '../../src/config/parse.ts';
import type { TesseraConfig } from '../../src/config/schema.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { gatewayRunChecks } from '../../src/gateway/check.ts';

const root = new URL('../../', import.meta.url);
const read = (file: string) => readFileSync(new URL(file, root), 'utf8');

interface Snippet {
  readonly where: string;
  readonly text: string;
  /** Set for a partial block: the path its keys sit at (`''` for the top level). */
  readonly partialAt?: string;
}

function snippets(): Snippet[] {
  const files = [
    'README.md',
    ...readdirSync(new URL('docs/', root))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
    ...readdirSync(new URL('examples/', root)).map((d) => `examples/${d}/README.md`),
  ];
  const out: Snippet[] = [];
  for (const file of files) {
    const lines = read(file).split('\n');
    for (let i = 0; i < lines.length; i++) {
      if (!/^```ya?ml\s*$/.test(lines[i] as string)) continue;
      const end = lines.indexOf('```', i + 1);
      assert.ok(end > i, `${file}:${i + 1}: unclosed yaml block`);
      const marker = /^<!-- partial config(?:: ([a-z_.[\]]+))? -->$/.exec(lines[i - 1] ?? '');
      out.push({
        where: `${file}:${i + 1}`,
        text: `${lines.slice(i + 1, end).join('\n')}\n`,
        ...(marker ? { partialAt: marker[1] ?? '' } : {}),
      });
      i = end;
    }
  }
  return out;
}

/** A value for every `${VAR}` a snippet names: long enough for any secret setting. */
function envFor(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)) env[m[1] as string] = 'x'.repeat(48);
  return env;
}

function load(text: string, where: string, check: ConfigCheck<TesseraConfig>): string[] {
  try {
    parseConfigText(text, where, envFor(text), { check });
    return [];
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return e.issues.map((i) => `${where}: ${i.path}: ${i.message}`);
  }
}

const serveChecks: ConfigCheck<TesseraConfig> = (c, ok) => gatewayRunChecks(c, ok, { exchange: 'exchange_client', tokenService: true });
const gatewayChecks: ConfigCheck<TesseraConfig> = (c, ok) => gatewayRunChecks(c, ok, { required: true, exchange: 'unavailable' });

/** The reference's keys (`gateway.routes.rules.scopes`, no `[]`), and which of them are free-form maps. */
function referenceKeys(): { keys: Set<string>; maps: Set<string> } {
  const keys = new Set<string>();
  const maps = new Set<string>();
  for (const m of renderConfigurationDocs().matchAll(/^\| `([^`]+)` \| ([^|]*) \|/gm)) {
    const key = (m[1] as string).replace(/\[\]/g, '');
    const segs = key.split('.');
    for (let j = 1; j <= segs.length; j++) keys.add(segs.slice(0, j).join('.'));
    if ((m[2] as string).startsWith('map')) maps.add(key);
  }
  return { keys, maps };
}

/** Keys of `value`, at `path`, that the reference does not have. */
function unknownKeys(value: unknown, path: string, ref: { keys: Set<string>; maps: Set<string> }): string[] {
  if (Array.isArray(value)) return value.flatMap((v) => unknownKeys(v, path, ref));
  if (typeof value !== 'object' || value === null || ref.maps.has(path)) return [];
  return Object.entries(value).flatMap(([k, v]) => {
    const exact = path === '' ? k : `${path}.${k}`;
    const named = `${path}.<name>`;
    if (ref.keys.has(exact)) return unknownKeys(v, exact, ref);
    if (ref.keys.has(named)) return unknownKeys(v, named, ref);
    return [exact];
  });
}

describe('configuration in the docs', () => {
  const all = snippets();

  it('every complete yaml block in README.md, docs/ and the example READMEs loads as `tessera serve` loads it', () => {
    const complete = all.filter((s) => s.partialAt === undefined);
    assert.ok(complete.length >= 6, `only ${complete.length} complete yaml blocks found: the pattern no longer matches the docs`);
    assert.deepEqual(
      complete.flatMap((s) => load(s.text, s.where, serveChecks)),
      [],
    );
  });

  it('every partial yaml block names only keys the reference has, where it says it sits', () => {
    const ref = referenceKeys();
    const partial = all.filter((s) => s.partialAt !== undefined);
    assert.ok(partial.length >= 1);
    const unknown = partial.flatMap((s) => {
      const at = (s.partialAt as string).replace(/\[\]/g, '');
      assert.ok(at === '' || ref.keys.has(at), `${s.where}: the marker names ${s.partialAt}, which the reference does not have`);
      return unknownKeys(parse(s.text), at, ref).map((k) => `${s.where}: ${k}`);
    });
    assert.deepEqual(unknown, []);
  });

  it('catches a key the reference does not have in a partial block (the check itself)', () => {
    const ref = referenceKeys();
    assert.deepEqual(unknownKeys(parse('rules:\n  - { id: a, rpc: x, scope: [a] }\n'), 'gateway.routes', ref), [
      'gateway.routes.rules.scope',
    ]);
    assert.deepEqual(unknownKeys(parse('scopes:\n  a:b: { implies: [a] }\n'), '', ref), []);
  });

  it('every examples/<name>/tessera.yaml loads as `tessera gateway --config` (its README) loads it', () => {
    const dirs = readdirSync(new URL('examples/', root));
    assert.ok(dirs.length >= 2);
    assert.deepEqual(
      dirs.flatMap((d) => load(read(`examples/${d}/tessera.yaml`), `examples/${d}/tessera.yaml`, gatewayChecks)),
      [],
    );
  });
});
