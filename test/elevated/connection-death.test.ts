// Elevated access when its connection dies mid-transaction (failover, an operator ending the
// backend). A system job: the caller hears the statement's 57P01, not the error of the ROLLBACK
// that fails after it; the trail records the outcome with that code, on another connection;
// nothing the job wrote is committed. verifyAuditChain: the same 57P01, no report. Either way the
// dead connection is destroyed (the process survives) and the pool keeps working.
import { sql } from 'drizzle-orm'
import t from 'tap'
import { verifyAuditChain, withSystem } from 'fastify-tenant-rls/elevated'
import { checkoutsWork, DIE, installDeath, releases } from '../helpers/backend-death.js'
import { eventually } from '../helpers/database.js'
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

t.test('verifyAuditChain: its connection dies while it reads the trail: 57P01, the connection destroyed', async (t) => {
  const released = releases(systemPool)
  // The read waits behind a lock, so the test can end its backend exactly while it reads.
  const locker = await db.admin.connect()
  t.teardown(() => locker.release())
  await locker.query('BEGIN; LOCK TABLE tenant_rls_audit IN ACCESS EXCLUSIVE MODE')
  const verifying = verifyAuditChain(systemPool)
  verifying.catch(() => {})
  let pid: number | undefined
  await eventually(async () => {
    const { rows: [waiting] } = await db.admin.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'", [systemRole])
    pid = waiting?.pid
    return pid !== undefined
  }, 'the verification to wait for the trail')
  await db.admin.query('SELECT pg_terminate_backend($1)', [pid])
  await locker.query('ROLLBACK')
  await t.rejects(verifying, { code: '57P01' })
  t.same(released, ['destroyed'])
  await checkoutsWork(systemPool, 2)
  t.equal((await verifyAuditChain(systemPool)).ok, true, 'the next verification works')
})
