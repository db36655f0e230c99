// Adding tenancy to a table that has none, in three steps, each with a real down:
//   add-column  the tenant column, nullable, defaulting to the transaction's tenant (so rows a
//               tenant-aware app writes from now on carry it)          down: drop the column
//   backfill    the tenant of every existing row from the user's mapping, in batches of their own
//               transactions, resumable (only rows still NULL are touched), with progress
//                                                                       down: NULL again, in batches
//   enforce     one transaction: lock out writers, map the rows written since the backfill, stop if
//               any row is still without a tenant, then NOT NULL, the foreign key to the tenants
//               table, tenant-scoped unique keys (or a tenant index), RLS enabled and FORCE'd, the
//               policy and the grants. Nothing can be written between the last mapped row and the
//               policy.                                                 down: all of it undone
// The same steps as SQL text (`sql()`) go into a `drizzle-kit generate --custom` migration; there
// the backfill is a loop in a DO block (drizzle runs a migration in one transaction, so the batches
// bound the work per statement, not the locks). Grants are not taken back by the down: a REVOKE of
// TRUNCATE, which ignores RLS, must not be undone by a rollback.
import type { Pool, PoolClient, QueryResult } from 'pg'
import { BackfillIncompleteError, failOption } from '../errors.js'
import { connectHeld, releaseHeld } from '../held-client.js'
import { DEFAULT_SETTING, validateSetting } from '../options.js'
import { currentTenantSql } from '../schema.js'
import { TENANT_ID_SQL_TYPE, validateTenantIdType, type TenantIdType } from '../tenant-id.js'

/** Options of `tenancyMigration`. */
export interface TenancyMigrationOptions {
  /** The table to make a tenant table: `invoices` or `billing.invoices`. */
  table: string
  /**
   * SQL giving a row's tenant, evaluated for each row of the table under the alias `t`, for example
   * `(SELECT c.tenant_id FROM customers c WHERE c.id = t.customer_id)`. Migration code: written
   * into the SQL as given.
   */
  tenantOf: string
  /** The application role that gets SELECT, INSERT, UPDATE, DELETE (and loses TRUNCATE). */
  role: string
  /** A unique, sortable column of the table, for the batches. Default `'id'`. */
  key?: string
  /** The tenants table and its key. Default `{ table: 'tenants', column: 'id' }`. */
  tenants?: { table: string, column: string }
  /**
   * Existing unique constraints (and the primary key, `primary: true`) to scope to the tenant:
   * `UNIQUE (number)` becomes `UNIQUE (tenant_id, number)` under the same name. A primary key that
   * other tables reference cannot be dropped: scope their foreign keys first.
   */
  uniqueKeys?: Array<{ name: string, columns: string[], primary?: boolean }>
  /** Default `'tenant_id'`. */
  tenantColumn?: string
  /** Default `'app.current_tenant_id'`. */
  setting?: string
  /** Default `'uuid'`. */
  tenantIdType?: TenantIdType
  /** Rows per backfill batch. Default 1000. */
  batchSize?: number
}

export type TenancyStepName = 'add-column' | 'backfill' | 'enforce'

/** One step: its statements up and down (the backfill's as a DO-block loop, for a SQL migration). */
export interface TenancyStep {
  name: TenancyStepName
  up: string[]
  down: string[]
}

/** Progress of a batched step. */
export interface TenancyProgress {
  step: TenancyStepName
  table: string
  /** Rows changed so far by this run. */
  done: number
  /** Rows the step had to change when it started. */
  total: number
}

export interface TenancyRunOptions {
  /** Called (and awaited) after every batch; default: a line on stderr when it is a terminal. */
  onProgress?: (progress: TenancyProgress) => void | Promise<void>
}

export interface TenancyDownOptions extends TenancyRunOptions {
  /** Undo the steps after this one and keep it. Default: undo everything. */
  to?: TenancyStepName
}

