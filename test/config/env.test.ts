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
