// Runs a function inside one tenant's transaction, for work outside an HTTP request (queues,
// cron jobs, scripts). It uses the same TenantTransaction as requests: commit when the function
// resolves, roll back when it throws, the connection released exactly once either way.
import type { Pool } from 'pg'
import { TenantInvalidError } from './errors.js'
import { DEFAULT_SETTING, validatePool, validateSchema, validateSetting } from './options.js'
import { createDatabaseFactory } from './tenant-database.js'
import type { DatabaseFactory, RegisteredSchema, TenantDatabase } from './tenant-database.js'
import { normalizeTenantId } from './tenant-id.js'
import { TenantTransaction } from './tenant-transaction.js'

/** Options of the standalone `withTenant`. */
export interface WithTenantOptions<TSchema extends Record<string, unknown>> {
  /** drizzle schema: types the database and enables `db.query.*`. */
  schema?: TSchema
  /** Setting the RLS policies read. Default `'app.current_tenant_id'`. */
  setting?: string
}

/** The work done inside a tenant transaction. */
export type TenantWork<TSchema extends Record<string, unknown>, TResult> = (db: TenantDatabase<TSchema>) => Promise<TResult>

/** Shared by the standalone function and `app.withTenant`: validate, run, commit or roll back. */
export async function runWithTenant<TSchema extends Record<string, unknown>, TResult> (
  pool: Pool,
  setting: string,
  createDatabase: DatabaseFactory,
  tenantId: unknown,
  work: TenantWork<TSchema, TResult>,
  expectedRole?: string,
  track?: (transaction: TenantTransaction) => () => void
): Promise<TResult> {
  const canonical = normalizeTenantId(tenantId)
  if (canonical === null) throw new TenantInvalidError()
  const transaction = new TenantTransaction(pool, canonical, setting, expectedRole === undefined ? {} : { expectedRole })
  const untrack = track?.(transaction)
  try {
    const result = await work(createDatabase(transaction) as unknown as TenantDatabase<TSchema>)
    await transaction.commit()
    return result
  } finally {
    // After a commit this is a no-op; after a throw (from the work or from COMMIT) it rolls back.
    await transaction.rollback()
    untrack?.()
  }
}

/**
 * Runs `work` in a transaction scoped to `tenantId` on `pool` (the application role's pool).
 * Commits when `work` resolves, rolls back when it throws; the database handle is closed after.
 */
export async function withTenant<TSchema extends Record<string, unknown> = RegisteredSchema, TResult = unknown> (
  pool: Pool,
  tenantId: string,
  work: TenantWork<TSchema, TResult>,
  options: WithTenantOptions<TSchema> = {}
): Promise<TResult> {
  const setting = validateSetting(options.setting ?? DEFAULT_SETTING)
  return runWithTenant(validatePool(pool), setting, databaseFactoryFor(validateSchema(options.schema)), tenantId, work)
}

// Workers call withTenant in a loop with the same schema object: build its drizzle metadata once.
const factories = new WeakMap<object, DatabaseFactory>()
const schemaless = createDatabaseFactory(undefined)

function databaseFactoryFor (schema: Record<string, unknown> | undefined): DatabaseFactory {
  if (schema === undefined) return schemaless
  let factory = factories.get(schema)
  if (factory === undefined) {
    factory = createDatabaseFactory(schema)
    factories.set(schema, factory)
  }
  return factory
}
