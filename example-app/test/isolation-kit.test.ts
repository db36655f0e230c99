// The example's own CI proof that its tenant tables are isolated, with fastify-tenant-rls/testing:
// on a database prepared by the example's startup steps, every table with a tenant_id column is
// found from the catalog, seeded for two fresh tenants (a tenants row each, tasks pointing at the
// same tenant's project), and attacked as the application role. Demo data is left alone.
import t from 'tap'
import { assertTenantIsolation } from 'fastify-tenant-rls/testing'
import { createTestDatabase } from '../../test/helpers/database.js'
import { newKey } from '../../test/helpers/signed-context.js'
import { setUpDatabase } from '../src/database.js'

const db = await createTestDatabase(t)
const appPool = db.appPool()
const signedContext = { keys: [newKey('example-test')] }
await setUpDatabase(db.admin, { ownerRole: db.ownerRole, appRole: db.appRole }, signedContext)

t.test('projects and tasks are isolated for reads, inserts, updates and deletes', async (t) => {
  const report = await assertTenantIsolation({ appPool, adminPool: db.admin, signedContext })
  t.same(report.tables, ['projects', 'tasks'], 'both tenant tables were found and checked')
  const { rows } = await db.admin.query('SELECT (SELECT count(*) FROM tenants) + (SELECT count(*) FROM projects) + (SELECT count(*) FROM tasks) AS left')
  t.equal(Number(rows[0].left), 0, 'the check removed every row it wrote, tenants included')
  await db.assertNoLeaks(t, appPool)
})
