import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compilePolicy, type PolicyDecision, type RuleSpec } from '../../src/core/policy.ts';
import { compileScopes } from '../../src/core/scopes.ts';
import { caseMappings } from '../helpers/case-mappings.ts';

const { model: scopes } = compileScopes({
  'api:read': {},
  'api:write': { implies: ['api:read'] },
  'files:read': {},
  admin: { implies: ['api:*'] },
});

function policyOf(rules: RuleSpec[]) {
  const { policy, issues } = compilePolicy(rules, scopes);
  assert.deepEqual(issues, []);
  return policy;
}

const subject = (granted: string[], claims: Record<string, unknown> = {}) => ({ effectiveScopes: scopes.expand(granted), claims });

describe('policy: scope requirements', () => {
  const policy = policyOf([
    { id: 'all', methods: ['POST'], path: '/both', scopes: ['api:write', 'files:read'] },
    { id: 'any', methods: ['GET'], path: '/either', scopes: { any: ['api:read', 'files:read'] } },
    { id: 'mixed', path: '/mixed', scopes: { all: ['api:read'], any: ['files:read', 'admin'] } },
    { id: 'open', path: '/open' },
  ]);

  it('all-of: allows only when every scope is held (inherited scopes count)', () => {
    assert.equal(policy.evaluate({ method: 'POST', path: '/both' }, subject(['api:write', 'files:read'])).allowed, true);
    const d = policy.evaluate({ method: 'POST', path: '/both' }, subject(['api:write']));
    assert.deepEqual(d.allowed ? d : { code: d.code, rule: d.rule?.id, hint: d.rule?.scopeHint }, {
      code: 'scope_insufficient',
      rule: 'all',
      hint: 'api:write files:read',
    });
  });

  it('any-of: allows when one of the scopes is held', () => {
    assert.equal(policy.evaluate({ method: 'GET', path: '/either' }, subject(['files:read'])).allowed, true);
    assert.equal(policy.evaluate({ method: 'GET', path: '/either' }, subject(['api:write'])).allowed, true);
    const d = policy.evaluate({ method: 'GET', path: '/either' }, subject([]));
    assert.equal(d.allowed ? '' : d.code, 'scope_insufficient');
  });

  it('all-of and any-of combined', () => {
    assert.equal(policy.evaluate({ method: 'GET', path: '/mixed' }, subject(['api:read', 'files:read'])).allowed, true);
    assert.equal(policy.evaluate({ method: 'GET', path: '/mixed' }, subject(['admin'])).allowed, true);
    assert.equal(policy.evaluate({ method: 'GET', path: '/mixed' }, subject(['api:read'])).allowed, false);
    assert.equal(policy.evaluate({ method: 'GET', path: '/mixed' }, subject(['files:read'])).allowed, false);
  });

  it('a rule without scopes allows any authenticated principal', () => {
    assert.equal(policy.evaluate({ method: 'DELETE', path: '/open' }, subject([])).allowed, true);
  });

  it('denies unmatched requests with policy_no_match', () => {
    for (const input of [
      { method: 'GET', path: '/both' },
      { method: 'GET', path: '/nowhere' },
      { method: 'GET', path: '/open/x' },
    ]) {
      const d = policy.evaluate(input, subject(['admin', 'files:read']));
      assert.deepEqual(d, { allowed: false, code: 'policy_no_match', rule: undefined }, JSON.stringify(input));
    }
  });
});

