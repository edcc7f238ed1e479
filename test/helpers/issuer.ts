/**
 * A running token service for tests: a real SQLite file in a temp dir, a real HTTP server on port
 * 0, the issuer URL set to the bound address.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEventsDropped } from '../../src/audit/pipeline.ts';
import { parseConfig } from '../../src/config/parse.ts';
import { configSchema, type TesseraConfig, type TesseraConfigInput } from '../../src/config/schema.ts';
import type { ClientInput } from '../../src/issuer/clients.ts';
import { generateMasterKey, type MasterKey } from '../../src/issuer/secrets.ts';
import type { TokenService } from '../../src/issuer/service.ts';
import { createTokenServiceFromConfig } from '../../src/server/bootstrap.ts';
import { createTokenServiceHandler } from '../../src/server/token-handler.ts';
import type { Store } from '../../src/store/contract.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { createVerifier } from '../../src/verifier.ts';

export interface RunningIssuer {
  readonly url: string;
  readonly service: TokenService;
  readonly store: Store;
  readonly config: TesseraConfig;
  readonly master: MasterKey;
  readonly dir: string;
  readonly server: Server;
  /** Register a client; returns its id and secret. */
  addClient(input: Partial<ClientInput> & { id: string }): Promise<{ id: string; secret: string }>;
  /** POST a form to an endpoint path (e.g. `/oauth2/token`). */
  post(path: string, form: Record<string, string | string[]>, headers?: Record<string, string>): Promise<Response>;
  close(): Promise<void>;
}

export function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

export async function startIssuer(
  options: {
    config?: Partial<TesseraConfigInput>;
    clock?: () => number;
    dir?: string;
    master?: MasterKey;
    store?: Store;
    /** Told what the token service warns about (the upstream OIDC provider's failures). */
    onWarning?: (message: string) => void;
    /** Told what the token service itself warns about (a stored signing key refused). */
    onServiceWarning?: (message: string) => void;
    /** Told of the audit events a full queue dropped (`audit.on_queue_full: refuse`). */
    onAuditEventsDropped?: (dropped: AuditEventsDropped) => void;
  } = {},
): Promise<RunningIssuer> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'tessera-issuer-'));
  let handler: ((req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => boolean) | undefined;
  const server = createServer((req, res) => {
    if (!handler?.(req, res)) {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let store: Store | undefined;
  let service: TokenService | undefined;
  let config: TesseraConfig;
  let master: MasterKey;
  try {
    const input = options.config ?? {};
    config = parseConfig(configSchema, {
      data_dir: dir,
      ...input,
      token_service: { issuer: url, sync_interval: '1s', ...(input.token_service ?? {}) },
    });
    store = options.store ?? SqliteStore.open({ path: join(dir, 'tessera.db') });
    master = options.master ?? generateMasterKey().key;
    service = createTokenServiceFromConfig(config, {
      store,
      master,
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.onServiceWarning ? { onWarning: options.onServiceWarning } : {}),
      ...(options.onAuditEventsDropped ? { onAuditEventsDropped: options.onAuditEventsDropped } : {}),
    });
    await service.keys.reload();
    if (service.keys.status().length === 0) await service.keys.rotate({ immediate: true });
    await service.start();
  } catch (err) {
    // A failed start must not leave the listening server (or the service's timers) behind: the
    // test file's `after` has no issuer to close, and the process would never exit.
    await service?.close().catch(() => {});
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (options.store === undefined) await store?.close().catch(() => {});
    if (options.dir === undefined) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  handler = createTokenServiceHandler(service, options.onWarning ? { onWarning: options.onWarning } : {});
  return {
    url,
    service,
    store,
    config,
    master,
    dir,
    server,
    async addClient(c) {
      const { client, secret } = await service.registerClient({ scopes: [], audiences: ['https://api.test'], ...c });
      return { id: client.id, secret: secret ?? '' };
    },
    post(path, form, headers = {}) {
      const body = new URLSearchParams();
      for (const [k, v] of Object.entries(form)) for (const x of Array.isArray(v) ? v : [v]) body.append(k, x);
      return fetch(`${url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: body.toString(),
      });
    },
    async close() {
      await service.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await store.close();
      if (options.dir === undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A verifier in the same process as the token service, wired the way `tessera serve` wires it. */
export function inProcessVerifier(issuer: RunningIssuer, audiences: string[] = ['https://api.test']) {
  return createVerifier(
    {
      issuers: [{ issuer: issuer.service.issuer, audiences, jwks_uri: `${issuer.url}/.well-known/jwks.json`, token_type: 'at+jwt' }],
      dpop: { mode: 'disabled' },
    },
    { keySources: { [issuer.service.issuer]: issuer.service.keys }, revocation: issuer.service.revocations },
  );
}
