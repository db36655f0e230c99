// Where the elevated-access tables live, and how their names reach SQL. Names come from options,
// never from requests; they are checked against plain lower-case identifiers and then quoted, so
// they can be written into statements (DDL cannot take a bound parameter). Every name is
// schema-qualified, so a search_path set by a role, a database or a session cannot point the
// plugin's statements at another table of the same name.
import { failOption } from '../errors.js'

/** Where the grants and the audit trail are, as `schema.table`. */
export interface ElevatedTables {
  /** The grants table. Default `'public.tenant_rls_grants'`. */
  grantsTable?: string
  /** The audit trail. Default `'public.tenant_rls_audit'`. */
  auditTable?: string
}

export const DEFAULT_GRANTS_TABLE = 'public.tenant_rls_grants'
export const DEFAULT_AUDIT_TABLE = 'public.tenant_rls_audit'

// 63 is PostgreSQL's identifier limit; the helpers derive names of their own (`_chain`, `_seq`) from it.
const QUALIFIED_NAME = /^[a-z_][a-z0-9_]{0,47}\.[a-z_][a-z0-9_]{0,47}$/
const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/

/** A checked `schema.table` name: its quoted forms, and names derived from it in the same schema. */
export interface TableName {
  /** `"schema"."table"`. */
  readonly sql: string
  /** As given, for messages. */
  readonly text: string
  /** `"schema"."table_<suffix>"`: the table's sequence, functions and triggers. */
  derived (suffix: string): string
  /** `"table_<suffix>"`, unqualified: trigger, policy and constraint names. */
  local (suffix: string): string
}

/** Checks an option naming a table, falling back to `fallback`. */
export function tableName (option: string, value: unknown, fallback: string): TableName {
  const given = value ?? fallback
  if (typeof given !== 'string' || !QUALIFIED_NAME.test(given)) {
    failOption(`${option} must be a schema-qualified lower-case table name such as '${fallback}', got ${JSON.stringify(given)}`)
  }
  const [schema, table] = given.split('.') as [string, string]
  return {
    sql: `"${schema}"."${table}"`,
    text: given,
    derived: (suffix) => `"${schema}"."${table}_${suffix}"`,
    local: (suffix) => `"${table}_${suffix}"`
  }
}

/** The two tables of `options`, checked. */
export function elevatedTables (options: ElevatedTables | undefined): { grants: TableName, audit: TableName } {
  return {
    grants: tableName('grantsTable', options?.grantsTable, DEFAULT_GRANTS_TABLE),
    audit: tableName('auditTable', options?.auditTable, DEFAULT_AUDIT_TABLE)
  }
}

/** Checks a role name given to a DDL helper and returns it quoted. */
export function roleName (helper: string, option: string, value: unknown): string {
  if (typeof value !== 'string' || !ROLE_NAME.test(value)) {
    failOption(`${helper}: ${option} must be a plain lower-case name, got ${JSON.stringify(value)}`)
  }
  return `"${value}"`
}