describe('policy: path patterns and first match', () => {
  const policy = policyOf([
    { id: 'item', methods: ['GET'], path: '/items/:id', scopes: ['api:read'] },
    { id: 'deny-write', methods: ['GET', 'PUT'], path: '/items/*', scopes: ['api:write'] },
    { id: 'files', path: '/files/**', scopes: ['files:read'] },
    { id: 'root', methods: ['GET'], path: '/', scopes: [] },
  ]);

  it('captures :param and lets the first matching rule decide', () => {
    const d = policy.evaluate({ method: 'GET', path: '/items/42' }, subject(['api:read']));
    assert.ok(d.allowed);
    assert.equal(d.rule.id, 'item');
    assert.deepEqual({ ...d.params }, { id: '42' });
  });

  it('first match denies even when a later rule would allow', () => {
    const first = policyOf([
      { id: 'strict', path: '/x/y', scopes: ['admin'] },
      { id: 'lax', path: '/x/**', scopes: ['api:read'] },
    ]);
    const d = first.evaluate({ method: 'GET', path: '/x/y' }, subject(['api:read']));
    assert.deepEqual(d.allowed ? d : [d.code, d.rule?.id], ['scope_insufficient', 'strict']);
  });

  it(':param and * never match an empty segment; ** matches the rest including nothing', () => {
    assert.equal(policy.match({ method: 'GET', path: '/items/' }), undefined);
    assert.equal(policy.match({ method: 'GET', path: '/files' })?.rule.id, 'files');
    assert.equal(policy.match({ method: 'GET', path: '/files/a/b/c' })?.rule.id, 'files');
    assert.equal(policy.match({ method: 'GET', path: '/filesx' }), undefined);
    assert.equal(policy.match({ method: 'GET', path: '/' })?.rule.id, 'root');
    assert.equal(policy.match({ method: 'GET', path: '/items/1/2' }), undefined);
  });

  it('matches methods exactly', () => {
    assert.equal(policy.match({ method: 'POST', path: '/items/1' }), undefined);
    assert.equal(policy.match({ method: 'get', path: '/items/1' }), undefined);
  });

  it('HEAD bypass: HEAD is decided as GET, so a GET-only rule holds for HEAD too (frameworks run GET handlers for HEAD)', () => {
    const rules = policyOf([
      { id: 'admin-read', methods: ['GET'], path: '/admin/**', scopes: ['admin'] },
      { id: 'head-only', methods: ['HEAD'], path: '/probe' },
      { id: 'rest', path: '/**', scopes: ['api:read'] },
    ]);
    // Without it, HEAD skipped the GET rule and fell to the catch-all: the admin GET handler ran for api:read.
    const d = rules.evaluate({ method: 'HEAD', path: '/admin/export' }, subject(['api:read']));
    assert.deepEqual(d.allowed ? d : [d.code, d.rule?.id], ['scope_insufficient', 'admin-read']);
    assert.equal(rules.evaluate({ method: 'HEAD', path: '/admin/export' }, subject(['admin'])).allowed, true);
    // A rule naming HEAD still takes HEAD, and GET is not widened to HEAD's rules.
    assert.equal(rules.match({ method: 'HEAD', path: '/probe' })?.rule.id, 'head-only');
    assert.equal(rules.match({ method: 'GET', path: '/probe' })?.rule.id, 'rest');
    // Only GET lends its rules: POST is not HEAD.
    assert.equal(policy.match({ method: 'HEAD', path: '/items/1' })?.rule.id, 'item');
    assert.equal(policyOf([{ methods: ['POST'], path: '/x' }]).match({ method: 'HEAD', path: '/x' }), undefined);
  });

  it('matches MCP tool names and globs', () => {
    const tools = policyOf([
      { id: 'read', tool: 'files.read', scopes: ['files:read'] },
      { id: 'any-files', tool: 'files.*', scopes: ['admin'] },
    ]);
    assert.equal(tools.match({ method: 'POST', path: '/mcp', tool: 'files.read' })?.rule.id, 'read');
    assert.equal(tools.match({ method: 'POST', path: '/mcp', tool: 'files.delete' })?.rule.id, 'any-files');
    assert.equal(tools.match({ method: 'POST', path: '/mcp', tool: 'filesXread' }), undefined);
    assert.equal(tools.match({ method: 'POST', path: '/mcp', tool: null }), undefined);
  });
});

describe('policy: claim conditions', () => {
  const policy = policyOf([
    { id: 'tenant', path: '/tenants/:tenant/**', scopes: ['api:read'], claims: { tenant: ':tenant' } },
    { id: 'literal', path: '/eu/**', claims: { region: 'eu', verified: true, level: [2, 3] } },
  ]);

  it('requires a claim to equal a path parameter', () => {
    assert.equal(policy.evaluate({ method: 'GET', path: '/tenants/acme/items' }, subject(['api:read'], { tenant: 'acme' })).allowed, true);
    const d = policy.evaluate({ method: 'GET', path: '/tenants/acme/items' }, subject(['api:read'], { tenant: 'evil' }));
    assert.deepEqual(d.allowed ? d : [d.code, d.claim], ['policy_condition_failed', 'tenant']);
  });

  it('never satisfies a :param condition with a missing or non-string claim', () => {
    for (const tenant of [undefined, null, ['acme'], { acme: true }]) {
      const d = policy.evaluate({ method: 'GET', path: '/tenants/acme/x' }, subject(['api:read'], tenant === undefined ? {} : { tenant }));
      assert.equal(d.allowed, false, JSON.stringify(tenant));
    }
  });

  it('attack: never reads a claim the claims object inherits (a polluted prototype is no claim of the token)', () => {
    const polluted = Object.create({ tenant: 'acme', region: 'eu', verified: true, level: 3 }) as Record<string, unknown>;
    const d = policy.evaluate({ method: 'GET', path: '/tenants/acme/x' }, subject(['api:read'], polluted));
    assert.deepEqual(d.allowed ? d : [d.code, d.claim], ['policy_condition_failed', 'tenant']);
    const e = policy.evaluate({ method: 'GET', path: '/eu/x' }, subject([], polluted));
    assert.deepEqual(e.allowed ? e : [e.code, e.claim], ['policy_condition_failed', 'region']);
  });

  it('checks scopes before conditions', () => {
    const d = policy.evaluate({ method: 'GET', path: '/tenants/acme/x' }, subject([], { tenant: 'acme' }));
    assert.equal(d.allowed ? '' : d.code, 'scope_insufficient');
  });

  it('compares literals, booleans and lists of literals strictly', () => {
    assert.equal(policy.evaluate({ method: 'GET', path: '/eu/x' }, subject([], { region: 'eu', verified: true, level: 3 })).allowed, true);
    for (const claims of [
      { region: 'EU', verified: true, level: 3 },
      { region: 'eu', verified: 'true', level: 3 },
      { region: 'eu', verified: true, level: '3' },
      { region: 'eu', verified: true, level: 1 },
      { region: 'eu', verified: true },
    ]) {
      assert.equal(policy.evaluate({ method: 'GET', path: '/eu/x' }, subject([], claims)).allowed, false, JSON.stringify(claims));
    }
  });
});

