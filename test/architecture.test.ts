/**
 * The dependency rule of src/ (README "Architecture", STYLE.md): the pure core (`src/core`:
 * verification, JOSE, scopes, policy, errors) imports nothing outside itself but `node:crypto`,
 * `node:buffer` and `node:net`; the token service's logic (`src/issuer`) reaches storage only
 * through the store contract and never the HTTP server, the CLI or the gateway; the stores and the
 * framework adapters depend inward only. Comments are removed before imports are read (a TSDoc
 * example's `import … from 'tessera'` is no dependency); static, re-export, side-effect and dynamic
 * `import()` specifiers count.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

const SPECIFIERS = [
  /(?:^|[;}\n])\s*(?:import|export)\s+(?:type\s+)?[^'";]*?\bfrom\s*['"]([^'"]+)['"]/g,
  /(?:^|[;}\n])\s*import\s*['"]([^'"]+)['"]/g,
  /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
];

/** The module specifiers `source` imports, comments left out. */
export function specifiers(source: string): string[] {
  const code = source
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('//'))
    .join('\n');
  return SPECIFIERS.flatMap((re) => [...code.matchAll(re)].map((m) => m[1] as string));
}

/** Every import of every .ts file under `dir`: the file and the specifier, a relative one resolved to a path under the root. */
function imports(dir: string): { file: string; target: string }[] {
  const out: { file: string; target: string }[] = [];
  for (const f of readdirSync(join(root, dir), { recursive: true, encoding: 'utf8' })) {
    if (!f.endsWith('.ts')) continue;
    const file = join(dir, f);
    for (const fileName of specifiers(readFileSync(join(root, file), 'utf8'))) {
      const target = fileName.startsWith('.') ? relative(root, resolve(root, dirname(file), fileName)) : fileName;
      out.push({ file, target });
    }
  }
  return out;
}

function breaches(dir: string, allowed: (target: string) => boolean): string[] {
  return imports(dir)
    .filter(({ target }) => !allowed(target))
    .map(({ file, target }) => `${file} imports ${target}`);
}

const under = (target: string, ...dirs: string[]) => dirs.some((d) => target === d || target.startsWith(`${d}/`));

describe('architecture: dependencies point inward', () => {
  it('src/core imports only src/core and node:crypto, node:buffer, node:net', () => {
    assert.deepEqual(
      breaches('src/core', (t) => under(t, 'src/core') || ['node:crypto', 'node:buffer', 'node:net'].includes(t)),
      [],
    );
  });

  it('src/issuer reaches storage only through the store contract, and never the server, CLI, gateway or node:http', () => {
    assert.deepEqual(
      breaches(
        'src/issuer',
        (t) =>
          !under(t, 'src/server', 'src/cli', 'src/gateway', 'src/adapters', 'src/store/sqlite', 'src/store/postgres') &&
          !['node:http', 'node:https', 'node:net'].includes(t),
      ),
      [],
    );
  });

  it('src/store depends on neither the token service, the server, the CLI nor the gateway', () => {
    assert.deepEqual(
      breaches('src/store', (t) => !under(t, 'src/issuer', 'src/server', 'src/cli', 'src/gateway', 'src/adapters')),
      [],
    );
  });

  // src/verifier.ts is the public createVerifier: an adapter accepts the verifier it returns.
  it('src/adapters depend on the core, the public verifier and their framework only', () => {
    assert.deepEqual(
      breaches('src/adapters', (t) => under(t, 'src/core', 'src/adapters', 'src/verifier.ts') || !t.startsWith('src/')),
      [],
    );
  });

  it('nothing but the CLI imports the CLI', () => {
    const outside = readdirSync(join(root, 'src'), { withFileTypes: true })
      .filter((e) => e.isDirectory() && e.name !== 'cli')
      .flatMap((e) => breaches(join('src', e.name), (t) => !under(t, 'src/cli')));
    assert.deepEqual(outside, []);
  });

  it('the reader sees static, multi-line, re-export, side-effect and dynamic imports, and none in comments', () => {
    const source = [
      '/**',
      " * import { x } from '../server/y.ts';",
      ' */',
      "// import x from '../gateway/y.ts'",
      'import {',
      '  a,',
      "} from '../gateway/gateway.ts';",
      "export type { B } from '../store/sqlite/store.ts';",
      "import '../audit/sinks/file.ts';",
      "const m = import('../cli/main.ts');",
    ].join('\n');
    assert.deepEqual(specifiers(source).sort(), [
      '../audit/sinks/file.ts',
      '../cli/main.ts',
      '../gateway/gateway.ts',
      '../store/sqlite/store.ts',
    ]);
  });
});
