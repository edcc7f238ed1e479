/**
 * A revocation made by `tessera revoke --grant` (its own process) reaches another `tessera serve`
 * instance on the same store: that instance's gateway refuses a token of a descendant grant and
 * ends its open event stream and WebSocket within the documented bound (SQLite: sync_interval;
 * PostgreSQL: pushed, milliseconds).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import WebSocket, { WebSocketServer } from 'ws';
import type { RunningServer } from '../../src/cli/commands/serve.ts';
import { TOKEN_EXCHANGE } from '../../src/issuer/service.ts';
import { startUpstream, type Upstream } from '../gateway/helpers.ts';
import { MAIN } from '../helpers/cli.ts';
import { basic } from '../helpers/issuer.ts';
import { freePort } from '../helpers/net.ts';
import { drivers, type ServeSite, serveInstances, serveSite } from './serve-instances.ts';

const AT = 'urn:ietf:params:oauth:token-type:access_token';
const API = 'https://api.test/aud';

for (const driver of drivers) {
  describe(`revocation propagation between two tessera serve instances (${driver.name})`, { skip: driver.skip }, () => {
    const instances = serveInstances();
    let upstream: Upstream;
    let wss: WebSocketServer;
    let site: ServeSite;
    let a: RunningServer;
    let b: RunningServer;
    let exchangeSecret: string;

    before(async () => {
      wss = new WebSocketServer({ noServer: true });
      upstream = await startUpstream((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: hello\n\n');
      });
      upstream.server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, () => undefined));
      site = await serveSite(instances, {
        prefix: 'tessera-revfeed-',
        audience: API,
        postgres: driver.postgres,
        scope: 'api:read',
        settings: 'token_service: { sync_interval: 1s }\n',
        route: 'api',
        upstream: upstream.url,
        clients: ['agent'],
      });
      a = await instances.start(site.config);
      b = await instances.start(site.config, { port: await freePort() });
      exchangeSecret = (
        await a.service.registerClient({
          id: 'broker',
          scopes: ['api:read'],
          audiences: [API],
          grantTypes: ['client_credentials', TOKEN_EXCHANGE],
        })
      ).secret as string;
      await b.service.sync();
    });
    after(async () => {
      await instances.stopAll();
      wss?.close();
      await upstream?.close();
      await site?.remove();
    });

    const form = async (base: string, user: string, secret: string, body: Record<string, string>) => {
      const res = await fetch(`${base}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: basic(user, secret), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(body),
      });
      assert.equal(res.status, 200, await res.clone().text());
      return ((await res.json()) as { access_token: string }).access_token;
    };
    const claims = (t: string) => JSON.parse(Buffer.from(t.split('.')[1] as string, 'base64url').toString()) as { grant_id: string };

    it('`tessera revoke --grant` of an ancestor: B refuses the descendant’s token and ends its streams within the bound', async (t) => {
      const root = await form(a.url, 'broker', exchangeSecret, { grant_type: 'client_credentials' });
      // The descendant is exchanged at B, its token used at B.
      const child = await form(b.url, 'broker', exchangeSecret, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: root,
        subject_token_type: AT,
        audience: API,
      });
      const auth = { authorization: `Bearer ${child}` };
      assert.equal((await fetch(`${b.url}/api/x`, { headers: auth })).status, 200);
      const ws = new WebSocket(`${b.url.replace('http', 'ws')}/api/ws`, { headers: auth });
      let wsClosedAt = 0;
      ws.once('close', () => {
        wsClosedAt = Date.now();
      });
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      let sseEndedAt = 0;
      let events = '';
      request(`${b.url}/api/events`, { headers: auth }, (r) => {
        r.setEncoding('utf8');
        r.on('data', (d: string) => {
          events += d;
        });
        r.on('end', () => {
          sseEndedAt = Date.now();
        });
      }).end();
      for (let i = 0; i < 100 && !events.includes('hello'); i++) await new Promise((r) => setTimeout(r, 20));
      const run = promisify(execFile)(process.execPath, [MAIN, 'revoke', '--grant', claims(root).grant_id, '-c', site.config], {
        cwd: site.dir,
        env: { ...process.env, TESSERA_MASTER_KEY: '' },
      });
      const { stdout } = await run;
      const committed = Date.now();
      assert.match(stdout, /revoked 2 grant/);
      let refusedAt = 0;
      while (Date.now() - committed < 10_000 && (refusedAt === 0 || wsClosedAt === 0 || sseEndedAt === 0)) {
        if (refusedAt === 0 && (await fetch(`${b.url}/api/x`, { headers: auth })).status === 401) refusedAt = Date.now();
        await new Promise((r) => setTimeout(r, 10));
      }
      t.diagnostic(
        `${driver.name}: after the CLI exited: refused in ${refusedAt - committed} ms, WebSocket closed in ${wsClosedAt - committed} ms, SSE ended in ${sseEndedAt - committed} ms`,
      );
      // The bound (PostgreSQL: pushed, milliseconds; SQLite: sync_interval, 1 s), with room for a loaded 2-core machine.
      const bound = driver.postgres ? 2000 : 3000;
      for (const [what, at] of [
        ['refused', refusedAt],
        ['WebSocket', wsClosedAt],
        ['SSE', sseEndedAt],
      ] as const) {
        assert.ok(at !== 0 && at - committed <= bound, `${what}: ${at === 0 ? 'never' : `${at - committed} ms`}`);
      }
    });
  });
}
