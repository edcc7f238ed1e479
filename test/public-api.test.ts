/**
 * The public surface: what each package entry exports is documented (TSDoc on its declaration),
 * the main entry points carry an `@example` (test/package.test.ts type-checks them), and gateway
 * internals no document shows stay out of the entries (the main entry exported compileGateway,
 * StreamRegistry, withTesseraSecurity, defaultLogger, VerifierFactory, CompiledRoute, GatewayState:
 * each one a promise to keep, none of them documented).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { exports: Record<string, { default: string }> };
const entries = Object.values(pkg.exports).map((e) => join(root, e.default.replace(/^\.\/dist\//, 'src/').replace(/\.js$/, '.ts')));

/** Every name an entry exports, with the file that declares it (following `export { … } from`). */
function exported(file: string, out = new Map<string, string>()): Map<string, string> {
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(/^export\s+(?:type\s+)?\{([^}]*)\}\s+from\s+'(\.[^']+)'/gm)) {
    const from = join(dirname(file), m[2] as string);
    for (const part of (m[1] as string).split(',')) {
      const name = /^\s*(?:type\s+)?(\w+)/.exec(part)?.[1];
      if (name === undefined) continue;
      const declared = declares(from, name) ? from : exported(from).get(name);
      out.set(name, declared ?? from);
    }
  }
  for (const m of text.matchAll(/^export\s+(?:declare\s+)?(?:async\s+)?(?:function|class|interface|type|const|let)\s+(\w+)/gm)) {
    out.set(m[1] as string, file);
  }
  return out;
}

function declares(file: string, name: string): boolean {
  return (
    existsSync(file) &&
    new RegExp(`^export\\s+(?:async\\s+)?(?:function|class|interface|type|const)\\s+${name}\\b`, 'm').test(readFileSync(file, 'utf8'))
  );
}

/** The TSDoc block right above `name`'s declaration in `file`, or undefined. */
function docOf(file: string, name: string): string | undefined {
  const text = readFileSync(file, 'utf8');
  const m = new RegExp(`^export\\s+(?:async\\s+)?(?:function|class|interface|type|const)\\s+${name}\\b`, 'm').exec(text);
  if (!m) return undefined;
  const before = text.slice(0, m.index).trimEnd();
  if (!before.endsWith('*/')) return undefined;
  // The block opens at the start of a line (`/**` also occurs inside examples: `/items/**`).
  const start = before.lastIndexOf('\n/**');
  return before.slice(Math.max(0, start));
}

const publicNames = new Map<string, string>();
for (const entry of entries) for (const [name, file] of exported(entry)) publicNames.set(name, file);

describe('the public entries', () => {
  it('do not export gateway internals', () => {
    const main = exported(entries[0] as string);
    for (const name of [
      'compileGateway',
      'StreamRegistry',
      'withTesseraSecurity',
      'defaultLogger',
      'VerifierFactory',
      'CompiledRoute',
      'GatewayState',
    ]) {
      assert.ok(!main.has(name), `the main entry exports ${name}`);
    }
  });

  it('document every export with TSDoc', () => {
    const missing = [...publicNames]
      .filter(([name, file]) => docOf(file, name) === undefined)
      .map(([n, f]) => `${n} (${relative(root, f)})`);
    assert.deepEqual(missing, []);
  });

  it('give the main entry points an @example', () => {
    const main = [
      'createVerifier',
      'nodeAuth',
      'expressAuth',
      'fastifyAuth',
      'honoAuth',
      'createTokenServiceFromConfig',
      'createTokenServiceHandler',
      'createGateway',
      'serveGateway',
      'SqliteStore',
      'PostgresStore',
      'openStore',
      'loadConfigFile',
    ];
    const without = main.filter((name) => !/@example/.test(docOf(publicNames.get(name) ?? '', name) ?? ''));
    assert.deepEqual(without, []);
  });
});
