// A pooled client while the package holds it. pg-pool listens for a client's 'error' event only
// while the client sits idle in the pool; a checked-out client whose server goes away (a restart, a
// failover, pg_terminate_backend, a cut network) emits 'error' when its socket closes, and if the
// holder still has it then (sending the ROLLBACK after the failed statement, or keeping it between
// statements, as a move's record does) nobody listens and Node ends the process. The holder hears
// that failure anyway, through its pending or next query, so the event itself is ignored while the
// client is held, and the listener goes when it is handed back (pg-pool's own takes over).
import type { Pool, PoolClient } from 'pg'

function ignoreHeldClientError (): void {}

/** Checks a client out of `pool`; hand it back with `releaseHeld`. */
export async function connectHeld (pool: Pool): Promise<PoolClient> {
  const client = await pool.connect()
  client.on('error', ignoreHeldClientError)
  return client
}

/** Hands `client` back to its pool: destroyed when `broken` is an error or true, pooled otherwise. */
export function releaseHeld (client: PoolClient, broken?: Error | boolean): void {
  client.off('error', ignoreHeldClientError)
  client.release(broken)
}
