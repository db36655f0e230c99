// Tells the operator, once per burst, that requests are being answered 503 because the pool gave
// no connection in time. An exhausted pool fails every waiting request at once and keeps doing so;
// a warning per request would bury the one line that matters (with the pool's figures) under
// hundreds of copies. A burst ends with the next request that gets a connection: that one logs the
// recovery at info, with how many requests were turned away, and the next 503 warns again.
import type { FastifyBaseLogger } from 'fastify'
import type { Pool } from 'pg'

export interface PoolExhaustionLog {
  /** A request is being answered 503 (FST_TENANT_RLS_DATABASE_UNAVAILABLE). */
  unavailable (log: FastifyBaseLogger, error: Error): void
  /** A request got a connection. */
  connected (log: FastifyBaseLogger): void
}

// The innermost cause says which of the two it was: pg-pool's timeout (every connection busy) or a
// connection error (the database is unreachable).
function rootCause (error: Error): string {
  let current: unknown = error
  for (let depth = 0; depth < 8 && (current as { cause?: unknown }).cause instanceof Error; depth++) current = (current as { cause: Error }).cause
  return (current as Error).message
}

export function createPoolExhaustionLog (pool: Pool): PoolExhaustionLog {
  /** Requests answered 503 since the last one that got a connection. */
  let turnedAway = 0
  return {
    unavailable (log, error) {
      turnedAway += 1
      if (turnedAway > 1) return
      log.warn({
        pool: { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max: pool.options.max },
        connectionTimeoutMillis: pool.options.connectionTimeoutMillis,
        cause: rootCause(error)
      }, 'fastify-tenant-rls: no database connection within connectionTimeoutMillis, answering 503 (logged once until a request gets a connection again); fix: raise the pool\'s max if the database allows more connections, or find what holds them (slow queries, long transactions)')
    },
    connected (log) {
      if (turnedAway === 0) return
      log.info({ turnedAway }, 'fastify-tenant-rls: database connections available again')
      turnedAway = 0
    }
  }
}
