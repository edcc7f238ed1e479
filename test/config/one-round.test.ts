/**
 * One round of errors: a configuration with problems the schema finds field by field and problems
 * found by comparing fields or sections (rule scopes against the catalogue, routes against the
 * verifiers, `passthrough` against `allow_passthrough`) reports both kinds in one error, each at
 * its path; never the second kind only once the first is fixed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema } from '../../src/config/schema.ts';
import { ConfigError, type ConfigIssue } from '../../src/core/errors.ts';

const STATIC = 'static-gateway-token-0123456789-abcdefghij';

function issuesOf(fn: () => unknown): ConfigIssue[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e}`);
    assert.equal(e.code, 'ERR_INVALID_CONFIG');
    return [...e.issues];
  }
  assert.fail('expected a ConfigError');
}

const paths = (issues: readonly ConfigIssue[]) => issues.map((i) => i.path);

describe('config: a schema error and an error across sections in one round', () => {
  it('runs the cross-field checks of a section even when another field of it failed', () => {
    const base = { static_tokens: [{ id: 'ci', token: STATIC }] };
    const route = { id: 'r', upstream: { url: 'http://127.0.0.1:9' }, auth: 'static', rules: [{}] };
    const gateway = {
      timeouts: { connect: 'soon' },
      routes: [
        { ...route, upstream: { url: 'http://127.0.0.1:9', credential: { type: 'passthrough' } } },
        { ...route, id: 'pub', auth: 'none', max_body_size: 'huge' },
      ],
    };
    assert.deepEqual(paths(issuesOf(() => parseConfig(configSchema, { ...base, gateway }))), [
      'gateway.routes[1].max_body_size',
      'gateway.routes[1].rules',
      'gateway.timeouts.connect',
      'gateway.routes[0].upstream.credential.type',
    ]);
    assert.deepEqual(
      paths(
        issuesOf(() =>
          parseConfig(configSchema, {
            ...base,
            token_service: { access_token_ttl: '2h', refresh_token_ttl: 'soon' },
            store: { driver: 'postgres', sqlite: { busy_timeout: 'soon' } },
          }),
        ),
      ),
      ['token_service.refresh_token_ttl', 'token_service.access_token_ttl', 'store.sqlite.busy_timeout', 'store.postgres'],
    );
  });
});