describe('policy: problems reported at load with exact paths', () => {
  it('reports unknown scopes, bad patterns, bad methods and dangling :params', () => {
    const { issues } = compilePolicy(
      [
        { path: '/a', scopes: ['api:read', 'api:reed'] },
        { path: '/a/**/b' },
        { path: 'no-slash' },
        { path: '/a/:1bad' },
        { path: '/a/../b' },
        { methods: ['get'], path: '/m' },
        { path: '/t/:tenant', claims: { tenant: ':tennant' } },
        { path: '/x', scopes: { all: ['nope'], any: ['api:*'] } },
      ],
      scopes,
    );
    assert.deepEqual(issues, [
      { path: 'rules[0].scopes[1]', message: 'unknown scope "api:reed"; define it under scopes' },
      { path: 'rules[1].path', message: '"**" is allowed only as the last segment, e.g. /api/**' },
      { path: 'rules[2].path', message: 'a path pattern starts with "/" (got "no-slash")' },
      { path: 'rules[3].path', message: '":1bad" is not a valid parameter; write :name with letters, digits and _' },
      { path: 'rules[4].path', message: 'a path pattern cannot contain "." or ".." segments' },
      { path: 'rules[5].methods[0]', message: '"get" is not an upper-case HTTP method' },
      { path: 'rules[6].claims.tenant', message: '":tennant" names no parameter of path "/t/:tenant"' },
      { path: 'rules[7].scopes.all[0]', message: 'unknown scope "nope"; define it under scopes' },
      { path: 'rules[7].scopes.any[0]', message: 'a required scope cannot be a wildcard ("api:*")' },
    ]);
  });
});

describe('policy: rule ids', () => {
  it('attack: two rules sharing an id (one audit name, one cache of exchanged tokens) are refused at load', () => {
    const { issues } = compilePolicy(
      [
        { id: 'items', methods: ['GET'], path: '/items', scopes: ['api:read'] },
        { id: 'items', methods: ['POST'], path: '/items', scopes: ['api:write'] },
        { id: 'rules[3]', path: '/x' },
        { path: '/y' },
      ],
      scopes,
    );
    assert.deepEqual(issues, [
      { path: 'rules[1].id', message: 'rule id "items" is already used by rules[0]; give each rule its own id' },
      { path: 'rules[3].id', message: 'rule id "rules[3]" is already used by rules[2]; give each rule its own id' },
    ]);
  });
});

describe('policy: the path as routers see it', () => {
  const policy = policyOf([
    { id: 'admin', path: '/admin/**', scopes: ['admin'] },
    { id: 'tenant', path: '/t/:tenant', claims: { tenant: ':tenant' } },
    { id: 'rest', path: '/**', scopes: ['api:read'] },
  ]);
  const reader = subject(['api:read'], { tenant: 'acme corp' });

  it('percent-decodes segments before matching, so an encoded admin path is still the admin path', () => {
    for (const path of ['/%61dmin/x', '/%61%64%6d%69%6e/x', '/adm%69n']) {
      const d = policy.evaluate({ method: 'GET', path }, reader);
      assert.deepEqual(d.allowed ? d : [d.code, d.rule?.id], ['scope_insufficient', 'admin'], path);
    }
  });

  it('compares decoded path parameters with claims', () => {
    const d = policy.evaluate({ method: 'GET', path: '/t/acme%20corp' }, reader);
    assert.ok(d.allowed);
    assert.deepEqual({ ...d.params }, { tenant: 'acme corp' });
  });

  for (const path of [
    '/x/../admin/y',
    '/x/./admin',
    '/x/%2e%2e/admin',
    '/x/%2E/admin',
    '/x/..',
    '/x//admin',
    '//admin',
    '/x%2fadmin',
    '/x%2Fadmin',
    '/x\\admin',
    '/x%5cadmin',
    '/x%00',
    '/x/%zz',
    '/x/%',
    'admin',
    '*',
  ]) {
    it(`refuses the ambiguous path ${JSON.stringify(path)} with request_path_invalid`, () => {
      assert.deepEqual(policy.evaluate({ method: 'GET', path }, subject(['admin', 'api:read'])), {
        allowed: false,
        code: 'request_path_invalid',
        rule: undefined,
      });
      assert.equal(policy.match({ method: 'GET', path }), undefined);
    });
  }

  it('keeps a trailing slash and a double-encoded escape as ordinary segments', () => {
    assert.equal(policy.match({ method: 'GET', path: '/admin/' })?.rule.id, 'admin');
    assert.equal(policy.match({ method: 'GET', path: '/%2561dmin' })?.rule.id, 'rest');
  });
});

describe('policy: conditions the evaluator cannot evaluate', () => {
  const policy = policyOf([
    { id: 'delete-tool', tool: 'files.delete', scopes: ['admin'] },
    { id: 'any', scopes: ['api:read'] },
  ]);

  it('tool-rule bypass: without the tool name a tool rule never grants, and a later broader rule is not reached', () => {
    const d = policy.evaluate({ method: 'POST', path: '/mcp' }, subject(['api:read']));
    assert.equal(d.allowed, false);
    assert.deepEqual(d.allowed ? d : { code: d.code, rule: d.rule?.id, unevaluable: d.unevaluable }, {
      code: 'policy_condition_failed',
      rule: 'delete-tool',
      unevaluable: 'tool',
    });
    // Not even a principal with every scope passes a rule that cannot be evaluated.
    assert.equal(policy.evaluate({ method: 'POST', path: '/mcp' }, subject(['admin', 'api:read'])).allowed, false);
  });

  it('a known tool name, or a request known not to be a tool call, is evaluated as written', () => {
    assert.equal(policy.evaluate({ method: 'POST', path: '/mcp', tool: 'files.delete' }, subject(['api:read'])).allowed, false);
    assert.equal(policy.evaluate({ method: 'POST', path: '/mcp', tool: 'files.delete' }, subject(['admin'])).allowed, true);
    assert.equal(policy.evaluate({ method: 'POST', path: '/mcp', tool: 'files.read' }, subject(['api:read'])).allowed, true);
    assert.equal(policy.evaluate({ method: 'GET', path: '/items', tool: null }, subject(['api:read'])).allowed, true);
  });
});

