/**
 * A2A discovery: the agent card is public and advertises Tessera's security schemes; everything
 * else on an A2A route needs a token.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { withTesseraSecurity } from '../../src/gateway/a2a/card.ts';
import { baseConfig, startA2aGateway, startGateway, startUpstream, type TestGateway, token, type Upstream } from './helpers.ts';

const CARD = {
  name: 'Research agent',
  description: 'Finds papers',
  url: 'http://10.0.0.7:9999/',
  version: '1.0.0',
  capabilities: { streaming: true },
  securitySchemes: { apiKey: { type: 'apiKey', in: 'header', name: 'X-Internal-Key' } },
  security: [{ apiKey: [] }],
  skills: [{ id: 'search', name: 'Search' }],
};

/** An upstream card naming its own address and security in every place an A2A card can (v0.3 and v1.0 fields). */
const INJECTING_CARD = {
  name: 'Injecting agent',
  url: 'http://10.0.0.7:9999/a2a',
  preferredTransport: 'JSONRPC',
  additionalInterfaces: [
    { url: 'http://10.0.0.7:9999/a2a', transport: 'JSONRPC' },
    { url: 'http://10.0.0.7:9999/a2a/rest', transport: 'HTTP+JSON' },
    { url: '10.0.0.7:50051', transport: 'GRPC' },
  ],
  supportedInterfaces: [
    { url: 'http://10.0.0.7:9999/a2a', protocolBinding: 'JSONRPC' },
    { url: 'http://internal.example:8080/', protocolBinding: 'HTTP+JSON' },
  ],
  securitySchemes: { apiKey: { type: 'apiKey', in: 'header', name: 'X-Internal-Key' } },
  security: [{ apiKey: [] }],
  securityRequirements: [{ schemes: { apiKey: { list: [] } } }],
  skills: [
    { id: 'search', name: 'Search', security: [{ apiKey: [] }] },
    { id: 'admin', name: 'Admin', securityRequirements: [{ schemes: { apiKey: { list: [] } } }] },
  ],
  signatures: [{ protected: 'eyJhbGciOiJFUzI1NiJ9', signature: 'c2lnbmVkLWJ5LXRoZS11cHN0cmVhbQ' }],
};

