// drizzle-orm helpers for tenant tables (`fastify-tenant-rls/schema`). A table declared with
// `tenantTable` carries everything isolation needs: a tenant_id column referencing the tenants
// table with ON DELETE CASCADE, the primary key (tenant_id, id) (the index that leads with
// tenant_id, and the only key a child can reference, so references stay inside one tenant), and
// one policy for all commands with USING and WITH CHECK. drizzle-kit turns all of that into a
// migration, but it emits neither FORCE ROW LEVEL SECURITY nor grants; `tenantTablesSql` writes
// that part, for a custom migration (`drizzle-kit generate --custom`). The role those grants go
// to is shared by every tenant; `sharedRoleHardeningSql` and `sharedRoleSuperuserHardeningSql`
// (shared-role.ts) take away what it would otherwise let one tenant do to another.
import { getTableColumns, getTableName, is, sql } from 'drizzle-orm'
import type { BuildColumns, BuildExtraConfigColumns, HasDefault, NotNull } from 'drizzle-orm'
import { bigint, foreignKey, getTableConfig, PgColumn, pgPolicy, pgTable, PgTable, primaryKey, text, unique, uuid } from 'drizzle-orm/pg-core'
import type {
  AnyPgColumn,
  PgBigInt64BuilderInitial,
  ForeignKeyBuilder,
  PgColumnBuilderBase,
  PgTableExtraConfigValue,
  PgTableWithColumns,
  PgTextBuilderInitial,
  PgUUIDBuilderInitial,
  UniqueConstraintBuilder,
  UpdateDeleteAction
} from 'drizzle-orm/pg-core'
import { failOption } from './errors.js'
import { DEFAULT_SETTING, validateSetting } from './options.js'
import { signedCurrentTenantSql } from './signed-context/schema-sql.js'
import { parentsFirst } from './tenant-catalog.js'
import { TENANT_ID_CAST, validateTenantIdType } from './tenant-id.js'
import type { TenantIdType } from './tenant-id.js'
import { quoteIdentifier } from './sql-identifier.js'

export { SHARED_ROLE_CHANNELS, sharedRoleHardeningSql, sharedRoleSuperuserHardeningSql } from './shared-role.js'
export type { SharedRoleChannel, SharedRoleHardeningOptions } from './shared-role.js'
export { CURRENT_TENANT_FUNCTION, SIGNED_CONTEXT_SCHEMA, SIGNING_KEYS_TABLE, signedContextSql, signedCurrentTenantSql, VERIFIED_TENANT_VIEW } from './signed-context/schema-sql.js'
export { tenantStatusSql } from './tenant-status/sql.js'
export { placementTableSql } from './routing/placement.js'
export type { PlacementTableSqlOptions } from './routing/placement.js'
export type { TenantStatusSqlOptions } from './tenant-status/sql.js'
export type { SignedContextSqlOptions } from './signed-context/schema-sql.js'
export { installSigningKey, removeSigningKey } from './signed-context/key-installation.js'
export type { OwnerConnection } from './signed-context/key-installation.js'
export type { TenantIdType } from './tenant-id.js'

/** Name of the policy every tenant table gets (policy names are per table). */
export const TENANT_POLICY_NAME = 'tenant_isolation'

/** The database name of the tenant column every tenant table gets (drizzle key `tenantId`). */
export const TENANT_ID_COLUMN = 'tenant_id'

// Marks tables built by tenantTable. A registry symbol, so that a second copy of this module
// (a bundler, a test runner) still recognises them.
const kTenantTable = Symbol.for('fastify-tenant-rls.tenant-table')

/** Options of `createTenantTable`. */
export interface TenantTableOptions<TType extends TenantIdType = 'uuid'> {
  /** The tenants table's key column (for example `tenants.id`, a uuid); every tenant_id references it. */
  tenants: AnyPgColumn
  /** Setting the policies read; must match the plugin's `setting`. Default `'app.current_tenant_id'`. */
  setting?: string
  /** Type of tenant_id; must match the plugin's `tenantIdType`. Default `'uuid'`. */
  tenantIdType?: TType
  /**
   * Policies for the plugin's `signedContext` mode: they read the tenant through
   * tenant_rls.current_tenant() (`signedContextSql`), which returns it only when the plugin's
   * signature holds, so route SQL that sets the setting itself sees and writes nothing. Default false.
   */
  signedContext?: boolean
}

