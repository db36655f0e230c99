// The placement table: which database holds each tenant, kept in a table rather than in code, so a
// tenant can be moved (moveTenant flips its row) without a deploy. `placementRouting` turns the
// table and the named pools into the plugin's `route` and `routedPools` options, and
// `placementTableSql` creates the table. A tenant without a row, or a row naming a database this
// process has no pool for, is refused: never a fallback to some default database.
import type { Pool } from 'pg'
import { failOption, PlacementUnknownDatabaseError, TenantNotPlacedError } from '../errors.js'
import { roleName, tableName } from '../elevated/tables.js'
import type { TableName } from '../elevated/tables.js'
import { validatePool } from '../options.js'
import { TENANT_ID_SQL_TYPE, validateTenantIdType } from '../tenant-id.js'
import type { TenantIdType } from '../tenant-id.js'
import type { TenantRoute } from './tenant-router.js'

/** The placement table's default name. */
const DEFAULT_PLACEMENT_TABLE = 'public.tenant_placements'

/** A database's name in the placement table: what the table's CHECK constraint accepts too. */
export const DATABASE_NAME = /^[a-z][a-z0-9_-]{0,62}$/

/** Options of `placementRouting`. */
export interface PlacementRoutingOptions {
  /** Pool of a role that may read the placement table (its `tenant` and `database` columns). */
  pool: Pool
  /** The placement table, schema-qualified. Default `'public.tenant_placements'`. */
  table?: string
  /** The application role's pool on each database, by the name the placement table uses. */
  pools: Readonly<Record<string, Pool>>
}

/** The plugin options `placementRouting` returns: spread them into the plugin's options. */
export interface PlacementRouting {
  route: TenantRoute
  /** Every named pool, so each is checked at ready like `pool`. */
  routedPools: Pool[]
}

/** Checks a placement table name (the option's own wording in the message). */
export function placementTableName (value: unknown): TableName {
  return tableName('placement table', value, DEFAULT_PLACEMENT_TABLE)
}

/**
 * The `route` and `routedPools` options for tenants placed by a placement table: each tenant's
 * pool is the one `pools` names for its row's `database`. The answer is cached by the plugin
 * (`routeCacheMs`). A tenant without a row gets 403 FST_TENANT_RLS_TENANT_NOT_PLACED; a row naming
 * a database missing from `pools` gets 500 FST_TENANT_RLS_PLACEMENT_UNKNOWN_DATABASE.
 */
export function placementRouting (options: PlacementRoutingOptions): PlacementRouting {
  if (options === null || typeof options !== 'object') failOption('placementRouting needs { pool, pools }')
  const directory = options.pool
  if (directory === null || typeof directory !== 'object' || typeof directory.query !== 'function') failOption('placementRouting: pool must be a pg.Pool that may read the placement table')
  const table = placementTableName(options.table)
  const given = options.pools
  if (given === null || typeof given !== 'object' || Object.keys(given).length === 0) failOption('placementRouting: pools must name at least one database, e.g. { shared: sharedPool }')
  const pools = new Map<string, Pool>()
  for (const [name, pool] of Object.entries(given)) {
    if (!DATABASE_NAME.test(name)) failOption(`placementRouting: ${JSON.stringify(name)} is not a database name the placement table accepts (lower-case letters, digits, _ and -)`)
    pools.set(name, validatePool(pool))
  }
  // Bound parameter for the tenant: the key's own type is inferred, so the primary key's index is used.
  const lookup = `SELECT database FROM ${table.sql} WHERE tenant OPERATOR(pg_catalog.=) $1`
  return {
    async route (tenantId) {
      const { rows: [row] } = await directory.query<{ database: string }>(lookup, [tenantId])
      if (row === undefined) throw new TenantNotPlacedError()
      const pool = pools.get(row.database)
      if (pool === undefined) throw new PlacementUnknownDatabaseError(row.database)
      return pool
    },
    routedPools: [...new Set(pools.values())]
  }
}

/** Options of `placementTableSql`. */
export interface PlacementTableSqlOptions {
  /** The placement table, schema-qualified. Default `'public.tenant_placements'`. */
  table?: string
  /** The role of placementRouting's pool: it may read the tenant and database columns, nothing more. */
  readerRole: string
  /** Type of the tenant ids. Default `'uuid'`. */
  tenantIdType?: TenantIdType
}

/** A move's steps in order, each recorded in the placement row once done (see moveTenant). */
export const MOVE_STEPS = ['started', 'marked', 'exported', 'imported', 'verified', 'flipped', 'drained', 'erasing', 'erased'] as const
export type MoveStep = typeof MOVE_STEPS[number]

/**
 * The DDL of the placement table, for a migration run by its owner (the role moveTenant then
 * connects as): one row per tenant with the database that holds it, and the step a move of the
 * tenant has reached (empty when none is under way), so a move interrupted at any step resumes.
 */
export function placementTableSql (options: PlacementTableSqlOptions): string {
  const table = placementTableName(options.table)
  const reader = roleName('placementTableSql', 'readerRole', options.readerRole)
  const keyType = TENANT_ID_SQL_TYPE[validateTenantIdType(options.tenantIdType)]
  const name = `~ '${DATABASE_NAME.source}'`
  // The key is `tenant`, not `tenant_id`: the lifecycle tools and the audit take every table with a
  // tenant_id column for a tenant table, and this one holds every tenant's row.
  return [
    `CREATE TABLE ${table.sql} (`,
    `  tenant ${keyType} PRIMARY KEY,`,
    `  database text NOT NULL CONSTRAINT ${table.local('database_check')} CHECK (database ${name}),`,
    `  move_target text CONSTRAINT ${table.local('move_target_check')} CHECK (move_target ${name}),`,
    `  move_step text CONSTRAINT ${table.local('move_step_check')} CHECK (move_step IN (${MOVE_STEPS.map((step) => `'${step}'`).join(', ')})),`,
    '  move_file text,',
    '  move_flipped_at timestamptz,',
    `  CONSTRAINT ${table.local('move_check')} CHECK ((move_step IS NULL) = (move_target IS NULL))`,
    ');',
    `GRANT SELECT (tenant, database) ON ${table.sql} TO ${reader};`
  ].join('\n')
}
