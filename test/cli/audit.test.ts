/**
 * `tessera audit query|tail`: `--since` and `--until` parsing, a closed time window, and reading a
 * large trail a page at a time.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent, AuditQuery } from '../../src/audit/event.ts';
import { uuidv7 } from '../../src/audit/id.ts';
import { forEachEvent, parseSince, parseUntil } from '../../src/cli/commands/audit.ts';
import { initialize } from '../../src/cli/commands/init.ts';
import { CliError } from '../../src/cli/output.ts';
import { quoted as quotedValue } from '../../src/core/errors.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { AUDIENCE, baseConfig, startGateway, startUpstream, token } from '../gateway/helpers.ts';
import { spawnCollecting } from '../helpers/spawned.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const event = (time: number, subject: string): AuditEvent => ({
  id: uuidv7(time),
  time,
  kind: 'gateway.request',
  decision: 'allow',
  reason: 'ok',
  subject,
});

describe('audit --since', () => {
  const now = Date.parse('2026-11-22T12:00:00Z');
  it('reads durations back from now and ISO times', () => {
    assert.equal(parseSince('15m', now), now - 15 * 60_000);
    assert.equal(parseSince('2026-11-22T10:00:00Z', now), Date.parse('2026-11-22T10:00:00Z'));
    assert.equal(parseSince('2024-02-29', now), Date.parse('2024-02-29T00:00:00Z'));
  });

  it('refuses a duration reaching back before any date (99999999999999999999d: PostgreSQL failed on the bigint, "unexpected error")', () => {
    for (const v of ['99999999999999999999d', '9999999999999999s', '999999999999h']) {
      assert.throws(
        () => parseSince(v, now),
        (e: unknown) =>
          e instanceof CliError && e.message === `--since ${v} reaches back before the earliest date there is; give a shorter duration`,
        v,
      );
    }
    assert.throws(() => parseUntil('99999999999999999999d', now), /^CliError: --until 99999999999999999999d reaches back/);
    assert.equal(parseSince('36500d', now), now - 36500 * 86_400_000);
  });

  it('attack: refuses a time of day without a time zone (read as the local time, while every time shown is UTC), saying how to write it', () => {
    const tz = process.env.TZ;
    process.env.TZ = 'America/New_York';
    try {
      for (const [flag, parse] of [
        ['--since', parseSince],
        ['--until', parseUntil],
      ] as const) {
        for (const v of ['2026-11-22T10:00:00', '2026-11-22T10:00', '2026-11-22 10:00:00', '2026-11-22T10:00:00.5']) {
          assert.throws(
            () => parse(v, now),
            (e: unknown) =>
              e instanceof CliError &&
              e.message ===
                `${flag} ${quotedValue(v)} has no time zone; add Z for UTC (2026-11-22T10:00:00Z) or an offset (2026-11-22T10:00:00+01:00)`,
            v,
          );
        }
      }
      // A zone given, or a date alone (its midnight UTC), is read as before.
      assert.equal(parseSince('2026-11-22T10:00:00+01:00', now), Date.parse('2026-11-22T09:00:00Z'));
      assert.equal(parseSince('2026-11-22', now), Date.parse('2026-11-22T00:00:00Z'));
    } finally {
      if (tz === undefined) delete process.env.TZ;
      else process.env.TZ = tz;
    }
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

describe('audit --until', () => {
  const now = Date.parse('2026-11-22T12:00:00Z');
  it('reads the same durations and ISO times as --since, naming itself when refusing', () => {
    assert.equal(parseUntil('15m', now), now - 15 * 60_000);
    assert.equal(parseUntil('2026-11-22T14:20:00Z', now), Date.parse('2026-11-22T14:20:00Z'));
    assert.throws(
      () => parseUntil('yesterday', now),
      (e: unknown) =>
        e instanceof CliError &&
        e.message === '--until must be a duration (15m, 2h, 7d) or an ISO time (2026-11-22T10:00:00Z), not "yesterday"',
    );
  });
});

describe('audit query --since --until: a closed window', () => {
  let dir: string;
  const at = (hhmm: string) => Date.parse(`2026-11-22T${hhmm}:00Z`);
  const query = (...args: string[]) =>
    spawnSync(process.execPath, [MAIN, 'audit', 'query', '--subject', 'window', ...args], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, TESSERA_MASTER_KEY: '' },
    });
  before(async () => {
    delete process.env.TESSERA_MASTER_KEY;
    dir = mkdtempSync(join(tmpdir(), 'tessera-audit-window-'));
    await initialize({ config: join(dir, 'tessera.yaml') });
    const store = await SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    await store.appendAudit(['13:59', '14:00', '14:10', '14:20', '14:21'].map((t) => event(at(t), 'window')));
    await store.close();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('prints what happened between two times, both ends included', () => {
    const r = query('--since', '2026-11-22T14:00:00Z', '--until', '2026-11-22T14:20:00Z', '--json');
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(
      (JSON.parse(r.stdout) as AuditEvent[]).map((e) => e.time),
      [at('14:00'), at('14:10'), at('14:20')],
    );
    const upTo = query('--until', '2026-11-22T14:00:00Z', '--json');
    assert.deepEqual(
      (JSON.parse(upTo.stdout) as AuditEvent[]).map((e) => e.time),
      [at('13:59'), at('14:00')],
    );
  });

  it('refuses --until before --since in one line, exit 1', () => {
    const r = query('--since', '2026-11-22T14:20:00Z', '--until', '2026-11-22T14:00:00Z');
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      'tessera: --until (2026-11-22T14:00:00.000Z) is before --since (2026-11-22T14:20:00.000Z); the window must end after it starts\n',
    );
  });

  it('refuses an empty filter (an unset "$VAR") in one line, exit 1, instead of matching no event', () => {
    for (const args of [
      ['--subject', ''],
      ['--client', ''],
      ['--jti', ''],
      ['--request-id', ''],
    ]) {
      const r = spawnSync(process.execPath, [MAIN, 'audit', 'query', ...args], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      assert.equal(r.status, 1, args.join(' '));
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, `tessera: ${args[0]} is empty; give a value or leave the filter out\n`);
    }
  });

  it('says "no events match" on stderr (exit 0) when none does, instead of printing nothing; --json prints an empty array alone', () => {
    const r = query('--until', '2026-11-22T13:00:00Z');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, 'tessera: no events match\n');
    const j = query('--until', '2026-11-22T13:00:00Z', '--json');
    assert.equal(j.status, 0, j.stderr);
    assert.deepEqual(JSON.parse(j.stdout), []);
    assert.equal(j.stderr, '');
  });

  it('tail says "no events match" on stderr (exit 0) when none does, instead of printing nothing, --json too', () => {
    for (const json of [[], ['--json']]) {
      const r = spawnSync(process.execPath, [MAIN, 'audit', 'tail', '--subject', 'nobody-at-all', ...json], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, 'tessera: no events match\n');
    }
  });

  it('tail -f says once that no event matches yet, then waits silently and prints the next one when it is written', async () => {
    const run = spawnCollecting(process.execPath, [MAIN, 'audit', 'tail', '-f', '--subject', 'late-comer', '--json'], {
      cwd: dir,
      env: { ...process.env, TESSERA_MASTER_KEY: '' },
    });
    const { child } = run;
    const until = async (done: () => boolean, what: string) => {
      for (let i = 0; i < 300 && !done(); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(done(), `${what}; stderr: ${run.err}`);
    };
    try {
      await until(() => run.err !== '', 'the line saying nothing matches yet');
      assert.equal(run.err, 'tessera: no events match yet; waiting for new ones\n');
      assert.equal(run.out, '');
      const store = await SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
      await store.appendAudit([event(Date.now(), 'late-comer')]);
      await store.close();
      await until(() => run.out.includes('late-comer'), 'the new event');
      assert.equal((JSON.parse(run.out.trim()) as AuditEvent).subject, 'late-comer');
      assert.equal(run.err, 'tessera: no events match yet; waiting for new ones\n', 'said once, nothing more while waiting');
    } finally {
      child.kill('SIGINT');
    }
  });

  it('is in --help', () => {
    const r = spawnSync(process.execPath, [MAIN, 'audit', 'query', '--help'], { encoding: 'utf8' });
    assert.match(r.stdout, /--until <when>\s+up to this instant/);
  });
});

describe('audit tail: a large trail', () => {
  it('hands each page to the printer before reading the next (never the whole window in memory)', async () => {
    const log: string[] = [];
    const events = Array.from({ length: 25 }, (_, i) => event(1_000 + i, `s${i}`));
    const store = {
      async queryAudit(q: AuditQuery) {
        log.push(`page after ${q.after_id === undefined ? '-' : events.findIndex((e) => e.id === q.after_id)}`);
        const start = q.after_id === undefined ? 0 : events.findIndex((e) => e.id === q.after_id) + 1;
        return events.slice(start, start + (q.limit ?? 100));
      },
    };
    const seen: string[] = [];
    await forEachEvent(
      store,
      {},
      (e) => {
        seen.push(e.subject as string);
        log.push(`event ${e.subject}`);
      },
      10,
    );
    assert.deepEqual(
      seen,
      events.map((e) => e.subject),
    );
    assert.deepEqual(
      log.filter((l) => l.startsWith('page')),
      ['page after -', 'page after 9', 'page after 19'],
    );
    assert.ok(log.indexOf('event s9') < log.indexOf('page after 9'), 'page 1 printed before page 2 is read');
  });

  let dir: string;
  before(async () => {
    delete process.env.TESSERA_MASTER_KEY;
    dir = mkdtempSync(join(tmpdir(), 'tessera-audit-'));
    await initialize({ config: join(dir, 'tessera.yaml') });
    const store = await SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    const start = Date.now() - 60_000;
    await store.appendAudit(Array.from({ length: 2500 }, (_, i) => event(start + i, 'tail-subject')));
    await store.close();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('query warns that --limit cut events off only when it did', () => {
    const query = (limit: string) =>
      spawnSync(process.execPath, [MAIN, 'audit', 'query', '--subject', 'tail-subject', '--since', '1h', '--limit', limit, '--json'], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
    const cut = query('2499');
    assert.equal(cut.status, 0, cut.stderr);
    assert.equal((JSON.parse(cut.stdout) as unknown[]).length, 2499);
    assert.match(cut.stderr, /^tessera: showing the first 2499 matching events/);
    const all = query('2500');
    assert.equal(all.status, 0, all.stderr);
    assert.equal((JSON.parse(all.stdout) as unknown[]).length, 2500);
    assert.equal(all.stderr, '', 'exactly 2500 exist: nothing was cut off');
  });

  it('prints every event of the window once, in order, across pages', () => {
    const r = spawnSync(process.execPath, [MAIN, 'audit', 'tail', '--subject', 'tail-subject', '--json'], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, TESSERA_MASTER_KEY: '' },
    });
    assert.equal(r.status, 0, r.stderr);
    const times = r.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as AuditEvent).time);
    assert.equal(times.length, 2500);
    assert.deepEqual(
      times,
      [...times].sort((a, b) => a - b),
    );
  });
});

describe('audit query: what a caller put in the trail cannot rewrite the screen', () => {
  const HOSTILE = 'mallory\n2026-01-01T00:00:00.000Z  token.revoked  allow:ok\x1b[2K\x9b\u202e';
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-audit-escape-'));
    await initialize({ config: join(dir, 'tessera.yaml') });
    const store = await SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    await store.appendAudit([{ ...event(Date.now(), HOSTILE), route: 'r\x07' }]);
    await store.close();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('prints one line per event with control characters escaped', () => {
    const r = spawnSync(process.execPath, [MAIN, 'audit', 'query', '--since', '1h', '--subject', HOSTILE], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, TESSERA_MASTER_KEY: '' },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.split('\n').length, 2, 'one event, one line');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: none of these may reach the terminal
    assert.doesNotMatch(r.stdout, /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/);
    assert.ok(r.stdout.includes('sub="mallory\\n2026-01-01T00:00:00.000Z  token.revoked  allow:ok\\u001b[2K\\x9b\\u202e"'), r.stdout);
    assert.ok(r.stdout.includes('route="r\\u0007"'), r.stdout);
  });
});

describe('audit query: the summary line’s separators cannot be spoofed', () => {
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-audit-fields-'));
    await initialize({ config: join(dir, 'tessera.yaml') });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('attack: a trusted identity provider’s subject, client id and actor holding "  client=admin", ">" or a backslash cannot pass for fields, actors or an escaped line break of their own', async () => {
    // A real gateway writing its audit events into the site’s store, as under tessera serve.
    const store = await SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    const upstream = await startUpstream();
    const gw = await startGateway(
      {
        ...baseConfig(),
        gateway: { routes: [{ id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'jwt', rules: [{}] }] },
      },
      { auditSinks: [{ write: (events) => store.appendAudit(events) }] },
    );
    try {
      // The verifier takes a verified token’s sub, client_id and act as they are: only the token
      // service’s own subjects are held to the identity rule (no spaces).
      const t = await token({
        sub: 'mallory  client=admin-cli  act=root',
        client_id: 'partner  grant=g_0',
        act: { sub: 'bot>root', act: { sub: 'x\\nfake' } },
        aud: AUDIENCE,
      });
      const res = await fetch(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${t}` } });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      await gw.served.gateway.audit.flush();
    } finally {
      await gw.close();
      await upstream.close();
      await store.close();
    }
    const r = spawnSync(process.execPath, [MAIN, 'audit', 'query', '--since', '1h'], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, TESSERA_MASTER_KEY: '' },
    });
    assert.equal(r.status, 0, r.stderr);
    const line = r.stdout.split('\n').find((l) => l.includes('gateway.request')) ?? '';
    // Each field once, each value that holds the separator (or the actor chain’s) quoted.
    const fields = (line.match(/(?:"(?:[^"\\]|\\.)*"|[^\s"])+/g) ?? []).filter((f) => /^(?:sub|client|act|grant)=/.test(f));
    assert.deepEqual(
      fields.map((f) => f.slice(0, f.indexOf('='))),
      ['sub', 'client', 'act'],
      line,
    );
    assert.ok(line.includes('sub="mallory  client=admin-cli  act=root"'), line);
    assert.ok(line.includes('client="partner  grant=g_0"'), line);
    // Two actors, the first named bot>root, the second with a backslash and an n (no line break).
    assert.ok(line.includes('act="bot>root">"x\\\\nfake"'), line);
    assert.ok(line.includes('route=api  GET /api/x'), line);
  });
});

describe('audit query: two identity providers’ same-named subjects', () => {
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-audit-subject-issuer-'));
    await initialize({ config: join(dir, 'tessera.yaml') });
    const store = await SqliteStore.open({ path: join(dir, '.tessera', 'tessera.db') });
    const now = Date.now();
    await store.appendAudit([
      // A Tessera token issued for the corporate IdP's alice, then the partner IdP's alice with its own token.
      { ...event(now - 2, 'alice'), issuer: 'https://tessera.test', subject_issuer: 'https://corp-idp.test' },
      { ...event(now - 1, 'alice'), issuer: 'https://partner-idp.test' },
    ]);
    await store.close();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('names each subject’s issuer in the summary lines and keeps subject_issuer in --json', () => {
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [MAIN, 'audit', 'query', '--since', '1h', '--subject', 'alice', ...args], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
    const r = run();
    assert.equal(r.status, 0, r.stderr);
    const [corp, partner] = r.stdout.trim().split('\n');
    assert.match(corp ?? '', /sub=alice {2}sub_iss=https:\/\/corp-idp\.test/);
    assert.match(partner ?? '', /sub=alice {2}sub_iss=https:\/\/partner-idp\.test/);
    const json = run('--json');
    const events = JSON.parse(json.stdout) as AuditEvent[];
    assert.deepEqual(
      events.map((e) => [e.issuer, e.subject_issuer]),
      [
        ['https://tessera.test', 'https://corp-idp.test'],
        ['https://partner-idp.test', undefined],
      ],
    );
  });
});
