/**
 * The PostgreSQL the tests run against (TESSERA_TEST_POSTGRES_URL, default the local `test`
 * database) and whether it answers.
 */
import pg from 'pg';

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
