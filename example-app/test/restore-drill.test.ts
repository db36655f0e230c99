// The example's restore drill, with fastify-tenant-rls/testing: on a database prepared by the
// example's startup steps and demo data, Acme is exported, erased, re-imported and compared table
// by table, while Globex's checksums must not move.
import t from 'tap'
import { restoreDrill } from 'fastify-tenant-rls/testing'
import { createTestDatabase } from '../../test/helpers/database.js'
import { DEMO, seedDemoData, setUpDatabase } from '../src/database.js'

const db = await createTestDatabase(t)
const appPool = db.appPool()
await setUpDatabase(db.admin, { ownerRole: db.ownerRole, appRole: db.appRole })
await seedDemoData(db.admin, db.ownerRole, appPool)

t.test('Acme is restored byte for byte from its export; Globex is untouched', async (t) => {
  const report = await restoreDrill({ appPool, adminPool: db.admin, tenantId: DEMO.acme.id, otherTenantIds: [DEMO.globex.id] })
  t.same(report.failures, [])
  t.ok(report.ok)
  t.same(report.tables.map(({ table, restoredRows }) => [table, restoredRows]), [['projects', 2], ['tasks', 3]])
  t.equal(report.others.length, 2, 'both of Globex\'s tables were compared')
  await db.assertNoLeaks(t, appPool)
})
