// The DDL that gives the tenants table its status column and lets the application role read the
// status of its transaction's tenant, and nothing else of the table: a hostile route could
// otherwise list every tenant, or see which ones are suspended.
import { DEFAULT_SETTING } from '../options.js'
import { roleName } from '../elevated/tables.js'
import { currentTenantSql } from '../schema.js'
import { signedCurrentTenantSql } from '../signed-context/schema-sql.js'
import type { TenantIdType } from '../tenant-id.js'
import { validateTenantStatus } from './options.js'
import type { TenantStatusOptions } from './options.js'

/** Options of `tenantStatusSql`: the plugin's `tenantStatus` option, plus who reads it and how. */
export interface TenantStatusSqlOptions extends Omit<TenantStatusOptions, 'retryAfter'> {
  /** The application role: it may read the key and status of its transaction's tenant's row only. */
  appRole: string
  /** The tenant setting, as the plugin's option. Default `'app.current_tenant_id'`. */
  setting?: string
  /** Type of the tenants table's key. Default `'uuid'`. */
  tenantIdType?: TenantIdType
  /** Policies read the tenant through `tenant_rls.current_tenant()`, as in signed mode. Default false. */
  signedContext?: boolean
}

/**
 * The DDL, for a migration run by the tenants table's owner: a status column (`'active'` by default,
 * only the three statuses allowed), row-level security enabled (not forced: the owner still manages
 * every tenant), a SELECT policy for `appRole` limited to the current tenant's row, and SELECT on
 * the key and status columns only.
 */
export function tenantStatusSql (options: TenantStatusSqlOptions): string {
  const app = roleName('tenantStatusSql', 'appRole', options.appRole)
  const { table, column, key } = validateTenantStatus({ table: options.table, column: options.column, key: options.key }) as NonNullable<ReturnType<typeof validateTenantStatus>>
  const current = options.signedContext === true
    ? signedCurrentTenantSql(options.tenantIdType)
    : currentTenantSql(options.setting ?? DEFAULT_SETTING, options.tenantIdType)
  return [
    `ALTER TABLE ${table.sql} ADD COLUMN ${column} text NOT NULL DEFAULT 'active' CONSTRAINT ${table.local('status_check')} CHECK (${column} IN ('active', 'suspended', 'moving'));`,
    `ALTER TABLE ${table.sql} ENABLE ROW LEVEL SECURITY;`,
    `CREATE POLICY ${table.local('status_read')} ON ${table.sql} FOR SELECT TO ${app} USING (${key} = ${current});`,
    `GRANT SELECT (${key}, ${column}) ON ${table.sql} TO ${app};`
  ].join('\n')
}
