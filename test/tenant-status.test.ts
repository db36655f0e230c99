// Suspension: the tenantStatus option reads the tenant's status inside the opening, after the
// tenant is set and before the route's first query, so a suspended or moving tenant is refused with
// that query never run (a sequence the query would advance stays put, and the server completes no
// statement of the route), in one transaction and in singleRoundTrip mode, for requests and for
// app.withTenant. And the table's policy: the app role reads its own tenant's status, nothing else.
import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import t from 'tap'
import { tenantStatusSql } from 'fastify-tenant-rls/schema'
import { bearer, buildApp, projects, projectsWorld } from './helpers/fixture.js'
import { watchWireTraffic } from './helpers/wire-traffic.js'

const { db, pool, tenantA, tenantB } = await projectsWorld(t, 2)
const traffic = watchWireTraffic(pool)
await db.asOwner(`
  ${tenantStatusSql({ appRole: db.appRole, table: 'public.tenants' })}
  CREATE SEQUENCE probe;
  GRANT USAGE ON SEQUENCE probe TO ${db.appRole};
`)

async function setStatus (tenantId: string, status: string): Promise<void> {
  await db.admin.query('UPDATE tenants SET status = $2 WHERE id = $1', [tenantId, status])
}

/** How many times a route query advanced the probe sequence (nextval is never rolled back). */
async function probes (): Promise<number> {
  const { rows } = await db.admin.query<{ n: string }>('SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM probe')
  return Number(rows[0]?.n)
}

const tenantStatus = { table: 'public.tenants', retryAfter: 7 }
const app = await buildApp(t, {
  pool,
  options: { tenantStatus },
  routes (app) {
    app.get('/probe', async (request) => {
      await request.db.execute(sql`SELECT nextval('probe')`)
      return request.db.select({ name: projects.name }).from(projects)
    })
    app.get('/tenants', async (request) => (await request.db.execute(sql`SELECT id, status FROM tenants ORDER BY id`)).rows)
    app.get('/tenant-names', async (request) => (await request.db.execute(sql`SELECT name FROM tenants`)).rows)
    app.get('/reactivate', async (request) => request.db.execute(sql`UPDATE tenants SET status = 'active'`))
  }
})
const as = (tenantId: string) => bearer(app, { tenant_id: tenantId })

t.afterEach(async () => {
  await db.admin.query("UPDATE tenants SET status = 'active'")
  traffic.reset()
})

t.test('an active tenant is served; the check rides in the opening: no extra round trip', async (t) => {
  traffic.reset()
  const res = await app.inject({ url: '/tenants', headers: as(tenantA) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), [{ id: tenantA, status: 'active' }], 'its own row only')
  const seen = traffic.read()
  t.equal(seen.roundTrips, 2, 'opening + query, then the closing')
  t.same(seen.commands.slice(0, 4), ['BEGIN', 'SELECT 1', 'SELECT 1', 'SELECT 1'], 'BEGIN, opening, status check, then the route query')
})

t.test('a suspended tenant: 403, the first query never ran, other tenants unaffected', async (t) => {
  const before = await probes()
  await setStatus(tenantA, 'suspended')
  traffic.reset()
  const res = await app.inject({ url: '/probe', headers: as(tenantA) })
  t.equal(res.statusCode, 403)
  t.equal(res.json().code, 'FST_TENANT_RLS_TENANT_SUSPENDED')
  t.same(traffic.read().commands.slice(0, 2), ['BEGIN', 'SELECT 1'], 'the server completed BEGIN and the opening, nothing of the route')
  t.equal(await probes(), before, 'nextval was never executed')
  const other = await app.inject({ url: '/probe', headers: as(tenantB) })
  t.equal(other.statusCode, 200)
  t.same(other.json(), [{ name: 'b-1' }])
  t.equal(await probes(), before + 1, 'the probe does count a query that runs')
})

t.test('a refusal leaves the connection sound: it goes back to the pool, not destroyed', async (t) => {
  let removed = 0
  const onRemove = (): void => { removed += 1 }
  pool.on('remove', onRemove)
  t.teardown(() => { pool.off('remove', onRemove) })
  await setStatus(tenantA, 'suspended')
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: '/probe', headers: as(tenantA) })).statusCode, 403)
  t.equal(removed, 0, 'no connection was discarded')
  t.equal(pool.idleCount, pool.totalCount)
})

t.test('a moving tenant: 503 with Retry-After, the first query never ran', async (t) => {
  const before = await probes()
  await setStatus(tenantA, 'moving')
  const res = await app.inject({ url: '/probe', headers: as(tenantA) })
  t.equal(res.statusCode, 503)
  t.equal(res.json().code, 'FST_TENANT_RLS_TENANT_MOVING')
  t.equal(res.headers['retry-after'], '7')
  t.equal(await probes(), before)
})

t.test('a tenant without a row (erased, never created) is refused like a suspended one: fail closed', async (t) => {
  const res = await app.inject({ url: '/probe', headers: as(randomUUID()) })
  t.equal(res.statusCode, 403)
  t.equal(res.json().code, 'FST_TENANT_RLS_TENANT_SUSPENDED')
})

