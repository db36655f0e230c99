// What the closing message's session reset means for an application's own connection settings:
// a setting given in the connection's startup options is where every RESET returns to, so it
// holds for every request; a plain SET from a pool 'connect' handler is session state like any
// other and is gone after the connection's first transaction.
import { sql } from 'drizzle-orm'
import t from 'tap'
import { createTestDatabase } from './helpers/database.js'
import { bearer, buildApp, createProjectsTable } from './helpers/fixture.js'

const db = await createTestDatabase(t)
const { tenantA, tenantB } = await createProjectsTable(db)

async function timeZonesSeen (pool: ReturnType<typeof db.appPool>): Promise<string[]> {
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.get('/zone', async (request) => (await request.db.execute(sql`SELECT current_setting('TimeZone') AS zone`)).rows[0])
    }
  })
  const seen: string[] = []
  for (const tenant of [tenantA, tenantB, tenantA]) {
    const reply = await app.inject({ url: '/zone', headers: bearer(app, { tenant_id: tenant }) })
    seen.push((reply.json() as { zone: string }).zone)
  }
  return seen
}

t.test('a setting in the startup options holds for every request', async (t) => {
  const pool = db.appPool({ max: 1, options: '-c TimeZone=Asia/Tokyo' })
  t.same(await timeZonesSeen(pool), ['Asia/Tokyo', 'Asia/Tokyo', 'Asia/Tokyo'])
  await db.assertNoLeaks(t, pool)
})

t.test("a pool 'connect' handler's SET lasts until the connection's first transaction ends", async (t) => {
  const pool = db.appPool({ max: 1 })
  pool.on('connect', (client) => { client.query("SET TimeZone = 'Asia/Tokyo'").catch(() => {}) })
  const { rows: [server] } = await db.admin.query<{ zone: string }>("SELECT reset_val AS zone FROM pg_settings WHERE name = 'TimeZone'")
  t.not(server?.zone, 'Asia/Tokyo')
  t.same(await timeZonesSeen(pool), ['Asia/Tokyo', server?.zone, server?.zone], 'reset to the server default, like any SET a route leaves')
  t.equal(pool.totalCount, 1, 'on the same connection')
  await db.assertNoLeaks(t, pool)
})

t.test('a session reset that fails after COMMIT keeps the 2xx (the work was kept) and discards the connection', async (t) => {
  const pool = db.appPool({ max: 1 })
  const reasons: unknown[] = []
  const app = await buildApp(t, {
    pool,
    routes (app) {
      app.post('/rename', async (request) => {
        request.log.warn = ((object: { reason?: unknown }) => { reasons.push(object.reason) }) as typeof request.log.warn
        await request.db.execute(sql`UPDATE projects SET name = 'renamed' WHERE name = 'b-1'`)
        return 'renamed'
      })
    }
  })
  // The session read calls pg_advisory_unlock_all(): without EXECUTE on it, the statements after COMMIT fail.
  await db.admin.query('REVOKE EXECUTE ON FUNCTION pg_advisory_unlock_all() FROM PUBLIC')
  t.teardown(() => db.admin.query('GRANT EXECUTE ON FUNCTION pg_advisory_unlock_all() TO PUBLIC'))
  const { rows: [before] } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
  const reply = await app.inject({ method: 'POST', url: '/rename', headers: bearer(app, { tenant_id: tenantB }) })
  t.equal(reply.statusCode, 200, 'not an error a client would retry')
  const { rows } = await db.admin.query('SELECT name FROM projects WHERE tenant_id = $1', [tenantB])
  t.same(rows, [{ name: 'renamed' }], 'the work was committed')
  t.same(reasons, ['the session reset after COMMIT failed'])
  const { rows: [after] } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
  t.not(after?.pid, before?.pid, 'the connection was not reused')
  await db.assertNoLeaks(t, pool)
})
