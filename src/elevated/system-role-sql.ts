// The SQL that makes a role a correct system role, the counterpart of tenantTablesSql for the app
// role: the attributes the startup check wants (BYPASSRLS and nothing of a superuser's), and the
// table privileges a batch job needs and no more: SELECT, INSERT, UPDATE on tenant tables, SELECT
// on the schema's other tables, never DELETE or TRUNCATE, no CREATE in the schemas.
import { is } from 'drizzle-orm'
import { PgTable } from 'drizzle-orm/pg-core'
import { failOption } from '../errors.js'
import { isTenantTable, quotedTableName } from '../schema.js'
import { roleName } from './tables.js'

/** Options of `systemRoleSql`. */
export interface SystemRoleSqlOptions {
  /** The system pool's role (created beforehand with LOGIN and a password of its own). */
  role: string
  /** Schemas it uses: USAGE, and CREATE revoked. Default `['public']`. */
  schemas?: readonly string[]
}

/**
 * For every table in `schema` (your drizzle tables module): SELECT, INSERT, UPDATE on tenant tables
 * (declared with `tenantTable`) and SELECT on the others, after revoking what the role held; plus
 * the role's attributes. `ALTER ROLE … BYPASSRLS` needs a superuser (from PostgreSQL 16 also a
 * CREATEROLE role that has BYPASSRLS itself); run that statement as one, the rest as the tables'
 * owner. Statements are separated by drizzle's `--> statement-breakpoint`. The audit trail's and
 * the grants table's privileges come with their own DDL (auditTrailSql, grantsTableSql).
 */
export function systemRoleSql (schema: Record<string, unknown>, options: SystemRoleSqlOptions): string {
  const role = roleName('systemRoleSql', 'role', options.role)
  const schemas = (options.schemas ?? ['public']).map((name) => roleName('systemRoleSql', 'schemas', name))
  const tables = Object.values(schema).filter((value): value is PgTable => is(value, PgTable))
  if (tables.length === 0) failOption('systemRoleSql: the schema has no drizzle table')
  const statements = [
    `ALTER ROLE ${role} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS;`,
    ...schemas.flatMap((name) => [`REVOKE CREATE ON SCHEMA ${name} FROM ${role};`, `GRANT USAGE ON SCHEMA ${name} TO ${role};`]),
    ...tables.flatMap((table) => {
      const name = quotedTableName(table)
      return [
        `REVOKE ALL ON TABLE ${name} FROM ${role};`,
        `GRANT ${isTenantTable(table) ? 'SELECT, INSERT, UPDATE' : 'SELECT'} ON TABLE ${name} TO ${role};`
      ]
    })
  ]
  const header = `-- systemRoleSql (fastify-tenant-rls/elevated): the system role ${options.role}\n`
  return header + statements.join('\n--> statement-breakpoint\n') + '\n'
}
