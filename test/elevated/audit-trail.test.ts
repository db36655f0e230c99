// The audit trail: append-only for every role (privileges, and triggers even the owner and a
// superuser meet), a hash chain that reveals what a superuser who switched the triggers off changed
// or deleted, one order under concurrent appends, and the per-tenant access report.
import pg from 'pg'
import t from 'tap'
import { accessReport, createGrant, openBreakGlass, verifyAuditChain, withSystem } from 'fastify-tenant-rls/elevated'
import { elevatedWorld } from '../helpers/elevated.js'

const world = await elevatedWorld(t, 4)
const { db, tenantA, tenantB, systemPool } = world
const job = { actor: 'job:audit-test', reason: 'filling the trail' }

/** As the superuser with triggers off (session_replication_role = replica): what a tamperer does. */
async function tamper (statement: string, values: unknown[] = []): Promise<void> {
  const client = await db.admin.connect()
  try {
    await client.query('SET session_replication_role = replica')
    await client.query(statement, values)
  } finally {
    await client.query('RESET session_replication_role')
    client.release()
  }
}

await withSystem(systemPool, job, async () => 'one')
await withSystem(systemPool, job, async () => 'two')

t.test('an untouched trail verifies, and says where its head is', async (t) => {
  const report = await verifyAuditChain(systemPool)
  t.equal(report.ok, true)
  t.same(report.problems, [])
  t.equal(report.rows, (await world.auditRows()).length)
  t.match(report.head, { seq: String, hash: /^[0-9a-f]{64}$/ })
})

t.test('UPDATE, DELETE and TRUNCATE are refused: to the system role, the owner and a superuser', async (t) => {
  for (const statement of ['UPDATE tenant_rls_audit SET reason = \'edited\'', 'DELETE FROM tenant_rls_audit', 'TRUNCATE tenant_rls_audit']) {
    await t.rejects(systemPool.query(statement), { code: '42501', message: /permission denied/ }, `system role: ${statement}`)
    await t.rejects(db.asOwner(statement), { code: '42501', message: /append-only/ }, `owner: ${statement}`)
    await t.rejects(db.admin.query(statement), { code: '42501', message: /append-only/ }, `superuser: ${statement}`)
  }
  await t.rejects(world.pool.query('SELECT * FROM tenant_rls_audit'), { code: '42501' }, 'the app role cannot even read it')
  t.equal((await verifyAuditChain(systemPool)).ok, true)
})

t.test('the chaining columns cannot be forged by the writer', async (t) => {
  await t.rejects(systemPool.query('INSERT INTO tenant_rls_audit (seq, event, actor, prev_hash, hash, occurred_at) VALUES (1, \'system_job.started\', \'x\', \'0\', \'0\', now())'), { code: '42501' })
})

t.test('a superuser\'s edit, with the triggers off, is found', async (t) => {
  const [, second] = await world.auditRows()
  t.ok(second)
  await tamper('UPDATE tenant_rls_audit SET reason = \'nothing to see\' WHERE seq = $1', [second?.seq])
  t.teardown(() => tamper('UPDATE tenant_rls_audit SET reason = $2 WHERE seq = $1', [second?.seq, second?.reason]))
  const report = await verifyAuditChain(systemPool)
  t.equal(report.ok, false)
  t.same(report.problems, [{ seq: second?.seq, problem: 'its hash does not match its content: the row was modified' }])
})

t.test('an edit whose hash was recomputed is found by the next row\'s link', async (t) => {
  const [first] = await world.auditRows()
  await tamper('UPDATE tenant_rls_audit a SET actor = \'job:someone-else\' WHERE seq = $1', [first?.seq])
  await tamper('UPDATE tenant_rls_audit a SET hash = tenant_rls_audit_hash(a) WHERE seq = $1', [first?.seq])
  t.teardown(async () => {
    await tamper('UPDATE tenant_rls_audit a SET actor = $2 WHERE seq = $1', [first?.seq, first?.actor])
    await tamper('UPDATE tenant_rls_audit a SET hash = tenant_rls_audit_hash(a) WHERE seq = $1', [first?.seq])
  })
  const report = await verifyAuditChain(systemPool)
  t.equal(report.ok, false)
  t.match(report.problems, [{ problem: /not chained to the row before it/ }])
})

t.test('a superuser\'s delete is found: in the middle by the links, at the end by the anchor', async (t) => {
  const { head } = await verifyAuditChain(systemPool)
  // A copy to put the rows back from (a JSON round trip would lose the timestamps' microseconds).
  await db.admin.query('CREATE TABLE audit_copy AS SELECT * FROM tenant_rls_audit')
  t.teardown(() => db.admin.query('DROP TABLE audit_copy'))
  const rows = await db.admin.query('SELECT seq FROM tenant_rls_audit ORDER BY seq')
  const middle = rows.rows[1]
  const last = rows.rows[rows.rows.length - 1]
  await tamper('DELETE FROM tenant_rls_audit WHERE seq = $1', [middle.seq])
  const report = await verifyAuditChain(systemPool)
  t.equal(report.ok, false)
  t.match(report.problems, [{ seq: rows.rows[2].seq, problem: /not chained/ }])
  await tamper('INSERT INTO tenant_rls_audit SELECT * FROM audit_copy WHERE seq = $1', [middle.seq])
  t.equal((await verifyAuditChain(systemPool)).ok, true, 'restored')

  await tamper('DELETE FROM tenant_rls_audit WHERE seq = $1', [last.seq])
  t.equal((await verifyAuditChain(systemPool)).ok, true, 'a cut-off tail leaves the links intact')
  const anchored = await verifyAuditChain(systemPool, { anchor: head })
  t.equal(anchored.ok, false)
  t.match(anchored.problems, [{ seq: last.seq, problem: /anchor row is missing/ }])
  await tamper('INSERT INTO tenant_rls_audit SELECT * FROM audit_copy WHERE seq = $1', [last.seq])
  t.equal((await verifyAuditChain(systemPool, { anchor: head })).ok, true, 'restored')
})