describe('policy: rpc (JSON-RPC method) rules', () => {
  const policy = policyOf([
    { id: 'read', rpc: 'resources/read', scopes: ['admin'] },
    { id: 'prompts', rpc: 'prompts/*', scopes: ['admin'] },
    { id: 'any', scopes: ['api:read'] },
  ]);
  const decided = (d: PolicyDecision) =>
    d.allowed ? { allowed: true, rule: d.rule.id } : { code: d.code, rule: d.rule?.id, unevaluable: d.unevaluable };

  it('rpc-rule bypass: without the method an rpc rule never grants, and a later broader rule is not reached', () => {
    for (const scopes of [['api:read'], ['admin', 'api:read']]) {
      assert.deepEqual(decided(policy.evaluate({ method: 'POST', path: '/mcp', tool: null }, subject(scopes))), {
        code: 'policy_condition_failed',
        rule: 'read',
        unevaluable: 'rpc',
      });
    }
  });

  it('a known method is matched exactly (case-sensitive), a glob by its stars, and null skips every rpc rule', () => {
    const at = (rpc: string | null, scopes: string[]) =>
      decided(policy.evaluate({ method: 'POST', path: '/mcp', tool: null, rpc }, subject(scopes)));
    assert.deepEqual(at('resources/read', ['api:read']), { code: 'scope_insufficient', rule: 'read', unevaluable: undefined });
    assert.deepEqual(at('resources/read', ['admin']), { allowed: true, rule: 'read' });
    assert.deepEqual(at('prompts/get', ['api:read']), { code: 'scope_insufficient', rule: 'prompts', unevaluable: undefined });
    assert.deepEqual(at('Resources/Read', ['api:read']), { allowed: true, rule: 'any' });
    assert.deepEqual(at('resources/list', ['api:read']), { allowed: true, rule: 'any' });
    assert.deepEqual(at(null, ['api:read']), { allowed: true, rule: 'any' });
  });
});

describe('attack: a tool name holding a line terminator', () => {
  const policy = policyOf([
    { id: 'files-admin', tool: 'files.*', scopes: ['admin'] },
    { id: 'any', scopes: ['api:read'] },
  ]);

  it('is matched by a glob like any other character, never passed on to a broader rule', () => {
    for (const tool of ['files.delete\n', 'files.\ndelete', 'files.delete\u2028', 'files.\r']) {
      const d = policy.evaluate({ method: 'POST', path: '/mcp', tool }, subject(['api:read']));
      assert.equal(d.allowed ? d.rule.id : d.rule?.id, 'files-admin', JSON.stringify(tool));
      assert.equal(d.allowed, false, JSON.stringify(tool));
    }
  });

  it('matches globs with several stars, and their other characters literally', () => {
    const glob = (tool: string, name: string) =>
      policyOf([{ id: 'g', tool }]).match({ method: 'POST', path: '/mcp', tool: name }) !== undefined;
    assert.equal(glob('a*b*c', 'abc'), true);
    assert.equal(glob('a*b*c', 'aXbYc'), true);
    assert.equal(glob('a*b*c', 'acbc'), true);
    assert.equal(glob('a*b*c', 'acb'), false);
    assert.equal(glob('a*a', 'a'), false);
    assert.equal(glob('a*', 'a'), true);
    assert.equal(glob('*', ''), true);
    assert.equal(glob('*.(x)+', 'f.(x)+'), true);
    assert.equal(glob('*.(x)+', 'f.xx'), false);
    assert.equal(glob('x*y*z', `x${'y'.repeat(20_000)}`), false);
  });
});

