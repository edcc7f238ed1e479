/**
 * `tessera start` (what `npm start` runs): the newcomer's path in one command. Initializes what is
 * missing (`tessera init`), starts the built-in demo API where the `demo` route points, starts the
 * token service and the gateway on one listener (`tessera serve`), and prints the commands that
 * fetch a token and call the demo API through the gateway. Nothing secret is printed: the commands
 * read the demo client's secret from its owner-only file.
 */
import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Command } from 'commander';
import { withConfig } from '../options.ts';
import { CliError } from '../output.ts';
import { DEMO_CLIENT, DEMO_ROUTE, DEMO_SECRET_FILE, initialize } from './init.ts';
import { type RunningServer, startServer } from './serve.ts';

export interface Started {
  readonly server: RunningServer;
  readonly demoUrl: string | undefined;
  /** The lines printed for the user (commands to try). */
  readonly instructions: string;
  /** Write the logs held while starting, and from then on each as it comes: call once {@link instructions} are out. */
  releaseLogs(): void;
  /** Reload the configuration (SIGHUP): the gateway, and with it the demo API's copy of the gateway token. */
  reload(): void;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** Everything `tessera start` does, without signal handling (tests call this). */
export async function start(options: { config?: string; signals?: boolean }): Promise<Started> {
  const [{ defaultLogger }, { announceSignalHandlers }, { startDemoUpstream }] = await Promise.all([
    import('../../gateway/gateway.ts'),
    import('../../gateway/serve.ts'),
    import('../demo-upstream.ts'),
  ]);
  const init = await initialize(options.config ? { config: options.config } : {});
  let demo: Awaited<ReturnType<typeof startDemoUpstream>> | undefined;
  // Logs go to stderr so that stdout carries the instructions alone. Those written while starting
  // ("gateway listening") are held until the instructions are out (see Started.releaseLogs): on a
  // terminal they would otherwise come before the banner they are a detail of.
  const logs = new HeldLines();
  // `tessera start` has no --port, and the port is written in several places of tessera.yaml.
  const file = relative(process.cwd(), init.config_file);
  const server = await startServer({
    ...(options.config ? { config: options.config } : {}),
    signals: false,
    portAdvice: init.config_written
      ? `choose others: delete ${file} and ${relative(process.cwd(), init.data_dir)}/ (just written), run \`tessera init --port <port>\` (the demo API takes the next port), then \`tessera start\``
      : `change server.port in ${file} and the URLs that name it (issuers, audiences, the demo route)`,
    logger: defaultLogger(undefined, logs),
    // Every accepted reload (SIGHUP or a change of tessera.yaml) hands the demo API the gateway
    // token the gateway now sends, from the configuration the gateway itself loaded.
    onReload: (config) => {
      const credential = config.gateway?.routes.find((r) => r.id === DEMO_ROUTE)?.upstream.credential;
      if (credential?.type === 'static') demo?.rotate(credential.token);
    },
  });
  try {
    const route = server.config.gateway?.routes.find((r) => r.id === DEMO_ROUTE);
    if (route !== undefined) {
      const target = new URL(route.upstream.url);
      // The credential the gateway sends (the demo checks for exactly that).
      const credential = route.upstream.credential;
      const token = credential.type === 'static' ? credential.token : undefined;
      if (target.protocol === 'http:' && LOOPBACK.has(target.hostname) && token) {
        try {
          demo = await startDemoUpstream({ host: target.hostname.replace(/^\[|\]$/g, ''), port: Number(target.port || 80), token });
        } catch (e) {
          throw new CliError(
            `cannot start the demo API on ${target.host} (${(e as NodeJS.ErrnoException).code ?? 'error'}); free the port or change routes[id=demo].upstream.url`,
          );
        }
      }
    }
  } catch (e) {
    await server.close();
    logs.release();
    throw e;
  }
  const close = async () => {
    await server.close();
    await demo?.close();
  };
  const reload = () => void server.gateway?.reload();
  if (options.signals) {
    const stop = () => void close().then(() => process.exit(0));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    process.on('SIGHUP', reload);
    announceSignalHandlers();
  }
  const secretFile = join(init.data_dir, DEMO_SECRET_FILE);
  const shown = relative(process.cwd(), secretFile);
  const secret = `$(cat ${shown.startsWith('..') ? secretFile : shown})`;
  const base = server.url;
  const created = [
    init.config_written ? `wrote ${relative(process.cwd(), init.config_file)}` : '',
    init.master_key === 'generated' ? 'master key' : '',
    init.signing_key.created ? `${init.signing_key.alg} signing key` : '',
    init.demo_client.created ? `demo client ${init.demo_client.client_id}` : '',
    init.gateway_token.created ? 'gateway token' : '',
  ].filter(Boolean);
  const lines = [
    ...(created.length ? [`Initialized ${init.data_dir}: ${created.join(', ')}.`] : []),
    `Tessera is running: token service and gateway on ${base}${demo ? `, demo API on ${demo.url} (it only answers the gateway)` : ''}.`,
    '',
  ];
  if (demo && existsSync(secretFile)) {
    const auth = `-u "${DEMO_CLIENT}:${secret}"`;
    lines.push(
      'Fetch a token for the demo client (read-only), then call the demo API through the gateway:',
      '',
      `  TOKEN=$(curl -s ${auth} -d grant_type=client_credentials -d scope=demo:read ${base}/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\\1/')`,
      `  curl -i -H "Authorization: Bearer $TOKEN" ${base}/api/hello`,
      '',
      'Then try:',
      // The comments are README.md's ("Five minutes"), in one column; the long revocation is
      // continued on a second line there too.
      ...commented([
        [`curl -i ${base}/api/hello`, '401 and its challenge'],
        [`curl -i -X POST -H "Authorization: Bearer $TOKEN" ${base}/api/items`, '403 insufficient_scope'],
        [`curl -N -H "Authorization: Bearer $TOKEN" ${base}/api/events`, 'SSE through the gateway'],
        [`npx tessera check ${base}/api/hello --token "$TOKEN"`, 'six conformance checks'],
        [`curl -s ${auth} -d "token=$TOKEN" \\`],
        [`  ${base}/oauth2/revoke`, 'RFC 7009 revocation:'],
        [`curl -i -H "Authorization: Bearer $TOKEN" ${base}/api/hello`, '401 on the very next call'],
        ['npx tessera audit tail', 'one event per decision'],
      ]),
      '',
    );
  } else {
    lines.push(
      `No demo here (${demo ? `${shown} is missing` : 'no route "demo" to a loopback URL'}): register a client with \`tessera clients add\` and call your routes.`,
      '',
    );
  }
  lines.push('Stop with Ctrl-C; reload the configuration with SIGHUP.');
  return { server, demoUrl: demo?.url, instructions: `${lines.join('\n')}\n`, releaseLogs: () => logs.release(), reload, close };
}

/** Commands indented by two, each comment after them in one column (a line without one has none). */
function commented(entries: readonly (readonly [command: string, comment?: string])[]): string[] {
  const column = Math.max(...entries.filter(([, c]) => c !== undefined).map(([cmd]) => cmd.length)) + 2;
  return entries.map(([cmd, comment]) => (comment === undefined ? `  ${cmd}` : `  ${cmd.padEnd(column)}# ${comment}`));
}

/**
 * A log destination that holds its lines until {@link release}, then writes them and every later
 * one to stderr at once.
 */
class HeldLines {
  #held: string[] | undefined = [];
  write(line: string): void {
    if (this.#held) this.#held.push(line);
    else process.stderr.write(line);
  }
  release(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const line of held) process.stderr.write(line);
  }
}

export function registerStart(program: Command): void {
  withConfig(program.command('start'))
    .description('Initialize if needed, then run the token service, the gateway and a demo API, and print commands to try (npm start).')
    .action(async (opts: { config?: string }) => {
      const started = await start({ ...opts, signals: true });
      process.stdout.write(started.instructions);
      started.releaseLogs();
    });
}
