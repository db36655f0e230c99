// System jobs: one transaction of the system role that sees every tenant and cannot delete,
// bracketed by audit rows that no rollback erases; nothing happens without an actor and a reason.
import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import pg from 'pg'
import t from 'tap'
import { withSystem } from 'fastify-tenant-rls/elevated'
import { committedNames, projects, schema } from '../helpers/fixture.js'
import { elevatedWorld } from '../helpers/elevated.js'

const world = await elevatedWorld(t)
const { db, tenantA, tenantB, systemPool, systemRole } = world
const job = { actor: 'job:reconcile', reason: 'nightly reconciliation' }

t.afterEach(async () => {
  if (systemPool.totalCount !== systemPool.idleCount) throw new Error('a system pool client was not released')
})

/** The audit rows written since `since` rows, without hashes. */
async function newRows (since: number) {
  return (await world.auditRows()).slice(since).map(({ event, actor, reason, detail }) => ({ event, actor, reason, detail }))
}

t.test('a job sees and updates every tenant; started and committed are recorded', async (t) => {
  const since = (await world.auditRows()).length
  const seen = await withSystem(systemPool, job, async (tx) => {
    await tx.insert(projects).values([{ tenantId: tenantA, name: 'job-a' }, { tenantId: tenantB, name: 'job-b' }])
    return (await tx.select().from(projects)).length
  }, { schema })
  t.equal(seen, 5, 'both tenants\' rows')
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2', 'job-a'])
  t.same(await committedNames(db, tenantB), ['b-1', 'job-b'])
  const rows = await newRows(since)
  t.match(rows, [
    { event: 'system_job.started', actor: 'job:reconcile', reason: 'nightly reconciliation', detail: {} },
    { event: 'system_job.committed', actor: 'job:reconcile', reason: 'nightly reconciliation', detail: { started: String } }
  ])
  t.equal(rows.length, 2)
})

t.test('a job cannot delete: refused by PostgreSQL, rolled back, and the attempt recorded', async (t) => {
  const since = (await world.auditRows()).length
  await t.rejects(withSystem(systemPool, job, async (tx) => {
    await tx.insert(projects).values({ tenantId: tenantA, name: 'before-delete' })
    await tx.delete(projects)
  }, { schema }), { cause: { code: '42501', message: /permission denied/ } })
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'], 'the insert before it rolled back, nothing deleted')
  t.match(await newRows(since), [{ event: 'system_job.started' }, { event: 'system_job.rolled_back', detail: { error: '42501' } }])
  await t.rejects(withSystem(systemPool, job, async (tx) => tx.execute(sql`TRUNCATE projects`)), { cause: { code: '42501' } })
  t.same(await committedNames(db, tenantB), ['b-1'])
})

t.test('audit rows survive a job that throws: the rollback cannot erase them', async (t) => {
  const since = (await world.auditRows()).length
  const failure = new Error('the job failed halfway')
  await t.rejects(withSystem(systemPool, job, async (tx) => {
    await tx.insert(projects).values({ tenantId: tenantA, name: 'halfway' })
    // A row the job writes to the trail itself is part of its transaction, and goes with it.
    await tx.execute(sql`INSERT INTO tenant_rls_audit (event, actor, reason) VALUES ('system_job.note', 'job:reconcile', 'inside')`)
    throw failure
  }, { schema }), failure)
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
  t.match(await newRows(since), [
    { event: 'system_job.started', actor: 'job:reconcile' },
    { event: 'system_job.rolled_back', actor: 'job:reconcile', detail: { error: 'Error' } }
  ])
  t.equal((await newRows(since)).length, 2)
})

t.test('a job that swallowed a failed statement is not reported committed (COMMIT answers ROLLBACK)', async (t) => {
  const since = (await world.auditRows()).length
  await t.rejects(withSystem(systemPool, job, async (tx) => {
    await tx.insert(projects).values({ tenantId: tenantA, name: 'swallowed' })
    await tx.execute(sql`SELECT 1 / 0`).catch(() => {})
    return 'done'
  }, { schema }), { code: 'FST_TENANT_RLS_COMMIT_FAILED' })
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
  t.match(await newRows(since), [{ event: 'system_job.started' }, { event: 'system_job.rolled_back', detail: { error: 'FST_TENANT_RLS_COMMIT_FAILED' } }])
})

t.test('a job whose connection dies still gets its outcome recorded, on another connection', async (t) => {
  const since = (await world.auditRows()).length
  await t.rejects(withSystem(systemPool, job, async (tx) => {
    await tx.insert(projects).values({ tenantId: tenantA, name: 'killed' })
    await db.admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND state LIKE \'idle in transaction%\'', [systemRole])
    await tx.execute(sql`SELECT 1`)
  }, { schema }))
  t.same(await committedNames(db, tenantA), ['a-1', 'a-2'])
  t.match(await newRows(since), [{ event: 'system_job.started' }, { event: 'system_job.rolled_back' }])
})

