/**
 * `tessera scan`, run as a user runs it, against a running token service on a real SQLite file:
 * real files in a temp dir (JSON lines, Authorization headers, URLs, nested directories, a token
 * split across the 1 MiB read boundary of a large file, a binary file, a symlink loop), only this
 * issuer's verified tokens reported, never a token in any output or audit event, and `--revoke` /
 * `--revoke-grant` refused by the running service's verifier and introspection.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent } from '../../src/audit/event.ts';
import { runScan, ScanRevokeError } from '../../src/cli/commands/scan.ts';
import type { LeakedToken } from '../../src/issuer/leaks.ts';
import { tokenHash } from '../../src/issuer/secrets.ts';
import { ACCESS_TOKEN_TYPE } from '../../src/issuer/service.ts';
import { StoreUnavailableError } from '../../src/store/contract.ts';
import { basic, inProcessVerifier, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { b64json, claims, makeKey, sign } from '../helpers/tokens.ts';

const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const MiB = 1 << 20;

let issuer: RunningIssuer;
let foreign: RunningIssuer;
let agent: { id: string; secret: string };
let config: string;
let files: string;
/** Every token handed out in this file: none may appear in any output. */
const secrets: string[] = [];

interface Finding {
  path: string;
  line: number;
  column: number;
  kind: string;
  token_hash: string;
  jti: string | null;
  subject: string | null;
  client_id: string;
  grant_id: string;
  expires_at: number;
  state: string;
}
interface Report {
  findings: Finding[];
  summary: {
    files_scanned: number;
    bytes_scanned: number;
    occurrences: number;
    omitted: number;
    tokens: number;
    live: number;
    complete: boolean;
  };
  skipped: { path: string; reason: string; message: string }[];
  revoked: { tokens: string[]; grants: string[] } | null;
}

