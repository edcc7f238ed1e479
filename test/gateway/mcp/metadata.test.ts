/**
 * RFC 9728 discovery on MCP routes whose `mcp.resource` is configured: the challenge's
 * `resource_metadata` must lead to a document the gateway serves, and `tessera check --mcp` must
 * fail a document whose `resource` an MCP client would refuse for the URL it connects to.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runChecks } from '../../../src/cli/commands/check.ts';
import type { TesseraConfigInput } from '../../../src/config/schema.ts';
import { type McpUpstream, startMcpUpstream } from '../../helpers/mcp-upstream.ts';
import { baseConfig, ISSUER, parse, startGateway, type TestGateway, token } from '../helpers.ts';

function config(upstream: string, base: string): TesseraConfigInput {
  const route = { upstream: { url: upstream }, auth: 'jwt' as const, rules: [{ scopes: ['mcp:use'] }] };
  const c = baseConfig();
  const [issuer] = c.issuers ?? [];
  return {
    ...c,
    issuers: [{ ...(issuer as NonNullable<typeof issuer>), audiences: [`${base}/mcp`, `${base}/not-here`] }],
    scopes: { 'mcp:use': {} },
    gateway: {
      routes: [
        // Matched by a pattern: the schema asks for mcp.resource, the only path it can advertise.
        { id: 'pattern', match: { path: '/mcp' }, ...route, audience: `${base}/mcp`, mcp: { resource: `${base}/mcp` } },
        // Advertising a resource that is not this route's URL: an MCP client connecting to
        // /other-mcp refuses it (the SDK's checkResourceAllowed), so must the check.
        {
          id: 'elsewhere',
          match: { path_prefix: '/other-mcp' },
          ...route,
          audience: `${base}/not-here`,
          mcp: { resource: `${base}/not-here` },
        },
      ],
    },
  };
}

describe('gateway: MCP metadata for a configured resource', () => {
  let upstream: McpUpstream;
  let gw: TestGateway;

  before(async () => {
    upstream = await startMcpUpstream();
    gw = await startGateway(config(upstream.url, 'http://placeholder.invalid'));
    // The resource names the gateway's own URL, known once it listens.
    const reloaded = gw.served.gateway.reload(parse(config(upstream.url, gw.url)));
    assert.equal(reloaded.ok, true);
  });
  after(async () => {
    await gw.close();
    await upstream.close();
  });

  it("the challenge's resource_metadata of a route matched by a pattern is served (it was 404): RFC 9728 §3.1 from mcp.resource's path", async () => {
    const res = await fetch(`${gw.url}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(res.status, 401);
    const url = /resource_metadata="([^"]+)"/.exec(res.headers.get('www-authenticate') ?? '')?.[1];
    assert.equal(url, `${gw.url}/.well-known/oauth-protected-resource/mcp`);
    const doc = await fetch(url as string);
    assert.equal(doc.status, 200);
    assert.deepEqual(await doc.json(), {
      resource: `${gw.url}/mcp`,
      authorization_servers: [ISSUER],
      scopes_supported: ['mcp:use'],
      bearer_methods_supported: ['header'],
    });
    const t = await token({ sub: 'checker', scope: 'mcp:use', aud: `${gw.url}/mcp` });
    assert.deepEqual(
      (await runChecks(`${gw.url}/mcp`, t, { mcp: true })).filter((r) => !r.ok),
      [],
    );
  });

  it('tessera check --mcp fails metadata whose resource is not the checked URL (an MCP client would refuse it)', async () => {
    const t = await token({ sub: 'checker', scope: 'mcp:use', aud: `${gw.url}/not-here` });
    const results = await runChecks(`${gw.url}/other-mcp`, t, { mcp: true });
    const failed = results.filter((r) => !r.ok);
    assert.deepEqual(
      failed.map((r) => r.name),
      ['the protected resource metadata names the checked URL as its resource'],
    );
    assert.match(failed[0]?.detail ?? '', /not-here/);
  });
});

describe('gateway: MCP metadata says how DPoP is taken (RFC 9728 §2)', () => {
  let upstream: McpUpstream;
  before(async () => {
    upstream = await startMcpUpstream();
  });
  after(() => upstream.close());

  /** The metadata document of the `pattern` route under `dpop`. */
  async function documentUnder(dpop: TesseraConfigInput['dpop']): Promise<Record<string, unknown>> {
    const gw = await startGateway({ ...config(upstream.url, 'http://placeholder.invalid'), dpop });
    try {
      const res = await fetch(`${gw.url}/.well-known/oauth-protected-resource/mcp`);
      assert.equal(res.status, 200);
      return (await res.json()) as Record<string, unknown>;
    } finally {
      await gw.close();
    }
  }

  it('dpop.mode required: dpop_bound_access_tokens_required is true, so a client following the metadata gets a DPoP-bound token rather than a bearer token every request is refused with', async () => {
    const doc = await documentUnder({ mode: 'required', algorithms: ['ES256', 'EdDSA'] });
    assert.equal(doc.dpop_bound_access_tokens_required, true);
    assert.deepEqual(doc.dpop_signing_alg_values_supported, ['ES256', 'EdDSA']);
  });

  it('dpop.mode allowed: the proof algorithms, no requirement; disabled: neither', async () => {
    const allowed = await documentUnder({ mode: 'allowed', algorithms: ['ES256'] });
    assert.deepEqual(allowed.dpop_signing_alg_values_supported, ['ES256']);
    assert.equal(allowed.dpop_bound_access_tokens_required, undefined);
    const disabled = await documentUnder({ mode: 'disabled' });
    assert.equal(disabled.dpop_signing_alg_values_supported, undefined);
    assert.equal(disabled.dpop_bound_access_tokens_required, undefined);
  });
});
