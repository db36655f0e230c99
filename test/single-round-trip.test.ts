// singleRoundTrip: each query of a route travels alone, in one round trip, as its own read-only
// implicit transaction [opening, assert, query, check, session read, reset], and the connection
// goes back to the pool between queries. Counted on the wire, and attacked: writes, statements that
// need a transaction, a tenant switch inside the query, session state left behind, a failed opening.
import { sql } from 'drizzle-orm'
import t from 'tap'
import { withTenant } from 'fastify-tenant-rls'
import { bearer, buildApp, projects, projectsWorld } from './helpers/fixture.js'
import { watchWireTraffic } from './helpers/wire-traffic.js'

const { db, pool, tenantA, tenantB } = await projectsWorld(t, 1)
const traffic = watchWireTraffic(pool)
const names = (rows: Array<{ name: string }>): string[] => rows.map((row) => row.name).sort()

const app = await buildApp(t, {
  pool,
  options: { singleRoundTrip: 'safe-methods' },
  routes (app) {
    app.get('/names', async (request) => names(await request.db.select({ name: projects.name }).from(projects)))
    app.get('/twice', async (request) => {
      const first = await request.db.select({ name: projects.name }).from(projects)
      const second = await request.db.execute<{ setting: string }>(sql`SELECT current_setting('app.current_tenant_id') AS setting`)
      return { first: names(first), setting: second.rows[0]?.setting }
    })
    app.get('/insert', async (request) => request.db.insert(projects).values({ tenantId: request.tenantId as string, name: 'written' }))
    app.get('/insert-in-with', async (request) => request.db.execute(sql`WITH added AS (INSERT INTO projects (tenant_id, name) VALUES (${request.tenantId}, 'written') RETURNING name) SELECT name FROM added`))
    app.get('/read-write', async (request) => request.db.execute(sql`SELECT set_config('transaction_read_only', 'off', true), count(*) FROM projects`))
    app.get('/set', async (request) => request.db.execute(sql`SET search_path = public`))
    app.get('/savepoint', async (request) => request.db.transaction(async (tx) => tx.select().from(projects)))
    app.get('/switch', async (request) => {
      const { rows } = await request.db.execute<{ name: string }>(sql.raw(
        `WITH switched AS MATERIALIZED (SELECT set_config('app.current_tenant_id', '${tenantB}', true)) SELECT name FROM switched, projects`))
      return names(rows)
    })
    app.get('/session-setting', async (request) => (await request.db.execute<{ pid: number }>(sql`SELECT set_config('search_path', 'pg_catalog', false), set_config('app.note', 'left', false), pg_backend_pid() AS pid`)).rows[0]?.pid)
    app.get('/session-tenant', async (request) => request.db.execute(sql.raw(`SELECT set_config('app.current_tenant_id', '${tenantB}', false)`)))
    app.get('/session-same-tenant', async (request) => (await request.db.execute<{ pid: number }>(sql`SELECT set_config('app.current_tenant_id', ${request.tenantId}, false), pg_backend_pid() AS pid`)).rows[0]?.pid)
    app.get('/advisory-lock', async (request) => request.db.execute(sql`SELECT pg_advisory_lock(4242)`))
    app.post('/names', async (request) => names(await request.db.select({ name: projects.name }).from(projects)))
    app.get('/per-route-off', { config: { tenant: { singleRoundTrip: false } } }, async (request) => {
      await request.db.execute(sql`SET LOCAL search_path = public`)
      return names(await request.db.select({ name: projects.name }).from(projects))
    })
  }
})
const asA = bearer(app, { tenant_id: tenantA })
const get = (url: string) => app.inject({ url, headers: asA })

t.beforeEach(() => { traffic.reset() })

