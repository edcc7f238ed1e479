import { startGateway, startUpstream, token, baseConfig, AUDIENCE } from './test/gateway/helpers.ts';
const upstream = await startUpstream((_req, res) => {
  res.setHeader('mcp-session-id', 'has space');
  res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":1,"result":{}}');
});
const gw = await startGateway({ ...baseConfig(), scopes: { 'mcp:use': {} }, gateway: { routes: [{ id: 'mcp', match: { path_prefix: '/mcp' }, upstream: { url: upstream.url }, auth: 'jwt', audience: AUDIENCE, rules: [{ scopes: ['mcp:use'] }], mcp: {} }] } });
const t = await token({ sub: 'alice', scope: 'mcp:use' });
const r = await fetch(`${gw.url}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${t}` }, body: '{"jsonrpc":"2.0","id":1,"method":"initialize"}', signal: AbortSignal.timeout(3000) });
console.error('status', r.status, await r.text());
process.exit(0);
