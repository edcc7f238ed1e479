/**
 * `${VAR}` substitution walks the parsed YAML: keys that JavaScript treats specially must not change
 * what the schema sees.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfigText } from '../../src/config/load.ts';
import { issuesOf as configIssues } from '../helpers/config.ts';

const issuesOf = (text: string) => configIssues(() => parseConfigText(text, 'tessera.yaml', {}));

describe('config: a __proto__ key cannot smuggle settings', () => {
  it('refuses __proto__ at the top level instead of reading its keys as settings', () => {
    const issues = issuesOf('__proto__: { data_dir: /tmp/elsewhere }\n');
    assert.deepEqual(issues, [{ path: '__proto__', message: 'unknown key "__proto__"; remove it' }]);
  });

  it('refuses __proto__ nested in a section, with its path, together with the other problems', () => {
    const issues = issuesOf('server:\n  __proto__: { port: 1 }\n  hots: x\n');
    assert.deepEqual(
      issues.map((i) => i.path),
      ['server.__proto__', 'server.hots'],
    );
  });
});

describe('config: a malformed ${VAR} reference is refused, not kept as a literal value', () => {
  // `token: "${GATEWAY_TOKEN"` used to load with the token `${GATEWAY_TOKEN`: sent upstream as the
  // credential, with no word of the typo.
  for (const written of ['${GATEWAY_TOKEN', '${GATEWAY-TOKEN}', '${ GATEWAY_TOKEN }', '${1TOKEN}', 'x-${}']) {
    it(`refuses ${JSON.stringify(written)} with its path and the syntax`, () => {
      const issues = issuesOf(`server: { public_url: "https://a.test/${written}" }\n`);
      assert.deepEqual(issues, [
        {
          path: 'server.public_url',
          message:
            'a "${" that starts no reference: write ${NAME} or ${NAME:default} (NAME of letters, digits and _), or $${ for a literal "${"',
        },
      ]);
    });
  }

  it('still substitutes well-formed references and writes $${ as a literal ${', () => {
    const c = parseConfigText('server: { public_url: "https://${HOST}/$${x}/${NONE:d}" }\n', 'tessera.yaml', { HOST: 'a.test' });
    assert.equal(c.server.public_url, 'https://a.test/${x}/d');
  });
});

describe('config: ${VAR:-default}, the bash and docker-compose spelling, means ${VAR:default}', () => {
  // `port: ${PORT:-8080}` used to take the default "-8080", and `${URL:-https://a.test}` the URL
  // "-https://a.test": the "-" was read as the first character of the default.
  const parse = (text: string, env: Record<string, string>) => parseConfigText(text, 'tessera.yaml', env);

  it('takes the default without the "-" when the variable is unset', () => {
    const c = parse('server: { port: "${PORT:-8080}", public_url: "${URL:-https://a.test}" }\n', {});
    assert.equal(c.server.port, 8080);
    assert.equal(c.server.public_url, 'https://a.test');
  });

  it('takes the default when the variable is empty, and the environment when it is set', () => {
    const empty = parse('server: { public_url: "${URL:-https://a.test}" }\n', { URL: '' });
    assert.equal(empty.server.public_url, 'https://a.test');
    const set = parse('server: { public_url: "${URL:-https://a.test}" }\n', { URL: 'https://env.test' });
    assert.equal(set.server.public_url, 'https://env.test');
  });

  it('reads ${VAR:--x} as the default "-x", as bash does', () => {
    const c = parse('server: { public_url: "https://a.test/${P:--x}" }\n', {});
    assert.equal(c.server.public_url, 'https://a.test/-x');
  });

  it('reads ${VAR:-} as an empty default, like ${VAR:}', () => {
    const dash = parse('server: { public_url: "https://a.test/${P:-}x" }\n', {});
    const colon = parse('server: { public_url: "https://a.test/${P:}x" }\n', {});
    assert.equal(dash.server.public_url, 'https://a.test/x');
    assert.equal(colon.server.public_url, 'https://a.test/x');
  });

  it('still refuses ${VAR-x} (no colon): unset-only defaults are not supported', () => {
    const issues = issuesOf('server: { public_url: "https://a.test/${P-x}" }\n');
    assert.deepEqual(
      issues.map((i) => i.path),
      ['server.public_url'],
    );
    assert.match(issues[0]?.message ?? '', /starts no reference/);
  });
});
