/**
 * Every `import { … } from 'tessera…'` that README.md, docs/ and the TSDoc examples in src/ show
 * resolves through package.json `exports` to a module exporting those names. README's verifier
 * example imported `nodeAuth` from `tessera/adapters/node`, a subpath the package did not export
 * (ERR_PACKAGE_PATH_NOT_EXPORTED for every user of an adapter).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  exports: Record<string, { types: string; default: string }>;
};

function files(dir: string, ext: string): string[] {
  return readdirSync(join(root, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith(ext))
    .map((f) => join(dir, f));
}

const IMPORT = /import\s*\{([^}]*)\}\s*from\s*'(tessera(?:\/[^']*)?)'/g;

function shownImports(): { file: string; specifier: string; names: string[] }[] {
  const out: { file: string; specifier: string; names: string[] }[] = [];
  for (const file of ['README.md', ...files('docs', '.md'), ...files('examples', '.md'), ...files('src', '.ts')]) {
    const text = readFileSync(join(root, file), 'utf8');
    for (const m of text.matchAll(IMPORT)) {
      // `type X` and `X as Y` import X.
      const names = (m[1] as string)
        .replace(/\*/g, ' ')
        .split(',')
        .map((n) => /^\s*(?:type\s+)?(\w+)/.exec(n)?.[1])
        .filter((n): n is string => n !== undefined);
      out.push({ file, specifier: m[2] as string, names });
    }
  }
  return out;
}

it('finds the imports the docs show', () => {
  const specifiers = new Set(shownImports().map((i) => i.specifier));
  for (const s of ['tessera', 'tessera/token-service', 'tessera/adapters/node']) assert.ok(specifiers.has(s), s);
});

it('resolves every import shown in the docs through package.json exports to a module that has the names', async () => {
  for (const { file, specifier, names } of shownImports()) {
    const subpath = specifier === 'tessera' ? '.' : `./${specifier.slice('tessera/'.length)}`;
    const entry = pkg.exports[subpath];
    assert.ok(entry, `${file}: '${specifier}' is not in package.json exports`);
    assert.match(entry.default, /^\.\/dist\/.+\.js$/, subpath);
    assert.equal(entry.types, entry.default.replace(/\.js$/, '.d.ts'), subpath);
    const source = join(root, entry.default.replace(/^\.\/dist\//, 'src/').replace(/\.js$/, '.ts'));
    const mod = (await import(source)) as Record<string, unknown>;
    const text = readFileSync(source, 'utf8');
    for (const name of names) {
      // Types leave no runtime export; the entry must still name them (`type X`, or in `export type { … }`).
      const exported =
        name in mod ||
        new RegExp(`\\b(type|interface)\\s+${name}\\b`).test(text) ||
        new RegExp(`export\\s+type\\s*\\{[^}]*\\b${name}\\b[^}]*\\}`).test(text);
      assert.ok(exported, `${file}: '${specifier}' does not export ${name}`);
    }
  }
});
