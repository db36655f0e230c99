// Route code that reaches past its own session: stored role and database settings (ALTER ROLE …
// SET), which every future connection of the app role would start with, and table locks, which
// stall every other tenant. Each case asserts what was really stored or committed, read through
// the superuser connection, not only the reply.
import { sql } from 'drizzle-orm'
import type { FastifyRequest } from 'fastify'
import pg from 'pg'
import t from 'tap'
import { createTestDatabase } from '../helpers/database.js'
import { attackApp, callAs, committed, createWorld } from './documents.js'
import { dbOf } from './isolation-cases.js'

const db = await createTestDatabase(t)
const { tenants: [a, b] } = await createWorld(db)

/** Runs each statement as route code, one query each, then writes one row for the caller. */
function routeRunning (statements: string[]) {
  return async function runStatements (request: FastifyRequest) {
    for (const statement of statements) await dbOf(request).execute(sql.raw(statement))
    await dbOf(request).execute(sql`INSERT INTO documents (tenant_id, code, slug, body) VALUES (${request.tenantId}, 'WRITTEN', 'written', 'by the route')`)
    return 'done'
  }
}

/** Settings stored for the app role in any database, as the superuser sees them. */
async function storedSettings (): Promise<string[]> {
  const { rows } = await db.admin.query<{ setting: string }>(
    'SELECT unnest(setconfig) AS setting FROM pg_db_role_setting WHERE setrole = $1::regrole ORDER BY 1', [db.appRole])
  return rows.map((row) => row.setting)
}

async function written (tenant: string): Promise<number> {
  return (await committed(db)).documents.filter((row) => row.tenant_id === tenant && row.code === 'WRITTEN').length
}

t.afterEach(async () => {
  await db.admin.query(`ALTER ROLE ${db.appRole} RESET ALL; ALTER ROLE ${db.appRole} IN DATABASE ${db.adminUrl.split('/').pop() ?? ''} RESET ALL`)
  await db.admin.query("DELETE FROM documents WHERE code = 'WRITTEN'")
})

const ways = {
  'ALTER ROLE CURRENT_USER SET': ["ALTER ROLE CURRENT_USER SET search_path = 'pg_catalog'"],
  'ALTER ROLE … IN DATABASE … SET': ["DO $$ BEGIN EXECUTE format('ALTER ROLE CURRENT_USER IN DATABASE %I SET TimeZone = %L', current_database(), 'Pacific/Kiritimati'); END $$"],
  'ALTER ROLE hidden in a DO block': ["DO $$ BEGIN EXECUTE 'ALTER ROLE CURRENT_USER SET row_security = off'; END $$"],
  'ALTER ROLE in a released savepoint': ['SAVEPOINT s', 'ALTER ROLE CURRENT_USER SET statement_timeout = 1', 'RELEASE SAVEPOINT s'],
  // A new password locks every tenant out of new connections: the fresh connection below must still log in.
  'ALTER ROLE CURRENT_USER PASSWORD': ["ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-a-tenant'"],
  'ALTER ROLE … PASSWORD in a DO block': ["DO $$ BEGIN EXECUTE 'ALTER ROLE CURRENT_USER PASSWORD ''chosen-by-a-tenant'''; END $$"]
}

for (const [way, statements] of Object.entries(ways)) {
  await t.test(`${way}: the commit is refused, so nothing reaches later connections`, async (t) => {
    const pool = db.appPool({ max: 1 })
    t.teardown(() => db.assertNoLeaks(t, pool))
    const { app } = await attackApp(t, pool, { alter: routeRunning(statements) })
    const reply = await callAs(app, a, 'alter')
    t.equal(reply.statusCode, 500)
    t.equal(reply.json().code, 'FST_TENANT_RLS_ROLE_ALTERED')
    t.same(await storedSettings(), [], 'no setting stored for the app role')
    t.equal(await written(a), 0, "and the route's own write was rolled back with it")
    // A brand-new connection of the app role starts as it did before.
    const fresh = new pg.Client({ connectionString: db.url() })
    await fresh.connect()
    t.teardown(() => fresh.end())
    const { rows } = await fresh.query("SELECT current_setting('search_path') AS path, current_setting('statement_timeout') AS timeout")
    t.same(rows[0], { path: '"$user", public', timeout: '0' })
  })
}

await t.test('a route that tries to COMMIT by itself after ALTER ROLE: the COMMIT is never sent, nothing is stored', async (t) => {
  const pool = db.appPool({ max: 1 })
  t.teardown(() => db.assertNoLeaks(t, pool))
  const { app } = await attackApp(t, pool, {
    alter: async (request) => {
      await dbOf(request).execute(sql.raw("ALTER ROLE CURRENT_USER SET search_path = 'pg_catalog'"))
      await dbOf(request).execute(sql.raw('COMMIT'))
      return 'done'
    }
  })
  const reply = await callAs(app, a, 'alter')
  t.equal(reply.statusCode, 500)
  t.equal(reply.json().code, 'FST_TENANT_RLS_TRANSACTION_CONTROL_REFUSED')
  t.same(await storedSettings(), [], 'rolled back with the request')
})

await t.test('a stored setting written by an administrator outside the app does not fail requests', async (t) => {
  const pool = db.appPool({ max: 1 })
  t.teardown(() => db.assertNoLeaks(t, pool))
  const { app } = await attackApp(t, pool, { write: routeRunning([]) })
  await db.admin.query(`ALTER ROLE ${db.appRole} SET idle_in_transaction_session_timeout = '1min'`)
  t.equal((await callAs(app, a, 'write')).statusCode, 200)
  t.equal(await written(a), 1)
})

await t.test('a table lock held by one tenant makes the other fail after lock_timeout instead of waiting', async (t) => {
  const pool = db.appPool({ max: 2 })
  t.teardown(() => db.assertNoLeaks(t, pool))
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  let locked!: () => void
  const isLocked = new Promise<void>((resolve) => { locked = resolve })
  const { app, sqlStates } = await attackApp(t, pool, {
    lock: async (request) => {
      await dbOf(request).execute(sql.raw('LOCK TABLE documents IN ACCESS EXCLUSIVE MODE'))
      locked()
      await held
      return 'locked'
    },
    read: async (request) => (await dbOf(request).execute(sql`SELECT count(*)::int AS n FROM documents`)).rows
  })
  const locking = callAs(app, a, 'lock')
  await isLocked
  const reading = await callAs(app, b, 'read')
  release()
  t.equal((await locking).statusCode, 200)
  t.same([reading.statusCode, reading.json().code], [503, 'FST_TENANT_RLS_DATABASE_TIMEOUT'], "B's request fails instead of queueing behind A's lock")
  t.same(sqlStates, ['55P03'], 'with lock_not_available, the lock_timeout error')
})

await t.test('lockTimeout: 0 restores waiting for the lock', async (t) => {
  const pool = db.appPool({ max: 2 })
  t.teardown(() => db.assertNoLeaks(t, pool))
  const { rows: [row] } = await pool.query<{ timeout: string }>("SELECT current_setting('lock_timeout') AS timeout")
  const { app } = await attackApp(t, pool, {
    show: async (request) => (await dbOf(request).execute(sql.raw("SELECT current_setting('lock_timeout') AS timeout"))).rows[0]
  }, { lockTimeout: 0 })
  t.same((await callAs(app, a, 'show')).json(), { timeout: '0' })
  t.same(row, { timeout: '0' }, 'outside a tenant transaction the setting is untouched')
})
