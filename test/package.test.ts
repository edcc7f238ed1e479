/**
 * The package as a user receives it. A copy of the checkout's files (what a fresh clone has) is
 * packed with `npm pack --dry-run`, lifecycle scripts and all, and the build it made is used as an
 * installed package: every `exports` entry loads under Node without TypeScript support (Node 22.13,
 * which `engines` admits, does not strip types before 22.18), exports the names its source does,
 * and the library examples of README.md, docs/ and the entry points' TSDoc type-check against the
 * declarations the package ships.
 *
 * A fresh clone's tarball held README, bin and docs and no dist/: every `exports` path and the
 * bin's compiled entry were missing, so `import 'tessera'` failed for every user of the package.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  name: string;
  engines: { node: string };
  bin: Record<string, string>;
  exports: Record<string, { types: string; default: string }>;
};

let dir: string;
/** The checkout's copy, packed (so built) as a fresh clone is. */
let checkout: string;
/** The packed files alone, with the dependencies beside them: the package as installed. */
let packageDir: string;
let packed: string[];

function run(command: string, args: string[], cwd: string) {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_loglevel: 'error' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-package-'));
  checkout = join(dir, 'checkout');
  packageDir = join(dir, 'installed');
  // What a fresh clone holds: the tracked files and the new ones not ignored.
  const listed = run('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], root);
  assert.equal(listed.code, 0, listed.err);
  for (const file of listed.out.split('\0').filter((f) => f !== '')) {
    mkdirSync(join(checkout, dirname(file)), { recursive: true });
    try {
      cpSync(join(root, file), join(checkout, file));
    } catch (e) {
      // A file deleted in the working tree but not yet from the index.
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  symlinkSync(join(root, 'node_modules'), join(checkout, 'node_modules'));
  const pack = run('npm', ['pack', '--dry-run', '--json'], checkout);
  assert.equal(pack.code, 0, pack.err);
  const [info] = JSON.parse(pack.out) as [{ files: { path: string }[] }];
  packed = info.files.map((f) => f.path);
  for (const file of packed) {
    mkdirSync(join(packageDir, dirname(file)), { recursive: true });
    cpSync(join(checkout, file), join(packageDir, file));
  }
  // Installed, its dependencies resolve from a node_modules above it; the package imports itself
  // by name (self-reference through "exports"), as a dependent would.
  symlinkSync(join(root, 'node_modules'), join(packageDir, 'node_modules'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('npm pack', () => {
  it('packs the built dist/: every exports path (code and types) and the bin with its compiled entry', () => {
    const missing: string[] = [];
    for (const [subpath, entry] of Object.entries(pkg.exports)) {
      for (const target of [entry.default, entry.types])
        if (!packed.includes(target.replace(/^\.\//, ''))) missing.push(`${subpath}: ${target}`);
    }
    for (const bin of Object.values(pkg.bin)) if (!packed.includes(bin.replace(/^\.\//, ''))) missing.push(bin);
    if (!packed.includes('dist/cli/main.js')) missing.push('dist/cli/main.js (the bin runs it)');
    assert.deepEqual(missing, []);
  });

  it('packs README, LICENSE and the docs', () => {
    for (const f of ['README.md', 'LICENSE', 'package.json', ...readdirSync(join(root, 'docs')).map((d) => `docs/${d}`)]) {
      assert.ok(packed.includes(f), `${f} is not in the tarball`);
    }
  });

  it('packs no tests, benchmarks, CI scripts, sources, examples, data, keys or source maps pointing at sources it does not ship', () => {
    const unwanted = packed.filter(
      (f) =>
        /^(test|bench|\.ci|scripts|src|examples|node_modules|\.tessera)\//.test(f) ||
        /\.(db|key|pem|secret|env|tgz|map)$/.test(f) ||
        /(^|\/)tessera\.yaml$/.test(f) ||
        (f.startsWith('dist/') && /\.test\./.test(f)),
    );
    assert.deepEqual(unwanted, []);
  });

  it('declares the Node versions the built package runs on', () => {
    assert.equal(pkg.engines.node, '>=22.13');
  });
});

describe('the packed package, imported by name', () => {
  // Node 22.13-22.17 (and 23.0-23.5) run no TypeScript: the package must not need it.
  const node = (args: string[]) => run(process.execPath, ['--no-experimental-strip-types', ...args], packageDir);

  for (const subpath of Object.keys(pkg.exports)) {
    const specifier = subpath === '.' ? pkg.name : `${pkg.name}/${subpath.slice(2)}`;
    it(`'${specifier}' loads without type stripping and exports what its source exports`, async () => {
      const r = node([
        '--input-type=module',
        '-e',
        `const m = await import(${JSON.stringify(specifier)}); process.stdout.write(JSON.stringify(Object.keys(m).sort()))`,
      ]);
      assert.equal(r.code, 0, r.err);
      const source = join(root, pkg.exports[subpath]?.default.replace(/^\.\/dist\//, 'src/').replace(/\.js$/, '.ts') ?? '');
      const expected = Object.keys((await import(source)) as object).sort();
      assert.deepEqual(JSON.parse(r.out), expected);
    });
  }

  it('runs its bin without type stripping', () => {
    const r = node([join(packageDir, pkg.bin.tessera ?? ''), '--version']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^\d+\.\d+\.\d+/);
  });
});

describe('the bin in a checkout that was packed', () => {
  it('runs the sources, not the dist/ the pack left behind (stale once a source changes)', () => {
    writeFileSync(join(checkout, 'dist', 'cli', 'main.js'), "throw new Error('stale dist/ ran');\n");
    const r = run(process.execPath, [join(checkout, pkg.bin.tessera ?? ''), '--version'], checkout);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^\d+\.\d+\.\d+/);
  });
});

/** A ```ts block, or a TSDoc `@example` block, that imports from the package. */
interface Example {
  readonly where: string;
  readonly code: string;
}

function examples(): Example[] {
  const out: Example[] = [];
  const docs = ['README.md', ...readdirSync(join(root, 'docs')).map((d) => `docs/${d}`)];
  for (const file of docs) {
    const text = readFileSync(join(root, file), 'utf8');
    for (const m of text.matchAll(/^```ts\n([\s\S]*?)^```/gm)) {
      const line = text.slice(0, m.index).split('\n').length;
      out.push({ where: `${file}:${line}`, code: m[1] as string });
    }
  }
  const sources = new Set<string>();
  const walk = (file: string) => {
    if (sources.has(file)) return;
    sources.add(file);
    const text = readFileSync(join(root, file), 'utf8');
    for (const m of text.matchAll(/^export\s.*\sfrom\s'(\.[^']+)'/gm)) walk(join(dirname(file), m[1] as string));
  };
  for (const entry of Object.values(pkg.exports)) walk(entry.default.replace(/^\.\/dist\//, 'src/').replace(/\.js$/, '.ts'));
  for (const file of sources) {
    const text = readFileSync(join(root, file), 'utf8');
    for (const m of text.matchAll(/^(\s*)\* ```ts\n([\s\S]*?)^\s*\* ```/gm)) {
      const code = (m[2] as string).replace(/^\s*\* ?/gm, '');
      const line = text.slice(0, m.index).split('\n').length + 1;
      out.push({ where: `${file}:${line}`, code });
    }
  }
  // Only complete examples: ones that import what they show. Fragments (a JSON shape, one call) are prose.
  return out.filter((e) => new RegExp(`from '${pkg.name}(/[^']*)?'`).test(e.code));
}

// What the examples leave to the reader: their options, the request at hand, the objects of the
// surrounding prose. Typed as the API takes them, so a renamed or retyped option still fails.
const AMBIENT = `
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RevocationList, TesseraConfig, UpstreamTokenIssuer, VerifierConfigInput } from '${pkg.name}';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
declare global {
  const options: VerifierConfigInput;
  const req: IncomingMessage;
  const config: TesseraConfig;
  const newConfig: TesseraConfig;
  const configError: import('${pkg.name}').ConfigError;
  const revocation: RevocationList;
  const upstreamTokenIssuer: UpstreamTokenIssuer;
  const store: { appendAudit(events: readonly unknown[]): Promise<void> };
  const logger: Logger;
  const registry: Registry;
  const verifierRuntime: import('${pkg.name}').VerifierRuntime;
  const storeCheck: import('${pkg.name}').ReadinessCheck;
  function notFound(res: ServerResponse): void;
  function gateway(req: IncomingMessage, res: ServerResponse): void;
}
`;

describe('the library examples', () => {
  it('are found in README.md, docs/ and the TSDoc of every entry point', () => {
    const where = examples().map((e) => e.where);
    for (const file of ['README.md', 'docs/gateway.md', 'docs/token-service.md', 'src/verifier.ts', 'src/adapters/express.ts']) {
      assert.ok(
        where.some((w) => w.startsWith(`${file}:`)),
        `no example found in ${file}`,
      );
    }
  });

  it("type-check against the package's declarations, as a user's strict TypeScript project compiles them", () => {
    const check = join(packageDir, 'examples-check');
    mkdirSync(check);
    const found = examples();
    found.forEach((e, i) => {
      const name = `${String(i).padStart(2, '0')}-${basename(e.where).replace(/[^\w.-]/g, '_')}.ts`;
      // `export {}` makes each a module, so that its top-level names are its own.
      writeFileSync(join(check, name), `${e.code}\nexport {};\n`);
    });
    writeFileSync(join(check, 'ambient.d.ts'), AMBIENT);
    writeFileSync(
      join(check, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'es2023',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          lib: ['es2023'],
          types: ['node'],
          strict: true,
          noEmit: true,
          skipLibCheck: true,
        },
        include: ['*.ts'],
      }),
    );
    const r = run(join(root, 'node_modules', '.bin', 'tsc'), ['-p', check], check);
    // Name each failing file by where its example is.
    const named = r.out.replace(/^(\d\d)-[^(]*\(/gm, (_, n: string) => `${found[Number(n)]?.where} (`);
    assert.equal(r.code, 0, named);
  });
});
