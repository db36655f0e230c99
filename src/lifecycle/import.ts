// Writing one tenant's export back, into the same or another database with the same tables. The
// file is read twice: first to check it against its own manifest (structure, row counts,
// checksums) before anything is sent; then, inside one transaction under the tenant's setting, to
// insert its rows parents first, checked once more at the end so a file changed in between is
// rolled back. Rows go in as the application role, so the policies' WITH CHECK refuses any row of
// another tenant a tampered file carries.
//
// COPY FROM cannot be used: PostgreSQL refuses it on a table whose row-level security applies to
// the role ("COPY FROM not supported with row-level security"), and the application role may not
// create the temporary table a staging copy would need. Rows are therefore sent in batches of
// INSERT ... SELECT FROM unnest($1::text[], …), one text array per column, each value cast to its
// column's type from the text COPY wrote: the same input functions COPY FROM would use.
import pg from 'pg'
import type { PoolClient } from 'pg'
import { ImportRefusedError, InvalidOptionError, SchemaMismatchError, TenantNotEmptyError } from '../errors.js'
import { normalizeTenantId } from '../tenant-id.js'
import type { CatalogTable } from '../tenant-catalog.js'
import { checkedPool } from '../with-tenant.js'
import type { LifecycleAuditHook } from './audit-hook.js'
import { CopyTextError, decodeRow } from './copy-text.js'
import { readExportFile } from './export-file.js'
import type { ExportManifest, ExportSection } from './export-file.js'
import { inTenantSession } from './tenant-session.js'
import { tenantScope } from './tenant-scope.js'
import type { LifecycleProgressHandler, TenantScopeOptions } from './tenant-scope.js'
import { describeTenantTables, schemaFingerprint, tenantRowCounts } from './tenant-tables.js'
import type { TableRows } from './tenant-tables.js'

const { escapeIdentifier } = pg

/** Options of `importTenant`. */
export interface ImportTenantOptions extends Pick<TenantScopeOptions, 'pool' | 'setting' | 'signedContext' | 'openWith'> {
  /** Path of a file written by `exportTenant`. */
  from: string
  /** The tenant the caller expects the file to hold; refused when the file holds another. Default: the manifest's. */
  tenantId?: string
  /** Delete the tenant's existing rows in the file's tables first, in the same transaction. Default false: refuse. */
  replace?: boolean
  /** Called as rows are inserted (several times per table); awaited. */
  onProgress?: LifecycleProgressHandler
  /** The audit trail's hook, run before COMMIT on the import's connection (see audit-hook.ts). */
  onAudit?: LifecycleAuditHook
}

/** What an import did. */
export interface ImportResult {
  tenantId: string
  /** Rows inserted per table, parents first. */
  tables: TableRows[]
  /** Rows deleted first (`replace`), children first; empty without `replace`. */
  replaced: TableRows[]
  manifest: ExportManifest
}

// A batch is sent when it reaches either bound: few round trips, and memory bounded by the batch.
const BATCH_ROWS = 5000
const BATCH_BYTES = 4 << 20

function insertSql (table: CatalogTable, columns: string[]): string {
  const aliases = columns.map((_, index) => `c${index}`)
  // The cast is to the type without its modifier (varchar, not varchar(20)): the column's own
  // length and precision checks then apply on assignment instead of a silent truncation by the cast.
  const values = columns.map((name, index) => `${aliases[index] as string}::${table.columns.find((column) => column.name === name)?.baseType ?? 'text'}`)
  // OVERRIDING SYSTEM VALUE: an identity column GENERATED ALWAYS takes the exported value, so
  // references to the row stay valid; it changes nothing on tables without one.
  return `INSERT INTO ${table.name} (${columns.map(escapeIdentifier).join(', ')}) OVERRIDING SYSTEM VALUE ` +
    `SELECT ${values.join(', ')} FROM unnest(${columns.map((_, index) => `$${index + 1}::text[]`).join(', ')}) AS u(${aliases.join(', ')})`
}

/** Collects one table's rows and inserts them in batches. */
class TableWriter {
  readonly #client: PoolClient
  readonly #sql: string
  readonly #columns: number
  /** One array per column: the batch in the shape unnest takes it. */
  #batch: Array<Array<string | null>>
  #batchRows = 0
  #batchBytes = 0
  rows = 0

  constructor (client: PoolClient, table: CatalogTable, columns: string[]) {
    this.#client = client
    this.#sql = insertSql(table, columns)
    this.#columns = columns.length
    this.#batch = columns.map(() => [])
  }