describe('policy: trailing slash and case', () => {
  const rules: RuleSpec[] = [
    { id: 'admin', path: '/admin', scopes: ['admin'] },
    { id: 'slashed', path: '/items/', scopes: ['api:write'] },
    { id: 'tenant', path: '/t/:tenant/Docs', scopes: ['api:read'] },
    { id: 'rest', path: '/**', scopes: ['api:read'] },
  ];

  it('trailing-slash bypass: /admin/ is /admin, and a pattern written with a slash matches without it', () => {
    const policy = policyOf(rules);
    for (const path of ['/admin', '/admin/']) assert.equal(policy.match({ method: 'GET', path })?.rule.id, 'admin', path);
    for (const path of ['/items', '/items/']) assert.equal(policy.match({ method: 'GET', path })?.rule.id, 'slashed', path);
    const d = policy.evaluate({ method: 'GET', path: '/admin/' }, subject(['api:read']));
    assert.deepEqual(d.allowed ? d : [d.code, d.rule?.id], ['scope_insufficient', 'admin']);
    assert.equal(policy.match({ method: 'GET', path: '/' })?.rule.id, 'rest');
    assert.equal(policy.evaluate({ method: 'GET', path: '/admin//' }, subject(['admin'])).allowed, false, '// stays refused');
  });

  it('case bypass: case-sensitive by default; caseInsensitivePaths matches literals without case, keeping parameter case', () => {
    const sensitive = policyOf(rules);
    assert.equal(sensitive.match({ method: 'GET', path: '/ADMIN' })?.rule.id, 'rest');
    const { policy, issues } = compilePolicy(rules, scopes, 'rules', { caseInsensitivePaths: true });
    assert.deepEqual(issues, []);
    for (const path of ['/ADMIN', '/Admin/', '/admin']) assert.equal(policy.match({ method: 'GET', path })?.rule.id, 'admin', path);
    assert.deepEqual({ ...policy.match({ method: 'GET', path: '/T/AcMe/docs' })?.params }, { tenant: 'AcMe' });
  });

  it('case confusion: caseInsensitivePaths leaves claim conditions exact (/users/ABC under /Users/:id holds for sub ABC only)', () => {
    const { policy, issues } = compilePolicy([{ id: 'own', path: '/Users/:id', claims: { sub: ':id', region: 'eu' } }], scopes, 'rules', {
      caseInsensitivePaths: true,
    });
    assert.deepEqual(issues, []);
    const decide = (path: string, claims: Record<string, unknown>) => {
      const d = policy.evaluate({ method: 'GET', path }, subject([], claims));
      return d.allowed ? ['allowed', { ...d.params }] : [d.code, d.claim];
    };
    assert.deepEqual(decide('/users/ABC', { sub: 'ABC', region: 'eu' }), ['allowed', { id: 'ABC' }]);
    assert.deepEqual(decide('/USERS/ABC', { sub: 'abc', region: 'eu' }), ['policy_condition_failed', 'sub']);
    assert.deepEqual(decide('/users/abc', { sub: 'ABC', region: 'eu' }), ['policy_condition_failed', 'sub']);
    assert.deepEqual(decide('/users/ABC', { sub: 'ABC', region: 'EU' }), ['policy_condition_failed', 'region']);
  });

  it('case-folding bypass: caseInsensitivePaths refuses a path with a character another case mapping makes ASCII (/admın is /admin to .NET, Java, Python)', () => {
    const { policy, issues } = compilePolicy(rules, scopes, 'rules', { caseInsensitivePaths: true });
    assert.deepEqual(issues, []);
    const reader = subject(['api:read']);
    // ı → I, ſ → S, İ → i, Kelvin sign → k, ﬁ → FI, ß → SS: literally, percent-encoded, in any segment.
    for (const path of ['/admın', '/adm%C4%B1n', '/ADM%c4%b1N/', '/ſ', '/%C4%B0tems', '/t/\u212A/docs', '/ﬁ', '/x/aß', '/t/acme/ẞ']) {
      const d = policy.evaluate({ method: 'GET', path }, reader);
      assert.deepEqual(d.allowed ? ['allowed', d.rule.id] : [d.code, d.rule], ['request_path_invalid', undefined], path);
      assert.equal(policy.match({ method: 'GET', path }), undefined, path);
    }
    // Other characters outside ASCII are matched as before.
    for (const path of ['/café', '/CAFÉ', '/%C5%9Fehir', '/Şehir', '/привет', '/東京', '/t/ÅSA/docs']) {
      const d = policy.evaluate({ method: 'GET', path }, reader);
      assert.equal(d.allowed, true, path);
    }
    assert.deepEqual({ ...policy.match({ method: 'GET', path: '/T/Ωmega/DOCS' })?.params }, { tenant: 'Ωmega' });
    // Case-sensitive rules are unchanged: /admın is not /admin, and the catch-all takes it.
    const sensitive = policyOf(rules);
    for (const path of ['/admın', '/adm%C4%B1n', '/ſ', '/\u212A'])
      assert.equal(sensitive.match({ method: 'GET', path })?.rule.id, 'rest', path);
  });

  it('NFKC bypass: caseInsensitivePaths refuses a path with a character NFKC makes ASCII (fullwidth ａ and ／, ĳ, 𝐚, ², ⅰ) or NFKC_Casefold drops from ASCII (soft hyphen, zero-width space)', () => {
    const { policy, issues } = compilePolicy(rules, scopes, 'rules', { caseInsensitivePaths: true });
    assert.deepEqual(issues, []);
    const reader = subject(['api:read']);
    for (const path of [
      '/\uff41dmin', // fullwidth a
      '/%EF%BC%A1DMIN', // fullwidth A, percent-encoded
      '/x%EF%BC%8Fadmin', // fullwidth solidus
      '/x/%EF%BC%8E%EF%BC%8E/admin', // fullwidth full stops
      '/b\u0133', // ĳ ligature
      '/\u{1d41a}dmin', // mathematical bold a
      '/t/acme/v\u00b2', // superscript two, in a parameter
      '/adm\u2170n', // small roman numeral one
      '/ad%C2%ADmin', // soft hyphen
      '/adm\u200bin', // zero-width space
      '/t/%E2%80%8B/docs', // a segment of one zero-width space
    ]) {
      const d = policy.evaluate({ method: 'GET', path }, reader);
      assert.deepEqual(d.allowed ? ['allowed', d.rule.id] : [d.code, d.rule], ['request_path_invalid', undefined], path);
    }
    // NFKC leaves these outside ASCII: halfwidth katakana, an emoji's joiners, a combining accent.
    for (const path of ['/\uff76\uff80', '/t/\u{1f468}\u200d\u{1f469}/docs', '/cafe\u0301'])
      assert.equal(policy.evaluate({ method: 'GET', path }, reader).allowed, true, path);
    // Case-sensitive rules are unchanged.
    assert.equal(policyOf(rules).match({ method: 'GET', path: '/\uff41dmin' })?.rule.id, 'rest');
  });

  it('hostile path (CPU): caseInsensitivePaths judges 8 KB of U+FDFA (NFKC spells it with 18 characters) with a few case mappings per character, not one per character of each expansion', () => {
    const { policy } = compilePolicy(rules, scopes, 'rules', { caseInsensitivePaths: true });
    const reader = subject(['api:read']);
    const hostile = `/t/${'\ufdfa'.repeat(2730)}`; // 8 KB as UTF-8, read as 49,140 characters
    const cjk = `/t/${'\u6771'.repeat(2730)}`; // 8 KB, no reading
    const [refused, hostileCalls] = caseMappings(() => policy.evaluate({ method: 'GET', path: hostile }, reader));
    const [allowed, cjkCalls] = caseMappings(() => policy.evaluate({ method: 'GET', path: cjk }, reader));
    assert.equal(refused.allowed, false, 'refused: NFKC puts spaces in it');
    assert.equal(allowed.allowed, true);
    // Counted, not timed: the work a path costs, whatever else the machine is doing.
    assert.ok(hostileCalls <= 4 * 2730 + 100, `${hostileCalls} case mappings for 2730 characters (CJK: ${cjkCalls})`);
  });

  it('case-folding bypass: caseInsensitivePaths refuses a literal outside ASCII at load, naming the path and what to write', () => {
    const { issues } = compilePolicy(
      [
        { path: '/straße/**', scopes: ['admin'] },
        { path: '/api/Σα', scopes: ['admin'] },
        { path: '/t/:name/ok', scopes: ['admin'] },
        { path: '/**', scopes: ['api:read'] },
      ],
      scopes,
      'rules',
      { caseInsensitivePaths: true },
    );
    assert.deepEqual(
      issues.map((i) => i.path),
      ['rules[0].path', 'rules[1].path'],
    );
    for (const i of issues) assert.match(i.message, /outside ASCII.*write that segment as \* or a :name parameter/);
    assert.deepEqual(compilePolicy([{ path: '/straße/**', scopes: ['admin'] }], scopes).issues, []);
  });
});

