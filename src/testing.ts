// fastify-tenant-rls/testing: lets an application prove, in its own CI and against its real
// database, that every tenant table is isolated. For two fresh tenants it seeds one row each
// through a privileged pool, then, connected as the application role with tenant A's setting, it
// tries to read, insert, update and delete tenant B's rows, and reports every attempt that got
// through, naming the table and the operation. Framework-agnostic: no Fastify, no test runner.
//
// Rows are built from the catalog: the tenant column gets the tenant, foreign keys point at the
// same tenant's seeded parent rows (tables are seeded parents first), a foreign key from the tenant
// column to a table outside the set (a tenants table) gets a parent row for each test tenant, and
// other required columns without a default get a generated value; `rows` overrides any of it.
// Everything the check writes is removed again; everything it tries as the application role is
// rolled back.
//
// It also ships `restoreDrill` (lifecycle/restore-drill.ts): export, erase and re-import one tenant,
// proving its rows come back byte for byte while other tenants' rows do not move.
import { randomBytes, randomUUID } from 'node:crypto'
import type { Pool, PoolClient } from 'pg'
import { bypassFindings } from './audit/bypass-rules.js'
import { readAuditFacts } from './audit/facts.js'
import { connectHeld, releaseHeld } from './held-client.js'
import { DEFAULT_SETTING, validateSetting } from './options.js'
import { setLocalTenantContext } from './signed-context/local-context.js'
import { validateSignedContext } from './signed-context/options.js'
import type { ResolvedSignedContext, SignedContextOptions } from './signed-context/options.js'
import { describeTable, discoverTenantTables, parentsFirst } from './tenant-catalog.js'
import type { CatalogColumn, CatalogForeignKey, CatalogTable } from './tenant-catalog.js'
import { validateTenantIdType } from './tenant-id.js'
import type { TenantIdType } from './tenant-id.js'
import { quoteIdentifier } from './sql-identifier.js'

export { restoreDrill } from './lifecycle/restore-drill.js'
export type { DrilledTable, RestoreDrillOptions, RestoreDrillReport, WitnessTable } from './lifecycle/restore-drill.js'

/**
 * Where a check failed. `structure` is about the table's definition (RLS, FORCE, policies);
 * `bypass` is an object that reads the tables around their policies (a view, a materialized view or
 * a SECURITY DEFINER function the app role may use), named in `table`. `forge` (signed mode only):
 * SQL that writes tenant B into the setting inside A's signed transaction reads B's row.
 */
export type IsolationOperation = 'structure' | 'seed' | 'read' | 'insert' | 'update' | 'delete' | 'bypass' | 'forge'

/** One way a table is not isolated. */
export interface IsolationFailure {
  table: string
  operation: IsolationOperation
  message: string
}

/** What `checkTenantIsolation` found. */
export interface IsolationReport {
  /** The tables checked, schema-qualified where needed. */
  tables: string[]
  failures: IsolationFailure[]
  ok: boolean
}

/** Values for a table's seeded rows, merged over the generated ones. */
export type RowFactory = (tenantId: string) => Record<string, unknown>

export interface IsolationCheckOptions {
  /** Pool of the application role: the role the plugin connects as (no BYPASSRLS). */
  appPool: Pool
  /** Privileged pool (superuser, BYPASSRLS or the tables' owner) that seeds and removes the test rows. */
  adminPool: Pool
  /** Tables to check. Default: every table of `schema` that has `tenantColumn`. */
  tables?: string[]
  /** PostgreSQL schema searched when `tables` is not given. Default `'public'`. */
  schema?: string
  /** Column that holds the tenant id. Default `'tenant_id'`. */
  tenantColumn?: string
  /** Setting the policies read. Default `'app.current_tenant_id'`. */
  setting?: string
  /** Type of the tenant ids, as the plugin's `tenantIdType`. Default `'uuid'`. */
  tenantIdType?: TenantIdType
  /** Column values for tables whose rows cannot be generated (check constraints, custom types). */
  rows?: Record<string, RowFactory>
  /**
   * The plugin's `signedContext` (the same keys): the kit then signs each tenant context it opens,
   * as the plugin does, and also checks that SQL writing another tenant into the setting inside a
   * signed transaction reads nothing of it (operation `forge`).
   */
  signedContext?: SignedContextOptions
}

