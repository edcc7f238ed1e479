/**
 * `tessera.yaml` as CI templates, Helm and careless hands write it, and as an attacker would: each
 * such file is refused with one error naming where and what to write instead, never read silently
 * as something else.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfigText } from '../../src/config/load.ts';
import { issuesOf } from '../helpers/config.ts';

const parse = (text: string, env: Record<string, string> = {}) => parseConfigText(text, 'tessera.yaml', env);

describe('config attacks: duplicate keys', () => {
  it('a duplicate key (a later one silently winning over a reviewed one) is refused naming the key and both lines', () => {
    assert.deepEqual(
      issuesOf(() => parse('data_dir: /var/lib/tessera\nserver:\n  port: 8080\n  host: 127.0.0.1\n  port: 9090\n')),
      [{ path: 'line 5, column 3', message: 'duplicate key port (first at line 3, column 3); keep one of them' }],
    );
    assert.deepEqual(
      issuesOf(() => parse('realm: a\nscopes: {}\nrealm: b\n')),
      [{ path: 'line 3, column 1', message: 'duplicate key realm (first at line 1, column 1); keep one of them' }],
    );
  });

  it('a duplicate key that looks like a secret is not quoted', () => {
    const key = 'Zq8sEcReTvAlUe0123456789abcdefGhIjKlMn';
    const issues = issuesOf(() => parse(`scopes:\n  ${key}: {}\n  ${key}: {}\n`));
    assert.deepEqual(issues, [
      {
        path: 'line 3, column 3',
        message: `duplicate key (a key of ${key.length} characters) (first at line 2, column 3); keep one of them`,
      },
    ]);
  });
});

describe('config attacks: YAML merge keys and several documents', () => {
  it('a merge key (<<) is refused where it appears, not read as a key named "<<" (in a section, or a scope named "<<")', () => {
    const message = 'YAML merge keys (<<) are not supported: write the keys out (an alias *name may still repeat a whole value)';
    assert.deepEqual(
      issuesOf(() => parse('defaults: &d { port: 8080 }\nserver:\n  <<: *d\n  host: 127.0.0.1\n')),
      [{ path: 'line 3, column 3', message }],
    );
    assert.deepEqual(
      issuesOf(() => parse('scopes:\n  <<: { read: { description: r } }\n  write: {}\n')),
      [{ path: 'line 2, column 3', message }],
    );
  });

  it('a second YAML document is refused saying the file holds one, not naming a library call', () => {
    const message = 'a configuration file holds one YAML document; this starts a second (after "---" or "..."): merge it into the first';
    assert.deepEqual(
      issuesOf(() => parse('data_dir: a\n---\ndata_dir: b\n')),
      [{ path: 'line 2, column 1', message }],
    );
    assert.deepEqual(
      issuesOf(() => parse('realm: a\n...\nrealm: b\n')),
      [{ path: 'line 3, column 1', message }],
    );
    // One document with its markers is one document.
    assert.equal(parse('---\nrealm: a\n...\n').realm, 'a');
  });
});

describe('config attacks: ${VAR} in a key', () => {
  it('a ${VAR} in a key is refused (substitution is for values), never kept as the literal name "${S}"', () => {
    assert.deepEqual(
      issuesOf(() => parse('scopes:\n  ${SCOPE}: { description: r }\n', { SCOPE: 'read' })),
      [{ path: 'scopes.${SCOPE}', message: 'a ${VAR} is not substituted in a key, only in values: write the key out' }],
    );
    assert.deepEqual(
      issuesOf(() => parse('scopes:\n  $${SCOPE}: {}\n')),
      [{ path: 'scopes.$${SCOPE}', message: 'a ${VAR} is not substituted in a key, only in values: write the key out' }],
    );
  });
});

describe('config attacks: what to write instead of a value out of range', () => {
  it('an empty string, a number out of range and an empty list say so in plain words, with the path', () => {
    const issues = issuesOf(() =>
      parse('data_dir: ""\nserver:\n  port: 70000\ngateway:\n  routes: []\n  trust_proxy: []\naudit:\n  batch_size: 0\n'),
    );
    const byPath = Object.fromEntries(issues.map((i) => [i.path, i.message]));
    assert.equal(byPath.data_dir, 'must not be empty');
    assert.equal(byPath['server.port'], 'must be at most 65535');
    assert.equal(byPath['audit.batch_size'], 'must be at least 1');
    for (const i of issues) assert.doesNotMatch(i.message, /Too (small|big)|expected (string|number) to/, JSON.stringify(i));
  });

  it('an empty value from the environment (${VAR:} with the variable empty) is one such problem at its path', () => {
    assert.deepEqual(
      issuesOf(() => parse('data_dir: ${DATA_DIR:}\n', { DATA_DIR: '' })),
      [{ path: 'data_dir', message: 'must not be empty' }],
    );
  });
});

describe('config attacks: a duration written as a number in quotes', () => {
  it('"600" (a quoted number, as Helm and ${VAR} give it) says to add a unit, without repeating a value from the environment', () => {
    const text =
      'issuers:\n  - issuer: https://id.example.com\n    audiences: [api]\n    jwks_uri: https://id.example.com/jwks\n    max_lifetime: ${MAX_LIFETIME}\n';
    const issues = issuesOf(() => parse(text, { MAX_LIFETIME: '600' }));
    assert.deepEqual(issues, [
      {
        path: 'issuers[0].max_lifetime',
        message: '"${MAX_LIFETIME}" has no unit: add one (30s, 10m, 24h, 7d), or write seconds as a number without quotes',
      },
    ]);
    assert.equal(parse(text.replace('${MAX_LIFETIME}', '${MAX_LIFETIME}s'), { MAX_LIFETIME: '600' }).issuers[0]?.max_lifetime, 600);
  });
});

describe('config attacks: a value that is not one of the options', () => {
  it('names the options in YAML words and the closest one, not zod\'s "Invalid option: expected one of "a"|"b""', () => {
    const issues = issuesOf(() => parse('dpop:\n  mode: on\n  nonce: false\nstore:\n  driver: sqlite\n'));
    assert.deepEqual(issues, [{ path: 'dpop.mode', message: '"on" is not an option here; write one of disabled, allowed, required' }]);
    const typo = issuesOf(() => parse('dpop:\n  mode: requierd\n'));
    assert.deepEqual(typo, [
      { path: 'dpop.mode', message: '"requierd" is not an option here; write one of disabled, allowed, required (did you mean required?)' },
    ]);
  });
});
