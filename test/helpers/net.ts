/** Loopback ports for tests that start real processes (which cannot be told to listen on 0). */
import { connect, createServer } from 'node:net';

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

/** Resolve once something accepts connections on 127.0.0.1:`port` (a proxy the test started). */
export async function waitForPort(port: number, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1', () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen on ${port}`);
}

/**
 * Send `text` as-is on a new connection and return everything read until the peer closes (or
 * `timeoutMs` passes): for requests fetch() would normalize or refuse to send.
 */
export function rawHttp(url: string, text: string, timeoutMs = 3000): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => s.write(text));
    let out = '';
    s.on('data', (d) => {
      out += d.toString();
    });
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.setTimeout(timeoutMs, () => {
      s.destroy();
      resolve(out);
    });
  });
}