/** The migration for one table. */
export interface TenancyMigration {
  steps: readonly TenancyStep[]
  /** The steps as SQL text, statements separated by drizzle's `--> statement-breakpoint`. */
  sql (): { up: string, down: string }
  /** Runs the steps not yet done (read from the catalog): safe to run again after a failure. */
  up (pool: Pool, options?: TenancyRunOptions): Promise<void>
  /** Undoes the steps that are done, last first. */
  down (pool: Pool, options?: TenancyDownOptions): Promise<void>
}

const IDENTIFIER = /^[a-z_][a-z0-9_]*$/
const BREAKPOINT = '\n--> statement-breakpoint\n'
const ORDER: readonly TenancyStepName[] = ['add-column', 'backfill', 'enforce']

function identifier (name: unknown, what: string): string {
  if (typeof name !== 'string' || !IDENTIFIER.test(name)) failOption(`tenancyMigration: ${what} must be a plain lower-case identifier, got ${JSON.stringify(name)}`)
  return name
}

function qualified (name: unknown, what: string): { sql: string, name: string, schema: string | undefined } {
  if (typeof name !== 'string') failOption(`tenancyMigration: ${what} must be a table name, got ${JSON.stringify(name)}`)
  const parts = name.split('.')
  if (parts.length > 2) failOption(`tenancyMigration: ${what} must be table or schema.table, got ${JSON.stringify(name)}`)
  const [first = '', second] = parts.map((part) => identifier(part, what))
  return second === undefined ? { sql: first, name: first, schema: undefined } : { sql: `${first}.${second}`, name: second, schema: first }
}

function defaultProgress ({ step, table, done, total }: TenancyProgress): void {
  if (process.stderr.isTTY) process.stderr.write(`${step} ${table}: ${done}/${total} rows\n`)
}

