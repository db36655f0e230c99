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
