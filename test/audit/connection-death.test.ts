// The audit tools when their connection dies mid-transaction (failover, an operator ending the
// backend): the statement's own error is the one reported (57P01), not the ROLLBACK's that fails
// after it; the dead connection is released as broken and never handed out again; the process
// survives; and nothing is left half done: tenancyMigration's enforce step is undone whole and a
// second run finishes it, explainUnderTenant's write is not committed.
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import t from 'tap'
import type { Test } from 'tap'
import { explainUnderTenant, tenancyMigration } from 'fastify-tenant-rls/audit'
import { baselineSql } from '../helpers/audit-world.js'
import { checkoutsWork, DIE, installDeath, releases } from '../helpers/backend-death.js'
import { createTestDatabase } from '../helpers/database.js'
import { runCli } from '../../dist/cli/run-cli.js'
import { captureIo } from '../helpers/cli-io.js'

const db = await createTestDatabase(t)
await installDeath(db, [db.appRole])
await db.asOwner(baselineSql('public', db.appRole))
const [tenantA, tenantB] = [randomUUID(), randomUUID()]
await db.admin.query('INSERT INTO tenants (id) VALUES ($1), ($2)', [tenantA, tenantB])
await db.admin.query(`CREATE SCHEMA billing AUTHORIZATION ${db.ownerRole}; GRANT USAGE ON SCHEMA billing TO ${db.appRole}`)
await db.asOwner(`
  CREATE TABLE billing.customers (id bigint PRIMARY KEY, org_id uuid REFERENCES public.tenants (id));
  CREATE TABLE billing.invoices (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES billing.customers (id), number text NOT NULL CONSTRAINT invoices_number_key UNIQUE);
`)
await db.admin.query('INSERT INTO billing.customers (id, org_id) VALUES (1, $1), (2, $2)', [tenantA, tenantB])
await db.admin.query("INSERT INTO billing.invoices (id, customer_id, number) SELECT g, 1 + g % 2, 'INV-' || g FROM generate_series(1, 300) g")

const migration = tenancyMigration({
  table: 'billing.invoices',
  tenantOf: '(SELECT c.org_id FROM billing.customers c WHERE c.id = t.customer_id)',
  role: db.appRole,
  batchSize: 100,
  uniqueKeys: [{ name: 'invoices_number_key', columns: ['number'] }]
})
const quiet = { onProgress: () => {} }

/** A pool of the superuser with one connection, as a migration runner has. */
function migrationPool (t: Test): pg.Pool {
  const pool = new pg.Pool({ connectionString: db.adminUrl, max: 1 })
  pool.on('error', () => {})
  t.teardown(() => pool.end())
  return pool
}

/** What the enforce step changes on billing.invoices: a rolled-back enforce leaves all of it as before. */
async function enforced (): Promise<unknown> {
  const { rows: [state] } = await db.admin.query(`SELECT
    (SELECT attnotnull FROM pg_attribute WHERE attrelid = 'billing.invoices'::regclass AND attname = 'tenant_id') AS not_null,
    ARRAY(SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'billing.invoices'::regclass ORDER BY conname) AS constraints,
    (SELECT relrowsecurity::text || ' ' || relforcerowsecurity::text FROM pg_class WHERE oid = 'billing.invoices'::regclass) AS rls,
    (SELECT count(*)::int FROM pg_policy WHERE polrelid = 'billing.invoices'::regclass) AS policies,
    has_table_privilege($1, 'billing.invoices', 'SELECT') AS granted`, [db.appRole])
  return state
}