describe('policy: rules that cannot do what they say are refused at load', () => {
  const NEVER = 'this rule is never reached: ';
  const FIRST = ' comes first and matches every request it matches, and the first matching rule decides; put the narrower rule first';
  it('attack: a path naming one parameter twice is refused (the last segment would silently win the :tenant condition)', () => {
    // `/orgs/evil/teams/acme` would satisfy `tenant: ":tenant"` for acme while the upstream acts on org evil.
    const { issues } = compilePolicy([{ path: '/orgs/:tenant/teams/:tenant', claims: { tenant: ':tenant' } }], scopes);
    assert.deepEqual(issues, [
      { path: 'rules[0].path', message: '":tenant" appears twice in "/orgs/:tenant/teams/:tenant"; give each parameter its own name' },
    ]);
  });

  it('a :param condition on a rule without a path is refused (there is no parameter to compare; it could never hold)', () => {
    const { issues } = compilePolicy([{ methods: ['GET'], claims: { tenant: ':tenant' } }], scopes);
    assert.deepEqual(issues, [{ path: 'rules[0].claims.tenant', message: '":tenant" names a path parameter, but this rule has no path' }]);
  });

  it('attack: a rule an earlier broader rule always decides first (never reached) is refused, not silently dead', () => {
    const { issues } = compilePolicy(
      [
        { id: 'read', methods: ['GET'], path: '/api/**', scopes: ['api:read'] },
        { id: 'admin', methods: ['GET'], path: '/api/admin/**', scopes: ['admin'] },
        { id: 'head', methods: ['HEAD'], path: '/api/x' },
        { id: 'any', path: '/t/:t/items' },
        { id: 'param', methods: ['DELETE'], path: '/t/*/items', scopes: ['admin'] },
        { id: 'all' },
        { id: 'after-all', path: '/x' },
      ],
      scopes,
    );
    assert.deepEqual(issues, [
      { path: 'rules[1]', message: `${NEVER}rules[0] ("read")${FIRST}` },
      { path: 'rules[2]', message: `${NEVER}rules[0] ("read")${FIRST}` },
      { path: 'rules[4]', message: `${NEVER}rules[3] ("any")${FIRST}` },
      { path: 'rules[6]', message: `${NEVER}rules[5] ("all")${FIRST}` },
    ]);
  });

  it('keeps rules an earlier rule only partly covers, or covers only under a tool or rpc condition', () => {
    const { issues } = compilePolicy(
      [
        { id: 'admin', path: '/api/admin/**', scopes: ['admin'] },
        { id: 'items', methods: ['GET'], path: '/api/items/:id' },
        { id: 'items-post', methods: ['POST'], path: '/api/items/:id' },
        { id: 'read', path: '/api/**', scopes: ['api:read'] },
        { id: 'root', path: '/' },
        { id: 'one', path: '/:x' },
        { id: 'tool', tool: 'files.delete', scopes: ['admin'] },
        { id: 'rpc', rpc: 'resources/*' },
        { id: 'x-rest', path: '/x/**' },
        { id: 'x-y-rest', path: '/x/y/**' },
        { id: 'x', path: '/x' },
        { id: 'rest', path: '/**' },
      ],
      scopes,
    );
    // Only x-y-rest (`/x/y/**`) and x (`/x`) are dead: `/x/**` before them matches all they match.
    assert.deepEqual(
      issues.map((i) => i.path),
      ['rules[9]', 'rules[10]'],
    );
  });

  it('attack: a tool or rpc rule an earlier tool or rpc glob always matches first (never reached) is refused', () => {
    // `tool: "*"` on mcp:use first: admin.delete would be granted on mcp:use, its [admin] rule dead.
    const hidden = (rules: RuleSpec[]) => compilePolicy(rules, scopes).issues;
    const never = (at: number, by: string) => ({ path: `rules[${at}]`, message: `${NEVER}${by}${FIRST}` });
    assert.deepEqual(
      hidden([
        { id: 'use', path: '/mcp', tool: '*', scopes: ['api:read'] },
        { id: 'delete', path: '/mcp', tool: 'admin.delete', scopes: ['admin'] },
      ]),
      [never(1, 'rules[0] ("use")')],
    );
    assert.deepEqual(
      hidden([
        { id: 'files', tool: 'files.*', scopes: ['files:read'] },
        { id: 'read', tool: 'files.read', scopes: ['files:read'] },
        { id: 'nested', methods: ['POST'], path: '/mcp', tool: 'files.x.*', scopes: ['admin'] },
        { id: 'same', tool: 'files.*', scopes: ['admin'] },
      ]),
      [never(1, 'rules[0] ("files")'), never(2, 'rules[0] ("files")'), never(3, 'rules[0] ("files")')],
    );
    assert.deepEqual(
      hidden([
        { id: 'resources', rpc: 'resources/*', scopes: ['api:read'] },
        { id: 'read', rpc: 'resources/read', scopes: ['admin'] },
        { id: 'templates', rpc: 'resources/templates/*', scopes: ['admin'] },
      ]),
      [never(1, 'rules[0] ("resources")'), never(2, 'rules[0] ("resources")')],
    );
    // Every tool call is the JSON-RPC method tools/call, and every tools/call names a tool (a call
    // without a valid name is refused before the rules): an rpc glob taking tools/call hides tool
    // rules, and `tool: "*"` hides an `rpc: tools/call` rule.
    assert.deepEqual(
      hidden([
        { id: 'any-rpc', path: '/mcp', rpc: '*', scopes: ['api:read'] },
        { id: 'delete', path: '/mcp', tool: 'admin.delete', scopes: ['admin'] },
      ]),
      [never(1, 'rules[0] ("any-rpc")')],
    );
    assert.deepEqual(
      hidden([
        { id: 'tools', rpc: 'tools/*', scopes: ['api:read'] },
        { id: 'delete', tool: 'admin.delete', rpc: 'tools/*', scopes: ['admin'] },
      ]),
      [never(1, 'rules[0] ("tools")')],
    );
    assert.deepEqual(
      hidden([
        { id: 'any-tool', tool: '*', scopes: ['api:read'] },
        { id: 'calls', rpc: 'tools/call', scopes: ['admin'] },
      ]),
      [never(1, 'rules[0] ("any-tool")')],
    );
    assert.deepEqual(
      hidden([
        { id: 'calls', tool: '*', rpc: 'tools/call', scopes: ['api:read'] },
        { id: 'delete', tool: 'admin.delete', scopes: ['admin'] },
      ]),
      [never(1, 'rules[0] ("calls")')],
    );
    // A claim condition does not let a request through to a later rule: the rule decides, and a
    // failed condition refuses. The earlier rule still decides every admin.delete call.
    assert.deepEqual(
      hidden([
        { id: 'tenant', tool: '*', scopes: ['api:read'], claims: { tenant: 'acme' } },
        { id: 'delete', tool: 'admin.delete', scopes: ['admin'] },
      ]),
      [never(1, 'rules[0] ("tenant")')],
    );
    // A rule without `tool:` matches tool calls too (as every request on its method and path).
    assert.deepEqual(
      hidden([
        { id: 'mcp', path: '/mcp', scopes: ['api:read'] },
        { id: 'delete', path: '/mcp', tool: 'admin.delete', scopes: ['admin'] },
      ]),
      [never(1, 'rules[0] ("mcp")')],
    );
  });

  it('keeps tool and rpc rules an earlier glob does not provably cover (narrow first, then *)', () => {
    const { policy, issues } = compilePolicy(
      [
        { id: 'delete', path: '/mcp', tool: 'admin.delete', scopes: ['admin'] },
        { id: 'read', tool: 'files.read*', scopes: ['files:read'] },
        { id: 'files', tool: 'files.*', scopes: ['files:read'] },
        { id: 'suffix', tool: '*.read', scopes: ['files:read'] }, // files.* does not take x.read
        { id: 'posted', methods: ['POST'], path: '/mcp', tool: '*', scopes: ['admin'] },
        { id: 'other-path', path: '/mcp/a', tool: '*', scopes: ['admin'] },
        { id: 'any-method', path: '/mcp', tool: 'x', scopes: ['admin'] }, // POST-only `*` leaves other methods
        { id: 'tools', tool: '*', scopes: ['admin'] },
        { id: 'tools-rpc', rpc: 'tools/*', scopes: ['admin'] }, // tools/list names no tool
        { id: 'resource', rpc: 'resources/read', scopes: ['api:read'] },
        { id: 'resources', rpc: 'resources/*', scopes: ['api:read'] },
        { id: 'prompts', rpc: 'prompts/*', scopes: ['api:read'] },
        { id: 'protocol', scopes: ['api:read'] }, // initialize, tools/list, GET stream, DELETE
      ],
      scopes,
    );
    assert.deepEqual(issues, []);
    // Each decides what it was written for.
    const call = (tool: string, method = 'POST') => policy.match({ method, path: '/mcp', tool, rpc: 'tools/call' })?.rule.id;
    const rpc = (name: string) => policy.match({ method: 'POST', path: '/mcp', tool: null, rpc: name })?.rule.id;
    assert.deepEqual(
      [call('admin.delete'), call('files.readme'), call('files.x'), call('x.read'), call('y'), call('x', 'PUT'), call('y', 'PUT')],
      ['delete', 'read', 'files', 'suffix', 'posted', 'any-method', 'tools'],
    );
    assert.deepEqual(
      [rpc('tools/list'), rpc('resources/read'), rpc('resources/list'), rpc('prompts/get'), rpc('initialize')],
      ['tools-rpc', 'resource', 'resources', 'prompts', 'protocol'],
    );
  });
});

