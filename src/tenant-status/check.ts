// The status check of a tenant transaction's opening: one more statement in the opening's sequence,
// after the tenant setting is set (the tenants table's policy reads it) and before the route's first
// query. A tenant that is not active makes its cast fail, so PostgreSQL skips everything up to the
// Sync: the route's first query never runs, and the check costs no round trip of its own.
import type { Pool } from 'pg'
import { TenantMovingError, TenantStatusUnreadableError, TenantSuspendedError } from '../errors.js'
import type { PipelinedStatement } from '../opening-query.js'
import type { ResolvedTenantStatus } from './options.js'

// Recognised in the failed cast's message, as the pre-commit check's markers are.
const SUSPENDED_MARKER = 'fastify-tenant-rls: tenant suspended'
const MOVING_MARKER = 'fastify-tenant-rls: tenant moving'

/** What the opening needs of the status: the statement to send, and the error its failure means. */
export interface TenantStatusCheck {
  /** The statement for `tenantId`, its id bound as a parameter. */
  statement (tenantId: string): PipelinedStatement
  /** The plugin's error for a failure of that statement; undefined for any other failure. */
  refusal (error: unknown): Error | undefined
  /** Rejects unless `pool`'s role can read the key and status columns (run at ready). */
  verify (pool: Pool): Promise<void>
}

/** The check for a resolved `tenantStatus` option. */
export function tenantStatusCheck ({ table, column, key, retryAfter }: ResolvedTenantStatus): TenantStatusCheck {
  // No row (a tenant erased, or never created) and any status but the three is refused like a
  // suspension: fail closed. The key is compared with a bound parameter of the key's own type, so
  // the lookup uses the key's index; the markers are bound too, so the text is fixed per option.
  const text = `SELECT (CASE (SELECT ${column} FROM ${table.sql} WHERE ${key} OPERATOR(pg_catalog.=) $1) ` +
    "WHEN 'active' THEN '0' WHEN 'moving' THEN $3 ELSE $2 END)::int"
  const headers = { 'retry-after': String(retryAfter) }
  // Reads no row: only that the table and both columns exist and the role may select them.
  const probe = `SELECT ${key}, ${column} FROM ${table.sql} WHERE false`
  return {
    statement: (tenantId) => ({ text, values: [tenantId, SUSPENDED_MARKER, MOVING_MARKER] }),
    refusal (error) {
      const sqlState = (error as { code?: unknown } | null)?.code
      if (sqlState !== '22P02') return undefined
      const message = String((error as Error).message)
      if (message.includes(MOVING_MARKER)) return Object.assign(new TenantMovingError({ cause: error }), { headers })
      if (message.includes(SUSPENDED_MARKER)) return new TenantSuspendedError({ cause: error })
      return undefined
    },
    async verify (pool) {
      // Otherwise a misnamed table or a migration that forgot the grant fails every tenant request.
      await pool.query(probe).catch((error: unknown) => {
        throw new TenantStatusUnreadableError(`${table.text}: ${(error as Error).message}`, { cause: error })
      })
    }
  }
}
