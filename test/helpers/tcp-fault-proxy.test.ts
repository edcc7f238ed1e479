/**
 * The TCP fault proxy (test/helpers/tcp-fault-proxy.ts) itself: a fault it injects must not leave
 * a socket that never closes behind, which keeps the test process alive, spinning, after its tests.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';

const HELPER = new URL('./tcp-fault-proxy.ts', import.meta.url).href;

/**
 * In a child process: a connection through the proxy whose client closes it, and `reset()` called
 * from a callback of the same poll as the proxy's read of that FIN (the data of a second
 * connection, made after the first so that epoll reports it after), while the proxy's own FIN is
 * still under way. Then everything is closed and the process should exit.
 */
const SCENARIO = `
import { createConnection, createServer } from 'node:net';
import { once } from 'node:events';
import { faultProxy } from ${JSON.stringify(HELPER)};
const target = createServer((s) => s.on('error', () => {}));
await new Promise((r) => target.listen(0, '127.0.0.1', r));
const proxy = await faultProxy({ host: '127.0.0.1', port: target.address().port });
const client = createConnection(proxy.port, '127.0.0.1');
client.on('error', () => {});
await once(client, 'connect');
while (proxy.connections() < 1) await new Promise((r) => setTimeout(r, 5));
proxy.blackHole();
const side = createServer((s) => s.on('data', () => proxy.reset()));
await new Promise((r) => side.listen(0, '127.0.0.1', r));
const signal = createConnection(side.address().port, '127.0.0.1');
await once(signal, 'connect');
client.destroy();
signal.write('x');
const started = Date.now();
while (proxy.connections() > 0 && Date.now() - started < 2000) await new Promise((r) => setTimeout(r, 20));
signal.destroy();
side.close();
target.close();
await proxy.close();
console.log('left', proxy.connections());
`;

describe('TCP fault proxy', () => {
  it('reset() of a connection whose client has just closed it (the proxy’s FIN under way): it closes, and the process exits at once after (it used to spin a CPU core for ever at exit)', async () => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', SCENARIO], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      output += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    clearTimeout(timer);
    assert.equal(signal, null, `the process did not exit within 10 s: ${output}`);
    assert.equal(code, 0, output);
    assert.match(output, /^left 0$/m);
  });
});