t.test('a chain rewritten from scratch still fails its anchor', async (t) => {
  const { head } = await verifyAuditChain(systemPool)
  const [first] = await world.auditRows()
  const rewrite = async (actor: string | undefined) => {
    await tamper('UPDATE tenant_rls_audit SET actor = $2 WHERE seq = $1', [first?.seq, actor])
    // Every hash and link recomputed in order, as a careful tamperer would.
    await tamper(`DO $$ DECLARE r record; previous text := repeat('0', 64); BEGIN
      FOR r IN SELECT seq FROM tenant_rls_audit ORDER BY seq LOOP
        UPDATE tenant_rls_audit SET prev_hash = previous WHERE seq = r.seq;
        UPDATE tenant_rls_audit a SET hash = tenant_rls_audit_hash(a) WHERE seq = r.seq RETURNING hash INTO previous;
      END LOOP; END $$`)
  }
  await rewrite('job:forged')
  t.teardown(() => rewrite(first?.actor))
  t.equal((await verifyAuditChain(systemPool)).ok, true, 'the links alone cannot tell')
  const anchored = await verifyAuditChain(systemPool, { anchor: head })
  t.equal(anchored.ok, false)
  t.match(anchored.problems, [{ problem: /anchor row has another hash/ }])
})

t.test('concurrent appends from many connections form one chain, in sequence order', async (t) => {
  const other = new pg.Pool({ ...systemPool.options, max: 4 })
  t.teardown(() => other.end())
  await Promise.all(Array.from({ length: 24 }, (_, i) => withSystem(i % 2 === 0 ? systemPool : other, { actor: `job:parallel-${i}`, reason: 'race' }, async () => i)))
  const report = await verifyAuditChain(systemPool)
  t.equal(report.ok, true, JSON.stringify(report.problems))
})

t.test('the hash does not depend on the writer\'s or the verifier\'s TimeZone', async (t) => {
  const elsewhere = new pg.Pool({ ...systemPool.options, options: '-c TimeZone=Pacific/Chatham' })
  t.teardown(() => elsewhere.end())
  await withSystem(elsewhere, job, async () => 'from Chatham')
  t.equal((await verifyAuditChain(elsewhere)).ok, true)
  t.equal((await verifyAuditChain(systemPool)).ok, true)
})

t.test('appends outside READ COMMITTED are refused (the chain would fork)', async (t) => {
  const client = await systemPool.connect()
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ')
    await t.rejects(client.query('INSERT INTO tenant_rls_audit (event, actor) VALUES (\'system_job.started\', \'x\')'), { code: '25001', message: /READ COMMITTED/ })
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
})

t.test('accessReport: every elevated access to one tenant in a period, and the system jobs', async (t) => {
  const from = new Date(Date.now() - 60_000)
  const grant = await createGrant(systemPool, { operator: 'support:alice', tenantId: tenantA, reason: 'ticket 1', approver: 'lead:bob' })
  await openBreakGlass(systemPool, { operator: 'support:carol', tenantId: tenantB, reason: 'incident 2' })
  await withSystem(systemPool, { actor: 'job:report', reason: 'monthly' }, async () => 'ok')
  const to = new Date(Date.now() + 60_000)
  const report = await accessReport(systemPool, tenantA.toUpperCase(), { from, to })
  const mine = report.filter((entry) => entry.event === 'grant.created' || entry.actor === 'job:report')
  t.match(mine, [
    { event: 'grant.created', actor: 'lead:bob', reason: 'ticket 1', tenantId: tenantA, grantId: grant.id, at: Date },
    { event: 'system_job.started', actor: 'job:report', tenantId: null },
    { event: 'system_job.committed', actor: 'job:report', tenantId: null }
  ])
  t.notOk(report.some((entry) => entry.tenantId === tenantB), 'nothing of tenant B')
  t.same(await accessReport(systemPool, tenantA, { from: new Date(0), to: new Date(1000) }), [], 'nothing outside the period')
  await t.rejects(accessReport(systemPool, 'nope', { from, to }), { code: 'FST_TENANT_RLS_TENANT_INVALID' })
  await t.rejects(accessReport(systemPool, tenantA, { from: to, to: from }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /from must be before to/ })
  await t.rejects(accessReport(systemPool, tenantA, { from: new Date('x'), to }), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /valid Date/ })
})
