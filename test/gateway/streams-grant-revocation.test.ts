/**
 * Open streams end when an ancestor grant is revoked: a WebSocket and an event stream opened with
 * a token exchanged from another (a delegation two levels down) are closed once the root grant is
 * revoked through the token service in the same process, each with exactly one
 * `gateway.stream_closed` event (`token_revoked`).
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import WebSocket, { WebSocketServer } from 'ws';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { until } from '../helpers/net.ts';
import { startGateway, startUpstream, type TestGateway, type Upstream } from './helpers.ts';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const API = 'https://api.test';

describe('gateway: streams of a delegated token when an ancestor grant is revoked', () => {
  let issuer: RunningIssuer;
  let upstream: Upstream;
  let wss: WebSocketServer;
  let gw: TestGateway;
  const secrets: Record<string, string> = {};
  before(async () => {
    issuer = await startIssuer();
    for (const id of ['broker', 'agent']) {
      const grantTypes = ['client_credentials', EXCHANGE];
      secrets[id] = (await issuer.addClient({ id, scopes: ['api:read'], audiences: [API, 'agent'], grantTypes })).secret;
    }
    wss = new WebSocketServer({ noServer: true });
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: hello\n\n');
    });
    upstream.server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, () => undefined));
    gw = await startGateway(
      {
        issuers: [
          { issuer: issuer.service.issuer, audiences: [API], jwks_uri: `${issuer.url}/.well-known/jwks.json`, token_type: 'at+jwt' },
        ],
        scopes: { 'api:read': {} },
        dpop: { mode: 'disabled' },
        gateway: { routes: [{ id: 'api', upstream: { url: upstream.url }, auth: 'jwt', rules: [{ scopes: ['api:read'] }] }] },
      },
      { revocation: issuer.service.revocations },
    );
  });
  after(async () => {
    await gw?.close();
    wss?.close();
    await upstream?.close();
    await issuer?.close();
  });

  it('revoking the root grant closes the WebSocket (1008) and ends the event stream of a token exchanged from it, one stream_closed each', async () => {
    const root = (
      await issuer.service.mint({ clientId: 'broker', subject: 'alice', ttl: 3600, audiences: [API, 'agent'], scopes: ['api:read'] })
    ).access_token;
    const res = await issuer.post(
      '/oauth2/token',
      { grant_type: EXCHANGE, subject_token: root, subject_token_type: AT, audience: API, scope: 'api:read' },
      { authorization: basic('agent', secrets.agent as string) },
    );
    const body = (await res.json()) as { access_token: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    const child = body.access_token;
    const childGrant = decodeJwt(child).grant_id as string;
    assert.notEqual(childGrant, decodeJwt(root).grant_id);
    const auth = { authorization: `Bearer ${child}` };

    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws`, { headers: auth });
    const wsClosed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    let events = '';
    const sseEnded = new Promise<void>((resolve, reject) => {
      request(`${gw.url}/events`, { headers: auth }, (r) => {
        assert.equal(r.statusCode, 200);
        r.setEncoding('utf8');
        r.on('data', (d: string) => {
          events += d;
        });
        r.on('end', resolve);
        r.on('error', reject);
      })
        .on('error', reject)
        .end();
    });
    await until(() => events.includes('data: hello'));

    await issuer.service.revokeGrants({ grantId: decodeJwt(root).grant_id as string }, 'incident');
    assert.deepEqual(await wsClosed, { code: 1008, reason: 'token revoked' });
    await sseEnded;
    await gw.served.gateway.audit.flush();
    const closed = gw.audit.events.filter((e) => e.kind === 'gateway.stream_closed');
    assert.equal(closed.length, 2, JSON.stringify(closed));
    for (const e of closed) assert.equal(e.reason, 'token_revoked');
  });
});
