// The system pool option, checked once where it is given (the plugin's options, the standalone
// withSystem). Apart from with-system.ts so that options.ts can use it without importing the job
// runner (and, through it, withTenant, which imports options.ts).
import type { Pool } from 'pg'
import { failOption } from '../errors.js'

/** Checks the system pool option: a pg.Pool that cannot make a job wait forever, not the app's pool. */
export function validateSystemPool (systemPool: unknown, appPool?: unknown): Pool {
  if (systemPool === null || typeof systemPool !== 'object' || typeof (systemPool as Pool).connect !== 'function') {
    failOption('systemPool must be a pg.Pool of the dedicated system role (see systemRoleSql)')
  }
  if (systemPool === appPool) failOption('systemPool must be a pool of its own, connected as the system role, not the application pool')
  const timeout = (systemPool as Pool).options?.connectionTimeoutMillis
  if (typeof timeout !== 'number' || !(timeout > 0)) failOption('systemPool must set connectionTimeoutMillis (for example 5000), so a job waits a bounded time for a connection')
  return systemPool as Pool
}