t.test('one query is one round trip on one checkout: opening, assert, query, check, reset, session read', async (t) => {
  const res = await get('/names')
  t.same(res.json(), ['a-1', 'a-2'])
  const seen = traffic.read()
  t.equal(seen.roundTrips, 1)
  t.equal(seen.checkouts, 1)
  t.same(seen.commands, [
    'SELECT 1', 'SELECT 1', 'SELECT 2',
    'SELECT 1', 'CLOSE CURSOR ALL', 'SET', 'RESET', 'UNLISTEN', 'DISCARD TEMP', 'DISCARD SEQUENCES', 'SELECT 1'
  ], 'no BEGIN and no COMMIT: the Sync ends the implicit transaction')
})

t.test('two queries are two round trips and two checkouts of the same connection, each with the tenant set', async (t) => {
  const connections = new Set<unknown>()
  const onAcquire = (client: unknown): void => { connections.add(client) }
  pool.on('acquire', onAcquire)
  t.teardown(() => { pool.off('acquire', onAcquire) })
  const res = await get('/twice')
  t.same(res.json(), { first: ['a-1', 'a-2'], setting: tenantA })
  const seen = traffic.read()
  t.equal(seen.roundTrips, 2)
  t.equal(seen.checkouts, 2, 'the connection went back to the pool between the queries')
  t.equal(connections.size, 1, 'and was reused, not discarded')
})

t.test('the setting is gone after the Sync: the same connection, asked directly, has none', async (t) => {
  t.equal((await get('/names')).statusCode, 200)
  const client = await pool.connect()
  try {
    const { rows } = await client.query("SELECT current_setting('app.current_tenant_id', true) AS setting")
    t.ok(rows[0].setting === null || rows[0].setting === '', `no tenant on the pooled connection (${String(rows[0].setting)})`)
  } finally {
    client.release()
  }
})

t.test('A then B on the one connection: the same prepared statement, each sees only its own rows, nothing of A reaches B', async (t) => {
  const asB = bearer(app, { tenant_id: tenantB })
  const pids = new Set<number>()
  for (const [headers, expected] of [[asA, ['a-1', 'a-2']], [asB, ['b-1']], [asA, ['a-1', 'a-2']], [asB, ['b-1']]] as const) {
    const res = await app.inject({ url: '/twice', headers })
    t.same(res.json().first, expected)
    t.equal(res.json().setting, headers === asA ? tenantA : tenantB, 'the setting is the request\'s own')
    const { rows } = await db.admin.query("SELECT pid FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'", [db.appRole])
    for (const row of rows) pids.add(row.pid)
  }
  t.equal(pids.size, 1, 'one server connection served all four')
  t.equal(traffic.read().checkouts, 8)
})

t.test('writes fail as read-only, nothing is written, whether the query starts with INSERT or hides it in WITH', async (t) => {
  for (const url of ['/insert', '/insert-in-with']) {
    const res = await get(url)
    t.equal(res.statusCode, 403, url)
    t.equal(res.json().code, 'FST_TENANT_RLS_READ_ONLY_TRANSACTION', url)
  }
  // 25001: read-write mode must be set before any query, and the opening already took a snapshot.
  t.equal((await get('/read-write')).json().code, 'FST_TENANT_RLS_QUERY_FAILED', 'the query cannot turn the transaction read-write')
  const { rows } = await db.admin.query("SELECT count(*)::int AS n FROM projects WHERE name = 'written'")
  t.equal(rows[0].n, 0)
})

t.test('statements that need a transaction are refused before anything is sent', async (t) => {
  for (const url of ['/set', '/savepoint']) {
    const res = await get(url)
    t.equal(res.statusCode, 500, url)
    t.equal(res.json().code, 'FST_TENANT_RLS_SINGLE_ROUND_TRIP_REFUSED', url)
  }
  t.equal(traffic.read().checkouts, 0, 'no connection was taken')
})

t.test('a tenant switch inside the query withholds its result: the check after it fails, B\'s rows never reach the reply', async (t) => {
  const res = await get('/switch')
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_TENANT_RLS_TENANT_CONTEXT_CHANGED')
  t.notMatch(res.body, /b-1/)
})

