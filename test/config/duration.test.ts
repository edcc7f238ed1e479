import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatDuration, parseDuration } from '../../src/config/duration.ts';

describe('config: durations', () => {
  it('reads seconds as a number and units as a string', () => {
    assert.equal(parseDuration(30), 30);
    assert.equal(parseDuration('250ms'), 0.25);
    assert.equal(parseDuration(' 10m '), 600);
    assert.equal(parseDuration('7d'), 604800);
  });
  it('reads a quoted zero as zero (a tool quoting every scalar writes "0" for "off")', () => {
    assert.equal(parseDuration('0'), 0);
  });
  it('refuses a quoted number other than zero (seconds or days?), negatives, units it does not know', () => {
    for (const v of ['30', '-1s', '1w', '1e3s', '0x10', '10 m', '', -1, Number.NaN, null])
      assert.equal(parseDuration(v), undefined, String(v));
  });
  it('writes the shortest exact form', () => {
    assert.equal(formatDuration(600), '10m');
    assert.equal(formatDuration(90), '90s');
    assert.equal(formatDuration(86400 * 30), '30d');
  });
});
