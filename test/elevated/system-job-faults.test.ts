// A system job whose connection dies during its work (failover, an operator ending the backend):
// the caller hears the statement's 57P01, not the error of the ROLLBACK that fails after it; the
// trail records the outcome with that code, on another connection; the job's connection is
// destroyed and the pool keeps working; nothing the job wrote is committed.
import { sql } from 'drizzle-orm'
import t from 'tap'
import { withSystem } from 'fastify-tenant-rls/elevated'
import { checkoutsWork, DIE, installDeath, releases } from '../helpers/backend-death.js'
import { elevatedWorld } from '../helpers/elevated.js'
import { committedNames, projects, schema } from '../helpers/fixture.js'

const world = await elevatedWorld(t)
const { db, tenantA, systemPool, systemRole } = world
await installDeath(db, [systemRole])
const job = { actor: 'job:reconcile', reason: 'nightly reconciliation' }

t.test('the job\'s connection dies mid-statement: 57P01 reaches the caller and the trail, nothing committed, the connection destroyed', async (t) => {
  const since = (await world.auditRows()).length
  const released = releases(systemPool)
  await t.rejects(withSystem(systemPool, job, async (tx) => {
    await tx.insert(projects).values({ tenantId: tenantA, name: 'killed mid-job' })
    await tx.execute(sql.raw(`SELECT ${DIE}`))
  }, { schema }), { cause: { code: '57P01', message: /terminating connection due to administrator command/ } }, "the statement's error, not the failed ROLLBACK's")
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], 'nothing committed')
  t.match((await world.auditRows()).slice(since), [{ event: 'system_job.started' }, { event: 'system_job.rolled_back', detail: { error: '57P01' } }])
  t.equal(released.filter((release) => release === 'destroyed').length, 1, 'the job\'s connection was released as broken')
  await checkoutsWork(systemPool, 2)
  t.equal(systemPool.totalCount, systemPool.idleCount, 'every client back')
})
