// Where the shared attack cases connect: straight to PostgreSQL, or through a real PgBouncer in
// transaction mode. The cases take a Target and never know which one they run against, so the
// PgBouncer run is the very same code as the direct run.
import type { PoolConfig } from 'pg'
import type pg from 'pg'
import type { Test } from 'tap'
import type { TestDatabase } from '../helpers/database.js'
import { startPgBouncer } from '../helpers/pgbouncer.js'

export interface Target {
  name: 'direct' | 'pgbouncer'
  /** A pool of the application role, ended when test `t` ends (before PgBouncer stops). */
  pool (t: Test, config?: PoolConfig): pg.Pool
  /** Whether named prepared statements survive between transactions (not on PgBouncer 1.18). */
  namedStatements: boolean
}

// Pools through PgBouncer 1.18, which cannot keep the plugin's named statements between transactions.
const bouncedPools = new WeakSet<pg.Pool>()

/** The plugin (and withTenant) options a pool of a target needs: named statements off behind PgBouncer 1.18. */
export function pluginOptionsFor (pool: pg.Pool): { preparedStatements?: false } {
  return bouncedPools.has(pool) ? { preparedStatements: false } : {}
}

function endedWith (t: Test, pool: pg.Pool): pg.Pool {
  t.teardown(() => pool.ending ? undefined : pool.end())
  return pool
}

export function directTarget (db: TestDatabase): Target {
  return { name: 'direct', pool: (t, config) => endedWith(t, db.appPool(config)), namedStatements: true }
}

/**
 * The same database behind PgBouncer with `poolSize` server connections, or undefined when the
 * binary is missing (the test is then skipped locally, failed under CI).
 */
export async function pgBouncerTarget (t: Test, db: TestDatabase, poolSize = 2, settings: Record<string, string> = {}): Promise<Target | undefined> {
  const direct = new URL(db.url())
  const bouncer = await startPgBouncer(t, {
    host: direct.hostname,
    port: Number(direct.port),
    users: { [db.appRole]: decodeURIComponent(direct.password) },
    poolSize,
    settings
  })
  if (bouncer === undefined) return undefined
  return {
    name: 'pgbouncer',
    pool (t, config) {
      const pool = endedWith(t, db.appPool({ connectionString: bouncer.route(db.url()), ...config }))
      bouncedPools.add(pool)
      return pool
    },
    namedStatements: false
  }
}
