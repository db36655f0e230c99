// A lifecycle job whose connection dies mid-transaction (failover, an operator ending the backend),
// here an import that replaces a tenant's rows: the job rejects with the server's 57P01, not the
// error of the ROLLBACK that fails after it; the dead connection is released as broken and never
// handed out again; the server undid everything, the deletes of the rows it was replacing too.
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { exportTenant, importTenant } from 'fastify-tenant-rls'
import { checkoutsWork, installDeath, killInserts, releases } from '../helpers/backend-death.js'
import { createTestDatabase } from '../helpers/database.js'
import { committedRows, createLifecycleTables, seedTenant } from '../helpers/lifecycle-world.js'

const db = await createTestDatabase(t)
await createLifecycleTables(db)
await installDeath(db, [])
const tenantId = randomUUID()
await seedTenant(db, tenantId, 20)
const directory = t.testdir()

t.test('an import whose connection dies mid-way: 57P01, nothing replaced, the connection destroyed', async (t) => {
  const pool = db.appPool({ max: 2 })
  const released = releases(pool)
  const file = join(directory, 'tenant.export')
  await exportTenant({ pool, tenantId, out: file })
  const before = await committedRows(db, tenantId)
  released.length = 0
  await killInserts(t, db, 'projects', db.appRole)
  await t.rejects(importTenant({ pool, from: file, tenantId, replace: true }), { code: '57P01', message: /terminating connection due to administrator command/ }, "the statement's error, not the failed ROLLBACK's")
  t.equal(released.filter((release) => release === 'destroyed').length, 1, 'the dead connection was released as broken')
  t.same(await committedRows(db, tenantId), before, 'the rows it deleted to replace them are back')
  await checkoutsWork(pool, 2)
  await db.assertNoLeaks(t, pool)
})