t.test('session settings a query leaves are reset; the connection is reused', async (t) => {
  const pid = (await get('/session-setting')).json()
  const client = await pool.connect()
  try {
    const { rows } = await client.query("SELECT current_setting('search_path') AS path, current_setting('app.note', true) AS note, pg_backend_pid() AS pid")
    t.equal(rows[0].pid, pid, 'the same server connection, reused')
    t.not(rows[0].path, 'pg_catalog', 'search_path is back to the default')
    t.ok(rows[0].note === null || rows[0].note === '', 'the custom setting is gone')
  } finally {
    client.release()
  }
})

t.test('a session-level tenant setting of another tenant fails the check and the connection is discarded', async (t) => {
  const res = await get('/session-tenant')
  t.equal(res.json().code, 'FST_TENANT_RLS_TENANT_CONTEXT_CHANGED')
  t.same((await get('/names')).json(), ['a-1', 'a-2'], 'the next request sees A only, on a fresh connection')
})

t.test("a session-level setting of the request's own tenant passes the check but does not outlive the request", async (t) => {
  const pid = (await get('/session-same-tenant')).json()
  const client = await pool.connect()
  try {
    const { rows } = await client.query("SELECT current_setting('app.current_tenant_id', true) AS setting, pg_backend_pid() AS pid")
    t.equal(rows[0].pid, pid, 'the same server connection')
    t.ok(rows[0].setting === null || rows[0].setting === '', `no tenant left on it (${String(rows[0].setting)})`)
  } finally {
    client.release()
  }
})

t.test('a session advisory lock is released by the session read', async (t) => {
  t.equal((await get('/advisory-lock')).statusCode, 200)
  const { rows } = await db.admin.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242")
  t.equal(rows[0].n, 0)
})

t.test("'safe-methods' applies to GET only; a route can turn the mode off", async (t) => {
  t.same((await app.inject({ method: 'POST', url: '/names', headers: asA })).json(), ['a-1', 'a-2'])
  t.same(traffic.read().commands.slice(0, 1), ['BEGIN'], 'POST runs in a transaction')
  traffic.reset()
  t.same((await get('/per-route-off')).json(), ['a-1', 'a-2'])
  t.same(traffic.read().commands.slice(0, 1), ['BEGIN'], 'the route opted out runs in a transaction')
})

t.test('a failed opening skips the query: set_config refused, the query never ran', async (t) => {
  const reserving = db.appPool({ max: 1 })
  // Once plpgsql is loaded, its prefix is reserved: set_config('plpgsql.tenant', …) fails.
  reserving.on('connect', (client) => { client.query('DO $$ BEGIN END $$').catch(() => {}) })
  const failing = await buildApp(t, {
    pool: reserving,
    options: { singleRoundTrip: true, setting: 'plpgsql.tenant' },
    routes (app) {
      app.get('/lock', async (request) => request.db.execute(sql`SELECT pg_advisory_lock(5151)`).then(() => 'ran', (error: { cause?: { code?: string } }) => error.cause?.code))
    }
  })
  const res = await failing.inject({ url: '/lock', headers: bearer(failing, { tenant_id: tenantA }) })
  t.equal(res.body, '42602', "set_config's own error: the query behind it was skipped, not refused by an aborted transaction")
  const { rows } = await db.admin.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 5151")
  t.equal(rows[0].n, 0, 'the lock was never taken')
  await db.assertNoLeaks(t, reserving)
  await reserving.end()
})

t.test('withTenant refuses singleRoundTrip: its work always runs in one transaction', async (t) => {
  await t.rejects(withTenant(pool, tenantA, async () => 1, { singleRoundTrip: true } as never), { code: 'FST_TENANT_RLS_INVALID_OPTION', message: /singleRoundTrip is for routes/ })
})
