// Builds the drizzle handle that route code sees as `request.db`. It is drizzle's own transaction
// object (not `drizzle(client)`), so `request.db.transaction()` opens a savepoint instead of sending
// a second BEGIN and a COMMIT that would end the request's transaction and drop the tenant setting.
// Everything that depends only on the schema is computed once per plugin, not once per request.
// A savepoint cannot change the isolation level, access mode or deferrability of the transaction it
// lives in, and drizzle's savepoint drops those options without a word: the handle refuses them.
import { createTableRelationsHelpers, extractTablesRelationalConfig } from 'drizzle-orm'
import type { ExtractTablesWithRelations, TablesRelationalConfig } from 'drizzle-orm'
import { NodePgSession, NodePgTransaction } from 'drizzle-orm/node-postgres'
import type { NodePgClient } from 'drizzle-orm/node-postgres'
import { PgDialect } from 'drizzle-orm/pg-core'
import type { PgTransactionConfig } from 'drizzle-orm/pg-core'
import { TransactionConfigUnsupportedError } from './errors.js'
import type { Queryable } from './tenant-transaction.js'

/**
 * Declaration-merging hook that types `request.db` and `app.withTenant` from your schema, and
 * names the request decorator when the `decorator` option renames it:
 *
 * ```ts
 * declare module 'fastify-tenant-rls' {
 *   interface TenantRlsRegister { schema: typeof schema, decorator: 'tenantDb' }
 * }
 * ```
 */
export interface TenantRlsRegister {}

/** The schema registered through `TenantRlsRegister`, or an empty schema when none is. */
export type RegisteredSchema = TenantRlsRegister extends { schema: infer TSchema extends Record<string, unknown> }
  ? TSchema
  : Record<string, never>

/**
 * The request property holding the tenant database: `request.db`, or the name registered in
 * `TenantRlsRegister`. Under another name `request.db` is left to whichever plugin declares it.
 */
export type TenantRequestDatabase = TenantRlsRegister extends { decorator: infer TName extends string }
  ? { readonly [TKey in TName]: TenantDatabase }
  : {
      /**
       * drizzle database bound to this request's tenant transaction, typed from your registered schema.
       * Throws FST_TENANT_RLS_NO_TENANT_CONTEXT on routes with `config.tenant === false`.
       */
      readonly db: TenantDatabase
    }

/** A drizzle database bound to one tenant transaction; `.transaction()` nests as a savepoint. */
export type TenantDatabase<TSchema extends Record<string, unknown> = RegisteredSchema> =
  NodePgTransaction<TSchema, ExtractTablesWithRelations<TSchema>>

/** Makes a drizzle database for a queryable tenant transaction. */
export type DatabaseFactory = (transaction: Queryable) => TenantDatabase<Record<string, unknown>>

// The options a top-level drizzle transaction turns into `BEGIN ISOLATION LEVEL … READ ONLY DEFERRABLE`.
const TRANSACTION_MODES = ['isolationLevel', 'accessMode', 'deferrable'] as const

/**
 * Throws when `config` asks for a transaction mode. A config without one (`undefined`, `{}`, or the
 * keys set to `undefined`) asks for nothing a savepoint cannot do, so it is accepted.
 */
function refuseTransactionModes (config: PgTransactionConfig | undefined): void {
  if (config === undefined || config === null) return
  const requested = TRANSACTION_MODES.filter((mode) => config[mode] !== undefined)
  if (requested.length > 0) throw new TransactionConfigUnsupportedError(requested.join(', '))
}

/**
 * drizzle's transaction object with one change: `.transaction(work, config)` refuses a config that
 * a savepoint would ignore (drizzle 0.45's NodePgTransaction.transaction takes no config at all), at
 * every depth, before any savepoint is sent.
 */
class TenantPgTransaction<TSchema extends Record<string, unknown>> extends NodePgTransaction<TSchema, TablesRelationalConfig> {
  override async transaction<T> (work: (tx: NodePgTransaction<TSchema, TablesRelationalConfig>) => Promise<T>, config?: PgTransactionConfig): Promise<T> {
    refuseTransactionModes(config)
    // drizzle builds the savepoint's handle as a plain NodePgTransaction (fields only, no config);
    // given this prototype, a transaction nested inside it refuses a config too.
    return super.transaction((savepoint) => work(Object.setPrototypeOf(savepoint, TenantPgTransaction.prototype)))
  }
}

/** Prepares, once, what every per-transaction drizzle database shares. */
export function createDatabaseFactory (schema: Record<string, unknown> | undefined): DatabaseFactory {
  const dialect = new PgDialect()
  let relational: ConstructorParameters<typeof NodePgTransaction>[2]
  if (schema !== undefined) {
    const tables = extractTablesRelationalConfig(schema, createTableRelationsHelpers)
    relational = { fullSchema: schema, schema: tables.tables, tableNamesMap: tables.tableNamesMap }
  }
  return function createTenantDatabase (transaction) {
    // drizzle's session only ever calls `client.query(config, values)`; the transaction provides it.
    const session = new NodePgSession(transaction as unknown as NodePgClient, dialect, relational)
    return new TenantPgTransaction(dialect, session, relational) as TenantDatabase<Record<string, unknown>>
  }
}
