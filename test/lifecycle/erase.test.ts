// inspectTenantErasure / eraseTenant on a real database: the dry run counts exactly and deletes
// nothing; nothing is erased without the tenant id retyped; the erasure removes every row of the
// tenant and its tenants row, and nothing of another tenant; a row left behind (here by a delete
// trigger) or a failing audit hook rolls everything back. Checked through the superuser.
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { eraseTenant, inspectTenantErasure } from 'fastify-tenant-rls'
import { createTestDatabase, eventually } from '../helpers/database.js'
import { committedRows, createLifecycleTables, seedTenant, seedTwoTenants } from '../helpers/lifecycle-world.js'

const db = await createTestDatabase(t)
await createLifecycleTables(db)
const { tenantA, tenantB } = await seedTwoTenants(db, 20)
// The erasure runs as a role that may delete the tenants row: here the superuser.
const pool = db.admin
t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })

t.test('the dry run counts every row per table, parents first, and deletes nothing', async (t) => {
  const before = await committedRows(db, tenantA)
  const report = await inspectTenantErasure({ pool, tenantId: tenantA })
  t.same(report, {
    tenantId: tenantA,
    dryRun: true,
    tables: [{ table: 'projects', rows: 23 }, { table: 'a_tasks', rows: 46 }],
    tenantsTable: 'tenants',
    tenantRow: true,
    total: 69
  })
  t.same(await committedRows(db, tenantA), before)
})

t.test('nothing is erased without the tenant id retyped', async (t) => {
  const before = await committedRows(db, tenantA)
  for (const confirm of [undefined, '', tenantB, `${tenantA} `]) {
    await t.rejects(eraseTenant({ pool, tenantId: tenantA, confirm: confirm as string }), { code: 'FST_TENANT_RLS_ERASURE_NOT_CONFIRMED' }, `confirm ${JSON.stringify(confirm)}`)
  }
  await t.rejects(eraseTenant({ pool, tenantId: 'acme', confirm: 'acme' }), { code: 'FST_TENANT_RLS_TENANT_INVALID' })
  t.same(await committedRows(db, tenantA), before)
})

t.test('a row the deletes leave behind rolls the erasure back', async (t) => {
  // A delete-audit trigger writing into a tenant table the erasure has already emptied.
  await db.asOwner(`
    CREATE TABLE z_deleted (tenant_id uuid NOT NULL, project bigint NOT NULL);
    CREATE FUNCTION log_delete () RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO z_deleted VALUES (OLD.tenant_id, OLD.id); RETURN OLD; END $$;
    CREATE TRIGGER log_delete AFTER DELETE ON projects FOR EACH ROW EXECUTE FUNCTION log_delete();
  `)
  t.teardown(() => db.asOwner('DROP TABLE z_deleted; DROP FUNCTION log_delete CASCADE'))
  const before = await committedRows(db, tenantA)
  await t.rejects(eraseTenant({ pool, tenantId: tenantA, confirm: tenantA }), { code: 'FST_TENANT_RLS_ERASURE_INCOMPLETE', message: /z_deleted: 23/ })
  t.same(await committedRows(db, tenantA), before, 'nothing was erased')
})

t.test('a row of the tenant being inserted while the erasure starts is waited for, counted and erased', async (t) => {
  const appPool = db.appPool()
  const writer = await appPool.connect()
  t.teardown(() => { writer.release() })
  await writer.query('BEGIN')
  await writer.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenantA])
  // Not yet committed: its foreign-key check holds a KEY SHARE lock on A's tenants row.
  await writer.query("INSERT INTO projects (tenant_id, name) VALUES ($1, 'in flight')", [tenantA])
  const erasing = eraseTenant({ pool, tenantId: tenantA, confirm: tenantA })
  await eventually(async () => {
    const { rows } = await db.admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'")
    return rows[0].n === 1
  }, 'the erasure to wait on the tenants row before counting')
  await writer.query('COMMIT')
  const report = await erasing
  t.same(report.tables, [{ table: 'projects', rows: 24 }, { table: 'a_tasks', rows: 46 }], 'the row committed meanwhile is counted')
  t.same(await committedRows(db, tenantA), { tenants: [], projects: [], a_tasks: [] })
  await seedTenant(db, tenantA, 20)
})

t.test('a failing audit hook rolls the erasure back; a working one writes in the same transaction', async (t) => {
  await db.admin.query('CREATE TABLE erasure_log (erased uuid, total int)')
  t.teardown(() => db.admin.query('DROP TABLE erasure_log'))
  const before = await committedRows(db, tenantA)
  await t.rejects(eraseTenant({ pool, tenantId: tenantA, confirm: tenantA, onAudit () { throw new Error('audit trail unavailable') } }), { message: 'audit trail unavailable' })
  t.same(await committedRows(db, tenantA), before, 'nothing was erased unrecorded')

  const bBefore = await committedRows(db, tenantB)
  const report = await eraseTenant({
    pool,
    tenantId: tenantA,
    confirm: tenantA.toUpperCase(),
    async onAudit ({ action, tenantId, tables, client }) {
      t.equal(action, 'erase')
      await client.query('INSERT INTO erasure_log VALUES ($1, $2)', [tenantId, tables.reduce((sum, { rows }) => sum + rows, 0)])
    }
  })
  t.same(report.tables, [{ table: 'projects', rows: 23 }, { table: 'a_tasks', rows: 46 }])
  t.equal(report.dryRun, false)
  t.same(await committedRows(db, tenantA), { tenants: [], projects: [], a_tasks: [] }, 'nothing of the tenant is left, its tenants row included')
  t.same(await committedRows(db, tenantB), bBefore, 'tenant B untouched')
  const { rows } = await db.admin.query('SELECT erased, total FROM erasure_log')
  t.same(rows, [{ erased: tenantA, total: 69 }], 'the audit record committed with the erasure')

  const again = await eraseTenant({ pool, tenantId: tenantA, confirm: tenantA })
  t.same([again.total, again.tenantRow], [0, false], 'erasing again is a safe no-op')
})

t.test('the tenants table is refused when the tenant column references two', async (t) => {
  await db.asOwner('CREATE TABLE orgs (id uuid PRIMARY KEY); CREATE TABLE b_notes (tenant_id uuid NOT NULL REFERENCES orgs (id), body text)')
  t.teardown(() => db.asOwner('DROP TABLE b_notes; DROP TABLE orgs'))
  await t.rejects(inspectTenantErasure({ pool, tenantId: randomUUID() }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /references .* give tenantsTable/ })
  const report = await inspectTenantErasure({ pool, tenantId: tenantB, tenantsTable: 'tenants' })
  t.equal(report.tenantsTable, 'tenants')
})