/** Run `tessera scan` asynchronously (the token service in this process keeps serving). */
function scan(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [MAIN, 'scan', '--config', config, ...args],
      { cwd: files, encoding: 'utf8', env: { ...process.env, TESSERA_MASTER_KEY: '' }, maxBuffer: 64 * MiB },
      (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function scanJson(...args: string[]): Promise<{ code: number | null; report: Report; stderr: string }> {
  const r = await scan('--json', ...args);
  assertNoToken(r.stdout + r.stderr);
  return { code: r.code, report: JSON.parse(r.stdout) as Report, stderr: r.stderr };
}

/** No token, nor its payload or signature segment (nor a refresh token's random part), in `text`. */
function assertNoToken(text: string): void {
  for (const s of secrets) {
    const parts = s.startsWith('trt_') ? [s, s.slice(4)] : [s, ...s.split('.').slice(1)];
    for (const p of parts) assert.equal(text.includes(p), false, 'a token (or part of one) was printed');
  }
}

function write(rel: string, content: string | Buffer): string {
  const path = join(files, rel);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  return rel;
}

/** 1-based line and column of `needle` in `text`. */
function at(text: string, needle: string, from = 0): { line: number; column: number } {
  const i = text.indexOf(needle, from);
  assert.notEqual(i, -1);
  const before = text.slice(0, i);
  return { line: before.split('\n').length, column: i - before.lastIndexOf('\n') };
}

function keep<T extends { access_token: string; refresh_token?: string }>(t: T): T {
  secrets.push(t.access_token);
  if (t.refresh_token !== undefined) secrets.push(t.refresh_token);
  return t;
}

const mint = async (subject?: string, ttl?: number) =>
  keep(await issuer.service.mint({ clientId: 'agent', ...(subject ? { subject } : {}), ...(ttl ? { ttl } : {}) }));

/** A delegated token (RFC 8693) for the agent, with a refresh token: a child grant of `subjectToken`'s. */
async function exchange(subjectToken: string) {
  const params = new URLSearchParams({ subject_token: subjectToken, subject_token_type: ACCESS_TOKEN_TYPE });
  const r = keep(await issuer.service.exchangeAs('agent', params));
  assert.ok(r.refresh_token);
  return { ...r, grant_id: JSON.parse(Buffer.from(r.access_token.split('.')[1] as string, 'base64url').toString()).grant_id as string };
}

async function introspect(token: string): Promise<boolean> {
  const r = await issuer.post('/oauth2/introspect', { token }, { authorization: basic(agent.id, agent.secret) });
  assert.equal(r.status, 200);
  return ((await r.json()) as { active: boolean }).active;
}

async function auditOf(reason: string): Promise<AuditEvent[]> {
  const events = await issuer.store.queryAudit({ limit: 10_000 });
  assertNoToken(JSON.stringify(events));
  return events.filter((e) => e.reason === reason);
}

before(async () => {
  issuer = await startIssuer();
  foreign = await startIssuer();
  config = join(issuer.dir, 'tessera.yaml');
  writeFileSync(config, `data_dir: .\ntoken_service: { issuer: "${issuer.url}" }\n`);
  agent = await issuer.addClient({
    id: 'agent',
    grantTypes: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange', 'refresh_token'],
  });
  await foreign.addClient({ id: 'agent' });
  files = mkdtempSync(join(tmpdir(), 'tessera-scan-'));
});

after(async () => {
  await issuer?.close();
  await foreign?.close();
  rmSync(files, { recursive: true, force: true });
});

describe('tessera scan: what it reports', () => {
  it('finds live tokens in JSON lines, Authorization headers and URLs in nested directories, where they are; exit 1', async () => {
    const cc = await mint();
    const alice = await mint('alice');
    const child = await exchange(alice.access_token);
    const jsonl = [
      '{"level":"info","msg":"started"}',
      `{"level":"debug","headers":{"authorization":"Bearer ${cc.access_token}"}}`,
      `{"response":{"access_token":"x","refresh_token":"${child.refresh_token}","token_type":"Bearer"}}`,
    ].join('\n');
    const access = [
      `127.0.0.1 - - "GET /api/items?access_token=${alice.access_token}&page=2 HTTP/1.1" 200`,
      `Authorization: Bearer ${child.access_token}`,
      '',
    ].join('\n');
    const dir = 'report';
    write(`${dir}/app.jsonl`, jsonl);
    write(`${dir}/nested/deep/access.log`, access);

    const { code, report } = await scanJson(dir);
    assert.equal(code, 1, 'live tokens found: exit 1');
    const where = (rel: string, text: string, token: string) => ({ path: join(dir, rel), ...at(text, token) });
    assert.deepEqual(report.findings, [
      {
        ...where('app.jsonl', jsonl, cc.access_token),
        kind: 'access_token',
        token_hash: tokenHash(cc.access_token),
        jti: cc.jti,
        subject: 'agent',
        client_id: 'agent',
        grant_id: cc.grant_id,
        expires_at: report.findings[0]?.expires_at,
        state: 'live',
      },
      {
        ...where('app.jsonl', jsonl, child.refresh_token as string),
        kind: 'refresh_token',
        token_hash: tokenHash(child.refresh_token as string),
        jti: null,
        subject: 'alice',
        client_id: 'agent',
        grant_id: child.grant_id,
        expires_at: report.findings[1]?.expires_at,
        state: 'live',
      },
      {
        ...where('nested/deep/access.log', access, alice.access_token),
        kind: 'access_token',
        token_hash: tokenHash(alice.access_token),
        jti: alice.jti,
        subject: 'alice',
        client_id: 'agent',
        grant_id: alice.grant_id,
        expires_at: report.findings[2]?.expires_at,
        state: 'live',
      },
      {
        ...where('nested/deep/access.log', access, child.access_token),
        kind: 'access_token',
        token_hash: tokenHash(child.access_token),
        jti: report.findings[3]?.jti ?? 'missing',
        subject: 'alice',
        client_id: 'agent',
        grant_id: child.grant_id,
        expires_at: report.findings[3]?.expires_at,
        state: 'live',
      },
    ]);
    const now = Date.now() / 1000;
    for (const f of report.findings) assert.ok(f.expires_at > now, 'expiry in epoch seconds');
    assert.deepEqual(report.summary, {
      files_scanned: 2,
      bytes_scanned: jsonl.length + access.length,
      occurrences: 4,
      omitted: 0,
      tokens: 4,
      live: 4,
      complete: true,
    });
    assert.deepEqual(report.skipped, []);
    assert.equal(report.revoked, null);

    const text = await scan(dir);
    assertNoToken(text.stdout + text.stderr);
    assert.equal(text.code, 1);
    const { line, column } = at(jsonl, cc.access_token);
    assert.match(
      text.stdout,
      new RegExp(
        `^report/app\\.jsonl:${line}:${column}  access_token  LIVE  jti=${cc.jti}  sub=agent  client=agent  grant=${cc.grant_id}  exp=\\S+Z  hash=${tokenHash(cc.access_token)}$`,
        'm',
      ),
    );
    assert.match(text.stdout, /^4 finding\(s\) of 4 token\(s\) in 2 file\(s\) scanned; 4 live$/m);
    assert.match(text.stdout, /tessera scan --revoke/);
  });

  it('reports nothing that does not verify as this issuer’s: another key (unknown kid, or this issuer’s kid), a tampered signature or payload, a foreign issuer, an unknown refresh token', async () => {
    const real = await mint();
    const iss = issuer.service.issuer;
    const ownKid = issuer.service.keys.status()[0]?.kid as string;
    const attacker = makeKey('ES256', 'attacker-key');
    const forged = (kid: string) =>
      sign({ ...attacker, kid }, claims({ iss, aud: 'https://api.test', sub: 'mallory', client_id: 'agent', grant_id: real.grant_id }), {
        typ: 'at+jwt',
      });
    const [h, p, s] = real.access_token.split('.') as [string, string, string];
    const tamperedSig = `${h}.${p}.${s[0] === 'A' ? 'B' : 'A'}${s.slice(1)}`;
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    const tamperedPayload = `${h}.${b64json({ ...payload, sub: 'mallory' })}.${s}`;
    const foreignToken = (await foreign.service.mint({ clientId: 'agent' })).access_token;
    const unknownRefresh = `trt_${'Q'.repeat(43)}`;
    const fakes = [await forged('attacker-key'), await forged(ownKid), tamperedSig, tamperedPayload, foreignToken, unknownRefresh];
    secrets.push(...fakes);
    const lines = fakes.map((t, i) => `line ${i}: Authorization: Bearer ${t}`);
    // The one real token last: the fakes were scanned, and refused.
    lines.push(`final ${real.access_token}`);
    const text = lines.join('\n');
    write('negatives/mixed.log', text);
    const { code, report } = await scanJson('negatives');
    assert.equal(code, 1);
    assert.deepEqual(
      report.findings.map((f) => [f.path, f.line, f.column, f.jti]),
      [['negatives/mixed.log', fakes.length + 1, 7, real.jti]],
    );
    const only = await scanJson('negatives/mixed.log');
    assert.equal(only.report.summary.tokens, 1);
  });

  it('reports an expired token as expired, and exits 0 when nothing found is live', async () => {
    const short = await mint('bob', 1);
    await new Promise((r) => setTimeout(r, 2100));
    write('expired/old.log', `old request with ${short.access_token}\n`);
    const { code, report } = await scanJson('expired');
    assert.equal(code, 0);
    assert.deepEqual(
      report.findings.map((f) => [f.jti, f.state, f.line, f.column]),
      [[short.jti, 'expired', 1, 18]],
    );
    assert.equal(report.summary.live, 0);
    const text = await scan('expired');
    assert.equal(text.code, 0);
    assert.match(text.stdout, / access_token {2}expired {2}jti=/);
    assertNoToken(text.stdout + text.stderr);
  });

  it('finds tokens split across the 1 MiB read boundaries of a large file, at the right line and column', async () => {
    const token = await mint('carol');
    const child = await exchange(token.access_token);
    const filler = (n: number) => `${'log line filler '.repeat(6)}\n`.repeat(Math.ceil(n / 97)).slice(0, n);
    // The access token starts 40 bytes before the first 1 MiB boundary, the refresh token 20
    // bytes before the second: each read ends in the middle of one.
    let text = `${filler(MiB - 41)} `;
    text += `${token.access_token} `;
    text += `${filler(2 * MiB - 21 - text.length)}\n`;
    text += `${child.refresh_token} `;
    text += filler(300_000);
    write('large/big.log', text);
    const { code, report } = await scanJson('large');
    assert.equal(code, 1);
    assert.equal(text.indexOf(token.access_token), MiB - 40);
    assert.equal(text.indexOf(child.refresh_token as string), 2 * MiB - 20);
    const first = at(text, token.access_token);
    const second = at(text, child.refresh_token as string);
    assert.deepEqual(
      report.findings.map((f) => [f.kind, f.line, f.column, f.token_hash]),
      [
        ['access_token', first.line, first.column, tokenHash(token.access_token)],
        ['refresh_token', second.line, second.column, tokenHash(child.refresh_token as string)],
      ],
    );
    assert.equal(report.summary.bytes_scanned, text.length);
  });

  it('lists at most 100 places per token and counts the rest, so a token logged on every line cannot fill memory', async () => {
    const t = await mint();
    const other = await mint();
    write('many/every-request.log', `${`GET /api Authorization: Bearer ${t.access_token}\n`.repeat(150)}last ${other.access_token}\n`);
    const { code, report } = await scanJson('many');
    assert.equal(code, 1);
    assert.equal(report.findings.filter((f) => f.jti === t.jti).length, 100);
    assert.deepEqual(
      report.findings.filter((f) => f.jti === other.jti).map((f) => f.line),
      [151],
      'another token is still listed',
    );
    assert.deepEqual([report.summary.occurrences, report.summary.omitted, report.summary.tokens, report.summary.live], [151, 50, 2, 2]);
    const text = await scan('many');
    assert.match(
      text.stdout,
      /^151 finding\(s\) of 2 token\(s\) in 1 file\(s\) scanned; 2 live; 50 place\(s\) not listed \(over 100 for one token\)$/m,
    );
  });

  it('skips with a note: a binary file, a file over --max-size, a symlink loop, a broken link; still scans the rest', async () => {
    const t = await mint();
    write('skips/data.bin', Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0, 0]), Buffer.from(` ${t.access_token} `)]));
    write('skips/huge.log', `${'x'.repeat(3000)} ${t.access_token}\n`);
    write('skips/a/b/ok.log', `ok ${t.access_token}\n`);
    symlinkSync('../..', join(files, 'skips/a/b/up'));
    symlinkSync('missing-target', join(files, 'skips/dangling'));
    const { code, report } = await scanJson('--max-size', '2K', 'skips');
    assert.equal(code, 1);
    assert.deepEqual(
      report.findings.map((f) => [f.path, f.line, f.column]),
      [['skips/a/b/ok.log', 1, 4]],
    );
    assert.deepEqual(
      report.skipped.map((n) => [n.path, n.reason]),
      [
        ['skips/a/b/up', 'loop'],
        ['skips/dangling', 'broken_link'],
        ['skips/data.bin', 'binary'],
        ['skips/huge.log', 'too_large'],
      ],
    );
    const text = await scan('--max-size', '2K', 'skips');
    assert.match(text.stderr, /^tessera: skipped skips\/data\.bin: binary file/m);
    assert.match(text.stderr, /^tessera: skipped skips\/huge\.log: \d+ bytes, over the --max-size of 2048; raise --max-size to scan it$/m);
    assert.match(text.stdout, /4 path\(s\) skipped/);
  });

  it('exits 3, not 0, when a file could not be scanned and nothing live was found: a CI step must not pass on input it never read', async () => {
    const t = await mint('mallory');
    // Each hides a live token the scan cannot see: the exit code must say the answer is partial.
    write('partial/core.bin', Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0]), Buffer.from(` ${t.access_token} `)]));
    write('partial/big.log', `${'x'.repeat(3000)} ${t.access_token}\n`);
    write('partial/clean.log', 'nothing here\n');
    const { code, report, stderr } = await scanJson('--max-size', '2K', 'partial');
    assert.equal(code, 3);
    assert.equal(stderr, '');
    assert.deepEqual(report.findings, []);
    assert.deepEqual(
      report.skipped.map((n) => [n.path, n.reason]),
      [
        ['partial/big.log', 'too_large'],
        ['partial/core.bin', 'binary'],
      ],
    );
    assert.equal(report.summary.complete, false);
    assert.equal(report.summary.files_scanned, 1);

    const text = await scan('--max-size', '2K', 'partial');
    assert.equal(text.code, 3);
    assert.match(text.stderr, /^tessera: skipped partial\/big\.log: \d+ bytes, over the --max-size of 2048; raise --max-size to scan it$/m);
    assert.match(text.stderr, /^tessera: skipped partial\/core\.bin: binary file/m);
    assert.match(text.stdout, /^0 finding\(s\) of 0 token\(s\) in 1 file\(s\) scanned; 0 live; 2 path\(s\) skipped$/m);
    assert.match(text.stdout, /^incomplete: 2 path\(s\) not scanned \(listed on stderr\); exit 3$/m);

    // A live token found still exits 1 (the more urgent answer), however much was skipped.
    write('partial/leak.log', `${t.access_token}\n`);
    assert.equal((await scan('--max-size', '2K', 'partial')).code, 1);
  });

  it('exits 0 when the only notes are a directory reached twice through a link and a broken link: nothing was left unread', async () => {
    write('looped/a/clean.log', 'nothing here\n');
    symlinkSync('..', join(files, 'looped/a/up'));
    symlinkSync('gone.log', join(files, 'looped/a/dangling'));
    const { code, report } = await scanJson('looped');
    assert.equal(code, 0);
    assert.deepEqual(
      report.skipped.map((n) => [n.path, n.reason]),
      [
        ['looped/a/dangling', 'broken_link'],
        ['looped/a/up', 'loop'],
      ],
    );
    assert.equal(report.summary.complete, true);
  });

  it('exits 0 when a symbolic link points at itself or two links at each other (ELOOP): a loop of links leaves nothing unread', async () => {
    write('linkloop/clean.log', 'nothing here\n');
    symlinkSync('self', join(files, 'linkloop/self'));
    symlinkSync('pong', join(files, 'linkloop/ping'));
    symlinkSync('ping', join(files, 'linkloop/pong'));
    const { code, report } = await scanJson('linkloop');
    assert.deepEqual(
      report.skipped.map((n) => [n.path, n.reason]),
      [
        ['linkloop/ping', 'loop'],
        ['linkloop/pong', 'loop'],
        ['linkloop/self', 'loop'],
      ],
    );
    assert.equal(report.summary.complete, true);
    assert.equal(code, 0);
  });

  it('a chain of more than 40 symbolic links (the kernel says ELOOP) that ends at a file or directory: the target is scanned, not noted as a loop; a ring of 60 links or a link into itself stays a loop note', async () => {
    const t = await mint();
    write('chaintarget/leak.log', `${t.access_token}\n`);
    write('chaintarget/dir/deep.log', `x ${t.access_token}\n`);
    mkdirSync(join(files, 'chainlinks'));
    const chain = (name: string, to: string, hops: number): void => {
      for (let i = 0; i < hops; i++) symlinkSync(i === hops - 1 ? to : `${name}${i + 1}`, join(files, `chainlinks/${name}${i}`));
    };
    chain('f', '../chaintarget/leak.log', 60);
    chain('d', '../chaintarget/dir', 60);
    // A link whose directory part is itself a long chain.
    chain('p', '../chaintarget', 45);
    for (let i = 0; i < 60; i++) symlinkSync(`r${(i + 1) % 60}`, join(files, `chainlinks/r${i}`));
    mkdirSync(join(files, 'longchain'));
    symlinkSync('../chainlinks/f0', join(files, 'longchain/file'));
    symlinkSync('../chainlinks/d0', join(files, 'longchain/dir'));
    symlinkSync('../chainlinks/p0/leak.log', join(files, 'longchain/nested'));
    symlinkSync('../chainlinks/r0', join(files, 'longchain/ring'));
    // A link into itself: the path grows with every hop and never ends.
    symlinkSync('grow/x', join(files, 'longchain/grow'));
    // The links lead out of longchain: followed because their targets are in a path given too.
    const { code, report } = await scanJson('longchain', 'chaintarget');
    assert.equal(code, 1);
    assert.deepEqual(
      report.findings.map((f) => [f.path, f.line, f.column]),
      [
        ['longchain/dir/deep.log', 1, 3],
        ['longchain/file', 1, 1],
      ],
    );
    assert.deepEqual(
      report.skipped.map((n) => [n.path, n.reason]),
      [
        ['longchain/grow', 'loop'],
        ['longchain/ring', 'loop'],
        ['chaintarget/dir', 'loop'],
      ],
    );
    assert.equal(report.summary.complete, true);

    // Given as a path itself: scanned, not refused as unreadable.
    const direct = await scanJson('chainlinks/f0');
    assert.equal(direct.code, 1);
    assert.deepEqual(
      direct.report.findings.map((f) => f.path),
      ['chainlinks/f0'],
    );
    // A ring given as a path has nothing at its end: refused like a path that does not exist (exit 2).
    assert.equal((await scan('chainlinks/r0')).code, 2);
  });

  it('does not walk the filesystem through a link planted to / or /proc/self: a link out of the paths given is noted and not followed (exit 3); given as a path too, its target is scanned', {
    timeout: 30_000,
  }, async () => {
    const t = await mint();
    write('planted/app.log', 'nothing here\n');
    write('elsewhere/leak.log', `${t.access_token}\n`);
    symlinkSync('/', join(files, 'planted/root'));
    symlinkSync('/proc/self', join(files, 'planted/self'));
    symlinkSync('../elsewhere', join(files, 'planted/dir'));
    symlinkSync('../elsewhere/leak.log', join(files, 'planted/file'));
    const { code, report } = await scanJson('planted');
    // A link to one file elsewhere is read (Kubernetes' /var/log/containers); directories are not walked.
    assert.equal(code, 1);
    assert.deepEqual(
      report.findings.map((f) => f.path),
      ['planted/file'],
    );
    assert.deepEqual(
      report.skipped.map((n) => [n.path, n.reason]),
      [
        ['planted/dir', 'outside'],
        ['planted/root', 'outside'],
        ['planted/self', 'outside'],
      ],
    );
    assert.equal(report.summary.files_scanned, 2);
    const text = await scan('planted');
    assert.equal(text.code, 1);
    assert.match(
      text.stderr,
      /^tessera: skipped planted\/root: a directory out of the paths given \(through a symbolic link\): not walked into \(give its target as a path to scan it\)$/m,
    );

    const both = await scanJson('planted', 'elsewhere');
    assert.equal(both.code, 1);
    assert.deepEqual(
      both.report.findings.map((f) => f.path),
      ['planted/dir/leak.log'],
    );
    assert.deepEqual(
      both.report.skipped.map((n) => [n.path, n.reason]),
      [
        ['planted/root', 'outside'],
        ['planted/self', 'outside'],
        ['elsewhere', 'loop'],
      ],
    );
  });

  it('prints a file name chosen by someone else with its control characters escaped: one finding, one line', async () => {
    const t = await mint();
    write('names/a\nfake.log:1:1  access_token  revoked\x1b[2K.log', `${t.access_token}\n`);
    write('names/b\x1b]0;x\x07.bin', Buffer.from([0, 1, 2]));
    const r = await scan('names');
    assertNoToken(r.stdout + r.stderr);
    assert.equal(r.code, 1);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: none of these may reach the terminal
    assert.doesNotMatch(r.stdout + r.stderr, /[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
    assert.match(r.stdout, /^names\/a\\nfake\.log:1:1 {2}access_token {2}revoked\\x1b\[2K\.log:1:1 {2}access_token {2}LIVE /m);
    assert.doesNotMatch(r.stdout, /^fake\.log/m, 'no forged finding line');
    assert.match(r.stderr, /^tessera: skipped names\/b\\x1b\]0;x\\x07\.bin: binary file/m);
    const { report } = await scanJson('names');
    assert.equal(report.findings[0]?.path, 'names/a\nfake.log:1:1  access_token  revoked\x1b[2K.log', '--json keeps the name');
  });

  it('fails with one line and exit 2: a path that does not exist, a bad --max-size, no path', async () => {
    write('present.log', 'nothing here\n');
    for (const [args, stderr] of [
      [['present.log', 'no-such.log'], 'tessera: no-such.log: no such file or directory\n'],
      [['--max-size', 'lots', 'present.log'], 'tessera: --max-size must be a size such as 500M, 4G or 1048576 (bytes), not "lots"\n'],
      [[], "tessera: missing required argument 'paths' (run with --help for usage)\n"],
    ] as const) {
      const r = await scan(...args);
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.stderr, stderr);
      assert.equal(r.stdout, '');
    }
  });

  it('documents the exit codes and examples in --help', async () => {
    const r = await scan('--help');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Exit codes:\n {2}0 .*\n {2}1 .*live tokens found.*\n {2}2 /);
    assert.match(r.stdout, /tessera scan --revoke-grant /);
  });
});

