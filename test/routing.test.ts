// Routing tenants to databases: the route option sends each tenant's transactions to the pool of
// the database that holds it, on two PostgreSQL servers. request.db and app.withTenant work the
// same whichever server; the route is asked once per tenant; a pool it names is checked like the
// plugin's own before its first transaction (an unsafe one is refused, nothing sent through it);
// a failing route is a 503 that is not remembered; a bad tenant id never reaches the route.
import { sql } from 'drizzle-orm'
import pg from 'pg'
import t from 'tap'
import type { TenantRoute } from 'fastify-tenant-rls'
import { tenantStatusSql } from 'fastify-tenant-rls/schema'
import { createTestDatabase } from './helpers/database.js'
import { bearer, buildApp, createProjectsTable, projects } from './helpers/fixture.js'
import { watchWireTraffic } from './helpers/wire-traffic.js'

// Two servers: createTestDatabase starts one per call (or two databases on DATABASE_URL's server).
const first = await createTestDatabase(t)
const second = await createTestDatabase(t)
const { tenantA, tenantB } = await createProjectsTable(first)
const { tenantA: tenantC } = await createProjectsTable(second)
const firstPool = first.appPool({ max: 2 })
const secondPool = second.appPool({ max: 2 })
const firstTraffic = watchWireTraffic(firstPool)
const secondTraffic = watchWireTraffic(secondPool)
const onSecond = new Set([tenantC])

let routed: string[] = []
const byTable: TenantRoute = (tenantId) => {
  routed.push(tenantId)
  return onSecond.has(tenantId) ? secondPool : firstPool
}

t.afterEach(async (t) => {
  await first.assertNoLeaks(t, firstPool)
  await second.assertNoLeaks(t, secondPool)
})

t.beforeEach(() => {
  routed = []
  firstTraffic.reset()
  secondTraffic.reset()
})

const names = (rows: Array<{ name: string }>): string[] => rows.map((row) => row.name).sort()

const app = await buildApp(t, {
  pool: firstPool,
  options: { route: async (tenantId) => byTable(tenantId), routedPools: [secondPool] },
  routes (app) {
    app.get('/names', async (request) => names(await request.db.select({ name: projects.name }).from(projects)))
    app.post('/names', async (request) => {
      await request.db.insert(projects).values({ tenantId: request.tenantId as string, name: 'routed-write' })
      return 'written'
    })
  }
})

t.test('request.db reads and writes each tenant on its own server', async (t) => {
  t.same((await app.inject({ url: '/names', headers: bearer(app, { tenant_id: tenantA }) })).json(), ['a-1', 'a-2'])
  t.equal(secondTraffic.read().statements, 0, 'tenant A never touched the second server')
  t.same((await app.inject({ url: '/names', headers: bearer(app, { tenant_id: tenantC }) })).json(), ['a-1', 'a-2'])
  t.ok(secondTraffic.read().statements > 0, 'tenant C ran on the second server')
  const write = await app.inject({ method: 'POST', url: '/names', headers: bearer(app, { tenant_id: tenantC }) })
  t.equal(write.statusCode, 200)
  const { rows } = await second.admin.query('SELECT tenant_id FROM projects WHERE name = $1', ['routed-write'])
  t.same(rows, [{ tenant_id: tenantC }], 'committed on the second server, for C')
  t.equal((await first.admin.query("SELECT 1 FROM projects WHERE name = 'routed-write'")).rowCount, 0)
  await second.admin.query("DELETE FROM projects WHERE name = 'routed-write'")
})

t.test('singleRoundTrip: each query goes alone to the tenant\'s server, checked against that pool\'s role', async (t) => {
  const single = await buildApp(t, {
    pool: firstPool,
    options: { route: byTable, singleRoundTrip: true },
    routes (app) { app.get('/names', async (request) => names(await request.db.select({ name: projects.name }).from(projects))) }
  })
  secondTraffic.reset()
  t.same((await single.inject({ url: '/names', headers: bearer(single, { tenant_id: tenantC }) })).json(), ['a-1', 'a-2'])
  secondTraffic.reset()
  t.same((await single.inject({ url: '/names', headers: bearer(single, { tenant_id: tenantC }) })).json(), ['a-1', 'a-2'])
  t.equal(secondTraffic.read().roundTrips, 1, 'one round trip on the second server, no BEGIN')
  t.equal(secondTraffic.read().commands.includes('BEGIN'), false)
})

t.test('app.withTenant goes to the same server as requests', async (t) => {
  const seen = await app.withTenant(tenantC, async (db) => (await db.execute<{ port: string }>(sql`SELECT current_setting('port') AS port`)).rows[0]?.port)
  const { rows } = await second.admin.query<{ port: string }>("SELECT current_setting('port') AS port")
  t.equal(seen, rows[0]?.port)
  t.same(names(await app.withTenant(tenantB, async (db) => db.select({ name: projects.name }).from(projects))), ['b-1'])
})

t.test('the route is asked once per tenant, concurrent first requests included', async (t) => {
  const fresh = await buildApp(t, { pool: firstPool, options: { route: byTable } })
  await Promise.all([1, 2, 3].map(() => fresh.withTenant(tenantC, async () => 1)))
  await fresh.withTenant(tenantC, async () => 1)
  t.same(routed, [tenantC])
})

t.test('a bad tenant id never reaches the route', async (t) => {
  await t.rejects(app.withTenant('not-a-uuid', async () => 1), { code: 'FST_TENANT_RLS_TENANT_INVALID' })
  t.same(routed, [])
})

