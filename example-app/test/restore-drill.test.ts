// The example's restore drill, with fastify-tenant-rls/testing: on a database prepared by the
// example's startup steps and demo data, Acme is exported, erased, re-imported and compared table
// by table, while Globex's checksums must not move.
import t from 'tap'
import { restoreDrill } from 'fastify-tenant-rls/testing'
import { createTestDatabase } from '../../test/helpers/database.js'
import { newKey } from '../../test/helpers/signed-context.js'
import { DEMO, seedDemoData, setUpDatabase } from '../src/database.js'

const db = await createTestDatabase(t)
const appPool = db.appPool()
const signedContext = { keys: [newKey('example-test')] }
await setUpDatabase(db.admin, { ownerRole: db.ownerRole, appRole: db.appRole }, signedContext)
await seedDemoData(db.admin, db.ownerRole, appPool, signedContext)

t.test('Acme is restored byte for byte from its export; Globex is untouched', async (t) => {
  const report = await restoreDrill({ appPool, adminPool: db.admin, tenantId: DEMO.acme.id, otherTenantIds: [DEMO.globex.id], signedContext })
  t.same(report.failures, [])
  t.ok(report.ok)
  t.same(report.tables.map(({ table, restoredRows }) => [table, restoredRows]), [['projects', 2], ['tasks', 3]])
  t.equal(report.others.length, 2, 'both of Globex\'s tables were compared')
  await db.assertNoLeaks(t, appPool)
})