describe('tessera scan --revoke', () => {
  it('revokes each live access token by jti and a refresh token with its family; the running service refuses them', async () => {
    const cc = await mint();
    const dave = await mint('dave');
    const child = await exchange(dave.access_token);
    const expired = await mint('erin', 1);
    await new Promise((r) => setTimeout(r, 2100));
    const text = `a ${cc.access_token}\nb ${child.refresh_token}\nc ${cc.access_token}\nd ${expired.access_token}\n`;
    write('revoke/leak.log', text);
    const verifier = inProcessVerifier(issuer);
    assert.equal((await verifier.verifyToken(cc.access_token)).ok, true, 'valid before');

    const { code, report } = await scanJson('--revoke', 'revoke');
    assert.equal(code, 0, 'every live token revoked: exit 0');
    assert.deepEqual(
      report.findings.map((f) => f.state),
      ['live', 'live', 'live', 'expired'],
    );
    assert.deepEqual(report.revoked, { tokens: [cc.jti], grants: [child.grant_id] });

    await issuer.service.sync();
    const denied = await verifier.verifyToken(cc.access_token);
    assert.equal(denied.ok, false);
    assert.equal(!denied.ok && denied.error.code, 'token_revoked');
    assert.equal((await verifier.verifyToken(child.access_token)).ok, false, 'the family’s access token too');
    assert.equal((await verifier.verifyToken(dave.access_token)).ok, true, 'the parent grant is not touched without --revoke-grant');
    assert.equal(await introspect(cc.access_token), false);
    assert.equal(await introspect(child.refresh_token as string), false);
    const refreshed = await issuer.post(
      '/oauth2/token',
      { grant_type: 'refresh_token', refresh_token: child.refresh_token as string },
      { authorization: basic(agent.id, agent.secret) },
    );
    assert.equal(refreshed.status, 400);

    const events = await auditOf('leak_detected');
    const tokenEvent = events.find((e) => e.kind === 'token.revoked' && e.jti === cc.jti);
    // Nothing was exchanged from the client-credentials token: it took no grant with it.
    assert.deepEqual(tokenEvent?.detail, {
      by: 'cli',
      found_in: 'revoke/leak.log:1:3',
      token_hash: tokenHash(cc.access_token),
      revoked_grants: [],
    });
    const refreshEvent = events.find((e) => e.kind === 'token.revoked' && e.token_hash === tokenHash(child.refresh_token as string));
    assert.deepEqual(refreshEvent?.detail, { by: 'cli', found_in: 'revoke/leak.log:2:3', revoked_grants: [child.grant_id] });
    assert.equal(refreshEvent?.delegation_id, child.grant_id);
    assert.ok(events.some((e) => e.kind === 'grant.revoked' && e.delegation_id === child.grant_id));

    const again = await scanJson('revoke');
    assert.equal(again.code, 0);
    assert.deepEqual(
      again.report.findings.map((f) => f.state),
      ['revoked', 'revoked', 'revoked', 'expired'],
    );
  });

  it('--revoke-grant kills the whole delegation: the leaked root token’s grant and every grant derived from it', async () => {
    const frank = await mint('frank');
    const child = await exchange(frank.access_token);
    const grandchild = await exchange(child.access_token);
    write('chain/leak.log', `token=${frank.access_token}\n`);
    const verifier = inProcessVerifier(issuer);
    assert.equal((await verifier.verifyToken(grandchild.access_token)).ok, true);

    const r = await scan('--revoke-grant', 'chain');
    assertNoToken(r.stdout + r.stderr);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^revoked 0 token\\(s\\); 3 grant\\(s\\): ${frank.grant_id} `, 'm'));

    await issuer.service.sync();
    for (const t of [frank, child, grandchild]) {
      assert.equal((await verifier.verifyToken(t.access_token)).ok, false);
      assert.equal(await introspect(t.access_token), false);
    }
    assert.equal(await introspect(grandchild.refresh_token as string), false);
    const grants = (await auditOf('leak_detected')).filter((e) => e.kind === 'grant.revoked').map((e) => e.delegation_id);
    for (const id of [frank.grant_id, child.grant_id, grandchild.grant_id]) assert.ok(grants.includes(id));
  });
});

describe('tessera scan --revoke: a refusal is one admin.action deny by cli', () => {
  /** The admin.action events `run` added to the store. */
  async function denials(run: () => Promise<unknown>): Promise<AuditEvent[]> {
    const before = (await issuer.store.queryAudit({ kinds: ['admin.action'], limit: 10_000 })).length;
    await run();
    const events = (await issuer.store.queryAudit({ kinds: ['admin.action'], limit: 10_000 })).slice(before);
    assertNoToken(JSON.stringify(events));
    return events;
  }

  for (const [what, args, reason, action, stderr] of [
    [
      'a path that does not exist',
      ['--revoke', 'present.log', 'no-such.log'],
      'scan_path_invalid',
      'scan_revoke',
      'tessera: no-such.log: no such file or directory\n',
    ],
    [
      'a bad --max-size',
      ['--revoke-grant', '--max-size', 'lots', 'present.log'],
      'scan_max_size_invalid',
      'scan_revoke_grant',
      'tessera: --max-size must be a size such as 500M, 4G or 1048576 (bytes), not "lots"\n',
    ],
  ] as const) {
    it(`${what}: exit 2, one line, nothing revoked, and one admin.action deny ${reason}`, async () => {
      write('present.log', 'nothing here\n');
      let r: Awaited<ReturnType<typeof scan>> | undefined;
      const events = await denials(async () => {
        r = await scan(...args);
      });
      assert.ok(r);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr, stderr);
      assert.equal(r.stdout, '');
      assert.deepEqual(
        events.map((e) => [e.decision, e.reason, e.subject, e.detail]),
        [['deny', reason, undefined, { by: 'cli', action }]],
      );
    });
  }

  it('without --revoke a scan writes nothing, so its refusal is no admin write and is not recorded', async () => {
    const events = await denials(() => scan('no-such.log'));
    assert.deepEqual(events, []);
  });
});

describe('tessera scan --revoke: the store fails part-way', () => {
  it('says how many tokens and grants were revoked before the failure, by jti and grant id (never a token), instead of only the store error', async () => {
    const tokens = ['a', 'b', 'c'].map(
      (x) => `${b64json({ alg: 'ES256', typ: 'at+jwt' })}.${b64json({ jti: `jti-${x}` })}.c2lnbmF0dXJl${x}`,
    );
    write('partway/leak.log', tokens.map((t) => `t=${t}\n`).join(''));
    const leak = (t: string, kind: LeakedToken['kind']): LeakedToken => ({
      kind,
      tokenHash: tokenHash(t),
      jti: kind === 'access_token' ? `jti-${t.slice(-1)}` : null,
      subject: 'alice',
      clientId: 'agent',
      grantId: `g-${t.slice(-1)}`,
      expiresAt: 2_000_000_000,
      state: 'live',
    });
    let calls = 0;
    const service = {
      identifyLeak: async (c: string) => (tokens.includes(c) ? leak(c, c === tokens[1] ? 'refresh_token' : 'access_token') : undefined),
      revokeLeak: async (_t: string, l: LeakedToken) => {
        if (++calls === 3) throw new StoreUnavailableError('store_unreachable', 'the store is unreachable (ECONNREFUSED)');
        return l.kind === 'access_token' ? { token: l.jti, grants: [] } : { token: null, grants: [l.grantId] };
      },
    };
    const failed = await runScan([join(files, 'partway')], { revoke: true, revokeGrant: false, maxFileSize: MiB }, service).then(
      () => assert.fail('the scan should fail'),
      (e: unknown) => e,
    );
    assert.ok(failed instanceof ScanRevokeError);
    assert.equal(
      failed.message,
      'the store is unreachable (ECONNREFUSED); before it failed, this run revoked 1 token(s): jti-a; 1 grant(s): g-b',
    );
    assert.deepEqual(failed.revoked, { tokens: ['jti-a'], grants: ['g-b'] });
    assert.ok(failed.cause instanceof StoreUnavailableError);
    for (const t of tokens) assert.equal(failed.message.includes(t.split('.')[2] as string), false);
  });
});
