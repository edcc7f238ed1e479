/**
 * The PostgreSQL the tests run against (TESSERA_TEST_POSTGRES_URL, default the local `test`
 * database), whether it answers, and a store of it behind a fault proxy.
 */
import pg from 'pg';
import { PostgresStore } from '../../src/store/postgres/store.ts';
import { type FaultProxy, faultProxy } from './tcp-fault-proxy.ts';

/** True when a connection to `url` opens within 2 s. */
export async function postgresReachable(url: string): Promise<boolean> {
  try {
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
    await c.connect();
    await c.end();
    return true;
  } catch {
    return false;
  }
}

/**
 * A store on `schema` at `url`, reached through a {@link faultProxy} (so a test can put PostgreSQL
 * out of reach, or black-hole it), with 1 s request and read bounds: the store and the proxy.
 */
export async function storeBehindFaultProxy(url: string, schema: string): Promise<{ store: PostgresStore; proxy: FaultProxy }> {
  const target = new URL(url);
  const proxy = await faultProxy({ host: target.hostname, port: Number(target.port || 5432) });
  const via = new URL(url);
  via.port = String(proxy.port);
  const store = await PostgresStore.open({
    connectionString: via.toString(),
    schema,
    requestTimeoutMillis: 1000,
    readTimeoutMillis: 1000,
  });
  return { store, proxy };
}

/** Drops `schema` and all in it from the database at `url`. */
export async function dropSchema(url: string, schema: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await c.end();
}
