// explainUnderTenant: the plan is the app role's under the tenant's policies, the statement's
// effects are rolled back, a second statement cannot end that transaction, and each of the three
// plan shapes is flagged on a table built to show it and not on one built to avoid it.
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { explainUnderTenant } from 'fastify-tenant-rls/audit'
import { createTestDatabase } from '../helpers/database.js'
import { baselineSql, TENANT } from '../helpers/audit-world.js'

const db = await createTestDatabase(t)
const pool = db.appPool()
await db.asOwner(`${baselineSql('public', db.appRole)}
  -- No index leads with tenant_id: the policy can only be a filter, above a scan or another index.
  CREATE TABLE logs (tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, id bigint NOT NULL, at int NOT NULL, PRIMARY KEY (id, tenant_id));
  CREATE INDEX logs_at ON logs (at);
  ALTER TABLE logs ENABLE ROW LEVEL SECURITY; ALTER TABLE logs FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON logs USING (tenant_id = ${TENANT}) WITH CHECK (tenant_id = ${TENANT});
  -- A policy with a subquery on the row: a SubPlan.
  CREATE TABLE notes (tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, id bigint NOT NULL, PRIMARY KEY (tenant_id, id));
  ALTER TABLE notes ENABLE ROW LEVEL SECURITY; ALTER TABLE notes FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON notes USING (tenant_id = ${TENANT} AND id IN (SELECT g FROM generate_series(1, 100000, 2) g));
  GRANT SELECT, INSERT, UPDATE, DELETE ON logs, notes TO ${db.appRole};
`)
const tenants = Array.from({ length: 20 }, () => randomUUID())
const [tenantA = '', tenantB = ''] = tenants
await db.admin.query('INSERT INTO tenants (id) SELECT unnest($1::uuid[])', [tenants])
for (const table of ['items', 'logs', 'notes']) {
  const columns = { items: "name) SELECT ($1::uuid[])[1 + g % 20], 'item-' || g", logs: 'id, at) SELECT ($1::uuid[])[1 + g % 20], g, g % 500', notes: 'id) SELECT ($1::uuid[])[1 + g % 20], g' }[table]
  await db.admin.query(`INSERT INTO ${table} (tenant_id, ${columns} FROM generate_series(1, 20000) g`, [tenants])
  await db.admin.query(`ANALYZE ${table}`)
}
t.afterEach(async (t) => { await db.assertNoLeaks(t, pool) })

const explain = (sql: string, tenant = tenantA, params?: unknown[]) =>
  explainUnderTenant(pool, { appRole: db.appRole, tenant, sql, ...(params === undefined ? {} : { params }) })
const rules = (report: Awaited<ReturnType<typeof explain>>): string[] => report.findings.map((entry) => entry.rule).sort()

t.test('the plan is the app role\'s, under the tenant\'s policy', async (t) => {
  const report = await explain('SELECT * FROM items')
  const [explained] = report.json as Array<{ Plan: { 'Actual Rows': number } }>
  t.equal(explained?.Plan['Actual Rows'], 1000, 'tenant A\'s 1,000 rows, not 20,000')
  t.match(report.plan, /InitPlan 1/)
})

t.test('an index condition on the tenant is not flagged', async (t) => {
  const report = await explain("SELECT * FROM items WHERE name = 'item-20'")
  t.same(rules(report), [], report.plan)
  t.match(report.plan, /Index Cond: .*tenant_id = \(InitPlan 1\)/)
})

t.test('a sequential scan of a tenant table is flagged', async (t) => {
  const report = await explain('SELECT count(*) FROM logs')
  t.same(rules(report), ['explain.seq-scan'], report.plan)
})

t.test('the policy as a filter above another index is flagged', async (t) => {
  const report = await explain('SELECT * FROM logs WHERE at = 5')
  t.same(rules(report), ['explain.policy-filter'], report.plan)
})

t.test('a policy evaluated per row (a SubPlan) is flagged', async (t) => {
  const report = await explain('SELECT * FROM notes WHERE id = 7')
  t.ok(rules(report).includes('explain.policy-per-row'), report.plan)
})

t.test('what the statement writes is rolled back', async (t) => {
  await explain("INSERT INTO items (tenant_id, name) VALUES ($1, 'explained')", tenantA, [tenantA])
  const { rows } = await db.admin.query("SELECT count(*)::int AS count FROM items WHERE name = 'explained'")
  t.equal(rows[0].count, 0)
})

t.test('a write for another tenant is still refused by the policy', async (t) => {
  await t.rejects(explain("INSERT INTO items (tenant_id, name) VALUES ($1, 'other')", tenantA, [tenantB]), { code: '42501' })
})

t.test('a second statement cannot commit or drop anything', async (t) => {
  await t.rejects(explain('SELECT 1; INSERT INTO tenants (id) VALUES (gen_random_uuid()); COMMIT'), { code: '42601' })
  await t.rejects(explain('SELECT 1; DROP TABLE items'), { code: '42601' })
  const { rows } = await db.admin.query("SELECT to_regclass('items') IS NOT NULL AS exists, (SELECT count(*)::int FROM tenants) AS tenants")
  t.same(rows[0], { exists: true, tenants: 20 })
})

t.test('bad input is refused before anything is sent', async (t) => {
  await t.rejects(explain('SELECT 1', 'not-a-uuid'), { code: 'FST_TENANT_RLS_TENANT_INVALID' })
  await t.rejects(explainUnderTenant(pool, { appRole: db.appRole, tenant: tenantA, sql: 'SELECT 1', setting: 'x; DROP TABLE items' }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
  await t.rejects(explainUnderTenant(pool, { appRole: db.appRole, tenant: tenantA, sql: '  ' }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
})

t.test('a connection that may not become the app role gets a clear error, and is released', async (t) => {
  await t.rejects(explainUnderTenant(pool, { appRole: db.ownerRole, tenant: tenantA, sql: 'SELECT 1' }), { code: '42501' })
})

t.test('an app role that does not exist gets the audit\'s error, and the connection is released', async (t) => {
  await t.rejects(explainUnderTenant(pool, { appRole: 'no_such_role', tenant: tenantA, sql: 'SELECT 1' }), { code: 'FST_TENANT_RLS_AUDIT_ROLE_NOT_FOUND' })
})
