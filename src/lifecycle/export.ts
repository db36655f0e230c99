// Reading one tenant out: every row of every tenant table, parents first, streamed with COPY from
// one REPEATABLE READ, READ ONLY snapshot, through the application role under the tenant's setting.
// RLS itself keeps other tenants' rows out (a WHERE on the tenant column is added too, so the
// primary-key index is used). `exportTenant` writes the rows to a file with their manifest;
// `tenantChecksums` reads the same bytes and keeps only their counts and checksums, to compare a
// tenant before and after a restore or a move.
import { createHash } from 'node:crypto'
import pg from 'pg'
import type { PoolClient } from 'pg'
import copyStreams from 'pg-copy-streams'
import { checkedPool } from '../with-tenant.js'
import type { CatalogTable } from '../tenant-catalog.js'
import { countRows } from './copy-text.js'
import { EXPORT_FILE_HEADER, ExportFileWriter } from './export-file.js'
import type { ExportedTable, ExportManifest } from './export-file.js'
import { abandonedMidCopy, inTenantSession } from './tenant-session.js'
import { tenantScope } from './tenant-scope.js'
import type { LifecycleProgressHandler, TenantScope, TenantScopeOptions } from './tenant-scope.js'
import { copiedColumns, resolveTenantTables, schemaFingerprint } from './tenant-tables.js'

const { escapeIdentifier, escapeLiteral } = pg

/** Options of `exportTenant`: the scope (`pool` is the application role's), the file, progress. */
export interface ExportTenantOptions extends TenantScopeOptions {
  /** Path of the export file to create; an existing file is never overwritten. */
  out: string
  /** Called as rows stream (several times per table); awaited. */
  onProgress?: LifecycleProgressHandler
}

/** A tenant's rows summarised: per table, the row count and the SHA-256 of the rows as an export holds them. */
export interface TenantChecksums {
  tenantId: string
  schemaFingerprint: string
  tables: ExportedTable[]
}

// COPY takes no bound parameters, so the tenant is written as a literal: it is canonical (checked
// by tenantScope) and quoted by pg's escapeLiteral. The primary key orders the rows, so the same
// rows always make the same bytes; a table without one is ordered by its whole row's text.
function copySql (table: CatalogTable, columns: string[], scope: TenantScope): string {
  const order = table.key.length > 0 ? table.key.map(escapeIdentifier).join(', ') : 'ROW(exported.*)::text'
  return `COPY (SELECT ${columns.map(escapeIdentifier).join(', ')} FROM ${table.name} AS exported ` +
    `WHERE exported.${escapeIdentifier(scope.tenantColumn)} = ${escapeLiteral(scope.tenantId)} ORDER BY ${order}) TO STDOUT`
}

async function copyTable (client: PoolClient, sql: string, write: ((chunk: Buffer) => Promise<void>) | undefined, onRows: (rows: number) => Promise<void>): Promise<{ rows: number, sha256: string }> {
  const hash = createHash('sha256')
  let rows = 0
  for await (const chunk of client.query(copyStreams.to(sql)) as AsyncIterable<Buffer>) {
    hash.update(chunk)
    rows += countRows(chunk)
    try {
      await write?.(chunk)
      await onRows(rows)
    } catch (error) {
      abandonedMidCopy(client)
      throw error
    }
  }
  return { rows, sha256: hash.digest('hex') }
}

interface Snapshot {
  createdAt: string
  serverVersion: string
  schemaFingerprint: string
  tables: ExportedTable[]
}

/** Reads every table of the tenant in one snapshot; `file`, when given, receives the export's sections. */
async function readTenant (scope: TenantScope, file: ExportFileWriter | undefined, onProgress?: LifecycleProgressHandler): Promise<Snapshot> {
  // The application role's check, as withTenant does: under a superuser or a BYPASSRLS role the
  // tenant setting would filter nothing, and the file's isolation would rest on the WHERE alone. In
  // signed mode the signed-context check too: a key the database does not hold would export nothing.
  const role = await checkedPool(scope.pool, scope.setting, scope.signed)
  return inTenantSession(scope.pool, { ...scope, isolation: 'repeatable read', readOnly: true, expectedRole: role }, async (client) => {
    const tables = await resolveTenantTables(client, scope)
    const { rows: [facts] } = await client.query<{ createdAt: string, serverVersion: string }>(
      'SELECT pg_catalog.to_json(now()) #>> \'{}\' AS "createdAt", pg_catalog.current_setting(\'server_version\') AS "serverVersion"'
    )
    await file?.line(EXPORT_FILE_HEADER)
    const exported: ExportedTable[] = []
    for (const [index, table] of tables.entries()) {
      const columns = copiedColumns(table)
      await file?.table(table.name, columns)
      const report = async (rows: number): Promise<void> => { await onProgress?.({ table: table.name, tablesDone: index, tables: tables.length, rows }) }
      await report(0)
      const { rows, sha256 } = await copyTable(client, copySql(table, columns, scope), file === undefined ? undefined : (chunk) => file.write(chunk), report)
      await file?.endTable()
      exported.push({ name: table.name, columns, rows, sha256 })
    }
    return { createdAt: facts?.createdAt ?? '', serverVersion: facts?.serverVersion ?? '', schemaFingerprint: schemaFingerprint(tables), tables: exported }
  })
}

/**
 * Writes every row of one tenant to `out`, with a manifest (tables, row counts, checksums, schema
 * fingerprint, server version, snapshot time), and returns the manifest. `pool` must be the
 * application role's: it is checked as withTenant checks it. On failure the file is removed.
 */
export async function exportTenant (options: ExportTenantOptions): Promise<ExportManifest> {
  const scope = tenantScope(options)
  const file = await ExportFileWriter.create(options.out)
  try {
    const snapshot = await readTenant(scope, file, options.onProgress)
    const manifest: ExportManifest = {
      format: 'fastify-tenant-rls export',
      version: 1,
      tenantId: scope.tenantId,
      tenantIdType: scope.tenantIdType,
      tenantColumn: scope.tenantColumn,
      setting: scope.setting,
      ...snapshot
    }
    await file.finish(manifest)
    return manifest
  } catch (error) {
    await file.discard()
    throw error
  }
}

/** Row counts and checksums of one tenant's rows, read as `exportTenant` reads them, without writing a file. */
export async function tenantChecksums (options: TenantScopeOptions): Promise<TenantChecksums> {
  const scope = tenantScope(options)
  const { schemaFingerprint, tables } = await readTenant(scope, undefined)
  return { tenantId: scope.tenantId, schemaFingerprint, tables }
}
