// What the catalog says about tenant tables: which tables carry the tenant column, their columns,
// keys and foreign keys, and the order that puts every parent before its children. Shared by the
// isolation kit (testing.ts), which seeds rows in that order, and the lifecycle tools (export,
// import, erasure), which copy and delete one tenant's rows in it. Names come back in the
// catalog's own spelling (`regclass::text`, quoted where needed): the only form written into SQL.
import type { Pool, PoolClient } from 'pg'

/**
 * How the package's own tables (the audit trail, the support grants) say they are not tenant
 * tables: they carry a tenant_id column, but no tenant's data, and an export, an erasure (the trail
 * is append-only), the isolation kit or the tenant-table audit must leave them alone. Their DDL
 * helpers comment them with this prefix; only their owner can change a table's comment.
 */
export const LIBRARY_TABLE_COMMENT = 'fastify-tenant-rls library table, not a tenant table'

/** SQL that is true unless the pg_class row `alias` is one of the package's own tables. */
export function notLibraryTableSql (alias: string): string {
  return `coalesce(pg_catalog.obj_description(${alias}.oid, 'pg_class'), '') NOT LIKE '${LIBRARY_TABLE_COMMENT}%'`
}

/** A connection or a pool: anything that runs one query. */
export type CatalogReader = Pool | PoolClient

/** One column of a tenant table. */
export interface CatalogColumn {
  name: string
  /** pg_type.typcategory: 'S' string, 'N' numeric, 'U' user-defined, ... */
  category: string
  /** The type with its modifier, as format_type writes it: `character varying(20)`. */
  type: string
  /** The type without its modifier (`character varying`): a cast to it keeps the column's own length check. */
  baseType: string
  /** NOT NULL with neither a default nor an identity: an insert must give a value. */
  required: boolean
  notNull: boolean
  /** A generated column: never written, recomputed by the server. */
  generated: boolean
}

export interface CatalogForeignKey {
  parent: string
  columns: string[]
  parentColumns: string[]
}

export interface CatalogTable {
  name: string
  columns: CatalogColumn[]
  /** The primary key's columns, in key order; empty without one. */
  key: string[]
  foreignKeys: CatalogForeignKey[]
}

/** Every ordinary or partitioned table of `schema` that has a `tenantColumn` column, by name. */
export async function discoverTenantTables (reader: CatalogReader, schema: string, tenantColumn: string): Promise<string[]> {
  const { rows } = await reader.query<{ name: string }>(
    `SELECT c.oid::regclass::text AS name FROM pg_catalog.pg_class c
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2 AND NOT a.attisdropped
     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND ${notLibraryTableSql('c')} ORDER BY 1`,
    [schema, tenantColumn]
  )
  return rows.map((row) => row.name)
}

/** Columns, primary key and foreign keys of `table` (any spelling `regclass` accepts; an unknown table throws 42P01). */
export async function describeTable (reader: CatalogReader, table: string): Promise<CatalogTable> {
  const { rows: [canonical] } = await reader.query<{ name: string }>('SELECT $1::regclass::text AS name', [table])
  const columns = await reader.query<CatalogColumn>(
    `SELECT a.attname AS name, t.typcategory AS category, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       a.atttypid::regtype::text AS "baseType", a.attnotnull AS "notNull",
       a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AS required, a.attgenerated <> '' AS generated
     FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
     WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    [table]
  )
  const names = (keys: string, relation: string): string =>
    `array(SELECT attname::text FROM unnest(${keys}) WITH ORDINALITY AS k(num, ord) JOIN pg_catalog.pg_attribute ON attrelid = ${relation} AND attnum = k.num ORDER BY k.ord)`
  const constraints = await reader.query<{ type: string, parent: string | null, columns: string[], parent_columns: string[] | null }>(
    `SELECT contype AS type, nullif(confrelid, 0)::regclass::text AS parent, ${names('conkey', 'conrelid')} AS columns,
       CASE WHEN contype = 'f' THEN ${names('confkey', 'confrelid')} END AS parent_columns
     FROM pg_catalog.pg_constraint WHERE conrelid = $1::regclass AND contype IN ('p', 'f') ORDER BY conname`,
    [table]
  )
  const primary = constraints.rows.find((row) => row.type === 'p')
  return {
    name: canonical?.name ?? table,
    columns: columns.rows,
    key: primary?.columns ?? [],
    foreignKeys: constraints.rows.filter((row) => row.type === 'f' && row.parent !== null)
      .map((row) => ({ parent: row.parent as string, columns: row.columns, parentColumns: row.parent_columns ?? [] }))
  }
}

/** Parents before children, so every foreign key can point at a row already there. */
export function parentsFirst<T extends { name: string, foreignKeys: ReadonlyArray<{ parent: string }> }> (tables: T[]): T[] {
  const byName = new Map(tables.map((table) => [table.name, table]))
  const ordered: T[] = []
  const visiting = new Set<string>()
  const visit = (table: T): void => {
    if (ordered.includes(table) || visiting.has(table.name)) return
    visiting.add(table.name)
    for (const key of table.foreignKeys) {
      const parent = byName.get(key.parent)
      if (parent !== undefined && parent !== table) visit(parent)
    }
    ordered.push(table)
  }
  tables.forEach(visit)
  return ordered
}
