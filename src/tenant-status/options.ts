// The tenantStatus option: where a tenant's status (active / suspended / moving) is read from, and
// how long a client is told to wait while its tenant moves. Checked once, at register time; the
// names are written into the status statement (tenant-status/check.ts) only after that check.
import { failOption } from '../errors.js'
import { tableName } from '../elevated/tables.js'
import type { TableName } from '../elevated/tables.js'

/** Where the plugin reads each tenant's status from (see README "Erasing and suspending"). */
export interface TenantStatusOptions {
  /** The tenants table, schema-qualified, e.g. `'public.tenants'`. */
  table: string
  /** Its status column: `'active'`, `'suspended'` or `'moving'`. Default `'status'`. */
  column?: string
  /** Its key column, compared with the tenant id. Default `'id'`. */
  key?: string
  /** Seconds a client is told to wait (Retry-After) while its tenant is moving. Default 5. */
  retryAfter?: number
}

/** The option once checked: quoted names, ready to be written into SQL. */
export interface ResolvedTenantStatus {
  table: TableName
  /** `"column"`. */
  column: string
  /** `"key"`. */
  key: string
  retryAfter: number
}

const COLUMN_NAME = /^[a-z_][a-z0-9_]{0,62}$/
const KNOWN = new Set(['table', 'column', 'key', 'retryAfter'])
/** A day: a longer Retry-After is a typo, not a move. */
const MAX_RETRY_AFTER = 86400

function columnName (option: string, value: unknown, fallback: string): string {
  const given = value ?? fallback
  if (typeof given !== 'string' || !COLUMN_NAME.test(given)) failOption(`tenantStatus.${option} must be a plain lower-case column name such as '${fallback}', got ${JSON.stringify(given)}`)
  return `"${given}"`
}

/** Checks the `tenantStatus` option; undefined leaves the status unchecked. */
export function validateTenantStatus (value: unknown): ResolvedTenantStatus | undefined {
  if (value === undefined) return undefined
  if (value === null || typeof value !== 'object' || Array.isArray(value)) failOption('tenantStatus must be an object such as { table: \'public.tenants\', column: \'status\' }')
  const given = value as Record<string, unknown>
  for (const name of Object.keys(given)) {
    if (!KNOWN.has(name)) failOption(`tenantStatus has no option ${JSON.stringify(name)} (known: ${[...KNOWN].join(', ')})`)
  }
  if (given.table === undefined) failOption('tenantStatus.table is required: the schema-qualified tenants table, e.g. \'public.tenants\'')
  const retryAfter = given.retryAfter ?? 5
  if (typeof retryAfter !== 'number' || !Number.isInteger(retryAfter) || retryAfter < 1 || retryAfter > MAX_RETRY_AFTER) {
    failOption(`tenantStatus.retryAfter must be a whole number of seconds from 1 to ${MAX_RETRY_AFTER}, got ${JSON.stringify(retryAfter)}`)
  }
  return {
    table: tableName('tenantStatus.table', given.table, 'public.tenants'),
    column: columnName('column', given.column, 'status'),
    key: columnName('key', given.key, 'id'),
    retryAfter
  }
}
