import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileScopes, parseScopeClaim } from '../../src/core/scopes.ts';

const catalog = {
  'api:read': {},
  'api:write': { implies: ['api:read'] },
  'api:admin': { implies: ['api:write'] },
  'files:read': {},
  'files:write': { implies: ['files:read'] },
  admin: { implies: ['api:*', 'files:*'] },
  billing: {},
};

describe('scopes: inheritance and wildcards', () => {
  const { model, issues } = compileScopes(catalog);

  it('compiles a valid catalogue without issues', () => {
    assert.deepEqual(issues, []);
  });

  it('expands inheritance transitively', () => {
    const e = model.expand(['api:admin']);
    assert.deepEqual(e.list, ['api:admin', 'api:read', 'api:write']);
    assert.equal(e.has('api:read'), true);
    assert.equal(e.has('files:read'), false);
  });

  it('does not inherit upwards', () => {
    const e = model.expand(['api:read']);
    assert.equal(e.has('api:write'), false);
    assert.deepEqual(e.list, ['api:read']);
  });

  it('grants everything with *', () => {
    const e = model.expand(['*']);
    assert.equal(e.has('billing'), true);
    assert.equal(e.has('not-in-catalogue'), true);
    assert.deepEqual(e.wildcards, ['*']);
    assert.deepEqual(e.list, Object.keys(catalog).sort());
  });

  it('grants every scope under a prefix with prefix:*, and nothing else', () => {
    const e = model.expand(['files:*']);
    assert.equal(e.has('files:read'), true);
    assert.equal(e.has('files:write'), true);
    assert.equal(e.has('files:future'), true);
    assert.equal(e.has('files'), false);
    assert.equal(e.has('filesx:read'), false);
    assert.equal(e.has('api:read'), false);
    assert.deepEqual(e.list, ['files:read', 'files:write']);
  });

  it('expands wildcards named in implies against the catalogue', () => {
    const e = model.expand(['admin']);
    assert.deepEqual(e.list, ['admin', 'api:admin', 'api:read', 'api:write', 'files:read', 'files:write']);
    assert.equal(e.has('billing'), false);
  });

  it('memoizes one result per granted list', () => {
    assert.equal(model.expand(['api:write', 'billing']), model.expand(['api:write', 'billing']));
  });

  it('accepts any scope name without a catalogue', () => {
    const { model: open, issues: none } = compileScopes(undefined);
    assert.deepEqual(none, []);
    assert.equal(open.known, undefined);
    assert.equal(open.expand(['x:y']).has('x:y'), true);
    assert.deepEqual(open.checkReferences(['anything'], 'rules[0].scopes'), []);
  });
});

describe('scopes: problems reported at load with exact paths', () => {
  it('reports a cycle with its path and the loop', () => {
    const { issues } = compileScopes({ a: { implies: ['b'] }, b: { implies: ['c'] }, c: { implies: ['a'] } });
    assert.deepEqual(issues, [{ path: 'scopes.a.implies', message: 'scopes imply each other in a cycle: a → b → c → a' }]);
  });

  it('reports a scope implying itself', () => {
    const { issues } = compileScopes({ d: { implies: ['d'] } });
    assert.deepEqual(issues, [{ path: 'scopes.d.implies', message: 'scopes imply each other in a cycle: d → d' }]);
  });

  it('does not report a scope implying a wildcard that covers it as a cycle, and expands it', () => {
    const { model, issues } = compileScopes({ 'api:read': {}, 'api:admin': { implies: ['api:*'] } });
    assert.deepEqual(issues, []);
    assert.deepEqual(model.expand(['api:admin']).list, ['api:admin', 'api:read']);
  });

  it('still reports scopes implying each other through a wildcard', () => {
    const { issues } = compileScopes({ 'api:a': { implies: ['api:*'] }, 'api:b': { implies: ['api:a'] } });
    assert.deepEqual(issues, [{ path: 'scopes.api:a.implies', message: 'scopes imply each other in a cycle: api:a → api:b → api:a' }]);
  });

  it('reports unknown implied scopes and wildcards matching nothing', () => {
    const { issues } = compileScopes({ a: {}, e: { implies: ['a', 'nope', 'x:*'] } });
    assert.deepEqual(issues, [
      { path: 'scopes.e.implies[1]', message: 'unknown scope "nope"; define it under scopes' },
      { path: 'scopes.e.implies[2]', message: 'wildcard "x:*" matches no defined scope' },
    ]);
  });

  it('reports invalid scope names and wildcard names', () => {
    const { issues } = compileScopes({ 'bad name': {}, 'q"uote': {}, 'x:*': {} });
    assert.deepEqual(
      issues.map((i) => i.path),
      ['scopes.bad name', 'scopes.q"uote', 'scopes.x:*'],
    );
  });

  it('reports unknown, wildcard and invalid scopes required by rules', () => {
    const { model } = compileScopes({ 'api:read': {} });
    assert.deepEqual(model.checkReferences(['api:read', 'api:wrte', 'api:*', 'a b'], 'rules[3].scopes'), [
      { path: 'rules[3].scopes[1]', message: 'unknown scope "api:wrte"; define it under scopes' },
      { path: 'rules[3].scopes[2]', message: 'a required scope cannot be a wildcard ("api:*")' },
      { path: 'rules[3].scopes[3]', message: '"a b" is not a valid scope name' },
    ]);
  });

  it('uses the given config path prefix', () => {
    const { issues } = compileScopes({ a: { implies: ['zz'] } }, 'gateway.scopes');
    assert.equal(issues[0]?.path, 'gateway.scopes.a.implies[0]');
  });
});

describe('scopes: the scope claim', () => {
  it('reads a space-delimited string and arrays of strings', () => {
    assert.deepEqual(parseScopeClaim('a b  c'), ['a', 'b', 'c']);
    assert.deepEqual(parseScopeClaim(''), []);
    assert.deepEqual(parseScopeClaim(undefined), []);
    assert.deepEqual(parseScopeClaim(['a', 'b']), ['a', 'b']);
  });

  it('refuses every other shape rather than treating it as no scopes', () => {
    for (const bad of [1, null, true, {}, ['a', 1], ['a b'], [''], [null]])
      assert.equal(parseScopeClaim(bad), undefined, JSON.stringify(bad));
  });
});