describe('policy: a rule with claim conditions decides when it matches, so what it covers is never reached', () => {
  it('attack: a failing claim condition refuses; it never falls through to a later rule (which the load therefore refuses as never reached)', () => {
    const rules: RuleSpec[] = [
      { id: 'member', path: '/orgs/:org/**', claims: { org: ':org' } },
      { id: 'admin', path: '/orgs/:org/**', scopes: ['admin'] },
    ];
    // What makes the load check sound: the later rule would grant an admin of another org nothing.
    const { policy, issues } = compilePolicy(rules, scopes);
    const d = policy.evaluate({ method: 'GET', path: '/orgs/acme/x' }, subject(['admin'], { org: 'evil' }));
    assert.deepEqual(d.allowed ? d : [d.code, d.rule?.id, d.claim], ['policy_condition_failed', 'member', 'org']);
    assert.deepEqual(
      issues.map((i) => i.path),
      ['rules[1]'],
    );
  });

  it('says of two rules matching the same requests that only one can apply (no order reaches both), not to put the narrower first', () => {
    const { issues } = compilePolicy(
      [
        { id: 'member', methods: ['GET'], path: '/orgs/:org/**/', claims: { org: ':org' } },
        { id: 'admin', methods: ['HEAD', 'GET'], path: '/orgs/*/**', scopes: ['admin'] },
        { id: 'wide', path: '/x/**' },
        { id: 'narrow', path: '/x/y' },
      ],
      scopes,
    );
    assert.deepEqual(issues, [
      {
        path: 'rules[1]',
        message:
          'this rule is never reached: rules[0] ("member") comes first and matches the same requests, and the first matching rule decides (a request its scopes or claim conditions refuse is refused, not passed on); keep one rule for these requests',
      },
      {
        path: 'rules[3]',
        message:
          'this rule is never reached: rules[2] ("wide") comes first and matches every request it matches, and the first matching rule decides; put the narrower rule first',
      },
    ]);
  });

  it('keeps a later rule a claim rule covers only in part (other methods, a wider path), and compares literals without case only when told', () => {
    const { issues } = compilePolicy(
      [
        { id: 'member-read', methods: ['GET'], path: '/orgs/:org/**', claims: { org: ':org' } },
        { id: 'admin', path: '/orgs/:org/**', scopes: ['admin'] },
        { id: 'any-org', methods: ['GET'], path: '/**', claims: { role: ['staff'] } },
        { id: 'upper', methods: ['POST'], path: '/API/x' },
        { id: 'lower', methods: ['POST'], path: '/api/x' },
      ],
      scopes,
    );
    assert.deepEqual(issues, []);
    const ci = compilePolicy(
      [
        { id: 'upper', methods: ['POST'], path: '/API/**' },
        { id: 'lower', methods: ['POST'], path: '/api/x' },
      ],
      scopes,
      'rules',
      { caseInsensitivePaths: true },
    );
    assert.deepEqual(
      ci.issues.map((i) => i.path),
      ['rules[1]'],
    );
  });
});

