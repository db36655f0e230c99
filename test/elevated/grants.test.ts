// Support grants and break-glass, their data side: the API's rules (four eyes, lifetimes, reasons),
// the table's own constraints and privileges behind them, and the admission query that the request
// path runs in its opening, tested here at SQL level as the app role, the way the opening sends it.
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import t from 'tap'
import { admissionColumnSql, createGrant, listGrants, openBreakGlass, parseAdmission, reviewBreakGlass, revokeGrant } from 'fastify-tenant-rls/elevated'
import type { Admission } from 'fastify-tenant-rls/elevated'
import { elevatedWorld } from '../helpers/elevated.js'

const world = await elevatedWorld(t)
const { db, pool, tenantA, tenantB, systemPool } = world
const alice = 'support:alice@example.com'
const bob = 'lead:bob@example.com'
const carol = 'security:carol@example.com'
const ticket = 'ticket #4711: invoices missing'

t.afterEach(async () => {
  await db.admin.query('DELETE FROM tenant_rls_grants')
})

/**
 * The admission as the opening will run it: one SELECT of the app role whose earlier column sets
 * the tenant of the transaction, `tenant` the transaction's tenant, `asked` the one the token names.
 */
async function admit (operator: string, tenant: string, asked = tenant): Promise<Admission | null> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const { rows: [row] } = await client.query(`SELECT pg_catalog.set_config($1, $2, true), current_user, ${admissionColumnSql(3)} AS admission`,
      ['app.current_tenant_id', tenant, operator, asked])
    return parseAdmission(row?.admission)
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
}

async function grantCount (): Promise<number> {
  const { rows } = await db.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM tenant_rls_grants')
  return rows[0]?.n ?? -1
}

t.test('a grant admits its operator on its tenant, read-only; grant.created is recorded by the approver', async (t) => {
  const since = (await world.auditRows()).length
  const grant = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  t.match(grant, { tenantId: tenantA, operator: alice, approver: bob, reason: ticket, write: false, breakGlass: false, revokedAt: null, reviewedAt: null })
  const lifetime = grant.expiresAt.getTime() - grant.createdAt.getTime()
  t.equal(lifetime, 60 * 60 * 1000, 'the default lifetime is the 60-minute maximum')
  t.same(await admit(alice, tenantA), { grantId: grant.id, write: false, breakGlass: false })
  const rows = (await world.auditRows()).slice(since)
  t.match(rows, [{ event: 'grant.created', actor: bob, reason: ticket, tenant_id: tenantA, grant_id: grant.id, detail: { operator: alice, approver: bob, write: false, breakGlass: false } }])
  t.equal(rows.length, 1)
})

t.test('admission denies: no grant, another operator\'s, another tenant\'s, expired, revoked, self-approved', async (t) => {
  t.equal(await admit(alice, tenantA), null, 'no grant')
  const grant = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  t.equal(await admit('support:mallory@example.com', tenantA), null, 'another operator\'s grant')
  t.equal(await admit(alice, tenantB), null, 'another tenant\'s grant')
  t.equal(await admit(alice, tenantB, tenantA), null, 'a transaction of tenant B asking for A\'s grant: the policy hides it')
  t.ok(await admit(alice, tenantA), 'control: the grant itself admits')

  await revokeGrant(systemPool, grant.id, { by: bob, reason: 'solved' })
  t.equal(await admit(alice, tenantA), null, 'revoked: the very next admission is refused')

  const expiring = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob, minutes: 1 })
  t.ok(await admit(alice, tenantA))
  await db.admin.query('UPDATE tenant_rls_grants SET created_at = now() - interval \'2 minutes\', expires_at = now() - interval \'1 second\' WHERE id = $1', [expiring.id])
  t.equal(await admit(alice, tenantA), null, 'expired')

  // A careless migration dropped the four-eyes constraint, and someone approved their own grant.
  await db.asOwner('ALTER TABLE tenant_rls_grants DROP CONSTRAINT tenant_rls_grants_four_eyes')
  t.teardown(async () => {
    // As the superuser: FORCE'd RLS hides every grant from the owner too.
    await db.admin.query('DELETE FROM tenant_rls_grants')
    await db.asOwner('ALTER TABLE tenant_rls_grants ADD CONSTRAINT tenant_rls_grants_four_eyes CHECK (lower(approver) <> lower(operator))')
  })
  await db.admin.query('INSERT INTO tenant_rls_grants (tenant_id, operator, approver, reason, expires_at) VALUES ($1, $2, $3, $4, now() + interval \'10 minutes\')', [tenantA, alice, alice.toUpperCase(), ticket])
  t.equal(await admit(alice, tenantA), null, 'self-approved (in another case)')
})

t.test('admission ignores a tenant setting left unset: fail closed', async (t) => {
  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  const client = await pool.connect()
  try {
    const { rows: [row] } = await client.query(`SELECT ${admissionColumnSql(1)} AS admission`, [alice, tenantA])
    t.equal(row?.admission, null)
  } finally {
    client.release()
  }
})

