// Builds the drizzle handle that route code sees as `request.db`. It is drizzle's own transaction
// object (not `drizzle(client)`), so `request.db.transaction()` opens a savepoint instead of sending
// a second BEGIN and a COMMIT that would end the request's transaction and drop the tenant setting.
// Everything that depends only on the schema is computed once per plugin, not once per request.
import { createTableRelationsHelpers, extractTablesRelationalConfig } from 'drizzle-orm'
import type { ExtractTablesWithRelations } from 'drizzle-orm'
import { NodePgSession, NodePgTransaction } from 'drizzle-orm/node-postgres'
import type { NodePgClient } from 'drizzle-orm/node-postgres'
import { PgDialect } from 'drizzle-orm/pg-core'
import type { Queryable } from './tenant-transaction.js'

/**
 * Declaration-merging hook that types `request.db` and `app.withTenant` from your schema:
 *
 * ```ts
 * declare module 'fastify-tenant-rls' {
 *   interface TenantRlsRegister { schema: typeof schema }
 * }
 * ```
 */
export interface TenantRlsRegister {}

/** The schema registered through `TenantRlsRegister`, or an empty schema when none is. */
export type RegisteredSchema = TenantRlsRegister extends { schema: infer TSchema extends Record<string, unknown> }
  ? TSchema
  : Record<string, never>

/** A drizzle database bound to one tenant transaction; `.transaction()` nests as a savepoint. */
export type TenantDatabase<TSchema extends Record<string, unknown> = RegisteredSchema> =
  NodePgTransaction<TSchema, ExtractTablesWithRelations<TSchema>>

/** Makes a drizzle database for a queryable tenant transaction. */
export type DatabaseFactory = (transaction: Queryable) => TenantDatabase<Record<string, unknown>>

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
    return new NodePgTransaction(dialect, session, relational) as TenantDatabase<Record<string, unknown>>
  }
}
