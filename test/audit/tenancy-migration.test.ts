// tenancyMigration on a populated table without a tenant column: up in batches with progress,
// resumed after a crash, stopped (nothing enforced) while a row has no tenant, rows written between
// the backfill and the policy still mapped; the result passes the audit and the isolation kit; and
// every step's down brings back exactly the table it started from. The SQL form (drizzle-kit
// --custom) reaches the same end state in one transaction.
import { randomUUID } from 'node:crypto'
import type pg from 'pg'
import t from 'tap'
import { auditDatabase, tenancyMigration } from 'fastify-tenant-rls/audit'
import type { TenancyMigrationOptions, TenancyProgress } from 'fastify-tenant-rls/audit'
import { assertTenantIsolation } from 'fastify-tenant-rls/testing'
import { createTestDatabase } from '../helpers/database.js'

const db = await createTestDatabase(t)
const appPool = db.appPool()
const [tenantA, tenantB] = [randomUUID(), randomUUID()]
const ROWS = 2500

// billing.invoices as years of hand-written migrations left it: no tenant, a global unique number.
async function legacySchema (schema: string): Promise<void> {
  await db.admin.query(`CREATE SCHEMA ${schema} AUTHORIZATION ${db.ownerRole}; GRANT USAGE ON SCHEMA ${schema} TO ${db.appRole}`)
  await db.asOwner(`
    CREATE TABLE ${schema}.customers (id bigint PRIMARY KEY, org_id uuid REFERENCES public.tenants (id));
    CREATE TABLE ${schema}.invoices (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES ${schema}.customers (id), number text NOT NULL CONSTRAINT invoices_number_key UNIQUE);
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ${schema}.invoices TO ${db.appRole};
  `)
  await db.admin.query(`INSERT INTO ${schema}.customers (id, org_id) VALUES (1, $1), (2, $2)`, [tenantA, tenantB])
  await db.admin.query(`INSERT INTO ${schema}.invoices (id, customer_id, number) SELECT g, 1 + g % 2, 'INV-' || g FROM generate_series(1, ${ROWS}) g`)
}

await db.asOwner('CREATE TABLE public.tenants (id uuid PRIMARY KEY)')
await db.admin.query('INSERT INTO public.tenants (id) VALUES ($1), ($2)', [tenantA, tenantB])
await legacySchema('billing')
await legacySchema('ledger')

const options = (schema: string): TenancyMigrationOptions => ({
  table: `${schema}.invoices`,
  tenantOf: `(SELECT c.org_id FROM ${schema}.customers c WHERE c.id = t.customer_id)`,
  role: db.appRole,
  uniqueKeys: [{ name: 'invoices_pkey', columns: ['id'], primary: true }, { name: 'invoices_number_key', columns: ['number'] }]
})
const migration = tenancyMigration(options('billing'))

/** The table's shape and rows: what a down must give back exactly. */
async function snapshot (schema: string): Promise<unknown> {
  const { rows: [shape] } = await db.admin.query(`SELECT
    ARRAY(SELECT attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END FROM pg_attribute WHERE attrelid = '${schema}.invoices'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum) AS columns,
    ARRAY(SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '${schema}.invoices'::regclass ORDER BY conname) AS constraints,
    ARRAY(SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = '${schema}.invoices'::regclass ORDER BY 1) AS indexes,
    (SELECT relrowsecurity::text || relforcerowsecurity::text FROM pg_class WHERE oid = '${schema}.invoices'::regclass) AS rls,
    (SELECT count(*)::int FROM pg_policy WHERE polrelid = '${schema}.invoices'::regclass) AS policies,
    (SELECT md5(string_agg(id || ':' || customer_id || ':' || number, ',' ORDER BY id)) FROM ${schema}.invoices) AS rows`)
  return shape
}
const original = await snapshot('billing')

async function tenantsOf (schema: string): Promise<Record<string, number>> {
  const { rows } = await db.admin.query<{ tenant: string | null, count: number }>(`SELECT tenant_id::text AS tenant, count(*)::int AS count FROM ${schema}.invoices GROUP BY 1`)
  return Object.fromEntries(rows.map((row) => [row.tenant ?? 'null', row.count]))
}

t.test('a crash during the backfill is resumed by running up again', async (t) => {
  const seen: TenancyProgress[] = []
  await t.rejects(migration.up(db.admin, {
    onProgress (progress) { seen.push(progress); if (seen.length === 1) throw new Error('the process died') }
  }), { message: 'the process died' })
  t.same(seen, [{ step: 'backfill', table: 'billing.invoices', done: 1000, total: ROWS }], 'one batch was committed')
  t.same(await tenantsOf('billing'), { [tenantA]: 500, [tenantB]: 500, null: 1500 })
})

t.test('up stops before enforcing anything while a row has no tenant', async (t) => {
  await db.admin.query("INSERT INTO billing.customers (id) VALUES (3); INSERT INTO billing.invoices VALUES (9999, 3, 'INV-ORPHAN')")
  await t.rejects(migration.up(db.admin, { onProgress: () => {} }), { code: 'FST_TENANT_RLS_BACKFILL_INCOMPLETE', message: /1 row\(s\) of billing\.invoices/ })
  const { rows: [state] } = await db.admin.query("SELECT relrowsecurity AS rls, (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'billing.invoices'::regclass AND attname = 'tenant_id') AS not_null FROM pg_class WHERE oid = 'billing.invoices'::regclass")
  t.same(state, { rls: false, not_null: false }, 'the enforce step was rolled back whole')
  await db.admin.query('DELETE FROM billing.invoices WHERE id = 9999; DELETE FROM billing.customers WHERE id = 3')
})