/** Builds the tenancy migration of one table; checks every name before any SQL is written. */
export function tenancyMigration (options: TenancyMigrationOptions): TenancyMigration {
  const table = qualified(options.table, 'table')
  const tenants = qualified(options.tenants?.table ?? 'tenants', 'tenants.table')
  const tenantsKey = identifier(options.tenants?.column ?? 'id', 'tenants.column')
  const column = identifier(options.tenantColumn ?? 'tenant_id', 'tenantColumn')
  const key = identifier(options.key ?? 'id', 'key')
  const role = identifier(options.role, 'role')
  const setting = validateSetting(options.setting ?? DEFAULT_SETTING)
  const tenantIdType = validateTenantIdType(options.tenantIdType)
  const batchSize = options.batchSize ?? 1000
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) failOption(`tenancyMigration: batchSize must be a positive integer, got ${JSON.stringify(batchSize)}`)
  if (typeof options.tenantOf !== 'string' || options.tenantOf.trim() === '') failOption('tenancyMigration: tenantOf must be the SQL that gives a row\'s tenant (alias t)')
  const uniqueKeys = (options.uniqueKeys ?? []).map((unique) => ({
    name: identifier(unique.name, 'uniqueKeys[].name'),
    columns: unique.columns.map((name) => identifier(name, 'uniqueKeys[].columns')),
    kind: unique.primary === true ? 'PRIMARY KEY' : 'UNIQUE'
  }))
  const type = TENANT_ID_SQL_TYPE[tenantIdType]
  const tenant = `(select ${currentTenantSql(setting, tenantIdType)})`
  const foreignKey = `${table.name}_${column}_fkey`
  const index = `${table.name}_${column}_idx`
  const T = table.sql

  // One batch: the next rows matching `where` after `last` in key order; returns how many, and the new `last`.
  const batchSql = (set: string, where: string, keyType: string): string =>
    `WITH batch AS (SELECT ${key} FROM ${T} WHERE ${where} AND ($2::text IS NULL OR ${key} > $2::text::${keyType}) ORDER BY ${key} LIMIT $1),
     updated AS (UPDATE ${T} AS t SET ${column} = ${set} FROM batch WHERE t.${key} = batch.${key} RETURNING t.${key})
     SELECT max(${key})::text AS last, count(*)::int AS changed FROM updated`
  const loopSql = (set: string, where: string, notice: string): string => `DO $tenancy$
DECLARE last ${T}.${key}%TYPE; changed bigint; done bigint := 0;
BEGIN
  LOOP
    WITH batch AS (SELECT ${key} FROM ${T} WHERE ${where} AND (last IS NULL OR ${key} > last) ORDER BY ${key} LIMIT ${batchSize}),
    updated AS (UPDATE ${T} AS t SET ${column} = ${set} FROM batch WHERE t.${key} = batch.${key} RETURNING t.${key})
    SELECT max(${key}), count(*) INTO last, changed FROM updated;
    EXIT WHEN changed = 0;
    done := done + changed;
    RAISE NOTICE '${notice} ${T}: % rows', done;
  END LOOP;
END $tenancy$;`

  const steps: TenancyStep[] = [
    {
      name: 'add-column',
      up: [`ALTER TABLE ${T} ADD COLUMN ${column} ${type} DEFAULT ${currentTenantSql(setting, tenantIdType)};`],
      down: [`ALTER TABLE ${T} DROP COLUMN ${column};`]
    },
    {
      name: 'backfill',
      up: [loopSql(options.tenantOf, `${column} IS NULL`, 'backfill')],
      down: [loopSql('NULL', `${column} IS NOT NULL`, 'unfill')]
    },
    {
      name: 'enforce',
      up: [
        // SHARE ROW EXCLUSIVE: reads go on, writes wait until the policy is in place.
        `LOCK TABLE ${T} IN SHARE ROW EXCLUSIVE MODE;`,
        `UPDATE ${T} AS t SET ${column} = ${options.tenantOf} WHERE t.${column} IS NULL;`,
        `DO $tenancy$ BEGIN IF EXISTS (SELECT FROM ${T} WHERE ${column} IS NULL) THEN RAISE EXCEPTION USING ERRCODE = 'not_null_violation', MESSAGE = 'rows of ${T} have no tenant after the backfill'; END IF; END $tenancy$;`,
        `ALTER TABLE ${T} ALTER COLUMN ${column} SET NOT NULL;`,
        `ALTER TABLE ${T} ADD CONSTRAINT ${foreignKey} FOREIGN KEY (${column}) REFERENCES ${tenants.sql} (${tenantsKey}) ON DELETE CASCADE;`,
        ...(uniqueKeys.length === 0
          ? [`CREATE INDEX ${index} ON ${T} (${column});`]
          : uniqueKeys.map(({ name, columns, kind }) => `ALTER TABLE ${T} DROP CONSTRAINT ${name}, ADD CONSTRAINT ${name} ${kind} (${[column, ...columns].join(', ')});`)),
        `ALTER TABLE ${T} ENABLE ROW LEVEL SECURITY;`,
        `ALTER TABLE ${T} FORCE ROW LEVEL SECURITY;`,
        `CREATE POLICY tenant_isolation ON ${T} USING (${column} = ${tenant}) WITH CHECK (${column} = ${tenant});`,
        `REVOKE TRUNCATE, REFERENCES, TRIGGER ON ${T} FROM ${role};`,
        `GRANT SELECT, INSERT, UPDATE, DELETE ON ${T} TO ${role};`
      ],
      down: [
        `DROP POLICY tenant_isolation ON ${T};`,
        `ALTER TABLE ${T} NO FORCE ROW LEVEL SECURITY;`,
        `ALTER TABLE ${T} DISABLE ROW LEVEL SECURITY;`,
        ...(uniqueKeys.length === 0
          ? [`DROP INDEX ${table.schema === undefined ? '' : `${table.schema}.`}${index};`]
          : uniqueKeys.map(({ name, columns, kind }) => `ALTER TABLE ${T} DROP CONSTRAINT ${name}, ADD CONSTRAINT ${name} ${kind} (${columns.join(', ')});`)),
        `ALTER TABLE ${T} DROP CONSTRAINT ${foreignKey};`,
        `ALTER TABLE ${T} ALTER COLUMN ${column} DROP NOT NULL;`
      ]
    }
  ]

  // Which steps are done, from the catalog: the column exists; the policy exists.
  async function state (client: PoolClient): Promise<{ column: boolean, enforced: boolean }> {
    const { rows: [row] } = await client.query<{ column: boolean, enforced: boolean }>(
      `SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped) AS column,
              EXISTS (SELECT FROM pg_catalog.pg_policy WHERE polrelid = $1::regclass AND polname = 'tenant_isolation') AS enforced`, [T, column])
    return row ?? { column: false, enforced: false }
  }

  async function inTransaction (client: PoolClient, statements: string[]): Promise<void> {
    await client.query('BEGIN')
    try {
      for (const statement of statements) await client.query(statement)
      await client.query('COMMIT')
    } catch (error) {
      // The statement's own error is the one to report; a connection whose ROLLBACK failed too is
      // destroyed by onConnection, not pooled again.
      await client.query('ROLLBACK').catch(() => {})
      throw error
    }
  }

  // One connection per run; after a failure (perhaps mid-transaction) it is destroyed, not pooled.
  async function onConnection (pool: Pool, work: (client: PoolClient) => Promise<void>): Promise<void> {
    const client = await connectHeld(pool)
    let failed: Error | undefined
    try {
      await work(client)
    } catch (error) {
      failed = error as Error
      throw error
    } finally {
      releaseHeld(client, failed)
    }
  }

  // One batch per transaction, so a crash loses one batch and a rerun resumes with the rows left.
  async function batched (client: PoolClient, step: TenancyStepName, set: string, where: string, onProgress: (progress: TenancyProgress) => void | Promise<void>): Promise<void> {
    const { rows: [facts] } = await client.query<{ type: string | null, total: string }>(
      `SELECT (SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped) AS type,
              (SELECT count(*) FROM ${T} WHERE ${where}) AS total`, [T, key])
    if (facts?.type == null) throw new Error(`${T} has no column ${key} to batch by; give options.key`)
    const sql = batchSql(set, where, facts.type)
    const total = Number(facts.total)
    let done = 0
    let last: string | null = null
    for (;;) {
      const result: QueryResult<{ last: string | null, changed: number }> = await client.query(sql, [batchSize, last])
      const batch = result.rows[0]
      if (batch === undefined || batch.changed === 0) break
      done += batch.changed
      last = batch.last
      await onProgress({ step, table: T, done, total })
    }
  }

  return {
    steps,
    sql () {
      return {
        up: steps.flatMap((step) => step.up).join(BREAKPOINT) + '\n',
        down: [...steps].reverse().flatMap((step) => step.down).join(BREAKPOINT) + '\n'
      }
    },
    async up (pool, { onProgress = defaultProgress } = {}) {
      await onConnection(pool, async (client) => {
        const done = await state(client)
        if (done.enforced) return
        if (!done.column) await inTransaction(client, steps[0]?.up ?? [])
        await batched(client, 'backfill', options.tenantOf, `${column} IS NULL`, onProgress)
        try {
          await inTransaction(client, steps[2]?.up ?? [])
        } catch (error) {
          if ((error as { code?: string }).code !== '23502') throw error
          const { rows: [left] } = await client.query<{ count: string }>(`SELECT count(*) AS count FROM ${T} WHERE ${column} IS NULL`)
          throw new BackfillIncompleteError(left?.count ?? '?', T)
        }
      })
    },
    async down (pool, { onProgress = defaultProgress, to } = {}) {
      const keep = to === undefined ? -1 : ORDER.indexOf(to)
      await onConnection(pool, async (client) => {
        const done = await state(client)
        if (done.enforced && keep < 2) await inTransaction(client, steps[2]?.down ?? [])
        if (done.column && keep < 1) await batched(client, 'backfill', 'NULL', `${column} IS NOT NULL`, onProgress)
        if (done.column && keep < 0) await inTransaction(client, steps[0]?.down ?? [])
      })
    }
  }
}
