// Erasing one tenant, the way destructive operations are done here: first a dry run that counts,
// table by table, exactly what would go (`inspectTenantErasure`); then, only with the tenant id
// retyped as confirmation, one transaction (`eraseTenant`) that locks the tenants row (so no new row
// of the tenant can be inserted meanwhile: the foreign-key check would wait on that lock), deletes
// the tenant's rows children first, deletes the tenants row (whose ON DELETE CASCADE would catch
// anything missed), counts again, and rolls everything back unless nothing of the tenant is left.
//
// The pool is a role that may delete the tenants row (the tables' owner or an admin), not the
// application role. The transaction still carries the tenant's setting and every statement names
// the tenant, so a role held by FORCE'd RLS, and a superuser that is not, reach the same rows.
import pg from 'pg'
import type { PoolClient } from 'pg'
import { ErasureIncompleteError, ErasureNotConfirmedError, InvalidOptionError } from '../errors.js'
import { describeTable } from '../tenant-catalog.js'
import type { CatalogTable } from '../tenant-catalog.js'
import { normalizeTenantId } from '../tenant-id.js'
import type { LifecycleAuditHook } from './audit-hook.js'
import { inTenantSession } from './tenant-session.js'
import { tenantScope } from './tenant-scope.js'
import type { TenantScope, TenantScopeOptions } from './tenant-scope.js'
import { resolveTenantTables, tenantRowCounts } from './tenant-tables.js'
import type { TableRows } from './tenant-tables.js'

const { escapeIdentifier } = pg

/** Options of `inspectTenantErasure`: the scope, and where the tenant's own row is. */
export interface ErasureOptions extends TenantScopeOptions {
  /** The tenants table, whose row for the tenant is deleted last. Default: the one table every tenant column references. */
  tenantsTable?: string
}

/** Options of `eraseTenant`. */
export interface EraseTenantOptions extends ErasureOptions {
  /** The tenant id, retyped: nothing is erased without it. */
  confirm: string
  /** The audit trail's hook, run before COMMIT on the erasure's connection (see audit-hook.ts). */
  onAudit?: LifecycleAuditHook
}

/** What an erasure removes (dry run) or removed. */
export interface ErasureReport {
  tenantId: string
  /** True for `inspectTenantErasure`: nothing was deleted. */
  dryRun: boolean
  /** The tenant's rows per table, parents first. */
  tables: TableRows[]
  /** The tenants table, or null when the tenant column references none. */
  tenantsTable: string | null
  /** Whether the tenants table has (had) the tenant's row. */
  tenantRow: boolean
  /** Rows of the tenant tables, the tenants row not included. */
  total: number
}

interface TenantsTable { name: string, key: string }

/** The table the tenant column references: given, or found from the tenant tables' foreign keys. */
async function tenantsTableOf (client: PoolClient, tables: CatalogTable[], scope: TenantScope, given: string | undefined): Promise<TenantsTable | null> {
  if (given !== undefined) {
    const table = await describeTable(client, given)
    if (table.key.length !== 1) throw new InvalidOptionError(`tenantsTable ${table.name} must have a one-column primary key (the tenant id)`)
    return { name: table.name, key: table.key[0] as string }
  }
  const inSet = new Set(tables.map((table) => table.name))
  const parents = new Map<string, string>()
  for (const key of tables.flatMap((table) => table.foreignKeys)) {
    if (key.columns.length === 1 && key.columns[0] === scope.tenantColumn && !inSet.has(key.parent)) parents.set(key.parent, key.parentColumns[0] as string)
  }
  if (parents.size > 1) throw new InvalidOptionError(`the tenant column references ${[...parents.keys()].join(' and ')}: give tenantsTable`)
  const [found] = parents
  return found === undefined ? null : { name: found[0], key: found[1] }
}

async function tenantRowExists (client: PoolClient, tenants: TenantsTable | null, tenantId: string, lock: boolean): Promise<boolean> {
  if (tenants === null) return false
  // FOR UPDATE conflicts with the KEY SHARE lock every foreign-key check takes on the parent row.
  const { rowCount } = await client.query(`SELECT 1 FROM ${tenants.name} WHERE ${escapeIdentifier(tenants.key)} = $1${lock ? ' FOR UPDATE' : ''}`, [tenantId])
  return (rowCount ?? 0) > 0
}

async function erasure (options: ErasureOptions, confirmed: EraseTenantOptions | undefined): Promise<ErasureReport> {
  const scope = tenantScope(options)
  const erase = confirmed !== undefined
  return inTenantSession(scope.pool, { ...scope, isolation: 'read committed', readOnly: !erase, rollback: !erase }, async (client) => {
    const tables = await resolveTenantTables(client, scope)
    const tenants = await tenantsTableOf(client, tables, scope, options.tenantsTable)
    const tenantRow = await tenantRowExists(client, tenants, scope.tenantId, erase)
    const counts = (await tenantRowCounts(client, [...tables].reverse(), scope, erase ? 'delete' : 'count')).reverse()
    const report: ErasureReport = {
      tenantId: scope.tenantId,
      dryRun: !erase,
      tables: counts,
      tenantsTable: tenants?.name ?? null,
      tenantRow,
      total: counts.reduce((sum, { rows }) => sum + rows, 0)
    }
    if (!erase) return report
    if (tenants !== null) await client.query(`DELETE FROM ${tenants.name} WHERE ${escapeIdentifier(tenants.key)} = $1`, [scope.tenantId])
    const left = (await tenantRowCounts(client, tables, scope, 'count')).filter(({ rows }) => rows > 0)
    if (await tenantRowExists(client, tenants, scope.tenantId, false)) left.push({ table: tenants?.name ?? '', rows: 1 })
    if (left.length > 0) throw new ErasureIncompleteError(left.map(({ table, rows }) => `${table}: ${rows}`).join(', '))
    await confirmed.onAudit?.({ action: 'erase', tenantId: scope.tenantId, tables: counts, client })
    return report
  })
}

/** The dry run: what `eraseTenant` would delete, counted per table in a read-only transaction. */
export async function inspectTenantErasure (options: ErasureOptions): Promise<ErasureReport> {
  return erasure(options, undefined)
}

/**
 * Deletes every row of the tenant and its tenants row in one transaction, after checking that
 * `confirm` is the tenant id retyped (FST_TENANT_RLS_ERASURE_NOT_CONFIRMED otherwise), and verifies
 * that nothing of the tenant is left (FST_TENANT_RLS_ERASURE_INCOMPLETE, rolled back, otherwise).
 * Erasing a tenant that has nothing left succeeds and reports zeros, so a retry is safe.
 */
export async function eraseTenant (options: EraseTenantOptions): Promise<ErasureReport> {
  const { tenantId } = tenantScope(options)
  if (typeof options.confirm !== 'string' || normalizeTenantId(options.confirm, options.tenantIdType) !== tenantId) throw new ErasureNotConfirmedError()
  return erasure(options, options)
}
