// The tables a lifecycle job works on, read from the catalog inside the job's own transaction:
// every table with the tenant column (or the ones given), parents first, and a fingerprint of
// their definitions, which an import compares so that rows never land in a differently shaped table.
import { createHash } from 'node:crypto'
import pg from 'pg'
import type { PoolClient } from 'pg'
import { InvalidOptionError } from '../errors.js'
import { describeTable, discoverTenantTables, parentsFirst } from '../tenant-catalog.js'
import type { CatalogTable } from '../tenant-catalog.js'
import type { TenantScope } from './tenant-scope.js'

const UNDEFINED_TABLE = '42P01'
const { escapeIdentifier } = pg

/** Describes `names`, refusing a table that does not exist or has no tenant column. */
export async function describeTenantTables (client: PoolClient, names: readonly string[], tenantColumn: string): Promise<CatalogTable[]> {
  const tables: CatalogTable[] = []
  for (const name of names) {
    const table = await describeTable(client, name).catch((error: { code?: string }) => {
      if (error.code === UNDEFINED_TABLE) throw new InvalidOptionError(`table ${JSON.stringify(name)} does not exist`)
      throw error
    })
    // A table without the column would be copied or emptied whole: never a tenant's rows only.
    if (!table.columns.some((column) => column.name === tenantColumn)) {
      throw new InvalidOptionError(`table ${table.name} has no ${tenantColumn} column, so it holds no tenant's rows`)
    }
    tables.push(table)
  }
  return tables
}

/** The scope's tables (given, or every table of its schema with the tenant column), parents first. */
export async function resolveTenantTables (client: PoolClient, scope: TenantScope): Promise<CatalogTable[]> {
  const names = scope.tables ?? await discoverTenantTables(client, scope.schema, scope.tenantColumn)
  if (names.length === 0) throw new InvalidOptionError(`no table of schema ${scope.schema} has a ${scope.tenantColumn} column`)
  return parentsFirst(await describeTenantTables(client, names, scope.tenantColumn))
}

/** The columns an export holds and an import writes: all but generated ones, which the server computes. */
export function copiedColumns (table: CatalogTable): string[] {
  return table.columns.filter((column) => !column.generated).map((column) => column.name)
}

/**
 * SHA-256 of what an import relies on: each table's name, its columns (name, type, NOT NULL,
 * generated), its primary key and foreign keys. Column order is left out: rows are copied by
 * column name, so a table whose columns were added in another order still takes them.
 */
export function schemaFingerprint (tables: readonly CatalogTable[]): string {
  const shape = [...tables].sort((a, b) => a.name.localeCompare(b.name)).map((table) => ({
    name: table.name,
    columns: table.columns.map((column) => [column.name, column.type, column.notNull, column.generated])
      .sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
    key: table.key,
    foreignKeys: table.foreignKeys.map((key) => `${key.columns.join(',')}>${key.parent}(${key.parentColumns.join(',')})`).sort()
  }))
  return createHash('sha256').update(JSON.stringify(shape)).digest('hex')
}

/** Rows of one table. */
export interface TableRows {
  table: string
  rows: number
}

/**
 * The tenant's rows in each table, in the order given: counted, or deleted (the count is then what
 * was deleted). The tenant column is compared as well as the policy applying, so a privileged role
 * that RLS does not hold still touches this tenant's rows only.
 */
export async function tenantRowCounts (client: PoolClient, tables: readonly CatalogTable[], scope: TenantScope, action: 'count' | 'delete'): Promise<TableRows[]> {
  const counts: TableRows[] = []
  for (const table of tables) {
    const where = `WHERE ${escapeIdentifier(scope.tenantColumn)} = $1`
    if (action === 'delete') {
      const { rowCount } = await client.query(`DELETE FROM ${table.name} ${where}`, [scope.tenantId])
      counts.push({ table: table.name, rows: rowCount ?? 0 })
    } else {
      const { rows: [counted] } = await client.query<{ rows: number }>(`SELECT count(*)::int AS rows FROM ${table.name} ${where}`, [scope.tenantId])
      counts.push({ table: table.name, rows: counted?.rows ?? 0 })
    }
  }
  return counts
}