t.test('a status outside the three (a careless migration dropped the CHECK) is refused', async (t) => {
  await db.admin.query('ALTER TABLE tenants DROP CONSTRAINT tenants_status_check')
  t.teardown(async () => {
    await setStatus(tenantA, 'active')
    await db.admin.query("ALTER TABLE tenants ADD CONSTRAINT tenants_status_check CHECK (status IN ('active', 'suspended', 'moving'))")
  })
  await setStatus(tenantA, 'Active')
  const res = await app.inject({ url: '/probe', headers: as(tenantA) })
  t.equal(res.statusCode, 403)
})

t.test('app.withTenant is refused the same way (the error is drizzle\'s cause), its work\'s first query never run', async (t) => {
  const before = await probes()
  await setStatus(tenantA, 'suspended')
  await t.rejects(app.withTenant(tenantA, async (db) => db.execute(sql`SELECT nextval('probe')`)), { cause: { code: 'FST_TENANT_RLS_TENANT_SUSPENDED' } })
  await setStatus(tenantA, 'moving')
  await t.rejects(app.withTenant(tenantA, async (db) => db.execute(sql`SELECT nextval('probe')`)), { cause: { code: 'FST_TENANT_RLS_TENANT_MOVING' } })
  t.equal(await probes(), before)
  t.equal(await app.withTenant(tenantB, async () => 'ran'), 'ran')
})

t.test('hostile tenant: sees no other tenant\'s status, no other column, cannot change its status', async (t) => {
  const listed = await app.inject({ url: '/tenants', headers: as(tenantB) })
  t.same(listed.json(), [{ id: tenantB, status: 'active' }])
  const names = await app.inject({ url: '/tenant-names', headers: as(tenantB) })
  t.equal(names.statusCode, 500)
  t.equal(names.json().code, 'FST_TENANT_RLS_QUERY_FAILED')
  const reactivate = await app.inject({ url: '/reactivate', headers: as(tenantB) })
  t.equal(reactivate.statusCode, 500, 'no UPDATE privilege on the tenants table')
  const { rows } = await db.admin.query<{ n: number }>("SELECT count(*)::int AS n FROM tenants WHERE status = 'active'")
  t.equal(rows[0]?.n, 2)
})

t.test('singleRoundTrip: a suspended or moving tenant\'s query is skipped, still one round trip', async (t) => {
  const single = await buildApp(t, {
    pool,
    options: { tenantStatus, singleRoundTrip: true },
    routes (app) {
      app.get('/names', async (request) => (await request.db.execute<{ name: string }>(sql`SELECT name FROM projects ORDER BY name`)).rows)
    }
  })
  const headers = bearer(single, { tenant_id: tenantA })
  traffic.reset()
  t.same((await single.inject({ url: '/names', headers })).json(), [{ name: 'a-1' }, { name: 'a-2' }])
  t.equal(traffic.read().roundTrips, 1)
  t.same(traffic.read().commands.slice(0, 4), ['SELECT 1', 'SELECT 1', 'SELECT 1', 'SELECT 2'], 'opening, assert, status check, the query')
  await setStatus(tenantA, 'suspended')
  traffic.reset()
  const suspended = await single.inject({ url: '/names', headers })
  t.equal(suspended.statusCode, 403)
  t.equal(suspended.json().code, 'FST_TENANT_RLS_TENANT_SUSPENDED')
  t.same(traffic.read().commands, ['SELECT 1', 'SELECT 1'], 'the opening and the assert completed, the query did not')
  t.equal(traffic.read().roundTrips, 1)
  await setStatus(tenantA, 'moving')
  const moving = await single.inject({ url: '/names', headers })
  t.equal(moving.statusCode, 503)
  t.equal(moving.headers['retry-after'], '7')
})

t.test('a status the app role cannot read refuses to start, naming the table', async (t) => {
  await t.rejects(buildApp(t, { pool, options: { tenantStatus: { table: 'public.tenants', column: 'state' } } }), { code: 'FST_TENANT_RLS_TENANT_STATUS_UNREADABLE', message: /public\.tenants: column "state" does not exist/ })
  await t.rejects(buildApp(t, { pool, options: { tenantStatus: { table: 'public.tenants', column: 'name' } } }), { code: 'FST_TENANT_RLS_TENANT_STATUS_UNREADABLE', message: /permission denied/ })
  await t.rejects(buildApp(t, { pool, options: { tenantStatus: { table: 'public.orgs' } } }), { code: 'FST_TENANT_RLS_TENANT_STATUS_UNREADABLE', message: /does not exist/ })
})

t.test('the option is checked at register', async (t) => {
  const bad: unknown[] = [
    null, 'public.tenants', {}, { table: 'tenants' }, { table: 'public.tenants', column: 'Status' },
    { table: 'public.tenants', key: 'id; DROP' }, { table: 'public.tenants', retryAfter: 0 },
    { table: 'public.tenants', retryAfter: 1.5 }, { table: 'public.tenants', colum: 'status' }
  ]
  for (const tenantStatus of bad) {
    await t.rejects(buildApp(t, { pool, options: { tenantStatus } as never }), { code: 'FST_TENANT_RLS_INVALID_OPTION' }, JSON.stringify(tenantStatus))
  }
  t.throws(() => tenantStatusSql({ appRole: 'x"; DROP ROLE y; --', table: 'public.tenants' }), { code: 'FST_TENANT_RLS_INVALID_OPTION' })
})
