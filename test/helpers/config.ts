/** What a configuration refusal carries, for tests that assert its issues. */
import assert from 'node:assert/strict';
import { ConfigError, type ConfigIssue } from '../../src/core/errors.ts';

/** The issues of the {@link ConfigError} `fn` throws (a TypeError with code ERR_INVALID_CONFIG); fails if it throws nothing else. */
export function issuesOf(fn: () => unknown): ConfigIssue[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e}`);
    assert.ok(e instanceof TypeError);
    assert.equal(e.code, 'ERR_INVALID_CONFIG');
    return [...e.issues];
  }
  assert.fail('expected a ConfigError');
}