/** The tenant of the current transaction as SQL: NULL when none is set, so comparisons deny. */
export function currentTenantSql (setting: string = DEFAULT_SETTING, tenantIdType: TenantIdType = 'uuid'): string {
  // The setting is validated to plain identifiers joined by dots, so writing it as a literal is safe;
  // drizzle-kit writes policies and defaults as text, so it could not carry a bound parameter anyway.
  return `nullif(current_setting('${validateSetting(setting)}', true), '')${TENANT_ID_CAST[validateTenantIdType(tenantIdType)]}`
}

// bigint in drizzle's 'bigint' mode: a JS number would round ids above 2^53 onto other tenants' ids.
function tenantIdColumn (tenantIdType: TenantIdType): TenantIdColumn<TenantIdType> {
  if (tenantIdType === 'bigint') return bigint(TENANT_ID_COLUMN, { mode: 'bigint' })
  if (tenantIdType === 'slug') return text(TENANT_ID_COLUMN)
  return uuid(TENANT_ID_COLUMN)
}

function tenantIdBuilder<TType extends TenantIdType> (tenants: AnyPgColumn, setting: string, tenantIdType: TType): TenantIdColumns<TType>['tenantId'] {
  return (tenantIdColumn(tenantIdType) as TenantIdColumn<'uuid'>)
    .notNull()
    // Inserts take the transaction's tenant when they name none; a wrong one is refused by WITH CHECK.
    // (A default may not contain a subquery, so this one calls current_setting directly.)
    .default(sql.raw(currentTenantSql(setting, tenantIdType)))
    .references(() => tenants, { onDelete: 'cascade' }) as unknown as TenantIdColumns<TType>['tenantId']
}

/** The drizzle builder of tenant_id for a tenant id type. */
export type TenantIdColumn<TType extends TenantIdType> = TType extends 'bigint'
  ? PgBigInt64BuilderInitial<typeof TENANT_ID_COLUMN>
  : TType extends 'slug'
    ? PgTextBuilderInitial<typeof TENANT_ID_COLUMN, [string, ...string[]]>
    : PgUUIDBuilderInitial<typeof TENANT_ID_COLUMN>

/** The column `tenantTable` adds to every table. */
export interface TenantIdColumns<TType extends TenantIdType = 'uuid'> {
  tenantId: HasDefault<NotNull<TenantIdColumn<TType>>>
}

/** Columns of a tenant table: any drizzle columns, including an `id` declared `.notNull()` without `.primaryKey()`. */
export type TenantTableColumns = Record<string, PgColumnBuilderBase> & {
  id: PgColumnBuilderBase & { _: { notNull: true } }
}

/** A table built by `tenantTable`, as `tenantForeignKey` needs it. */
export type AnyTenantTable = PgTable & { tenantId: AnyPgColumn, id: AnyPgColumn }

/** Declares a tenant table: `pgTable`'s signature, plus tenant_id, the (tenant_id, id) key and the policy. */
export type TenantTableFn<TType extends TenantIdType = 'uuid'> = <TTableName extends string, TColumns extends TenantTableColumns>(
  name: TTableName,
  columns: TColumns,
  extraConfig?: (self: BuildExtraConfigColumns<TTableName, TenantIdColumns<TType> & TColumns, 'pg'>) => PgTableExtraConfigValue[]
) => PgTableWithColumns<{
  name: TTableName
  schema: undefined
  columns: BuildColumns<TTableName, TenantIdColumns<TType> & TColumns, 'pg'>
  dialect: 'pg'
}>

// Column-level shortcuts that would break isolation are refused when the table is declared, not
// discovered in production: a global unique key, or a primary key on id alone.
function refuseUnscopedKeys (name: string, table: PgTable): void {
  for (const column of Object.values(getTableColumns(table))) {
    if (column.primary) failOption(`tenant table "${name}": remove .primaryKey() from "${column.name}"; the primary key is (tenant_id, id)`)
    if (column.isUnique) failOption(`tenant table "${name}": "${column.name}" is unique across all tenants (it tells one tenant what another has); use tenantUnique(t.${column.name}) instead of .unique()`)
  }
}

/**
 * Returns `tenantTable`, which declares tenant tables referencing `options.tenants`:
 *
 * ```ts
 * const tenantTable = createTenantTable({ tenants: tenants.id })
 * export const projects = tenantTable('projects', {
 *   id: uuid('id').notNull().defaultRandom(),
 *   name: text('name').notNull()
 * }, (t) => [tenantUnique(t.name)])
 * ```
 */