t.test('a job that leaves its connection as another role: the outcome is still recorded, and the connection is not reused', async (t) => {
  await db.admin.query(`GRANT pg_read_all_data TO ${systemRole}`)
  t.teardown(() => db.admin.query(`REVOKE pg_read_all_data FROM ${systemRole}`))
  const onePool = new pg.Pool({ ...systemPool.options, max: 1 })
  t.teardown(() => onePool.end())
  const since = (await world.auditRows()).length
  // A session-level SET ROLE outlives the job's COMMIT; pg_read_all_data may not append to the trail.
  await withSystem(onePool, job, async (tx) => tx.execute(sql`SET ROLE pg_read_all_data`))
  t.match(await newRows(since), [{ event: 'system_job.started' }, { event: 'system_job.committed' }], 'recorded on a fresh connection')
  t.equal(await withSystem(onePool, job, async (tx) => (await tx.execute<{ role: string }>(sql`SELECT current_user AS role`)).rows[0]?.role), systemRole, 'the next job runs as the system role')
})

t.test('a connection that answers as another role is refused for the next job (FST_TENANT_RLS_UNEXPECTED_ROLE) and destroyed', async (t) => {
  // This time the role the job leaves behind may append, so the job's connection looks healthy.
  await db.admin.query(`GRANT pg_read_all_data TO ${systemRole}; GRANT INSERT (event, actor, reason, tenant_id, grant_id, detail) ON tenant_rls_audit TO pg_read_all_data`)
  t.teardown(() => db.admin.query(`REVOKE pg_read_all_data FROM ${systemRole}; REVOKE INSERT ON tenant_rls_audit FROM pg_read_all_data`))
  const onePool = new pg.Pool({ ...systemPool.options, max: 1 })
  t.teardown(() => onePool.end())
  await withSystem(onePool, job, async (tx) => tx.execute(sql`SET ROLE pg_read_all_data`))
  const since = (await world.auditRows()).length
  await t.rejects(withSystem(onePool, job, async () => 'ran'), { code: 'FST_TENANT_RLS_UNEXPECTED_ROLE', message: /pg_read_all_data/ })
  t.match(await newRows(since), [{ event: 'system_job.started' }, { event: 'system_job.rolled_back', detail: { error: 'FST_TENANT_RLS_UNEXPECTED_ROLE' } }])
  t.equal(await withSystem(onePool, job, async (tx) => (await tx.execute<{ role: string }>(sql`SELECT current_user AS role`)).rows[0]?.role), systemRole, 'the next job runs as the system role')
})

t.test('no actor or no reason: refused before a connection is taken', async (t) => {
  // Any connection attempt to this pool would fail with ECONNREFUSED, not with the refusal.
  const unreachable = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', connectionTimeoutMillis: 500 })
  t.teardown(() => unreachable.end())
  const cases: Array<[unknown, RegExp]> = [
    [undefined, /pass \{ actor, reason \}/],
    [{ reason: 'why' }, /actor is required/],
    [{ actor: '', reason: 'why' }, /actor is required/],
    [{ actor: 'job:x' }, /reason is required/],
    [{ actor: 'job:x', reason: '   ' }, /must not start or end with spaces/],
    [{ actor: 'job:x\nforged line', reason: 'why' }, /control characters/],
    [{ actor: 'x'.repeat(201), reason: 'why' }, /at most 200/],
    [{ actor: 'job:x', reason: 'y'.repeat(1001) }, /at most 1000/],
    [{ actor: 42, reason: 'why' }, /actor is required/]
  ]
  for (const [accountability, message] of cases) {
    await t.rejects(withSystem(unreachable, accountability as never, async () => 'ran'), { code: 'FST_TENANT_RLS_ACCOUNTABILITY_REQUIRED', statusCode: 400, message }, JSON.stringify(accountability))
  }
  t.equal(unreachable.totalCount, 0, 'no connection was ever opened')
})

t.test('bad options are refused before anything runs', async (t) => {
  await t.rejects(withSystem(systemPool, job, async () => 'ran', { auditTable: 'audit; drop table x' }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /schema-qualified/ })
  await t.rejects(withSystem(systemPool, job, 'not a function' as never), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
  await t.rejects(withSystem({} as pg.Pool, job, async () => 'ran'), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /systemPool must be a pg.Pool/ })
})

t.test('a job with a random id sees that id on every tenant (sanity of BYPASSRLS)', async (t) => {
  const marker = randomUUID()
  await withSystem(systemPool, job, async (tx) => tx.update(projects).set({ name: sql`name || ${'-' + marker.slice(0, 4)}` }).where(sql`name = 'b-1'`), { schema })
  t.same(await committedNames(db, tenantB), [`b-1-${marker.slice(0, 4)}`])
  await db.admin.query('UPDATE projects SET name = \'b-1\' WHERE tenant_id = $1', [tenantB])
})