describe('policy: path parameter names', () => {
  it('attack: a parameter named for a member every object has (:__proto__, :constructor, …) is refused at load, saying what to write', () => {
    const names = ['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', 'valueOf', 'isPrototypeOf'];
    for (const name of names) {
      const { issues } = compilePolicy([{ path: `/users/:${name}`, claims: { sub: `:${name}` } }], scopes, 'gateway.routes[0].rules');
      const instead = `:${name.replace(/^_+|_+$/g, '')}_id`;
      assert.deepEqual(
        issues,
        [
          {
            path: 'gateway.routes[0].rules[0].path',
            message: `":${name}" names a member every JavaScript object has; give the parameter a name of its own, such as ${instead}`,
          },
        ],
        name,
      );
    }
  });

  it('captured parameters live in an object without a prototype: no member every object has reads as one', () => {
    const policy = policyOf([{ id: 'u', path: '/users/:id', claims: { sub: ':id' } }]);
    const found = policy.match({ method: 'GET', path: '/users/alice' });
    assert.deepEqual({ ...found?.params }, { id: 'alice' });
    assert.equal(Object.getPrototypeOf(found?.params), null, 'parameters stored where every object member is one');
    const d = policy.evaluate({ method: 'GET', path: '/users/alice' }, subject([], { sub: 'alice' }));
    assert.equal(d.allowed && Object.getPrototypeOf(d.params), null);
  });
});