export function createTenantTable<TType extends TenantIdType = 'uuid'> (options: TenantTableOptions<TType>): TenantTableFn<TType> {
  const { tenants, setting = DEFAULT_SETTING, signedContext = false } = options
  const tenantIdType = validateTenantIdType(options.tenantIdType) as TType
  if (!is(tenants, PgColumn)) {
    failOption('createTenantTable needs `tenants`: the tenants table\'s key column, for example tenants.id')
  }
  if (typeof signedContext !== 'boolean') failOption(`createTenantTable: signedContext must be true or false, got ${JSON.stringify(signedContext)}`)
  // Wrapped in (select …): evaluated once per statement rather than per row, and the planner can
  // compare the index's leading tenant_id column with it. The column default keeps reading the
  // setting in signed mode too (a default may not hold a subquery, and a per-row call of the
  // verifying function would cost an HMAC per inserted row): WITH CHECK verifies what it wrote.
  const tenantSql = sql.raw(`(select ${signedContext ? signedCurrentTenantSql(tenantIdType) : currentTenantSql(setting, tenantIdType)})`)
  return function tenantTable (name, columns, extraConfig) {
    const table = pgTable(name, { tenantId: tenantIdBuilder(tenants, setting, tenantIdType), ...columns }, (self) => [
      primaryKey({ columns: [self.tenantId, self.id] }),
      pgPolicy(TENANT_POLICY_NAME, {
        as: 'permissive',
        for: 'all',
        using: sql`${sql.identifier(TENANT_ID_COLUMN)} = ${tenantSql}`,
        withCheck: sql`${sql.identifier(TENANT_ID_COLUMN)} = ${tenantSql}`
      }),
      ...(extraConfig?.(self) ?? [])
    ])
    refuseUnscopedKeys(name, table)
    table.enableRLS()
    Object.defineProperty(table, kTenantTable, { value: true })
    return table
  } as TenantTableFn<TType>
}

/** True for a table declared with `tenantTable`. */
export function isTenantTable (value: unknown): value is AnyTenantTable {
  return is(value, PgTable) && (value as unknown as Record<symbol, unknown>)[kTenantTable] === true
}

function tenantColumnOf (column: PgColumn): PgColumn {
  const tenantColumn = Object.values(getTableColumns(column.table)).find((candidate) => candidate.name === TENANT_ID_COLUMN)
  if (tenantColumn === undefined) failOption(`table "${getTableName(column.table)}" has no ${TENANT_ID_COLUMN} column; declare it with tenantTable`)
  return tenantColumn
}

/** A unique constraint scoped to one tenant: UNIQUE (tenant_id, ...columns). */
export function tenantUnique (...columns: [PgColumn, ...PgColumn[]]): UniqueConstraintBuilder {
  return unique().on(tenantColumnOf(columns[0]), ...columns)
}

/**
 * A reference from child columns to a parent tenant table's `id` that stays inside the tenant:
 * FOREIGN KEY (tenant_id, column) REFERENCES parent (tenant_id, id). A plain foreign key on `id`
 * would let one tenant's row point at another tenant's row: foreign-key checks ignore RLS.
 * `onDelete` defaults to 'cascade'; 'set null' is refused, as it would null tenant_id too.
 */
export function tenantForeignKey (column: PgColumn, parent: AnyTenantTable, onDelete: Exclude<UpdateDeleteAction, 'set null' | 'set default'> = 'cascade'): ForeignKeyBuilder {
  if (!isTenantTable(parent)) failOption(`tenantForeignKey: "${getTableName(parent)}" is not a tenant table; declare it with tenantTable`)
  if (onDelete !== 'cascade' && onDelete !== 'restrict' && onDelete !== 'no action') {
    failOption(`tenantForeignKey: onDelete must be 'cascade', 'restrict' or 'no action', got ${JSON.stringify(onDelete)}`)
  }
  const childTenant = tenantColumnOf(column)
  const builder = foreignKey({
    name: `${getTableName(column.table)}_${column.name}_fk`,
    columns: [childTenant, column],
    foreignColumns: [parent.tenantId, parent.id]
  } as unknown as Parameters<typeof foreignKey>[0])
  return builder.onDelete(onDelete)
}

/** Options of `tenantTablesSql`. */
export interface TenantTablesSqlOptions {
  /** Role the application connects as (or a group role it is a member of). */
  role: string
}