t.test('up completes: every row mapped, rows written after the backfill too, and the table passes the audit and the kit', async (t) => {
  // A legacy writer keeps inserting rows without a tenant while the migration runs.
  await db.admin.query("INSERT INTO billing.invoices (id, customer_id, number) VALUES (5000, 1, 'INV-NEW')")
  const seen: string[] = []
  await migration.up(db.admin, {
    async onProgress ({ done, total }) {
      seen.push(`${done}/${total}`)
      // Below the batches' key: only the enforce step, under its lock, can still map it.
      await db.admin.query("INSERT INTO billing.invoices (id, customer_id, number) VALUES (0, 2, 'INV-LATE')")
    }
  })
  t.same(seen, ['1/1'], 'only the new row was left to backfill')
  t.same(await tenantsOf('billing'), { [tenantA]: 1251, [tenantB]: 1251 }, 'the late row was mapped too')
  const report = await auditDatabase(db.admin, { appRole: db.appRole, schema: 'billing' })
  t.same(report.findings.map((entry) => `${entry.rule} ${entry.object}: ${entry.message}`), [], 'the audit is clean')
  await assertTenantIsolation({ appPool, adminPool: db.admin, tables: ['billing.invoices'], rows: { 'billing.invoices': () => ({ customer_id: 1 }) } })
  const { rows } = await db.admin.query("SELECT has_table_privilege($1, 'billing.invoices', 'TRUNCATE') AS truncate", [db.appRole])
  t.equal(rows[0].truncate, false, 'TRUNCATE, which ignores RLS, was taken away')
  await migration.up(db.admin, { onProgress: () => { t.fail('nothing left to do') } })
  await db.admin.query('DELETE FROM billing.invoices WHERE id IN (0, 5000)')
})

t.test('each step\'s down undoes it, down to the original table', async (t) => {
  const progress: string[] = []
  await migration.down(db.admin, { to: 'backfill', onProgress: () => { progress.push('x') } })
  const { rows: [kept] } = await db.admin.query<{ rls: boolean, policies: number }>("SELECT relrowsecurity AS rls, (SELECT count(*)::int FROM pg_policy WHERE polrelid = c.oid) AS policies FROM pg_class c WHERE oid = 'billing.invoices'::regclass")
  t.same(kept, { rls: false, policies: 0 })
  t.same(await tenantsOf('billing'), { [tenantA]: 1250, [tenantB]: 1250 }, 'the backfill is kept')
  t.same(progress, [])
  await migration.down(db.admin, { to: 'add-column', onProgress: () => { progress.push('x') } })
  t.same(await tenantsOf('billing'), { null: ROWS })
  t.equal(progress.length, 3, 'the unfill ran in batches')
  await migration.down(db.admin, { onProgress: () => {} })
  t.same(await snapshot('billing'), original, 'columns, constraints, indexes, RLS and rows as before')
})

t.test('the SQL for a drizzle-kit --custom migration reaches the same state, and its down the original', async (t) => {
  const sql = tenancyMigration({ ...options('ledger'), batchSize: 700 }).sql()
  t.match(sql.up, /--> statement-breakpoint/)
  const before = await snapshot('ledger')
  const run = async (text: string): Promise<string[]> => {
    const client: pg.PoolClient = await db.admin.connect()
    const notices: string[] = []
    client.on('notice', (notice) => notices.push(notice.message ?? ''))
    try {
      await client.query('BEGIN')
      for (const statement of text.split('--> statement-breakpoint')) await client.query(statement)
      await client.query('COMMIT')
    } finally {
      client.removeAllListeners('notice')
      client.release()
    }
    return notices
  }
  t.same(await run(sql.up), ['backfill ledger.invoices: 700 rows', 'backfill ledger.invoices: 1400 rows', 'backfill ledger.invoices: 2100 rows', 'backfill ledger.invoices: 2500 rows'], 'progress as notices')
  t.same(await tenantsOf('ledger'), { [tenantA]: 1250, [tenantB]: 1250 })
  t.same((await auditDatabase(db.admin, { appRole: db.appRole, schema: 'ledger' })).findings.map((entry) => entry.rule), [])
  await run(sql.down)
  t.same(await snapshot('ledger'), before)
})

t.test('names that are not plain identifiers are refused before any SQL is written', async (t) => {
  for (const bad of [{ table: 'invoices; DROP TABLE x' }, { role: 'App' }, { tenantColumn: 'tenant id' }, { uniqueKeys: [{ name: 'k', columns: ['a"b'] }] }, { batchSize: 0 }, { tenantOf: ' ' }]) {
    t.throws(() => tenancyMigration({ ...options('billing'), ...bad }), { code: 'FST_TENANT_RLS_INVALID_OPTION' }, JSON.stringify(bad))
  }
})
