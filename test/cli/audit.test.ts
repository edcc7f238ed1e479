/**
 * `tessera audit query|tail`: `--since` parsing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseSince } from '../../src/cli/commands/audit.ts';
import { CliError } from '../../src/cli/output.ts';

describe('audit --since', () => {
  const now = Date.parse('2026-11-22T12:00:00Z');
  it('reads durations back from now and ISO times', () => {
    assert.equal(parseSince('15m', now), now - 15 * 60_000);
    assert.equal(parseSince('2026-11-22T10:00:00Z', now), Date.parse('2026-11-22T10:00:00Z'));
    assert.equal(parseSince('2024-02-29', now), Date.parse('2024-02-29T00:00:00Z'));
  });

  it('refuses a day the month does not have instead of rolling over into the next month', () => {
    for (const v of ['2026-02-30', '2026-02-29T10:00:00Z', '2026-04-31', '2026-13-01', '2026-00-10']) {
      assert.throws(
        () => parseSince(v, now),
        (e: unknown) => e instanceof CliError && e.message.endsWith(`not "${v}"`),
        v,
      );
    }
  });
});
