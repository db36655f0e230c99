// The three bypass objects a superuser-run migration creates by default, shown to hand every
// tenant's rows to the app role (read back as the app role, with tenant A's setting), then flagged
// by both the audit and fastify-tenant-rls/testing; once fixed, neither reports anything.
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { auditDatabase } from 'fastify-tenant-rls/audit'
import { checkTenantIsolation } from 'fastify-tenant-rls/testing'
import { createTestDatabase } from '../helpers/database.js'
import { baselineSql } from '../helpers/audit-world.js'

const db = await createTestDatabase(t)
const appPool = db.appPool()
await db.asOwner(baselineSql('public', db.appRole))
const [tenantA, tenantB] = [randomUUID(), randomUUID()]
await db.admin.query('INSERT INTO tenants (id) VALUES ($1), ($2)', [tenantA, tenantB])
await db.admin.query("INSERT INTO items (tenant_id, name) VALUES ($1, 'a-1'), ($2, 'b-1')", [tenantA, tenantB])

// As a superuser migration writes them: owned by the superuser, readable by the app role.
await db.admin.query(`
  CREATE VIEW all_items AS SELECT tenant_id, name FROM items;
  GRANT SELECT ON all_items TO ${db.appRole};
  CREATE MATERIALIZED VIEW item_names AS SELECT tenant_id, name FROM items;
  GRANT SELECT ON item_names TO ${db.appRole};
  CREATE FUNCTION item_names_of(tenant uuid) RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER AS $$ SELECT name FROM items WHERE tenant_id = tenant $$;
`)

/** What the app role reads under tenant A, in a transaction that is rolled back. */
async function asTenantA (sql: string, values: unknown[] = []): Promise<string[]> {
  const client = await appPool.connect()
  try {
    await client.query('BEGIN')
    await client.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenantA])
    const { rows } = await client.query<{ name: string }>(sql, values)
    return rows.map((row) => row.name).sort()
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
}

t.test('each object hands tenant B\'s rows to tenant A', async (t) => {
  t.same(await asTenantA('SELECT name FROM items'), ['a-1'], 'the table itself is isolated')
  t.same(await asTenantA('SELECT name FROM all_items'), ['a-1', 'b-1'], 'the view leaks')
  t.same(await asTenantA('SELECT name FROM item_names'), ['a-1', 'b-1'], 'the materialized view leaks')
  t.same(await asTenantA('SELECT item_names_of AS name FROM item_names_of($1)', [tenantB]), ['b-1'], 'the function leaks')
})

t.test('the audit and the testing kit flag all three', async (t) => {
  const audit = await auditDatabase(db.admin, { appRole: db.appRole })
  t.same(audit.findings.map((entry) => `${entry.rule} ${entry.object}`).sort(), [
    'bypass.materialized-view item_names',
    'bypass.security-definer-function function item_names_of(uuid)',
    'bypass.view all_items'
  ])
  const report = await checkTenantIsolation({ appPool, adminPool: db.admin })
  t.notOk(report.ok, 'the kit no longer reports ok')
  t.same(report.failures.map((failure) => `${failure.operation} ${failure.table}`).sort(), [
    'bypass function item_names_of(uuid)',
    'bypass item_names',
    'bypass all_items'
  ].sort())
  await db.assertNoLeaks(t, appPool)
})

t.test('fixed, neither reports anything', async (t) => {
  await db.admin.query(`
    ALTER VIEW all_items SET (security_invoker = true);
    REVOKE ALL ON item_names FROM ${db.appRole};
    REVOKE EXECUTE ON FUNCTION item_names_of(uuid) FROM PUBLIC;
  `)
  t.same(await asTenantA('SELECT name FROM all_items'), ['a-1'], 'the view now applies the policy')
  t.same((await auditDatabase(db.admin, { appRole: db.appRole })).findings, [])
  const report = await checkTenantIsolation({ appPool, adminPool: db.admin })
  t.same(report.failures, [])
  t.ok(report.ok)
})