const ROLE_NAME = /^[a-z_][a-z0-9_]*$/

/** A drizzle table's name as SQL: quoted, and schema-qualified when the table names its schema. */
export function quotedTableName (table: PgTable): string {
  const config = getTableConfig(table)
  return config.schema === undefined ? quoteIdentifier(config.name) : `${quoteIdentifier(config.schema)}.${quoteIdentifier(config.name)}`
}

/**
 * The SQL drizzle-kit does not generate, for every tenant table in `schema` (the module of your
 * tables): FORCE ROW LEVEL SECURITY, so the table owner is held to the policy too, and exactly
 * SELECT, INSERT, UPDATE, DELETE for `role` (no TRUNCATE, which ignores RLS). Statements are
 * separated by drizzle's `--> statement-breakpoint`, ready for a `drizzle-kit generate --custom`
 * migration. The database-wide half of the hardening needs the database owner, not the table owner
 * that runs migrations: that is `sharedRoleHardeningSql`.
 */
export function tenantTablesSql (schema: Record<string, unknown>, options: TenantTablesSqlOptions): string {
  const { role } = options
  if (typeof role !== 'string' || !ROLE_NAME.test(role)) {
    failOption(`tenantTablesSql: role must be a plain lower-case role name, got ${JSON.stringify(role)}`)
  }
  const tables = Object.values(schema).filter(isTenantTable)
  if (tables.length === 0) failOption('tenantTablesSql: the schema has no table declared with tenantTable')
  const statements = tables.flatMap((table) => {
    const name = quotedTableName(table)
    return [
      `ALTER TABLE ${name} FORCE ROW LEVEL SECURITY;`,
      `REVOKE ALL ON TABLE ${name} FROM ${quoteIdentifier(role)};`,
      `GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE ${name} TO ${quoteIdentifier(role)};`
    ]
  })
  const header = `-- tenantTablesSql (fastify-tenant-rls/schema): FORCE ROW LEVEL SECURITY and grants for ${role}\n`
  return header + statements.join('\n--> statement-breakpoint\n') + '\n'
}

// A table name as the text literal Citus's functions take (they read it as a regclass).
function tableLiteral (table: PgTable): string {
  return `'${quotedTableName(table).replaceAll("'", "''")}'`
}

/**
 * The Citus statements that distribute the schema's tenant tables by their tenant column, for a
 * custom migration run after the tables exist: `create_reference_table` for the tables the tenant
 * column references (the tenants table: a copy on every node, so every tenant table's foreign key
 * to it holds locally), then `create_distributed_table(…, 'tenant_id')` for each tenant table,
 * parents first, all co-located with the first, so that a tenant's rows of every table live on one
 * node and the (tenant_id, …) foreign keys of `tenantForeignKey` hold within it. Citus propagates
 * `SET LOCAL` to the nodes but not `set_config(…)` calls; see the README before using the plugin on it.
 */
export function citusSql (schema: Record<string, unknown>): string {
  const tenantTables = Object.values(schema).filter(isTenantTable)
  if (tenantTables.length === 0) failOption('citusSql: the schema has no table declared with tenantTable')
  const references = new Set<PgTable>()
  const nodes = tenantTables.map((table) => {
    const foreignKeys = getTableConfig(table).foreignKeys.map((key) => key.reference())
    for (const { columns, foreignTable } of foreignKeys) {
      if (columns.length === 1 && columns[0]?.name === TENANT_ID_COLUMN && !isTenantTable(foreignTable)) references.add(foreignTable)
    }
    return { name: quotedTableName(table), table, foreignKeys: foreignKeys.map(({ foreignTable }) => ({ parent: quotedTableName(foreignTable) })) }
  })
  const [first, ...others] = parentsFirst(nodes)
  const statements = [
    ...[...references].map((table) => `SELECT create_reference_table(${tableLiteral(table)});`),
    `SELECT create_distributed_table(${tableLiteral(first?.table as PgTable)}, '${TENANT_ID_COLUMN}');`,
    ...others.map(({ table }) => `SELECT create_distributed_table(${tableLiteral(table)}, '${TENANT_ID_COLUMN}', colocate_with => ${tableLiteral(first?.table as PgTable)});`)
  ]
  return '-- citusSql (fastify-tenant-rls/schema): reference and distributed tables for Citus\n' +
    statements.join('\n--> statement-breakpoint\n') + '\n'
}