  async add (lines: Buffer[]): Promise<void> {
    for (const line of lines) {
      decodeRow(line, this.#columns).forEach((value, index) => this.#batch[index]?.push(value))
      this.#batchRows++
      this.#batchBytes += line.length
      if (this.#batchRows >= BATCH_ROWS || this.#batchBytes >= BATCH_BYTES) await this.flush()
    }
  }

  async flush (): Promise<void> {
    if (this.#batchRows === 0) return
    const batch = this.#batch
    this.#batch = batch.map(() => [])
    this.rows += this.#batchRows
    this.#batchRows = 0
    this.#batchBytes = 0
    await this.#client.query(this.#sql, batch)
  }
}

// What a refused row means, in words for whoever runs the import (the SQLSTATE stays in `cause`).
function refusal (error: unknown, table: string, tenantId: string): Error {
  if (error instanceof CopyTextError) return new ImportRefusedError(`${table}: ${error.message}`, { cause: error })
  const { code, message } = error as { code?: unknown, message?: string }
  if (code === '42501' && message?.includes('row-level security') === true) {
    return new ImportRefusedError(`${table}: a row is not of tenant ${tenantId}, and the row-level security policy refused it`, { cause: error })
  }
  if (code === '23503') {
    return new ImportRefusedError(`${table}: ${message ?? 'a foreign key refused a row'} (does the tenants table have the tenant's row? create it before importing)`, { cause: error })
  }
  if (typeof code === 'string' && (code.startsWith('22') || code.startsWith('23'))) return new ImportRefusedError(`${table}: ${message ?? code}`, { cause: error })
  return error as Error
}

/** Checks that the target's tables are the export's: every table there, with the same definitions. */
async function targetTables (client: PoolClient, manifest: ExportManifest): Promise<CatalogTable[]> {
  const tables = await describeTenantTables(client, manifest.tables.map((table) => table.name), manifest.tenantColumn).catch((error: Error) => {
    if (error instanceof InvalidOptionError) throw new SchemaMismatchError(error.message.replace(/^Invalid fastify-tenant-rls option: /, ''))
    throw error
  })
  const fingerprint = schemaFingerprint(tables)
  if (fingerprint !== manifest.schemaFingerprint) {
    throw new SchemaMismatchError(`the definitions of ${manifest.tables.map((table) => table.name).join(', ')} differ from the exported ones (schema fingerprint ${fingerprint.slice(0, 12)}… here, ${manifest.schemaFingerprint.slice(0, 12)}… in the file)`)
  }
  return tables
}

/**
 * Imports a file written by `exportTenant` through `pool` (the application role's), in one
 * transaction under the tenant's setting, parents first. Refuses, with nothing written: a file that
 * does not match its manifest (FST_TENANT_RLS_EXPORT_INVALID), tables that differ from the export's
 * (FST_TENANT_RLS_SCHEMA_MISMATCH), a tenant that already has rows here unless `replace`
 * (FST_TENANT_RLS_TENANT_NOT_EMPTY), and any row the database refuses, a row of another tenant
 * above all (FST_TENANT_RLS_IMPORT_REFUSED). The tenants table's row must exist first.
 */
export async function importTenant (options: ImportTenantOptions): Promise<ImportResult> {
  const { from, replace = false, onProgress, onAudit } = options
  if (typeof from !== 'string' || from === '') throw new InvalidOptionError('from must be the path of an export file')
  const manifest = await readExportFile(from)
  if (options.tenantId !== undefined && normalizeTenantId(options.tenantId, manifest.tenantIdType) !== manifest.tenantId) {
    throw new InvalidOptionError(`the export holds tenant ${manifest.tenantId}, not ${JSON.stringify(options.tenantId)}`)
  }
  const scope = tenantScope({
    pool: options.pool,
    tenantId: manifest.tenantId,
    tenantIdType: manifest.tenantIdType,
    tenantColumn: manifest.tenantColumn,
    setting: options.setting ?? manifest.setting,
    ...(options.signedContext === undefined ? {} : { signedContext: options.signedContext }),
    ...(options.openWith === undefined ? {} : { openWith: options.openWith })
  })
  const role = await checkedPool(scope.pool, scope.setting, scope.signed)
  return inTenantSession(scope.pool, { ...scope, isolation: 'read committed', readOnly: false, expectedRole: role }, async (client) => {
    const tables = await targetTables(client, manifest)
    const existing = (await tenantRowCounts(client, tables, scope, 'count')).filter(({ rows }) => rows > 0)
    if (existing.length > 0 && !replace) throw new TenantNotEmptyError(existing.map(({ table, rows }) => `${table}: ${rows}`).join(', '))
    const replaced = replace ? await tenantRowCounts(client, [...tables].reverse(), scope, 'delete') : []

    const written: TableRows[] = []
    let writer: TableWriter | undefined
    let section: ExportSection | undefined
    const report = async (): Promise<void> => { if (section !== undefined && writer !== undefined) await onProgress?.({ table: section.name, tablesDone: section.index, tables: tables.length, rows: writer.rows }) }
    try {
      const reread = await readExportFile(from, {
        async table (next) {
          const listed = manifest.tables[next.index]
          // The file changed since it was checked: stop before writing into a table nobody checked.
          if (listed?.name !== next.name || listed.columns.join('\t') !== next.columns.join('\t')) throw new ImportRefusedError('the file changed while it was being imported')
          section = next
          writer = new TableWriter(client, tables[next.index] as CatalogTable, next.columns)
          await report()
        },
        async rows (lines) {
          await writer?.add(lines)
          await report()
        },
        async endTable (done) {
          await writer?.flush()
          await report()
          written.push({ table: done.name, rows: writer?.rows ?? 0 })
        }
      })
      if (JSON.stringify(reread) !== JSON.stringify(manifest)) throw new ImportRefusedError('the file changed while it was being imported')
    } catch (error) {
      throw refusal(error, section?.name ?? from, scope.tenantId)
    }
    await onAudit?.({ action: 'import', tenantId: scope.tenantId, tables: written, replaced, client })
    return { tenantId: scope.tenantId, tables: written, replaced, manifest }
  })
}