t.test('tenancyMigration: the connection dies in the enforce step; 57P01 is reported, the step is undone whole, the connection destroyed, a second run finishes', async (t) => {
  const pool = migrationPool(t)
  const released = releases(pool)
  // Dies at the policy, the enforce step's NOT NULL, foreign key, unique keys and RLS already done in its transaction.
  await db.admin.query(`CREATE FUNCTION faults.die_on_ddl () RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM ${DIE}; END $$;
    CREATE EVENT TRIGGER die_on_policy ON ddl_command_start WHEN TAG IN ('CREATE POLICY') EXECUTE FUNCTION faults.die_on_ddl()`)
  const dropTrigger = async (): Promise<void> => { await db.admin.query('DROP EVENT TRIGGER IF EXISTS die_on_policy; DROP FUNCTION IF EXISTS faults.die_on_ddl()') }
  t.teardown(dropTrigger)

  await t.rejects(migration.up(pool, quiet), { code: '57P01', message: /terminating connection due to administrator command/ }, "the statement's error, not the failed ROLLBACK's")
  t.same(released, ['destroyed'], 'the dead connection was released as broken')
  t.same(await enforced(), {
    not_null: false,
    constraints: ['invoices_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES billing.customers(id)', 'invoices_number_key UNIQUE (number)', 'invoices_pkey PRIMARY KEY (id)'],
    rls: 'false false',
    policies: 0,
    granted: false
  }, 'nothing of the enforce step is left')
  const { rows: [mapped] } = await db.admin.query<{ missing: number }>('SELECT count(*) FILTER (WHERE tenant_id IS NULL)::int AS missing FROM billing.invoices')
  t.equal(mapped?.missing, 0, 'the backfill, committed batch by batch before it, is kept')
  await checkoutsWork(pool, 1)

  await dropTrigger()
  await migration.up(pool, quiet)
  t.match(await enforced(), { not_null: true, rls: 'true true', policies: 1, granted: true }, 'a second run enforces')
  t.same(released.slice(1), ['pooled', 'pooled'], 'the checkout and the clean run keep their connection')
  await migration.down(pool, quiet)
})

t.test('tenancyMigration: a run that fails with its connection alive destroys that connection too', async (t) => {
  const pool = migrationPool(t)
  const released = releases(pool)
  const crash = new Error('the runner stopped')
  await t.rejects(migration.up(pool, { onProgress () { throw crash } }), crash)
  t.same(released, ['destroyed'])
  t.equal(pool.totalCount, 0, 'not pooled again, although it still answers')
  await migration.down(pool, quiet)
})

t.test('explainUnderTenant: the connection dies during the statement; 57P01 is reported, nothing committed, the connection destroyed', async (t) => {
  const pool = db.appPool({ max: 2 })
  const released = releases(pool)
  const sql = `WITH written AS (INSERT INTO items (tenant_id, name) VALUES ($1, 'explained then killed') RETURNING 1) SELECT ${DIE} FROM written`
  await t.rejects(explainUnderTenant(pool, { appRole: db.appRole, tenant: tenantA, sql, params: [tenantA] }), { code: '57P01' }, "the statement's error, not the failed ROLLBACK's")
  t.same(released, ['destroyed'])
  const { rows: [left] } = await db.admin.query<{ count: number }>("SELECT count(*)::int AS count FROM items WHERE name = 'explained then killed'")
  t.equal(left?.count, 0, 'the write was not committed')
  await checkoutsWork(pool, 2)
  t.ok((await explainUnderTenant(pool, { appRole: db.appRole, tenant: tenantB, sql: 'SELECT * FROM items' })).plan, 'the next explain works')
  await db.assertNoLeaks(t, pool)
})

t.test('the explain command: its connection dies during the statement; exit 3 with the server\'s message, the process survives', async (t) => {
  const sql = `WITH written AS (INSERT INTO items (tenant_id, name) VALUES ('${tenantA}', 'explained by the cli then killed') RETURNING 1) SELECT ${DIE} FROM written`
  const { io, out, err } = captureIo()
  const code = await runCli(['explain', '--database-url', db.url(), '--app-role', db.appRole, '--tenant', tenantA, sql], io)
  t.equal(code, 3)
  t.match(err(), /terminating connection due to administrator command|Connection terminated/)
  t.equal(out(), '')
  const { rows: [left] } = await db.admin.query<{ count: number }>("SELECT count(*)::int AS count FROM items WHERE name = 'explained by the cli then killed'")
  t.equal(left?.count, 0, 'the write was not committed')
})