describe('gateway: A2A card injection by the upstream', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(INJECTING_CARD));
    });
    gw = await startA2aGateway(upstream.url, {
      token_url: 'https://tessera.example.com/oauth/token',
      url: 'https://agents.example.com/agent',
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it("card injection: the upstream's interface URLs, per-skill security, security requirements and signatures are not republished", async () => {
    const res = await fetch(`${gw.url}/agent/.well-known/agent-card.json`);
    assert.equal(res.status, 200);
    // biome-ignore lint/suspicious/noExplicitAny: a JSON document under test
    const card: any = await res.json();
    const text = JSON.stringify(card);
    assert.ok(!text.includes('10.0.0.7') && !text.includes('internal.example'), `the upstream's own address is published: ${text}`);
    assert.ok(!text.includes('apiKey'), `the upstream's own security scheme is still required: ${text}`);
    assert.equal(card.url, 'https://agents.example.com/agent');
    // Interfaces at (or under) the upstream's card URL are the gateway's; others are not advertised.
    assert.deepEqual(card.additionalInterfaces, [
      { url: 'https://agents.example.com/agent', transport: 'JSONRPC' },
      { url: 'https://agents.example.com/agent/rest', transport: 'HTTP+JSON' },
    ]);
    assert.deepEqual(card.supportedInterfaces, [{ url: 'https://agents.example.com/agent', protocolBinding: 'JSONRPC' }]);
    assert.deepEqual(card.skills, [
      { id: 'search', name: 'Search' },
      { id: 'admin', name: 'Admin' },
    ]);
    assert.equal(card.securityRequirements, undefined);
    // Signed by the upstream over another card: a verifying client would refuse it, a careless one trust it.
    assert.equal(card.signatures, undefined);
    assert.deepEqual(card.security, [{ BearerAuth: [] }, { OAuth2: [] }]);
  });

  it("attack: the upstream's card under another spelling of its path (trailing / or ., another case), asked for with a token, is rewritten like the public one", async () => {
    const bearer = await token({ sub: 'alice', scope: 'agent:invoke' });
    // Express (non-strict routing), ASP.NET (case-blind) and others serve their card at these paths too.
    for (const path of [
      '/agent/.well-known/agent-card.json/',
      '/agent/.well-known/agent-card.json.',
      '/agent/.well-known/Agent-Card.json',
      '/agent/.well-known/agent.json/',
    ]) {
      const res = await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${bearer}` } });
      const text = await res.text();
      assert.equal(res.status, 200, path);
      assert.ok(!text.includes('10.0.0.7') && !text.includes('apiKey') && !text.includes('signature'), `${path}: ${text}`);
      assert.equal(JSON.parse(text).url, 'https://agents.example.com/agent', path);
    }
  });

  it('attack: the card members spelled as lenient clients read them (proto names, another case) are rewritten or dropped too', async () => {
    const spelled = {
      name: 'Spelling agent',
      URL: 'http://10.0.0.7:9999/a2a',
      additional_interfaces: [
        { url: 'http://10.0.0.7:9999/a2a/rest', transport: 'HTTP+JSON' },
        { url: '10.0.0.7:50051', transport: 'GRPC' },
      ],
      SupportedInterfaces: [{ url: 'http://internal.example:8080/', protocolBinding: 'JSONRPC' }],
      security_schemes: { apiKey: { type: 'apiKey', in: 'header', name: 'X-Internal-Key' } },
      Security: [{ apiKey: [] }],
      security_requirements: [{ schemes: { apiKey: { list: [] } } }],
      Skills: [{ id: 'search', name: 'Search', Security: [{ apiKey: [] }] }],
      skills: [{ id: 'admin', name: 'Admin', security_requirements: [{ schemes: { apiKey: { list: [] } } }] }],
      Signatures: [{ protected: 'eyJhbGciOiJFUzI1NiJ9', signature: 'c2lnbmVkLWJ5LXRoZS11cHN0cmVhbQ' }],
    };
    const card = withTesseraSecurity(spelled, {
      token_url: 'https://tessera.example.com/oauth/token',
      scopes: {},
      url: 'https://agents.example.com/agent',
    });
    const text = JSON.stringify(card);
    assert.ok(!text.includes('10.0.0.7') && !text.includes('internal.example'), `the upstream's own address is published: ${text}`);
    assert.ok(!text.includes('apiKey') && !text.includes('c2lnbmVk'), `the upstream's own security is published: ${text}`);
    // The interface under the upstream's URL is moved to a2a.url, in the spelling the upstream used.
    assert.deepEqual(card.additional_interfaces, [{ url: 'https://agents.example.com/agent/rest', transport: 'HTTP+JSON' }]);
    assert.equal(card.URL, 'https://agents.example.com/agent');
  });

  it('a configured card whose interfaces already name a2a.url keeps them', () => {
    const config = {
      card_path: '/x',
      cache_ttl: 60,
      token_url: 'https://t.example/token',
      scopes: {},
      url: 'https://agents.example.com/agent',
    };
    const card = withTesseraSecurity(
      {
        name: 'Configured',
        additionalInterfaces: [
          { url: 'https://agents.example.com/agent', transport: 'JSONRPC' },
          { url: 'https://agents.example.com/agent/rest', transport: 'HTTP+JSON' },
          { url: 'https://elsewhere.example/agent', transport: 'HTTP+JSON' },
        ],
      },
      config,
    );
    assert.deepEqual(card.additionalInterfaces, [
      { url: 'https://agents.example.com/agent', transport: 'JSONRPC' },
      { url: 'https://agents.example.com/agent/rest', transport: 'HTTP+JSON' },
    ]);
  });
});

describe('gateway: an A2A upstream whose card cannot be had', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const fetches: Record<string, number> = {};
  before(async () => {
    upstream = await startUpstream((req, res) => {
      const path = req.url ?? '';
      fetches[path] = (fetches[path] ?? 0) + 1;
      if (path.startsWith('/huge')) {
        // A card that never ends: 64 KiB every 20 ms.
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"name":"');
        const chunk = 'x'.repeat(64 * 1024);
        const timer = setInterval(() => res.write(chunk), 20);
        res.on('close', () => clearInterval(timer));
        return;
      }
      res.writeHead(500, { 'content-type': 'application/json' }).end('{}');
    });
    const route = (id: string, card_path: string) => ({
      id,
      match: { path_prefix: `/${id}` },
      upstream: { url: upstream.url },
      auth: 'jwt' as const,
      rules: [{ scopes: ['agent:invoke'] }],
      a2a: { token_url: 'https://tessera.example.com/oauth/token', card_path },
    });
    gw = await startGateway({
      ...baseConfig(),
      scopes: { 'agent:invoke': {} },
      gateway: { routes: [route('huge', '/huge'), route('failing', '/failing')] },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('card flood: an oversized card is refused once it passes 256 KiB, not read to its end (or forever)', async () => {
    const res = await fetch(`${gw.url}/huge/.well-known/agent-card.json`, { signal: AbortSignal.timeout(3000) });
    assert.equal(res.status, 502);
    await res.text();
  });

  it('card amplification: public requests for a card the upstream fails to give do not each fetch it again', async () => {
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${gw.url}/failing/.well-known/agent-card.json`);
      assert.equal(res.status, 502);
      await res.text();
    }
    assert.equal(fetches['/failing'], 1);
  });
});

describe('gateway: A2A agent card', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let cardFetches = 0;
  before(async () => {
    upstream = await startUpstream((req, res) => {
      if (req.url === '/.well-known/agent-card.json') {
        cardFetches++;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(CARD));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":1,"result":{}}');
    });
    const a2a = {
      token_url: 'https://tessera.example.com/oauth/token',
      scopes: { 'agent:invoke': 'Send tasks to the agent' },
      url: 'https://agents.example.com/research',
    };
    gw = await startGateway({
      ...baseConfig(),
      scopes: { 'api:read': {}, 'agent:invoke': {} },
      gateway: {
        routes: [
          {
            id: 'agent',
            match: { host: 'localhost' },
            upstream: { url: upstream.url },
            auth: 'jwt',
            rules: [{ scopes: ['agent:invoke'] }],
            a2a,
          },
          {
            id: 'configured',
            match: { path_prefix: '/configured' },
            upstream: { url: 'http://127.0.0.1:9' },
            auth: 'jwt',
            rules: [{ scopes: ['agent:invoke'] }],
            a2a: { ...a2a, card: { name: 'Configured agent', url: 'x' }, url: undefined },
          },
        ],
      },
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  const base = () => gw.url.replace('127.0.0.1', 'localhost');

  for (const path of ['/.well-known/agent-card.json', '/.well-known/agent.json']) {
    it(`serves ${path} publicly with Tessera's security schemes`, async () => {
      const res = await fetch(`${base()}${path}`);
      assert.equal(res.status, 200);
      // biome-ignore lint/suspicious/noExplicitAny: a JSON document under test
      const card: any = await res.json();
      assert.equal(card.name, 'Research agent');
      assert.deepEqual(card.skills, CARD.skills);
      assert.equal(card.url, 'https://agents.example.com/research');
      assert.deepEqual(card.securitySchemes.BearerAuth, {
        type: 'http',
        scheme: 'bearer',
        bearerFormat: 'JWT',
        description: 'A Tessera access token (RFC 9068 JWT) in the Authorization header.',
      });
      assert.deepEqual(card.securitySchemes.OAuth2.flows, {
        clientCredentials: { tokenUrl: 'https://tessera.example.com/oauth/token', scopes: { 'agent:invoke': 'Send tasks to the agent' } },
      });
      assert.equal(card.securitySchemes.apiKey, undefined, "the upstream's own scheme is not advertised");
      assert.deepEqual(card.security, [{ BearerAuth: [] }, { OAuth2: ['agent:invoke'] }]);
    });
  }

  it('caches the fetched card', () => assert.equal(cardFetches, 1));

  it('requires a token for everything else on the route', async () => {
    const rpc = {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"jsonrpc":"2.0","id":1,"method":"message/send"}',
    };
    const anon = await fetch(`${base()}/`, rpc);
    assert.equal(anon.status, 401);
    const other = await fetch(`${base()}/.well-known/other.json`);
    assert.equal(other.status, 401);
    const t = await token({ scope: 'agent:invoke' });
    const ok = await fetch(`${base()}/`, { ...rpc, headers: { ...rpc.headers, authorization: `Bearer ${t}` } });
    assert.equal(ok.status, 200);
  });

  it('serves a configured card under the route prefix without contacting the upstream', async () => {
    const res = await fetch(`${gw.url}/configured/.well-known/agent-card.json`);
    assert.equal(res.status, 200);
    // biome-ignore lint/suspicious/noExplicitAny: a JSON document under test
    const card: any = await res.json();
    assert.equal(card.name, 'Configured agent');
    assert.equal(card.securitySchemes.BearerAuth.scheme, 'bearer');
  });
});

/** An A2A 1.0 card (ProtoJSON of `lf.a2a.v1.AgentCard`): no `url`, interfaces with `protocolBinding` and `protocolVersion`. */
const V1_CARD = {
  name: 'Research agent',
  description: 'Finds papers',
  version: '2.0.0',
  supportedInterfaces: [
    { url: 'http://10.0.0.7:9999/a2a', protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
    { url: 'http://10.0.0.7:9999/a2a/rest', protocolBinding: 'HTTP+JSON', protocolVersion: '1.0' },
    { url: '10.0.0.7:50051', protocolBinding: 'GRPC', protocolVersion: '1.0' },
  ],
  capabilities: { streaming: true, extendedAgentCard: true },
  securitySchemes: { internal: { apiKeySecurityScheme: { location: 'header', name: 'X-Internal-Key' } } },
  securityRequirements: [{ schemes: { internal: { list: [] } } }],
  defaultInputModes: ['text/plain'],
  defaultOutputModes: ['text/plain'],
  skills: [
    { id: 'search', name: 'Search', description: 'Search', tags: ['s'], securityRequirements: [{ schemes: { internal: { list: [] } } }] },
  ],
  signatures: [{ protected: 'eyJhbGciOiJFUzI1NiJ9', signature: 'c2lnbmVkLWJ5LXRoZS11cHN0cmVhbQ' }],
};

/** Tessera's security in A2A 1.0's shape (§4.5: one-of security schemes, `SecurityRequirement.schemes` of `StringList`). */
const V1_SECURITY = {
  securitySchemes: {
    BearerAuth: {
      httpAuthSecurityScheme: {
        scheme: 'Bearer',
        bearerFormat: 'JWT',
        description: 'A Tessera access token (RFC 9068 JWT) in the Authorization header.',
      },
    },
    OAuth2: {
      oauth2SecurityScheme: {
        description: "Tokens from Tessera's token service.",
        flows: { clientCredentials: { tokenUrl: 'https://tessera.example.com/oauth/token', scopes: { 'agent:invoke': 'Send tasks' } } },
      },
    },
  },
  securityRequirements: [{ schemes: { BearerAuth: { list: [] } } }, { schemes: { OAuth2: { list: ['agent:invoke'] } } }],
};

describe('gateway: an A2A 1.0 agent card', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  before(async () => {
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(V1_CARD));
    });
    gw = await startA2aGateway(upstream.url, {
      token_url: 'https://tessera.example.com/oauth/token',
      scopes: { 'agent:invoke': 'Send tasks' },
      url: 'https://agents.example.com/agent',
    });
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it('a 1.0 card gets 1.0 security (securityRequirements, one-of schemes), not 0.3 `security`, and no `url`', async () => {
    const res = await fetch(`${gw.url}/agent/.well-known/agent-card.json`);
    assert.equal(res.status, 200);
    // biome-ignore lint/suspicious/noExplicitAny: a JSON document under test
    const card: any = await res.json();
    assert.deepEqual(card.securitySchemes, V1_SECURITY.securitySchemes);
    assert.deepEqual(card.securityRequirements, V1_SECURITY.securityRequirements);
    assert.equal(card.security, undefined, '0.3 `security` in a 1.0 card');
    assert.equal(card.url, undefined, '1.0 cards have no top-level url');
    assert.equal(card.signatures, undefined);
    assert.deepEqual(card.supportedInterfaces, [
      { url: 'https://agents.example.com/agent', protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
      { url: 'https://agents.example.com/agent/rest', protocolBinding: 'HTTP+JSON', protocolVersion: '1.0' },
    ]);
    assert.deepEqual(card.skills, [{ id: 'search', name: 'Search', description: 'Search', tags: ['s'] }]);
    assert.deepEqual(card.capabilities, V1_CARD.capabilities);
  });

  it('a card that declares protocolVersion 1.0 gets 1.0 security; one that declares 0.3 keeps 0.3 security', () => {
    const config = {
      card_path: '/x',
      cache_ttl: 60,
      token_url: 'https://tessera.example.com/oauth/token',
      scopes: { 'agent:invoke': 'Send tasks' },
    };
    const v1 = withTesseraSecurity({ name: 'a', protocolVersion: '1.0', url: 'http://10.0.0.7/' }, config);
    assert.deepEqual(v1.securitySchemes, V1_SECURITY.securitySchemes);
    assert.deepEqual(v1.securityRequirements, V1_SECURITY.securityRequirements);
    assert.equal(v1.security, undefined);
    const v03 = withTesseraSecurity({ name: 'a', protocolVersion: '0.3.0', url: 'http://10.0.0.7/', supportedInterfaces: [] }, config);
    assert.deepEqual(v03.security, [{ BearerAuth: [] }, { OAuth2: ['agent:invoke'] }]);
    assert.equal(v03.securityRequirements, undefined);
    assert.equal((v03.securitySchemes as { BearerAuth: { type: string } }).BearerAuth.type, 'http');
  });
});
