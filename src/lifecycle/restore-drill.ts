// The restore drill (`fastify-tenant-rls/testing`): proves, on a real database, that one tenant
// can be restored from its export without touching anyone else. It exports tenant A, erases A,
// recreates A's tenants row, imports the export, and compares A's rows table by table (row counts
// and checksums) with what was exported, while the other tenants' checksums, taken before and
// after, must not move. It erases A for real: run it on a test or staging database.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import type { Pool } from 'pg'
import { InvalidOptionError } from '../errors.js'
import { describeTable } from '../tenant-catalog.js'
import { eraseTenant, inspectTenantErasure } from './erase.js'
import type { ErasureReport } from './erase.js'
import { exportTenant, tenantChecksums } from './export.js'
import type { TenantChecksums } from './export.js'
import { importTenant } from './import.js'
import type { TenantScopeOptions } from './tenant-scope.js'

const { escapeIdentifier } = pg

/** Options of `restoreDrill`. */
export interface RestoreDrillOptions extends Omit<TenantScopeOptions, 'pool'> {
  /** Pool of the application role: exports, imports and checksums run through it, under RLS. */
  appPool: Pool
  /** Pool of a role that may delete and insert the tenants row (the tables' owner, or an admin). */
  adminPool: Pool
  /** Tenants whose rows must stay exactly as they were (at least one). */
  otherTenantIds: readonly string[]
  /** The tenants table. Default: the one table the tenant column references. */
  tenantsTable?: string
  /** Where the drill makes its folder for the export file (removed when the drill passes). Default: the system's temporary folder. */
  directory?: string
}

/** One table of the drilled tenant: exported and restored, as row counts and checksums. */
export interface DrilledTable {
  table: string
  exportedRows: number
  restoredRows: number
  exported: string
  restored: string
}

/** One table of another tenant: before and after the drill. */
export interface WitnessTable {
  tenantId: string
  table: string
  before: string
  after: string
}

/** What `restoreDrill` found. `ok` only when every table came back and no other tenant's row moved. */
export interface RestoreDrillReport {
  ok: boolean
  /** Each thing that went wrong, in words. */
  failures: string[]
  tenantId: string
  tables: DrilledTable[]
  others: WitnessTable[]
  /** The erasure's report (rows deleted per table), when the drill got that far. */
  erased?: ErasureReport
  /** The export file, kept when the drill failed (it holds the tenant's rows). */
  exportFile?: string
}

function compare (before: TenantChecksums, after: TenantChecksums): WitnessTable[] {
  return before.tables.map((table) => {
    const later = after.tables.find((candidate) => candidate.name === table.name)
    return { tenantId: before.tenantId, table: table.name, before: table.sha256, after: later?.sha256 ?? 'missing' }
  })
}

/**
 * Exports, erases and re-imports `tenantId`, and reports whether its rows came back byte for byte
 * while the rows of `otherTenantIds` stayed untouched. Failures are reported, not thrown: check `ok`.
 */
export async function restoreDrill (options: RestoreDrillOptions): Promise<RestoreDrillReport> {
  const { appPool, adminPool, otherTenantIds, directory, ...scope } = options
  if (!Array.isArray(otherTenantIds) || otherTenantIds.length === 0) {
    // Checked before anything is erased: without a witness the drill could not show it touched nothing else.
    throw new InvalidOptionError('restoreDrill needs otherTenantIds: at least one other tenant, whose rows must stay untouched')
  }
  // A folder of its own for each run: a failed drill's file is kept, and must not block the next run.
  const folder = await mkdtemp(join(directory ?? tmpdir(), 'tenant-restore-drill-'))
  const exportFile = join(folder, `tenant-${scope.tenantId}.export`)
  const report: RestoreDrillReport = { ok: false, failures: [], tenantId: scope.tenantId, tables: [], others: [] }
  const fail = (failure: string): void => { report.failures.push(failure) }
  try {
    const before = await Promise.all(otherTenantIds.map((tenantId) => tenantChecksums({ ...scope, pool: appPool, tenantId })))
    const manifest = await exportTenant({ ...scope, pool: appPool, out: exportFile })
    const tenantsRow = await copyTenantsRow(adminPool, scope)

    report.erased = await eraseTenant({ ...scope, pool: adminPool, confirm: scope.tenantId })
    const gone = await tenantChecksums({ ...scope, pool: appPool })
    for (const table of gone.tables) if (table.rows > 0) fail(`${table.name}: ${table.rows} row(s) of the tenant were left after the erasure`)

    await tenantsRow.restore()
    await importTenant({
      pool: appPool,
      from: exportFile,
      tenantId: scope.tenantId,
      ...(scope.setting === undefined ? {} : { setting: scope.setting }),
      ...(scope.signedContext === undefined ? {} : { signedContext: scope.signedContext }),
      ...(scope.openWith === undefined ? {} : { openWith: scope.openWith })
    })

    const restored = await tenantChecksums({ ...scope, pool: appPool })
    report.tables = manifest.tables.map((table) => {
      const back = restored.tables.find((candidate) => candidate.name === table.name)
      return { table: table.name, exportedRows: table.rows, restoredRows: back?.rows ?? 0, exported: table.sha256, restored: back?.sha256 ?? 'missing' }
    })
    for (const table of report.tables) {
      if (table.exported !== table.restored) fail(`${table.table}: the restored rows differ from the exported ones (${table.restoredRows} row(s) back of ${table.exportedRows})`)
    }
    const after = await Promise.all(otherTenantIds.map((tenantId) => tenantChecksums({ ...scope, pool: appPool, tenantId })))
    report.others = before.flatMap((checksums, index) => compare(checksums, after[index] as TenantChecksums))
    for (const witness of report.others) {
      if (witness.before !== witness.after) fail(`${witness.table}: the rows of tenant ${witness.tenantId} changed during the drill`)
    }
  } catch (error) {
    fail(`the drill stopped: ${(error as Error).message}`)
  }
  report.ok = report.failures.length === 0
  if (report.ok) {
    await rm(folder, { recursive: true, force: true })
  } else {
    report.exportFile = exportFile
  }
  return report
}

/** Keeps the tenant's row of the tenants table (as JSON) so it can be put back after the erasure. */
async function copyTenantsRow (adminPool: Pool, options: Omit<RestoreDrillOptions, 'appPool' | 'adminPool' | 'otherTenantIds' | 'directory'>): Promise<{ restore(): Promise<void> }> {
  const { tenantsTable } = await inspectTenantErasure({ ...options, pool: adminPool })
  if (tenantsTable === null) return { async restore () {} }
  const { key: [key] } = await describeTable(adminPool, tenantsTable)
  const { rows: [saved] } = await adminPool.query<{ row: unknown }>(`SELECT pg_catalog.to_jsonb(t) AS row FROM ${tenantsTable} AS t WHERE ${escapeIdentifier(key ?? 'id')} = $1`, [options.tenantId])
  return {
    async restore () {
      if (saved === undefined) return
      await adminPool.query(`INSERT INTO ${tenantsTable} SELECT * FROM pg_catalog.jsonb_populate_record(NULL::${tenantsTable}, $1)`, [saved.row])
    }
  }
}