t.test('admission picks a writing grant over a reading one, and flags break-glass', async (t) => {
  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  const writing = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob, minutes: 5, write: true })
  t.same(await admit(alice, tenantA), { grantId: writing.id, write: true, breakGlass: false })
  const glass = await openBreakGlass(systemPool, { operator: carol, tenantId: tenantB, reason: 'incident #12: tenant B down' })
  t.same(await admit(carol, tenantB), { grantId: glass.id, write: false, breakGlass: true })
})

t.test('the API refuses, before taking a connection: self-approval, over-long lifetimes, bad tenants, missing reasons', async (t) => {
  const unreachable = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', connectionTimeoutMillis: 500 })
  t.teardown(() => unreachable.end())
  const base = { operator: alice, tenantId: tenantA, reason: ticket, approver: bob }
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ approver: alice }, 'FST_TENANT_RLS_INVALID_GRANT', /approver must be someone other than the operator/],
    [{ approver: 'SUPPORT:Alice@Example.com' }, 'FST_TENANT_RLS_INVALID_GRANT', /approver must be someone other/],
    [{ approver: undefined }, 'FST_TENANT_RLS_ACCOUNTABILITY_REQUIRED', /approver is required/],
    [{ reason: '' }, 'FST_TENANT_RLS_ACCOUNTABILITY_REQUIRED', /reason is required/],
    [{ operator: ' alice' }, 'FST_TENANT_RLS_ACCOUNTABILITY_REQUIRED', /spaces/],
    [{ minutes: 61 }, 'FST_TENANT_RLS_INVALID_GRANT', /from 1 to 60/],
    [{ minutes: 0 }, 'FST_TENANT_RLS_INVALID_GRANT', /from 1 to 60/],
    [{ minutes: 1.5 }, 'FST_TENANT_RLS_INVALID_GRANT', /whole number/],
    [{ tenantId: 'not-a-tenant' }, 'FST_TENANT_RLS_INVALID_GRANT', /canonical form/],
    [{ write: 'yes' }, 'FST_TENANT_RLS_INVALID_GRANT', /write must be true or false/]
  ]
  for (const [change, code, message] of cases) {
    await t.rejects(createGrant(unreachable, { ...base, ...change } as never), { code, message }, JSON.stringify(change))
  }
  await t.rejects(createGrant(unreachable, base, { maxMinutes: 0 }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
  await t.rejects(createGrant(unreachable, base, { maxMinutes: 24 * 60 + 1 }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
  await t.rejects(openBreakGlass(unreachable, { operator: alice, tenantId: tenantA, reason: ticket, minutes: 16 }), { code: 'FST_TENANT_RLS_INVALID_GRANT', message: /from 1 to 15.*break-glass/ })
  await t.rejects(openBreakGlass(unreachable, { operator: alice, tenantId: tenantA } as never), { code: 'FST_TENANT_RLS_ACCOUNTABILITY_REQUIRED', message: /reason is required/ })
  t.equal(unreachable.totalCount, 0, 'no connection was taken')
  const longer = await createGrant(systemPool, { ...base, minutes: 90 }, { maxMinutes: 120 })
  t.equal(longer.expiresAt.getTime() - longer.createdAt.getTime(), 90 * 60 * 1000, 'maxMinutes raises the limit')
})

t.test('the table enforces the rules too: a direct INSERT by the system role cannot skip them', async (t) => {
  const insert = (columns: string, values: unknown[]) => systemPool.query(`INSERT INTO tenant_rls_grants (tenant_id, operator, reason, expires_at, ${columns}) VALUES ($1, $2, $3, now() + interval '5 minutes', $4, $5)`, [tenantA, alice, ticket, ...values])
  await t.rejects(insert('approver, break_glass', [alice.toUpperCase(), false]), { code: '23514', constraint: 'tenant_rls_grants_four_eyes' })
  await t.rejects(insert('approver, break_glass', [null, false]), { code: '23514', constraint: 'tenant_rls_grants_approval' })
  await t.rejects(insert('approver, break_glass', [bob, true]), { code: '23514', constraint: 'tenant_rls_grants_approval' })
  t.equal(await grantCount(), 0)
  const grant = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  await t.rejects(systemPool.query('UPDATE tenant_rls_grants SET expires_at = expires_at + interval \'1 day\''), { code: '42501' }, 'no extending a grant')
  await t.rejects(systemPool.query('UPDATE tenant_rls_grants SET write = true'), { code: '42501' }, 'no turning a grant into a writing one')
  await t.rejects(systemPool.query('DELETE FROM tenant_rls_grants'), { code: '42501' }, 'no deleting a grant')
  await revokeGrant(systemPool, grant.id, { by: bob, reason: 'solved' })
  await t.rejects(systemPool.query('UPDATE tenant_rls_grants SET revoked_at = NULL, revoked_by = NULL'), { code: '42501', message: /already revoked/ }, 'no un-revoking')
  t.equal(await admit(alice, tenantA), null)
})

t.test('the app role reads only its own tenant\'s grants, and writes none', async (t) => {
  await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  await createGrant(systemPool, { operator: alice, tenantId: tenantB, reason: ticket, approver: bob })
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    await client.query('SELECT set_config(\'app.current_tenant_id\', $1, true)', [tenantB])
    const { rows } = await client.query('SELECT tenant_id FROM tenant_rls_grants')
    t.same(rows, [{ tenant_id: tenantB }])
    await t.rejects(client.query('INSERT INTO tenant_rls_grants (tenant_id, operator, approver, reason, expires_at) VALUES ($1, $2, $3, $4, now() + interval \'1 hour\')', [tenantB, alice, bob, ticket]), { code: '42501' })
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
  const { rows } = await pool.query('SELECT count(*)::int AS n FROM tenant_rls_grants')
  t.equal(rows[0].n, 0, 'outside a tenant transaction: none')
})

t.test('revoking: recorded by who revoked; unknown and revoked grants refused', async (t) => {
  const grant = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  const since = (await world.auditRows()).length
  const revoked = await revokeGrant(systemPool, grant.id, { by: carol, reason: 'access no longer needed' })
  t.match(revoked, { id: grant.id, revokedBy: carol, revokedAt: Date })
  t.match((await world.auditRows()).slice(since), [{ event: 'grant.revoked', actor: carol, reason: 'access no longer needed', tenant_id: tenantA, grant_id: grant.id }])
  await t.rejects(revokeGrant(systemPool, grant.id, { by: carol, reason: 'again' }), { code: 'FST_TENANT_RLS_GRANT_STATE', statusCode: 409, message: /already revoked/ })
  await t.rejects(revokeGrant(systemPool, randomUUID(), { by: carol, reason: 'x' }), { code: 'FST_TENANT_RLS_GRANT_NOT_FOUND', statusCode: 404 })
  await t.rejects(revokeGrant(systemPool, 'not-a-uuid', { by: carol, reason: 'x' }), { code: 'FST_TENANT_RLS_INVALID_GRANT' })
  await t.rejects(revokeGrant(systemPool, grant.id, { by: carol } as never), { code: 'FST_TENANT_RLS_ACCOUNTABILITY_REQUIRED' })
  t.equal((await world.auditRows()).length, since + 1, 'refusals wrote nothing')
})

t.test('break-glass: no approver, 15 minutes, flagged, unreviewed until someone else reviews it', async (t) => {
  const since = (await world.auditRows()).length
  const glass = await openBreakGlass(systemPool, { operator: carol, tenantId: tenantB, reason: 'incident #12: tenant B cannot log in', write: true })
  t.match(glass, { approver: null, breakGlass: true, write: true, reviewedAt: null })
  t.equal(glass.expiresAt.getTime() - glass.createdAt.getTime(), 15 * 60 * 1000)
  const support = await createGrant(systemPool, { operator: alice, tenantId: tenantA, reason: ticket, approver: bob })
  t.same((await listGrants(systemPool, { unreviewed: true })).map((grant) => grant.id), [glass.id], 'listed as unreviewed')
  t.same((await listGrants(systemPool, { tenantId: tenantA, live: true })).map((grant) => grant.id), [support.id])

  await t.rejects(reviewBreakGlass(systemPool, glass.id, { reviewer: carol.toUpperCase(), note: 'all fine' }), { code: 'FST_TENANT_RLS_INVALID_GRANT', message: /someone other than its operator/ })
  await t.rejects(reviewBreakGlass(systemPool, support.id, { reviewer: carol, note: 'all fine' }), { code: 'FST_TENANT_RLS_GRANT_STATE', message: /only break-glass grants are reviewed/ })
  const reviewed = await reviewBreakGlass(systemPool, glass.id, { reviewer: bob, note: 'statements checked against incident #12' })
  t.match(reviewed, { reviewedBy: bob, reviewedAt: Date })
  await t.rejects(reviewBreakGlass(systemPool, glass.id, { reviewer: alice, note: 'again' }), { code: 'FST_TENANT_RLS_GRANT_STATE', message: /reviewed already by lead:bob/ })
  t.same(await listGrants(systemPool, { unreviewed: true }), [])
  t.match((await world.auditRows()).slice(since), [
    { event: 'break_glass.opened', actor: carol, reason: 'incident #12: tenant B cannot log in', tenant_id: tenantB, grant_id: glass.id, detail: { breakGlass: true, approver: null, write: true } },
    { event: 'grant.created', actor: bob },
    { event: 'break_glass.reviewed', actor: bob, reason: 'statements checked against incident #12', grant_id: glass.id }
  ])
  // The table refuses a review by the operator even when sent directly.
  const other = await openBreakGlass(systemPool, { operator: carol, tenantId: tenantB, reason: 'incident #13' })
  await t.rejects(systemPool.query('UPDATE tenant_rls_grants SET reviewed_at = now(), reviewed_by = $2 WHERE id = $1', [other.id, carol]), { code: '23514', constraint: 'tenant_rls_grants_review' })
})
