/**
 * `tessera serve`'s own log lines (`log`): one JSON line each, whatever a warning quotes. A warning
 * can quote a value another party chose (a refused signing-key row's kid, written by whoever can
 * write to the database): JSON.stringify leaves U+2028, U+2029, C1 controls and bidi overrides raw,
 * which line readers take for a break and terminals for commands.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { log } from '../../src/cli/commands/serve.ts';

describe('tessera serve log lines', () => {
  it('attack: a warning quoting a planted kid stays one line of printable JSON, and reads back the same', () => {
    const msg = 'signing key evil\u2028{"level":"info"}\u009b2J\u202ekid is refused';
    const written: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string) => {
      written.push(chunk);
      return true;
    }) as typeof process.stderr.write;
    try {
      log({ level: 'warn', msg });
    } finally {
      process.stderr.write = write;
    }
    assert.equal(written.length, 1);
    const line = written[0] as string;
    assert.doesNotMatch(line, /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/);
    assert.equal(line.indexOf('\n'), line.length - 1);
    assert.equal((JSON.parse(line) as { msg: string }).msg, msg);
  });
});