/** Thrown by `assertTenantIsolation`; the message lists every failure. */
export class TenantIsolationError extends Error {
  readonly report: IsolationReport
  constructor (report: IsolationReport) {
    super(`tenant isolation failed:\n${report.failures.map((failure) => `  ${failure.table} [${failure.operation}]: ${failure.message}`).join('\n')}`)
    this.name = 'TenantIsolationError'
    this.report = report
  }
}

type Row = Record<string, unknown>

/** Error raised by PostgreSQL, with its SQLSTATE. */
function sqlState (error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

// A value PostgreSQL accepts for a column of this type category, unique enough for a test row.
function generated (column: CatalogColumn, serial: number): string | undefined {
  switch (column.category) {
    case 'S': return `'rls-check-${serial}'`
    case 'N': return `${serial}`
    case 'B': return 'false'
    case 'D': return 'now()'
    case 'E': return `(enum_range(NULL::${column.type}))[1]`
    case 'A': return "'{}'"
    case 'U': return column.type === 'uuid' ? 'gen_random_uuid()' : column.type.startsWith('json') ? "'{}'" : undefined
    default: return undefined
  }
}

/** The INSERT of one row for `tenant` into `table`, as SQL text and parameters. */
class RowBuilder {
  #serial = 0
  constructor (
    private readonly tenantColumn: string,
    private readonly rows: Record<string, RowFactory>,
    private readonly seeded: Map<string, Map<string, Row>>
  ) {}

  build (table: CatalogTable, tenant: string, skipParents: string[] = []): { sql: string, values: unknown[] } {
    const values = new Map<string, unknown>([[this.tenantColumn, tenant]])
    for (const key of table.foreignKeys) {
      if (skipParents.includes(key.parent)) continue
      const parent = this.seeded.get(key.parent)?.get(tenant)
      if (parent === undefined) continue
      key.columns.forEach((column, index) => values.set(column, parent[key.parentColumns[index] as string]))
    }
    for (const [column, value] of Object.entries(this.rows[table.name]?.(tenant) ?? {})) values.set(column, value)
    const names: string[] = []
    const expressions: string[] = []
    const params: unknown[] = []
    for (const column of table.columns) {
      if (column.generated) continue
      if (values.has(column.name)) {
        params.push(values.get(column.name))
        names.push(quoteIdentifier(column.name))
        expressions.push(`$${params.length}`)
      } else if (column.required) {
        const expression = generated(column, ++this.#serial)
        if (expression === undefined) {
          throw new Error(`cannot generate a value for column ${column.name} (${column.type}); give it in options.rows['${table.name}']`)
        }
        names.push(quoteIdentifier(column.name))
        expressions.push(expression)
      }
    }
    return { sql: `INSERT INTO ${table.name} (${names.join(', ')}) VALUES (${expressions.join(', ')})`, values: params }
  }
}

function keyCondition (table: CatalogTable, row: Row, offset = 0): { sql: string, values: unknown[] } {
  // Without a primary key, the physical row id still names exactly one row for the length of the check.
  const columns = table.key.length > 0 ? table.key : ['ctid']
  return {
    sql: columns.map((column, index) => `${column === 'ctid' ? 'ctid' : quoteIdentifier(column)} = $${offset + index + 1}`).join(' AND '),
    values: columns.map((column) => row[column])
  }
}

async function structureFailures (pool: Pool, table: string): Promise<string[]> {
  const { rows } = await pool.query<{ enabled: boolean, forced: boolean, policies: number }>(
    `SELECT relrowsecurity AS enabled, relforcerowsecurity AS forced,
       (SELECT count(*)::int FROM pg_policy WHERE polrelid = c.oid) AS policies
     FROM pg_class c WHERE c.oid = $1::regclass`,
    [table]
  )
  const info = rows[0]
  const problems: string[] = []
  if (info === undefined) return ['table not found']
  if (!info.enabled) problems.push('row level security is not enabled (ALTER TABLE ... ENABLE ROW LEVEL SECURITY)')
  else if (!info.forced) problems.push("row level security is not forced, so the table's owner bypasses it (ALTER TABLE ... FORCE ROW LEVEL SECURITY)")
  if (info.policies === 0) problems.push('the table has no policy: the application role is denied everything, or (RLS off) allowed everything')
  return problems
}

/** Runs `work` as the application role inside a transaction for `tenant` that is always rolled back. */
async function asTenant<T> (pool: Pool, setting: string, tenant: string | null, signed: ResolvedSignedContext | undefined, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await connectHeld(pool)
  let broken: Error | undefined
  try {
    await client.query('BEGIN')
    if (tenant !== null) await setLocalTenantContext(client, setting, tenant, signed)
    return await work(client)
  } catch (error) {
    broken = error as Error
    throw error
  } finally {
    await client.query('ROLLBACK').catch((error: Error) => { broken ??= error })
    releaseHeld(client, broken)
  }
}

/** Runs one statement in a savepoint: returns its row count, or the SQLSTATE it failed with. */
async function attempt (client: PoolClient, sql: string, values: unknown[]): Promise<{ rows: number } | { state: string }> {
  await client.query('SAVEPOINT rls_check')
  try {
    const result = await client.query(sql, values)
    await client.query('RELEASE SAVEPOINT rls_check')
    return { rows: result.rowCount ?? 0 }
  } catch (error) {
    // A savepoint that cannot be rolled back (the connection died with the statement) ends the
    // check with the statement's error, the one that says what happened.
    await client.query('ROLLBACK TO SAVEPOINT rls_check').catch(() => { throw error })
    return { state: sqlState(error) ?? (error as Error).message }
  }
}

/**
 * The objects that read the checked tables around their policies, from the audit's own facts and
 * verdicts (audit/bypass-rules.ts): seeding rows cannot reveal them, as each one only leaks when
 * read through it. Sequences, which leak counts rather than rows, are left to the audit.
 */
async function bypassPaths (appPool: Pool, adminPool: Pool, tables: string[], tenantColumn: string): Promise<Array<{ object: string, message: string }>> {
  const { rows: [me] } = await appPool.query<{ role: string }>('SELECT current_user AS role')
  const { rows: schemas } = await adminPool.query<{ schema: string }>(
    'SELECT DISTINCT n.nspname AS schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY ($1::regclass[]) ORDER BY 1', [tables])
  const problems: Array<{ object: string, message: string }> = []
  for (const { schema } of schemas) {
    const facts = await readAuditFacts(adminPool, { appRole: me?.role ?? '', schema, tenantColumn })
    for (const entry of bypassFindings(facts)) {
      if (entry.rule !== 'bypass.sequence-counts') problems.push({ object: entry.object, message: `${entry.message} (${entry.rule}); fix: ${entry.fix}` })
    }
  }
  return problems
}

/** A tenant id, in canonical form, that no real tenant is likely to have. */
function freshTenantId (type: TenantIdType): string {
  if (type === 'uuid') return randomUUID()
  // Random in the upper half of the positive bigints (a serial never gets there), without leading zero.
  if (type === 'bigint') return String((1n << 62n) + (randomBytes(8).readBigUInt64BE() >> 2n))
  return `isolation-check-${randomBytes(6).toString('hex')}`
}

const describeAttempt = (outcome: { rows: number } | { state: string }): string =>
  'rows' in outcome ? `succeeded (${outcome.rows} row(s))` : `failed with ${outcome.state}`

/**
 * Checks read, insert, update and delete isolation of every tenant table between two fresh
 * tenants, and the table definitions behind it. Never throws for an isolation failure: read the
 * report (or use `assertTenantIsolation`).
 */
export async function checkTenantIsolation (options: IsolationCheckOptions): Promise<IsolationReport> {
  const { appPool, adminPool, schema = 'public', tenantColumn = 'tenant_id', rows = {} } = options
  const setting = validateSetting(options.setting ?? DEFAULT_SETTING)
  const signed = options.signedContext === undefined ? undefined : validateSignedContext(options.signedContext)
  const names = options.tables ?? await discoverTenantTables(adminPool, schema, tenantColumn)
  const tables = parentsFirst(await Promise.all(names.map((name) => describeTable(adminPool, name))))
  const failures: IsolationFailure[] = []
  const fail = (table: string, operation: IsolationOperation, message: string): void => { failures.push({ table, operation, message }) }
  const idType = validateTenantIdType(options.tenantIdType)
  const [a, b] = [freshTenantId(idType), freshTenantId(idType)]
  const seeded = new Map<string, Map<string, Row>>()
  const builder = new RowBuilder(tenantColumn, rows, seeded)
  const cleanup: Array<{ table: CatalogTable, row: Row, tenant: string }> = []

  try {
    for (const table of tables) {
      for (const problem of await structureFailures(adminPool, table.name)) fail(table.name, 'structure', problem)
      if (!table.columns.some((column) => column.name === tenantColumn)) {
        fail(table.name, 'structure', `no ${tenantColumn} column`)
        continue
      }
      try {
        seeded.set(table.name, await seed(table))
      } catch (error) {
        fail(table.name, 'seed', `could not seed a row per tenant: ${(error as Error).message}`)
      }
    }
    for (const table of tables) {
      const rowA = seeded.get(table.name)?.get(a)
      const rowB = seeded.get(table.name)?.get(b)
      if (rowA === undefined || rowB === undefined) continue
      await checkTable(table, rowA, rowB)
    }
    for (const problem of await bypassPaths(appPool, adminPool, tables.map((table) => table.name), tenantColumn)) fail(problem.object, 'bypass', problem.message)
  } finally {
    for (const { table, row, tenant } of cleanup.reverse()) {
      const where = keyCondition(table, row)
      await privileged(tenant, (client) => client.query(`DELETE FROM ${table.name} WHERE ${where.sql}`, where.values)).catch(() => {})
    }
  }
  return { tables: tables.map((table) => table.name), failures, ok: failures.length === 0 }

  // As the privileged role, in a transaction carrying `tenant`'s setting: a table owner that is
  // itself subject to FORCE'd RLS can then write and delete that tenant's rows too.
  async function privileged<T> (tenant: string, work: (client: PoolClient) => Promise<T>): Promise<T> {
    const client = await connectHeld(adminPool)
    let broken: Error | undefined
    try {
      await client.query('BEGIN')
      await setLocalTenantContext(client, setting, tenant, signed)
      const result = await work(client)
      await client.query('COMMIT')
      return result
    } catch (error) {
      // A connection that cannot even roll back is destroyed, as asTenant does, not pooled again.
      await client.query('ROLLBACK').catch((rollbackError: Error) => { broken = rollbackError })
      throw error
    } finally {
      releaseHeld(client, broken)
    }
  }

  async function seed (table: CatalogTable): Promise<Map<string, Row>> {
    const byTenant = new Map<string, Row>()
    for (const tenant of [a, b]) {
      const row = await privileged(tenant, async (client) => {
        for (const key of table.foreignKeys) {
          if (key.columns.includes(tenantColumn) && !seeded.has(key.parent) && !tables.some((other) => other.name === key.parent)) {
            await seedParent(client, key, tenant)
          }
        }
        const insert = builder.build(table, tenant)
        const { rows: [inserted] } = await client.query(`${insert.sql} RETURNING *, ctid`, insert.values)
        return inserted as Row
      })
      byTenant.set(tenant, row)
      cleanup.push({ table, row, tenant })
    }
    return byTenant
  }

  // A row in a table outside the checked set that the tenant column references (a tenants table).
  async function seedParent (client: PoolClient, key: CatalogForeignKey, tenant: string): Promise<void> {
    const parent = await describeTable(adminPool, key.parent)
    const tenantColumnIndex = key.columns.indexOf(tenantColumn)
    const insert = new RowBuilder(key.parentColumns[tenantColumnIndex] as string, {}, new Map()).build(parent, tenant)
    const { rows: inserted } = await client.query(`${insert.sql} ON CONFLICT DO NOTHING RETURNING *, ctid`, insert.values)
    if (inserted[0] !== undefined) cleanup.unshift({ table: parent, row: inserted[0] as Row, tenant })
  }

  async function checkTable (table: CatalogTable, rowA: Row, rowB: Row): Promise<void> {
    const name = table.name
    const column = quoteIdentifier(tenantColumn)
    const ofB = keyCondition(table, rowB)
    const ofA = keyCondition(table, rowA)

    await asTenant(appPool, setting, a, signed, async (client) => {
      const { rows: [seen] } = await client.query<{ others: number, b: number, own: number }>(
        `SELECT count(*) FILTER (WHERE ${column} IS DISTINCT FROM $${ofB.values.length + 1})::int AS others,
           count(*) FILTER (WHERE ${ofB.sql})::int AS b,
           (SELECT count(*)::int FROM ${name} WHERE ${keyCondition(table, rowA, ofB.values.length + 1).sql}) AS own
         FROM ${name}`,
        [...ofB.values, a, ...ofA.values]
      )
      if ((seen?.others ?? 0) > 0) fail(name, 'read', `tenant A can read ${seen?.others} row(s) of other tenants`)
      if ((seen?.b ?? 0) > 0) fail(name, 'read', "tenant A can read tenant B's row by its key")
      if (seen?.own !== 1) fail(name, 'read', `tenant A cannot read its own row, so the other checks prove nothing (policy too strict?${signed === undefined ? ' a signed policy needs options.signedContext' : ' the key not installed?'})`)

      const control = builder.build(table, a)
      const own = await attempt(client, control.sql, control.values)
      if (!('rows' in own)) {
        fail(name, 'insert', `a valid row for tenant A was refused (${own.state}), so the insert check proves nothing; give options.rows['${name}']`)
      } else {
        const foreign = builder.build(table, b)
        const outcome = await attempt(client, foreign.sql, foreign.values)
        if (!('state' in outcome && outcome.state === '42501')) fail(name, 'insert', `inserting a row for tenant B ${describeAttempt(outcome)} instead of being refused by the policy (42501)`)
      }

      const touchB = await attempt(client, `UPDATE ${name} SET ${column} = ${column} WHERE ${ofB.sql}`, ofB.values)
      if (!('rows' in touchB && touchB.rows === 0)) fail(name, 'update', `updating tenant B's row ${describeAttempt(touchB)} instead of matching 0 rows`)
      const moveA = await attempt(client, `UPDATE ${name} SET ${column} = $${ofA.values.length + 1} WHERE ${ofA.sql}`, [...ofA.values, b])
      // 0 rows: A cannot see its own row, which the read check has already reported.
      if ('rows' in moveA ? moveA.rows > 0 : moveA.state !== '42501') fail(name, 'update', `moving tenant A's row to tenant B ${describeAttempt(moveA)} instead of being refused by the policy (42501)`)

      const removeB = await attempt(client, `DELETE FROM ${name} WHERE ${ofB.sql}`, ofB.values)
      if (!('rows' in removeB && removeB.rows === 0)) fail(name, 'delete', `deleting tenant B's row ${describeAttempt(removeB)} instead of matching 0 rows`)
    })

    if (signed !== undefined) {
      // The attack signed mode closes: A's signed context, then route SQL writes B into the setting.
      const forged = await asTenant(appPool, setting, a, signed, async (client) => {
        await client.query('SELECT set_config($1, $2, true)', [setting, b])
        return await attempt(client, `SELECT 1 FROM ${name} WHERE ${ofB.sql}`, ofB.values)
      })
      if ('rows' in forged && forged.rows > 0) fail(name, 'forge', `SQL that writes tenant B into ${setting} inside A's signed transaction reads B's row: the policy trusts the setting instead of tenant_rls.current_tenant()`)
    }
    const withoutTenant = await asTenant(appPool, setting, null, undefined, (client) => attempt(client, `SELECT 1 FROM ${name}`, []))
    if ('rows' in withoutTenant && withoutTenant.rows > 0) fail(name, 'read', `without a tenant set, ${withoutTenant.rows} row(s) are readable`)
  }
}

/** Like `checkTenantIsolation`, but throws a TenantIsolationError listing every failure. */
export async function assertTenantIsolation (options: IsolationCheckOptions): Promise<IsolationReport> {
  const report = await checkTenantIsolation(options)
  if (!report.ok) throw new TenantIsolationError(report)
  return report
}