t.test('a failing route: 503 with Retry-After, nothing sent, not remembered', async (t) => {
  let down = true
  const flaky = await buildApp(t, {
    pool: firstPool,
    options: { route: async (tenantId) => { if (down) throw new Error('placement store down'); return byTable(tenantId) } },
    routes (app) { app.get('/names', async (request) => names(await request.db.select({ name: projects.name }).from(projects))) }
  })
  const headers = bearer(flaky, { tenant_id: tenantC })
  firstTraffic.reset()
  const refused = await flaky.inject({ url: '/names', headers })
  t.equal(refused.statusCode, 503)
  t.equal(refused.json().code, 'FST_TENANT_RLS_ROUTE_FAILED')
  t.equal(refused.headers['retry-after'], '1')
  t.equal(secondTraffic.read().statements + firstTraffic.read().statements, 0, 'nothing was sent anywhere')
  down = false
  t.same((await flaky.inject({ url: '/names', headers })).json(), ['a-1', 'a-2'], 'the next request asks the route again')
})

t.test('a routed pool is checked before its first transaction: a superuser pool is refused, nothing runs through it', async (t) => {
  const superuser = new pg.Pool({ connectionString: second.adminUrl, max: 1, connectionTimeoutMillis: 2000 })
  t.teardown(() => superuser.end())
  const queries: string[] = []
  superuser.on('connect', (client) => {
    const query = client.query.bind(client)
    client.query = ((config: unknown, ...rest: unknown[]) => {
      queries.push(typeof config === 'string' ? config : String((config as { text?: unknown }).text))
      return (query as (...args: unknown[]) => unknown)(config, ...rest)
    }) as typeof client.query
  })
  const unsafe = await buildApp(t, {
    pool: firstPool,
    options: { route: () => superuser },
    routes (app) { app.get('/names', async (request) => names(await request.db.select({ name: projects.name }).from(projects))) }
  })
  const res = await unsafe.inject({ url: '/names', headers: bearer(unsafe, { tenant_id: tenantC }) })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_TENANT_RLS_UNSAFE_ROLE')
  t.notOk(queries.some((text) => /projects/.test(text)), 'no route query went through the superuser pool')
  await t.rejects(unsafe.withTenant(tenantC, async () => 1), { code: 'FST_TENANT_RLS_UNSAFE_ROLE' })
})

t.test('routedPools are checked at ready: an unsafe one refuses to start', async (t) => {
  const superuser = new pg.Pool({ connectionString: second.adminUrl, max: 1, connectionTimeoutMillis: 2000 })
  t.teardown(() => superuser.end())
  await t.rejects(buildApp(t, { pool: firstPool, options: { route: byTable, routedPools: [superuser] } }), { code: 'FST_TENANT_RLS_UNSAFE_ROLE' })
})

t.test('a route answering something else than a pool that cannot hang is refused with a clear message', async (t) => {
  const wrong = await buildApp(t, { pool: firstPool, options: { route: () => ({}) as pg.Pool } })
  await t.rejects(wrong.withTenant(tenantC, async () => 1), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /pg.Pool/ })
})

t.test('the tenant status is read on the tenant\'s own server', async (t) => {
  await second.asOwner(tenantStatusSql({ appRole: second.appRole, table: 'public.tenants' }))
  await first.asOwner(tenantStatusSql({ appRole: first.appRole, table: 'public.tenants' }))
  const checked = await buildApp(t, {
    pool: firstPool,
    options: { route: byTable, tenantStatus: { table: 'public.tenants' } },
    routes (app) { app.get('/names', async (request) => names(await request.db.select({ name: projects.name }).from(projects))) }
  })
  await second.admin.query("UPDATE tenants SET status = 'suspended' WHERE id = $1", [tenantC])
  const res = await checked.inject({ url: '/names', headers: bearer(checked, { tenant_id: tenantC }) })
  t.equal(res.statusCode, 403)
  t.equal(res.json().code, 'FST_TENANT_RLS_TENANT_SUSPENDED')
  t.same((await checked.inject({ url: '/names', headers: bearer(checked, { tenant_id: tenantA }) })).json(), ['a-1', 'a-2'])
})

t.test('with tenantStatus, a routed pool whose database lacks the status is refused before its first transaction', async (t) => {
  const third = await createTestDatabase(t)
  const { tenantA: tenantE } = await createProjectsTable(third)
  const thirdPool = third.appPool({ max: 1 })
  const app = await buildApp(t, {
    pool: firstPool,
    options: { route: (tenantId) => tenantId === tenantE ? thirdPool : firstPool, tenantStatus: { table: 'public.tenants' } },
    routes (app) { app.get('/names', async (request) => names(await request.db.select({ name: projects.name }).from(projects))) }
  })
  const res = await app.inject({ url: '/names', headers: bearer(app, { tenant_id: tenantE }) })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_TENANT_RLS_TENANT_STATUS_UNREADABLE')
  await third.asOwner(tenantStatusSql({ appRole: third.appRole, table: 'public.tenants' }))
  t.same((await app.inject({ url: '/names', headers: bearer(app, { tenant_id: tenantE }) })).json(), ['a-1', 'a-2'], 'a failed check is not kept')
  await third.assertNoLeaks(t, thirdPool)
})

t.test('the options are checked at register', async (t) => {
  for (const options of [{ route: 'db2' }, { routedPools: [secondPool] }, { route: byTable, routedPools: secondPool }, { route: byTable, routedPools: [{}] }]) {
    await t.rejects(buildApp(t, { pool: firstPool, options: options as never }), { code: 'FST_TENANT_RLS_INVALID_OPTION' }, Object.keys(options).join(', '))
  }
})
